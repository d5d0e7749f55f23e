"""Access and load against ``anyseg serve`` (issue 13: classes 8 and 4, overload): hosts, origins, tokens, timeouts.

Every refusal must be a JSON ``{"detail": "one line"}`` with the right status, and the service
must keep serving afterwards: unknown hosts and cross-origin writes are refused, the token is
required where set, a timed-out job is cancelled and frees its worker, and overload gets fast
503s with ``Retry-After`` while the admitted requests are served. Time limits are only safety
nets. Request bodies, errors, labels and file names: test_adversarial_serve.py.
"""

from __future__ import annotations

import asyncio
import threading

import pytest

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")
from fastapi.testclient import TestClient  # noqa: E402

from anyseg import cancel  # noqa: E402
from anyseg.serve.pool import WorkerPool  # noqa: E402

from _serve_hostile import (  # noqa: E402
    BASE, SAFETY_S, Stub, assert_json_error, free_port, make_app, png_image, upload,
)


# == class 8: hosts, origins, tokens ==================================================================
def test_unknown_host_is_refused(tmp_path):
    app = make_app(tmp_path)
    for base in ("http://evil.example", "http://evil.example:8000", "http://127.0.0.1.evil.example"):
        with TestClient(app, base_url=base) as c:
            assert "host not allowed" in assert_json_error(c.get("/api/health"), 400)["detail"]
            assert_json_error(c.get("/"), 400)
    for base in ("http://127.0.0.1:8123", "http://localhost", "http://[::1]:9"):
        with TestClient(app, base_url=base) as c:
            assert c.get("/api/health").status_code == 200
    with TestClient(make_app(tmp_path, allowed_hosts=["annot.lab"]), base_url="http://annot.lab:81") as c:
        assert c.get("/api/health").status_code == 200
    with TestClient(make_app(tmp_path, allowed_hosts=["*"]), base_url="http://anything.example") as c:
        assert c.get("/api/health").status_code == 200


def test_cross_origin_state_changes_are_refused(tmp_path):
    with TestClient(make_app(tmp_path, cors_origins=["http://trusted.example"]), base_url="http://127.0.0.1:8000") as c:
        for headers in ({"Origin": "http://evil.example"}, {"Origin": "null"}, {"Origin": "http://127.0.0.1:9999"},
                        {"Origin": "https://127.0.0.1:8000"}, {"Sec-Fetch-Site": "cross-site"},
                        {"Sec-Fetch-Site": "same-site"}):
            assert "cross-origin" in assert_json_error(c.post("/api/projects", json={"name": "x"},
                                                              headers=headers), 403)["detail"]
            assert_json_error(upload(c, headers=headers), 403)  # CSRF of a multipart form
        assert c.get("/api/projects").json() == [] and c.get("/api/images").json() == []
        assert c.get("/api/projects", headers={"Origin": "http://evil.example"}).status_code == 200  # reads pass
        for headers in ({}, {"Origin": "http://127.0.0.1:8000"}, {"Sec-Fetch-Site": "same-origin"},
                        {"Sec-Fetch-Site": "none"}, {"Origin": "http://trusted.example"}):
            assert c.post("/api/projects", json={"name": "ok"}, headers=headers).status_code == 201, headers
        assert upload(c, headers={"Origin": "http://127.0.0.1:8000", "Sec-Fetch-Site": "same-origin"}).status_code == 200


def test_token_is_required_on_the_api_when_set(tmp_path):
    token = "correct-horse-battery-staple"
    with TestClient(make_app(tmp_path, token=token), base_url=BASE) as c:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": token},
                        {"Authorization": f"Basic {token}"}, {"Authorization": f"Bearer {token}x"}):
            r = c.get("/api/projects", headers=headers)
            assert_json_error(r, 401)
            assert r.headers["www-authenticate"] == "Bearer"
        assert_json_error(upload(c), 401)
        good = {"Authorization": f"Bearer {token}"}
        assert c.get("/api/projects", headers=good).status_code == 200
        assert c.post("/api/projects", json={"name": "a"}, headers=good).status_code == 201
        page = c.get("/")  # the UI itself loads without the token, and no other site may frame it
        assert page.status_code in (200, 404)
        assert page.headers["x-frame-options"] == "DENY" and "frame-ancestors 'none'" in page.headers[
            "content-security-policy"]
        assert c.get("/static/app.js").status_code in (200, 404)


def test_a_network_bind_without_a_token_refuses_to_start(monkeypatch, capsys):
    from anyseg.cli import main
    from anyseg.serve.security import allowed_hosts_for, is_loopback

    monkeypatch.delenv("ANYSEG_TOKEN", raising=False)
    port = str(free_port())
    for host in ("0.0.0.0", "::", "192.0.2.1"):
        assert main(["serve", "--host", host, "--port", port, "--model", "classical"]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("anyseg: error: ") and "token" in err and "\n" not in err
    monkeypatch.setenv("ANYSEG_TOKEN", "short")
    assert main(["serve", "--host", "0.0.0.0", "--port", port, "--model", "classical"]) == 2
    assert "at least 16" in capsys.readouterr().err
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost") and is_loopback("127.3.4.5")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.0.2.1")
    assert set(allowed_hosts_for("127.0.0.1")) == {"127.0.0.1", "localhost", "::1"}
    assert "annot.lab" in allowed_hosts_for("0.0.0.0", ["Annot.Lab."])


# == class 4 (service side): a timed-out job frees its worker =======================================
def test_a_timed_out_job_is_cancelled_and_the_next_request_is_served(tmp_path):
    pred = Stub(hang_below_x=10)
    with TestClient(make_app(tmp_path, pred, workers=1, queue_size=1, request_timeout_s=0.5), base_url=BASE) as c:
        iid = upload(c).json()["id"]
        r = c.post(f"/api/images/{iid}/predict", json={"points": [[3, 3]]})  # loops until cancelled
        assert "cancelled" in assert_json_error(r, 504)["detail"]
        for _ in range(3):  # without cancellation the only worker would be busy forever: these would be 504
            r = c.post(f"/api/images/{iid}/predict", json={"points": [[30, 20]]})
            assert r.status_code == 200, r.text
        pool = c.app.state.anyseg.pool
        assert pred.loops_stopped == 1 and pool.cancelled == 1 and pool.pending == 0


def test_a_timed_out_classical_job_stops_at_its_checkpoints(tmp_path, monkeypatch):
    """The real engine: GrabCut checks the token between cuts, so the timed-out job frees the worker."""
    from anyseg.models import classical, classical_cut, load_model

    stopped_inside = []

    class Spy:
        @staticmethod
        def check():
            try:
                cancel.check()
            except cancel.Cancelled:
                stopped_inside.append(True)
                raise

    monkeypatch.setattr(classical, "cancel", Spy)  # the checkpoints live in both halves of the engine
    monkeypatch.setattr(classical_cut, "cancel", Spy)
    with TestClient(make_app(tmp_path, load_model("classical"), workers=1, queue_size=2), base_url=BASE) as c:
        iid = upload(c, png_image(960, 1280)).json()["id"]
        pool = c.app.state.anyseg.pool
        pool.timeout_s = 0.2  # below one 3-candidate GrabCut run with its full-size refinement
        r = c.post(f"/api/images/{iid}/predict", json={"box": [100, 100, 1100, 800], "multimask": True})
        assert_json_error(r, 504)
        pool.timeout_s = SAFETY_S
        r = c.post(f"/api/images/{iid}/predict", json={"points": [[640, 480]], "multimask": False})
        assert r.status_code == 200, r.text
        assert pool.cancelled == 1 and stopped_inside == [True]  # it stopped at a GrabCut checkpoint


def test_cancel_token_reaches_the_worker_thread_only():
    pool = WorkerPool(1, 0, timeout_s=5)
    seen = []

    async def main():
        seen.append(cancel.current())  # the event loop's context has no token
        return await pool.run(lambda: cancel.current() is not None)

    assert asyncio.run(main()) is True and seen == [None]
    pool.shutdown()


# == overload =========================================================================================
def test_admission_by_expected_wait_and_retry_after():
    pool = WorkerPool(workers=1, queue_size=8, timeout_s=10)
    assert pool.expected_wait("predict") == 0
    pool.record("predict", 4.0)
    tickets = [pool.admit("predict"), pool.admit("predict")]  # expected to finish after 4 s and 8 s
    with pytest.raises(Exception) as e:  # the third would finish after 12 s > 10 s: refused though 6 slots are free
        pool.admit("predict")
    assert e.value.status_code == 503 and e.value.headers["Retry-After"] == "2"
    assert pool.admit("upload")  # a kind without an estimate is admitted by count
    pool.release(tickets.pop())
    assert pool.admit("predict")
    full = WorkerPool(workers=2, queue_size=0, timeout_s=10)
    full.record("predict", 3.0)
    full.admit("predict"), full.admit("predict")
    with pytest.raises(Exception) as e:
        full.admit("predict")
    assert e.value.status_code == 503 and int(e.value.headers["Retry-After"]) == 2  # one slot frees in ~3/2 s


def test_overload_gets_fast_503s_with_retry_after_and_the_admitted_are_served(tmp_path):
    release = threading.Event()

    class Blocking(Stub):
        def predict(self, embedding, prompt, multimask=False):
            release.wait(SAFETY_S)
            return super().predict(embedding, prompt, multimask)

    app = make_app(tmp_path, Blocking(), workers=1, queue_size=2, request_timeout_s=SAFETY_S)

    async def scenario():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE) as c:
            iid = (await c.post("/api/images", files={"file": ("a.png", png_image(), "image/png")})).json()["id"]
            tasks = [asyncio.create_task(c.post(f"/api/images/{iid}/predict", json={"points": [[3, 3]]}))
                     for _ in range(20)]
            for _ in range(SAFETY_S * 50):
                await asyncio.sleep(0.02)
                if sum(t.done() for t in tasks) == 17:
                    break
            early = [t.result() for t in tasks if t.done()]
            release.set()
            return early, await asyncio.gather(*tasks)

    early, all_ = asyncio.run(scenario())
    assert len(early) == 17 and all(r.status_code == 503 for r in early)  # answered while the 3 admitted wait
    for r in early:
        assert_json_error(r, 503)
        assert int(r.headers["retry-after"]) >= 1
    assert sorted(r.status_code for r in all_) == [200] * 3 + [503] * 17
