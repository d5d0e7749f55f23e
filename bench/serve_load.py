"""Load test of ``anyseg serve``: concurrent click-to-mask requests against one uploaded image.

Starts the app with uvicorn in a thread on 127.0.0.1 (a free port) with a random-weight
model (speed does not depend on the weight values): ``tiny`` (the test suite's tiny SAM,
default) or ``sam-vit-base`` (the real-size architecture from transformers' default config).
Uploads one image (the embedding is computed once, at upload), then ``--clients`` threads
with their own ``httpx.Client`` send predict requests with random clicks until ``--requests``
requests are done or ``--seconds`` have passed. Reports requests/s, latency percentiles and
error counts by status.

    python bench/serve_load.py                       # tiny model, 8 clients, 400 requests
    python bench/serve_load.py --arch sam-vit-base --clients 16 --seconds 30 --json out.json
"""

from __future__ import annotations

import argparse
import io
import json
import platform
import socket
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def build(arch: str, folder: Path) -> tuple[str, Path]:
    """(registry name, weights folder) of a random-weight model."""
    if arch == "tiny":
        sys.path.insert(0, str(ROOT / "tests"))
        from tiny_models import BUILDERS

        return "sam-vit-base", BUILDERS["sam"](folder)
    if arch == "sam-vit-base":
        import torch
        import transformers

        torch.manual_seed(0)
        transformers.SamModel(transformers.SamConfig()).save_pretrained(str(folder))
        return "sam-vit-base", folder
    raise SystemExit(f"unknown --arch {arch!r}: expected tiny or sam-vit-base")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentile(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="tiny", choices=["tiny", "sam-vit-base"])
    ap.add_argument("--clients", type=int, default=8, help="concurrent client threads")
    ap.add_argument("--requests", type=int, default=400, help="stop after this many requests in all")
    ap.add_argument("--seconds", type=float, default=30.0, help="stop after this long")
    ap.add_argument("--workers", type=int, default=1, help="server model worker threads")
    ap.add_argument("--queue", type=int, default=8, help="server queue size (more pending -> 503)")
    ap.add_argument("--timeout", type=float, default=60.0, help="server job timeout (-> 504)")
    ap.add_argument("--multimask", action="store_true", help="ask for 3 masks per click (default 1)")
    ap.add_argument("--size", default="480x640", help="HxW of the synthetic test image")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", type=Path, metavar="OUT")
    args = ap.parse_args()

    import httpx
    import uvicorn
    from PIL import Image

    from anyseg.models import load_model
    from anyseg.serve.app import create_app

    h, w = (int(v) for v in args.size.split("x"))
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        name, folder = build(args.arch, tmp / "weights")
        predictor = load_model(name, weights=folder, device=args.device)
        app = create_app(predictor=predictor, db_url=f"sqlite:///{tmp / 'bench.db'}", workers=args.workers,
                         queue_size=args.queue, request_timeout_s=args.timeout)
        port = free_port()
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        t0 = time.time()
        while not server.started:
            if time.time() - t0 > 30 or not thread.is_alive():
                raise SystemExit("the server did not start")
            time.sleep(0.05)
        base = f"http://127.0.0.1:{port}"
        try:
            with httpx.Client(base_url=base, timeout=120) as c:
                t = time.perf_counter()
                r = c.post("/api/images", files={"file": ("bench.png", buf.getvalue(), "image/png")})
                r.raise_for_status()
                upload_s = time.perf_counter() - t
                iid = r.json()["id"]
                c.post(f"/api/images/{iid}/predict", json={"points": [[w / 2, h / 2]]}).raise_for_status()  # warm-up

            lock = threading.Lock()
            issued = [0]
            latencies: list[float] = []
            server_s: list[float] = []
            statuses: Counter = Counter()
            deadline = time.perf_counter() + args.seconds

            def client(seed: int) -> None:
                crng = np.random.default_rng(seed)
                with httpx.Client(base_url=base, timeout=args.timeout + 30) as cl:
                    while time.perf_counter() < deadline:
                        with lock:
                            if issued[0] >= args.requests:
                                return
                            issued[0] += 1
                        x, y = crng.uniform(0, w), crng.uniform(0, h)
                        body = {"points": [[x, y]], "labels": [1], "multimask": args.multimask}
                        t1 = time.perf_counter()
                        try:
                            resp = cl.post(f"/api/images/{iid}/predict", json=body)
                            code = resp.status_code
                        except httpx.HTTPError as e:
                            code, resp = type(e).__name__, None
                        dt = time.perf_counter() - t1
                        with lock:
                            statuses[code] += 1
                            if code == 200:
                                latencies.append(dt)
                                server_s.append(resp.json()["seconds"])

            start = time.perf_counter()
            threads = [threading.Thread(target=client, args=(i,)) for i in range(args.clients)]
            for th in threads:
                th.start()
            for th in threads:
                th.join()
            wall = time.perf_counter() - start
        finally:
            server.should_exit = True
            thread.join(timeout=10)

    ok = statuses.get(200, 0)
    total = sum(statuses.values())
    result = {
        "arch": args.arch, "model": name, "device": args.device, "image": [h, w], "clients": args.clients,
        "workers": args.workers, "queue": args.queue, "multimask": args.multimask,
        "requests": total, "ok": ok, "errors": {str(k): v for k, v in statuses.items() if k != 200},
        "wall_s": round(wall, 3), "requests_per_s": round(total / wall, 2) if wall else None,
        "ok_per_s": round(ok / wall, 2) if wall else None,
        "latency_ms": {k: (round(v * 1000, 2) if v is not None else None) for k, v in (
            ("p50", percentile(latencies, 50)), ("p95", percentile(latencies, 95)),
            ("p99", percentile(latencies, 99)), ("mean", float(np.mean(latencies)) if latencies else None))},
        "decoder_ms_mean": round(float(np.mean(server_s)) * 1000, 2) if server_s else None,
        "upload_with_embedding_s": round(upload_s, 3),
        "python": platform.python_version(), "machine": platform.machine(), "cpus": __import__("os").cpu_count(),
    }
    lat = result["latency_ms"]
    print(f"{args.arch} ({name}, {args.device}) image {h}x{w}, {args.clients} clients, {args.workers} worker(s), "
          f"queue {args.queue}")
    print(f"  upload + embed: {upload_s:.3f} s")
    print(f"  {total} requests in {wall:.2f} s: {result['requests_per_s']} req/s ({ok} ok), "
          f"errors {result['errors'] or 'none'}")
    print(f"  latency ms: p50 {lat['p50']}  p95 {lat['p95']}  p99 {lat['p99']}  mean {lat['mean']}; "
          f"decoder mean {result['decoder_ms_mean']} ms")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
