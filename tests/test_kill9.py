"""kill -9 of the service under concurrent writers: every acknowledged write survives.

The real ``anyseg serve`` (classical engine, SQLite) runs in a child process on 127.0.0.1.
Writer threads save annotations and record the ids the server acknowledged (201); the
server is killed with SIGKILL while they write, restarted on the same database, and every
acknowledged annotation must be there with its mask, and SQLite's integrity check must pass.
Bounded in rounds, writes and time; the service listens on loopback only. (The kill -9 test of
track resume is in tests/test_adversarial_kills.py.)
"""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

ROUNDS = 3
WRITERS = 4
KILL_AFTER = 12  # acknowledged writes per round before the kill
START_TIMEOUT_S = 120


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _request(method: str, url: str, body: bytes | None = None, ctype: str = "application/json",
             timeout: float = 30) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=body, method=method, headers={"Content-Type": ctype} if body else {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def _start(db: Path, data: Path, port: int) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "anyseg.cli", "serve", "--model", "classical", "--host", "127.0.0.1",
         "--port", str(port), "--db", f"sqlite:///{db}", "--data-dir", str(data), "--quiet"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited with {proc.returncode}: {proc.stderr.read().decode()[-2000:]}")
        try:
            status, _ = _request("GET", f"http://127.0.0.1:{port}/api/health", timeout=2)
            if status == 200:
                return proc
        except OSError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise AssertionError("server did not start in time")


def _multipart(name: str, data: bytes) -> tuple[bytes, str]:
    boundary = "anysegkill9boundary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\n"
            "Content-Type: image/png\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def _png(h: int, w: int) -> bytes:
    from PIL import Image

    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX SIGKILL")
def test_acknowledged_writes_survive_kill9(tmp_path):
    from anyseg.masks import rle

    db, data = tmp_path / "anyseg.db", tmp_path / "data"
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    h, w = 48, 64
    proc = _start(db, data, port)
    acked: dict[int, dict] = {}
    try:
        body, ctype = _multipart("img.png", _png(h, w))
        status, out = _request("POST", f"{base}/api/images", body, ctype)
        assert status == 200, out
        image_id = json.loads(out)["id"]
        status, out = _request("POST", f"{base}/api/projects", json.dumps({"name": "kill9"}).encode())
        assert status == 201, out
        pid = json.loads(out)["id"]

        for round_ in range(ROUNDS):
            lock = threading.Lock()
            stop = threading.Event()
            count = [0]

            def writer(k: int) -> None:
                rng = np.random.default_rng(1000 * round_ + k)
                while not stop.is_set():
                    mask = np.zeros((h, w), bool)
                    y, x = rng.integers(0, h - 8), rng.integers(0, w - 8)
                    mask[y:y + 8, x:x + 8] = True
                    label = f"r{round_}w{k}n{count[0]}"
                    payload = json.dumps({"image_id": image_id, "label": label, "rle": rle.encode(mask)}).encode()
                    try:
                        status, out = _request("POST", f"{base}/api/projects/{pid}/annotations", payload, timeout=10)
                    except OSError:
                        return  # the server died under us: this write was never acknowledged
                    if status == 201:
                        with lock:
                            acked[json.loads(out)["id"]] = {"label": label, "area": int(mask.sum())}
                            count[0] += 1

            threads = [threading.Thread(target=writer, args=(k,), daemon=True) for k in range(WRITERS)]
            for t in threads:
                t.start()
            deadline = time.monotonic() + 60
            while count[0] < KILL_AFTER and time.monotonic() < deadline:
                time.sleep(0.01)
            assert count[0] >= KILL_AFTER, "writers made no progress"
            proc.send_signal(signal.SIGKILL)  # while the writers are still writing
            proc.wait(timeout=30)
            stop.set()
            for t in threads:
                t.join(timeout=30)
            proc = _start(db, data, port)
            status, out = _request("GET", f"{base}/api/projects/{pid}/annotations")
            assert status == 200, out
            stored = {a["id"]: a for a in json.loads(out)}
            missing = sorted(set(acked) - set(stored))
            assert not missing, f"round {round_}: acknowledged annotations lost after kill -9: {missing[:10]}"
            for aid, want in acked.items():
                assert stored[aid]["label"] == want["label"] and stored[aid]["area"] == want["area"]
        status, out = _request("GET", f"{base}/api/projects/{pid}/export?format=coco")
        assert status == 200 and len(json.loads(out)["annotations"]) >= len(acked)
    finally:
        proc.kill()
        proc.wait(timeout=30)
    with sqlite3.connect(db) as con:
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert len(acked) >= ROUNDS * KILL_AFTER
