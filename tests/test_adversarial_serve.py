"""Hostile input against ``anyseg serve`` (issue 13: classes 2, 5, 7): bodies, errors, labels and file names.

Every refusal must be a JSON ``{"detail": "one line"}`` with the right status, and the service
must keep serving afterwards. In-process tests use starlette's TestClient with a stub
predictor; whatever runs Pillow's native decoders on hostile bytes or streams 200 MB runs as a
real server in a child process (uvicorn on 127.0.0.1, the classical engine, an address-space
limit), so that a native crash fails a test instead of killing pytest. Work is bounded by
counts and sizes; time limits are only safety nets. Hosts, origins, tokens, timeouts and
overload: test_adversarial_serve_access.py.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import struct
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")
from fastapi.testclient import TestClient  # noqa: E402

from _serve_hostile import (  # noqa: E402
    BASE, SAFETY_S, Stub, assert_json_error, bmp_image, free_port, make_app, png_image, project_with_image,
    square_rle, strict_json, upload,
)

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture()
def client(tmp_path):
    with TestClient(make_app(tmp_path, max_upload_bytes=300_000, max_json_bytes=100_000), base_url=BASE) as c:
        yield c


# -- a real server in a child process ---------------------------------------------------------------
SERVER = r"""
import resource, sys
resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))  # a runaway allocation fails here, not the machine
import uvicorn
from anyseg.models import load_model
from anyseg.serve.app import create_app
db, data, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
app = create_app(predictor=load_model("classical"), db_url=f"sqlite:///{db}", data_dir=data,
                 max_upload_bytes=2_000_000, max_json_bytes=1_000_000, max_pixels=4_000_000)
uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")
"""


def start_server(folder: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-c", SERVER, str(folder / "s.db"), str(folder / "data"), str(port)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + SAFETY_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"the server exited with {proc.returncode}: {proc.stderr.read().decode()[-2000:]}")
        try:
            if httpx.get(base + "/api/health", timeout=2).status_code == 200:
                return proc, base
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    pytest.fail("the server did not start")


def stop_server(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=SAFETY_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if proc.stderr:
        proc.stderr.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    proc, base = start_server(tmp_path_factory.mktemp("server"))
    yield base
    alive = proc.poll() is None
    stop_server(proc)
    assert alive, "the server died during the tests"


class Counting:
    """A chunked request body of ``total`` bytes that counts how much of it was pulled."""

    def __init__(self, total: int, chunk: int = 1 << 16, head: bytes = b"", tail: bytes = b""):
        self.total, self.chunk, self.head, self.tail = total, chunk, head, tail
        self.pulled = 0

    def __iter__(self):
        yield self.head
        block = b"0" * self.chunk
        while self.pulled < self.total:
            self.pulled += len(block)
            yield block
        yield self.tail

    async def __aiter__(self):
        for part in self:
            yield part


def asgi_post(app, path: str, body: Counting, ctype: str):
    """POST a streamed body straight to the ASGI app (starlette's TestClient would read all of it first)."""
    async def go():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE) as c:
            return await c.post(path, content=body.__aiter__(), headers={"content-type": ctype})
    return asyncio.run(go())


# == class 2: bodies over the limit, with or without Content-Length ================================
def test_chunked_json_body_over_the_limit_is_cut_at_the_limit(client):
    body = Counting(50_000_000, head=b'{"name": "')
    r = asgi_post(client.app, "/api/projects", body, "application/json")
    body_json = assert_json_error(r, 413)
    assert "100000 bytes" in body_json["detail"]
    assert body.pulled <= 100_000 + 2 * body.chunk  # reading stopped at the first chunk past the limit
    assert client.get("/api/projects").json() == []


def test_chunked_upload_over_the_limit_is_cut_at_the_limit(client):
    head = (b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n'
            b"Content-Type: image/png\r\n\r\n")
    body = Counting(50_000_000, head=head, tail=b"\r\n--b--\r\n")
    r = asgi_post(client.app, "/api/images", body, "multipart/form-data; boundary=b")
    assert_json_error(r, 413)
    assert body.pulled <= 300_000 + 2 * body.chunk
    assert client.get("/api/images").json() == []


def test_declared_length_over_the_limit_or_malformed_is_refused_before_reading(client):
    r = client.post("/api/projects", content=b"{}", headers={"content-type": "application/json",
                                                             "content-length": "999999999"})
    assert_json_error(r, 413)
    r = client.post("/api/projects", content=b"{}", headers={"content-type": "application/json",
                                                             "content-length": "12abc"})
    assert_json_error(r, 400)


def test_real_server_stops_reading_a_200_mb_chunked_body(server):
    """200 MB of JSON without Content-Length: 413 as soon as the 1 MB limit is passed, the rest never read."""
    for path, head, limit in (("/api/projects", b'{"name": "', 1_000_000),
                              ("/api/images", b'--b\r\nContent-Disposition: form-data; name="file"; '
                                              b'filename="a.bmp"\r\n\r\nBM', 2_000_000)):
        body = Counting(200_000_000, head=head)
        ctype = "application/json" if path.endswith("projects") else "multipart/form-data; boundary=b"
        with httpx.Client(base_url=server, timeout=SAFETY_S) as c:
            r = c.post(path, content=iter(body), headers={"content-type": ctype})
        assert_json_error(r, 413)
        # what was pulled is the limit plus what the two sockets' buffers hold: nowhere near 200 MB
        assert body.pulled < limit + 48_000_000, body.pulled
    assert httpx.get(server + "/api/health", timeout=SAFETY_S).status_code == 200


def test_deep_nesting_and_huge_arrays_are_refused(client):
    pid, iid = project_with_image(client)
    deep = b'{"points": ' + b"[" * 40_000 + b"]" * 40_000 + b"}"
    assert_json_error(client.post(f"/api/images/{iid}/predict", content=deep,
                                  headers={"content-type": "application/json"}), 422)
    bodies = [
        (f"/api/images/{iid}/predict", {"points": [[1, 1]] * 1025}),
        (f"/api/images/{iid}/predict", {"points": [[1, 1]], "labels": [1] * 1025}),
        (f"/api/images/{iid}/predict", {"box": [1.0] * 17}),
        (f"/api/images/{iid}/text", {"phrases": ["cat"] * 65}),
        (f"/api/images/{iid}/text", {"phrases": ["x" * 300]}),
        (f"/api/projects/{pid}/annotations", {"image_id": iid, "label": "a", "rle": square_rle(),
                                              "metadata": {"a": [[[[[[[[[[1]]]]]]]]]]}}),
        (f"/api/projects/{pid}/annotations", {"image_id": iid, "label": "a", "rle": square_rle(),
                                              "metadata": {"k": "v" * 70_000}}),
        (f"/api/projects/{pid}/annotations", {"image_id": iid, "label": "a",
                                              "rle": {"size": [1] * 20, "counts": "0"}}),
        (f"/api/images/{iid}/everything", {"min_mask_region_area": 2**70}),
    ]
    for path, body in bodies:
        r = client.post(path, json=body)
        err = assert_json_error(r, 422)
        assert len(r.content) < 5_000, "a 422 must not echo a large body"
        assert err["errors"] and all("input" not in e or not isinstance(e["input"], (list, dict)) for e in err["errors"])
    assert client.get(f"/api/projects/{pid}/annotations").json() == []


# == class 5: every error is JSON with the right 4xx ==============================================
BROKEN_IMAGES = {
    "truncated-bmp": lambda: bmp_image()[:200],
    "bmp-bad-header": lambda: b"BM" + struct.pack("<IHHI", 9999, 0, 0, 54) + struct.pack("<I", 7) + b"\0" * 64,
    "bmp-huge-declared": lambda: (b"BM" + struct.pack("<IHHIIiiHHIIiiII", 0, 0, 0, 54, 40, 100_000, 100_000, 1, 24,
                                                      0, 0, 0, 0, 0, 0) + b"\0" * 16),
    "truncated-png": lambda: png_image()[:120],
    "png-garbage-after-signature": lambda: b"\x89PNG\r\n\x1a\n" + b"\xff" * 300,
    "empty": lambda: b"",
    "text": lambda: b"hello, this is not an image" * 3,
}


@pytest.mark.parametrize("kind", sorted(BROKEN_IMAGES))
def test_broken_uploads_are_json_4xx_and_the_connection_stays(server, kind):
    with httpx.Client(base_url=server, timeout=SAFETY_S) as c:
        r = c.post("/api/images", files={"file": (f"{kind}.img", BROKEN_IMAGES[kind](), "image/png")})
        assert_json_error(r, (400, 413, 415))
        assert r.headers.get("connection", "").lower() != "close"
        assert c.get("/api/health").status_code == 200  # the same client, the server is fine


def test_ids_outside_the_integer_range_are_json_4xx(client):
    pid, iid = project_with_image(client)
    for bad in (2**70, 2**63, -1, 0, "1e3", "nan"):
        for method, path in (("GET", f"/api/projects/{bad}"), ("DELETE", f"/api/projects/{bad}"),
                             ("GET", f"/api/projects/{bad}/annotations"), ("GET", f"/api/projects/{bad}/export"),
                             ("PATCH", f"/api/annotations/{bad}"), ("DELETE", f"/api/annotations/{bad}")):
            r = client.request(method, path, json={"label": "x"} if method == "PATCH" else None)
            assert_json_error(r, (404, 422))
    assert_json_error(client.get(f"/api/projects/{2**63 - 1}"), 404)  # the largest id is merely unknown
    r = client.post(f"/api/projects/{pid}/annotations", json={"image_id": "f" * 2000, "label": "x", "rle": square_rle()})
    assert_json_error(r, 422)
    assert_json_error(client.post("/api/images/" + "0" * 500 + "/predict", json={"points": [[1, 1]]}), 404)


NON_FINITE = [b"NaN", b"Infinity", b"-Infinity", b"1e400", b"-1e999"]


@pytest.mark.parametrize("literal", NON_FINITE, ids=[v.decode() for v in NON_FINITE])
def test_non_finite_numbers_are_refused_and_export_keeps_working(client, literal):
    pid, iid = project_with_image(client)
    rle = json.dumps(square_rle()).encode()
    bodies = [
        (f"/api/images/{iid}/predict", b'{"points": [[' + literal + b", 5]]}"),
        (f"/api/images/{iid}/predict", b'{"box": [1, 2, 30, ' + literal + b"]}"),
        (f"/api/projects/{pid}/annotations", b'{"image_id": "%s", "label": "a", "rle": %s, "score": %s}'
         % (iid.encode(), rle, literal)),
        (f"/api/projects/{pid}/annotations", b'{"image_id": "%s", "label": "a", "rle": %s, "metadata": {"x": %s}}'
         % (iid.encode(), rle, literal)),
        (f"/api/images/{iid}/text", b'{"phrases": ["cat"], "threshold": ' + literal + b"}"),
    ]
    for path, raw in bodies:
        r = client.post(path, content=raw, headers={"content-type": "application/json"})
        err = assert_json_error(r, 422)  # strict_json: the 422 itself has no NaN
        assert "finite" in err["detail"] or "JSON" in err["detail"], err["detail"]
    ok = client.post(f"/api/projects/{pid}/annotations", json={"image_id": iid, "label": "a", "rle": square_rle(),
                                                               "score": 0.5})
    assert ok.status_code == 201
    r = client.patch(f"/api/annotations/{ok.json()['id']}", content=b'{"score": ' + literal + b"}",
                     headers={"content-type": "application/json"})
    assert_json_error(r, 422)
    export = client.get(f"/api/projects/{pid}/export", params={"format": "coco"})
    assert export.status_code == 200
    coco = strict_json(export.text)
    assert [a["score"] for a in coco["annotations"]] == [0.5]


def test_rows_stored_before_validation_still_export(client):
    """NaN scores, control characters in labels and paths in file names from an older database."""
    pid, iid = project_with_image(client)
    from anyseg.serve.db import AnnotationRow, ImageRow

    st = client.app.state.anyseg
    with st.db.session() as s:
        s.get(ImageRow, iid).file_name = "..\\..\\windows\\evil.png"
        for label, score in (("cat\ndog", float("nan")), ("cat", float("inf")), ("bird", 0.25)):
            s.add(AnnotationRow(project_id=pid, image_id=iid, label=label, rle=square_rle(), area=400, score=score,
                                meta={"x": float("nan")}))
    coco = strict_json(client.get(f"/api/projects/{pid}/export").text)
    assert coco["images"][0]["file_name"] == "evil.png"
    assert [a.get("score") for a in coco["annotations"]] == [None, None, 0.25]
    assert all(a["metadata"] == {"x": None} for a in coco["annotations"])
    listed = strict_json(client.get(f"/api/projects/{pid}/annotations").text)
    assert [a["score"] for a in listed] == [None, None, 0.25]
    z = zipfile.ZipFile(io.BytesIO(client.get(f"/api/projects/{pid}/export", params={"format": "yolo"}).content))
    classes = z.read("classes.txt").decode().splitlines()
    assert len(classes) == len(coco["categories"]) == 3  # a newline in a label cannot add a class line
    ids = {int(line.split()[0]) for line in z.read(z.namelist()[-1]).decode().splitlines()}
    assert ids <= set(range(3))


def test_unexpected_exception_is_a_json_500_and_the_service_goes_on(tmp_path):
    pred = Stub(fail=True)
    with TestClient(make_app(tmp_path, pred), base_url=BASE) as c:
        iid = upload(c).json()["id"]
        r = c.post(f"/api/images/{iid}/predict", json={"points": [[3, 3]]})
        assert assert_json_error(r, 500) == {"detail": "internal error: RuntimeError"}
        pred.fail = False
        assert c.post(f"/api/images/{iid}/predict", json={"points": [[3, 3]]}).status_code == 200


FUZZ_CASES = 400  # mutated bodies, bounded by count


def _mutations(rng, valid: dict) -> bytes:
    """A hostile variant of a valid JSON body: a value replaced, a key dropped or added, or the bytes cut or flipped."""
    weird = [None, "", "x" * 300, -1, 0, 2**70, -(2**70), 1e308, -1e308, 0.5, True, [], {}, [[[]]], [1e308] * 3,
             {"size": [2**40, 2**40], "counts": "1"}, {"size": [48, 64], "counts": [3073]}, "\u202e", "a\nb",
             [[1, 2]] * 3, {"a": {"b": {"c": [None]}}}, "0123456789abcdef"]
    body = json.loads(json.dumps(valid))
    kind = rng.integers(6)
    keys = list(body)
    if kind == 0 and keys:
        body[keys[rng.integers(len(keys))]] = weird[rng.integers(len(weird))]
    elif kind == 1 and keys:
        del body[keys[rng.integers(len(keys))]]
    elif kind == 2:
        body[f"extra{rng.integers(3)}"] = weird[rng.integers(len(weird))]
    elif kind == 3:
        k = keys[rng.integers(len(keys))] if keys else "x"
        body[k] = [body.get(k)] * int(rng.integers(1, 2000))
    raw = json.dumps(body).encode()
    if kind == 4:
        raw = raw[: int(rng.integers(len(raw)))]
    elif kind == 5:
        b = bytearray(raw)
        for _ in range(int(rng.integers(1, 4))):
            b[int(rng.integers(len(b)))] = int(rng.integers(256))
        raw = bytes(b)
    return raw


def test_fuzzed_bodies_always_get_json_answers_and_never_a_500(client):
    """Mutated predict / annotation / project / text bodies: every answer is JSON, no 5xx, nothing half-written."""
    pid, iid = project_with_image(client)
    aid = client.post(f"/api/projects/{pid}/annotations", json={"image_id": iid, "label": "a", "rle": square_rle()}).json()["id"]
    routes = [
        ("POST", f"/api/images/{iid}/predict", {"points": [[30, 20], [5, 5]], "labels": [1, 0], "box": [1, 1, 40, 40],
                                                 "mask_rle": square_rle(), "multimask": False}),
        ("POST", f"/api/projects/{pid}/annotations", {"image_id": iid, "label": "cat", "rle": square_rle(), "score": 0.5,
                                                      "metadata": {"by": "fuzz"}}),
        ("PATCH", f"/api/annotations/{aid}", {"label": "dog", "rle": square_rle(), "score": 0.1, "metadata": {"k": 1}}),
        ("POST", "/api/projects", {"name": "fuzz"}),
        ("POST", f"/api/images/{iid}/text", {"phrases": ["cat"], "model": "auto", "threshold": 0.3}),
    ]
    rng = np.random.default_rng(13)
    seen: dict[int, int] = {}
    for k in range(FUZZ_CASES):
        method, path, valid = routes[k % len(routes)]
        r = client.request(method, path, content=_mutations(rng, valid), headers={"content-type": "application/json"})
        seen[r.status_code] = seen.get(r.status_code, 0) + 1
        assert r.status_code < 500 or r.status_code == 501, (method, path, r.status_code, r.text[:300])
        body = strict_json(r.text)
        if r.status_code >= 400:
            assert isinstance(body["detail"], str) and "\n" not in body["detail"]
    assert seen.get(422, 0) > FUZZ_CASES // 4 and sum(v for c, v in seen.items() if c < 300) > 10, seen
    coco = strict_json(client.get(f"/api/projects/{pid}/export").text)  # whatever was accepted still exports
    assert all(isinstance(a["area"], int) for a in coco["annotations"])
    for fmt in ("yolo", "png"):
        assert client.get(f"/api/projects/{pid}/export", params={"format": fmt}).status_code == 200


# == class 7 (service side): labels and file names ===================================================
@pytest.mark.parametrize("label", ["cat\ndog", "ca\rt", "a\tb", "nul\x00", "\u202eevil", "  ", "x" * 300])
def test_labels_with_control_characters_are_refused(client, label):
    pid, iid = project_with_image(client)
    r = client.post(f"/api/projects/{pid}/annotations", json={"image_id": iid, "label": label, "rle": square_rle()})
    assert_json_error(r, 422)
    assert_json_error(client.post("/api/projects", json={"name": label}), 422)
    a = client.post(f"/api/projects/{pid}/annotations", json={"image_id": iid, "label": "ok", "rle": square_rle()}).json()
    assert_json_error(client.patch(f"/api/annotations/{a['id']}", json={"label": label}), 422)
    assert [x["label"] for x in client.get(f"/api/projects/{pid}/annotations").json()] == ["ok"]


@pytest.mark.parametrize("name,expected", [("../../../../etc/passwd", "passwd"), ("..\\..\\boot.ini", "boot.ini"),
                                           ("/abs/path/a.png", "a.png"), ("..", "image"), ("C:evil.png", "evil.png")])
def test_file_names_are_exported_as_base_names(client, name, expected):
    iid = upload(client, name=name).json()["id"]
    pid = client.post("/api/projects", json={"name": "../../x"}).json()["id"]
    client.post(f"/api/projects/{pid}/annotations", json={"image_id": iid, "label": "../cat", "rle": square_rle()})
    assert client.get("/api/images").json()[0]["file_name"] == expected
    coco = client.get(f"/api/projects/{pid}/export").json()
    assert coco["images"][0]["file_name"] == expected
    for fmt in ("yolo", "png"):
        r = client.get(f"/api/projects/{pid}/export", params={"format": fmt})
        assert ".." not in r.headers["content-disposition"]
        for entry in zipfile.ZipFile(io.BytesIO(r.content)).namelist():
            assert ".." not in entry and not entry.startswith("/") and "\\" not in entry, entry
    from anyseg.serve.decode import base_name

    assert base_name("dir/a\nb\x00.png") == "a b .png"  # control characters never reach an export
