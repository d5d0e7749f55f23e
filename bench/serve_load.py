"""Load test of ``anyseg serve``: concurrent click-to-mask requests against one uploaded image.

Starts the app under uvicorn in a child process on 127.0.0.1 (a free port; the clients run in
this process, so they do not compete with the server for its GIL) with ``--engine``:
``classical`` (OpenCV GrabCut, no weights), ``tiny`` (the test suite's tiny random SAM,
default) or ``sam-vit-base`` (the real-size architecture with random weights: speed does not
depend on the weight values). Uploads one image (the embedding is computed once, at upload),
then ``--clients`` threads with their own ``httpx.Client`` send predict requests with random
clicks until ``--requests`` requests are done or ``--seconds`` have passed.

Without ``--retry`` every request is one attempt; with it, a client that gets ``503`` waits
the ``Retry-After`` seconds and tries the same request again (at most ``--max-retries`` times,
and never past ``--seconds``). Reports, as JSON with ``--json``: throughput, the share of
``503`` answers, latency percentiles (p50/p95/p99) of the accepted attempts (the time of the
one attempt that got ``200``) and, with ``--retry``, of the whole request including its waits,
and how many requests were served only after a retry.

    python bench/serve_load.py                                   # tiny model, 8 clients, 400 requests
    python bench/serve_load.py --engine classical --clients 16 --requests 200 --json out.json
    python bench/serve_load.py --engine classical --clients 16 --requests 200 --retry
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
ENGINES = ("classical", "tiny", "sam-vit-base")


def build_predictor(engine: str, folder: Path, device: str):
    """A loaded predictor for ``engine`` (random weights for the SAM ones, written to ``folder``)."""
    from anyseg.models import load_model

    if engine == "classical":
        return load_model("classical")
    if engine == "tiny":
        sys.path.insert(0, str(ROOT / "tests"))
        from tiny_models import BUILDERS

        return load_model("sam-vit-base", weights=BUILDERS["sam"](folder), device=device)
    if engine == "sam-vit-base":
        import torch
        import transformers

        torch.manual_seed(0)
        transformers.SamModel(transformers.SamConfig()).save_pretrained(str(folder))
        return load_model("sam-vit-base", weights=folder, device=device)
    raise SystemExit(f"unknown --engine {engine!r}: expected one of {', '.join(ENGINES)}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentile(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


def serve(args: argparse.Namespace) -> int:
    """The child process: the app under uvicorn on 127.0.0.1:``args.serve_port`` until killed."""
    import uvicorn

    from anyseg.serve.app import create_app

    tmp = Path(args.tmp)
    predictor = build_predictor(args.engine, tmp / "weights", args.device)
    app = create_app(predictor=predictor, db_url=f"sqlite:///{tmp / 'bench.db'}", data_dir=tmp / "data",
                     workers=args.workers, queue_size=args.queue, request_timeout_s=args.timeout,
                     **({"max_wait_s": args.max_wait} if args.max_wait else {}))
    uvicorn.run(app, host="127.0.0.1", port=args.serve_port, log_level="warning")
    return 0


def start_server(args: argparse.Namespace, tmp: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    cmd = [sys.executable, str(Path(__file__).resolve()), "--serve-port", str(port), "--tmp", str(tmp),
           "--engine", args.engine, "--device", args.device, "--workers", str(args.workers),
           "--queue", str(args.queue), "--timeout", str(args.timeout)]
    if args.max_wait:
        cmd += ["--max-wait", str(args.max_wait)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen(cmd, env=env)
    return proc, f"http://127.0.0.1:{port}"


def wait_ready(proc: subprocess.Popen, base: str, seconds: float = 120.0) -> None:
    import httpx

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited with code {proc.returncode} before it started")
        try:
            if httpx.get(base + "/api/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"the server did not start within {seconds:g} s")


class Tally:
    """What the clients saw (thread-safe)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.issued = 0
        self.attempts: Counter = Counter()  # status -> count, every attempt
        self.final: Counter = Counter()  # status -> count, the last attempt of each request
        self.accepted_s: list[float] = []  # the one attempt that got 200
        self.total_s: list[float] = []  # the whole request (with its retry waits) that got 200
        self.server_s: list[float] = []
        self.fast_503_s: list[float] = []
        self.served_after_retry = 0
        self.retry_after: Counter = Counter()

    def take(self, limit: int) -> bool:
        with self.lock:
            if self.issued >= limit:
                return False
            self.issued += 1
            return True


def one_request(cl, url: str, body: dict, args: argparse.Namespace, tally: Tally, deadline: float) -> None:
    """One logical request: one attempt, or (``--retry``) attempts until 200 or give-up."""
    start = time.perf_counter()
    tries = 0
    while True:
        t1 = time.perf_counter()
        try:
            resp = cl.post(url, json=body)
            code: int | str = resp.status_code
        except Exception as e:  # noqa: BLE001 - a bench records every failure by its type
            code, resp = type(e).__name__, None
        dt = time.perf_counter() - t1
        with tally.lock:
            tally.attempts[code] += 1
            if code == 503:
                tally.fast_503_s.append(dt)
                tally.retry_after[resp.headers.get("retry-after", "none")] += 1
        if code == 503 and args.retry and tries < args.max_retries:
            wait = float(resp.headers.get("retry-after", "1") or 1)
            if time.perf_counter() + wait < deadline:
                tries += 1
                time.sleep(wait)
                continue
        with tally.lock:
            tally.final[code] += 1
            if code == 200:
                tally.accepted_s.append(dt)
                tally.total_s.append(time.perf_counter() - start)
                tally.server_s.append(resp.json()["seconds"])
                tally.served_after_retry += tries > 0
        return


def run_clients(base: str, iid: str, size: tuple[int, int], args: argparse.Namespace) -> tuple[Tally, float]:
    import httpx

    h, w = size
    tally = Tally()
    deadline = time.perf_counter() + args.seconds

    def client(seed: int) -> None:
        crng = np.random.default_rng(seed)
        with httpx.Client(base_url=base, timeout=args.timeout + 30) as cl:
            while time.perf_counter() < deadline and tally.take(args.requests):
                x, y = crng.uniform(0, w), crng.uniform(0, h)
                body = {"points": [[x, y]], "labels": [1], "multimask": args.multimask}
                one_request(cl, f"/api/images/{iid}/predict", body, args, tally, deadline)

    start = time.perf_counter()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(args.clients)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return tally, time.perf_counter() - start


def ms(values: list[float]) -> dict[str, float | None]:
    out = {f"p{q}": percentile(values, q) for q in (50, 95, 99)}
    out["mean"] = float(np.mean(values)) if values else None
    out["max"] = float(np.max(values)) if values else None
    return {k: (round(v * 1000, 1) if v is not None else None) for k, v in out.items()}


def bound_ms(args: argparse.Namespace, tally: Tally) -> float | None:
    """The latency an accepted request should stay under: (queue + workers) / workers service times."""
    if not tally.server_s:
        return None
    slots = -(-(args.queue + args.workers) // args.workers)
    return round(slots * float(np.mean(tally.server_s)) * 1000, 1)


def summary(args: argparse.Namespace, tally: Tally, wall: float, upload_s: float, size: tuple[int, int]) -> dict:
    served = tally.final.get(200, 0)
    requests = sum(tally.final.values())
    attempts = sum(tally.attempts.values())
    return {
        "engine": args.engine, "device": args.device, "image": list(size), "clients": args.clients,
        "workers": args.workers, "queue": args.queue, "timeout_s": args.timeout, "max_wait_s": args.max_wait,
        "retry": args.retry,
        "multimask": args.multimask, "requests": requests, "attempts": attempts, "served": served,
        "served_after_retry": tally.served_after_retry,
        "final_status": {str(k): v for k, v in sorted(tally.final.items(), key=str)},
        "attempt_status": {str(k): v for k, v in sorted(tally.attempts.items(), key=str)},
        "share_503": round(tally.attempts.get(503, 0) / attempts, 3) if attempts else None,
        "retry_after_values": dict(tally.retry_after),
        "wall_s": round(wall, 2), "served_per_s": round(served / wall, 2) if wall else None,
        "attempts_per_s": round(attempts / wall, 2) if wall else None,
        "accepted_latency_ms": ms(tally.accepted_s),
        "request_latency_ms": ms(tally.total_s),
        "latency_503_ms": ms(tally.fast_503_s),
        "service_ms_mean": round(float(np.mean(tally.server_s)) * 1000, 1) if tally.server_s else None,
        "bound_ms": bound_ms(args, tally),
        "upload_with_embedding_s": round(upload_s, 3),
        "python": platform.python_version(), "machine": platform.machine(), "cpus": os.cpu_count(),
    }


def report(res: dict) -> None:
    acc, req = res["accepted_latency_ms"], res["request_latency_ms"]
    print(f"{res['engine']} ({res['device']}) image {res['image'][0]}x{res['image'][1]}, {res['clients']} clients, "
          f"{res['workers']} worker(s), queue {res['queue']}, timeout {res['timeout_s']:g} s, retry {res['retry']}")
    print(f"  {res['requests']} requests ({res['attempts']} attempts) in {res['wall_s']} s: {res['served']} served "
          f"({res['served_after_retry']} after a retry), {res['served_per_s']} served/s; final {res['final_status']}; "
          f"503 share of attempts {res['share_503']}")
    print(f"  accepted attempt ms: p50 {acc['p50']}  p95 {acc['p95']}  p99 {acc['p99']}  max {acc['max']}; "
          f"whole request ms: p50 {req['p50']}  p95 {req['p95']}; service mean {res['service_ms_mean']} ms "
          f"(bound {res['bound_ms']} ms); "
          f"503 p95 {res['latency_503_ms']['p95']} ms")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--engine", "--arch", dest="engine", default="tiny", choices=ENGINES)
    ap.add_argument("--clients", type=int, default=8, help="concurrent client threads")
    ap.add_argument("--requests", type=int, default=400, help="stop after this many requests in all")
    ap.add_argument("--seconds", type=float, default=120.0, help="stop issuing requests after this long")
    ap.add_argument("--workers", type=int, default=1, help="server model worker threads")
    ap.add_argument("--queue", type=int, default=8, help="server queue size (more pending -> 503)")
    ap.add_argument("--timeout", type=float, default=60.0, help="server job timeout (-> 504)")
    ap.add_argument("--max-wait", type=float, default=None,
                    help="server: admit a job only if expected to finish within this many seconds (default: timeout)")
    ap.add_argument("--retry", action="store_true", help="retry a 503 after its Retry-After seconds")
    ap.add_argument("--max-retries", type=int, default=30, help="retries per request with --retry")
    ap.add_argument("--multimask", action="store_true", help="ask for 3 masks per click (default 1)")
    ap.add_argument("--size", default="480x640", help="HxW of the synthetic test image")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", type=Path, metavar="OUT")
    ap.add_argument("--serve-port", type=int, help=argparse.SUPPRESS)  # the child server process
    ap.add_argument("--tmp", help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.serve_port:
        return serve(args)
    import httpx
    from PIL import Image

    h, w = (int(v) for v in args.size.split("x"))
    image = np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    with tempfile.TemporaryDirectory() as tmp:
        proc, base = start_server(args, Path(tmp))
        try:
            wait_ready(proc, base)
            with httpx.Client(base_url=base, timeout=120) as c:
                t = time.perf_counter()
                r = c.post("/api/images", files={"file": ("bench.png", buf.getvalue(), "image/png")})
                r.raise_for_status()
                upload_s = time.perf_counter() - t
                iid = r.json()["id"]
                c.post(f"/api/images/{iid}/predict", json={"points": [[w / 2, h / 2]]}).raise_for_status()  # warm-up
            tally, wall = run_clients(base, iid, (h, w), args)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    res = summary(args, tally, wall, upload_s, (h, w))
    report(res)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
