"""Real-browser test of the ``anyseg serve`` UI (static/index.html + app.js).

Starts the real FastAPI app (tiny random-weight SAM) under uvicorn on a free local port and drives
Debian's chromium through Playwright for Python: upload, click -> predict -> mask drawn, candidate
keys, undo, negative click, save with a label, reload (the annotation comes back from the server),
the COCO export checked with pycocotools, and the JS COCO-RLE codec checked against pycocotools;
and, against a server started with an access token, that the page asks for it once and sends it.

Needs ``/usr/bin/chromium`` (``scripts/install_browser.sh``) and the ``playwright`` package;
skips with the reason otherwise.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest

CHROMIUM = Path("/usr/bin/chromium")

pytest.importorskip("playwright.sync_api", reason="the playwright Python package is not installed")
mask_util = pytest.importorskip("pycocotools.mask", reason="pycocotools is not installed")
uvicorn = pytest.importorskip("uvicorn", reason="uvicorn is not installed")

if not CHROMIUM.exists():
    pytest.skip(f"{CHROMIUM} not found (run scripts/install_browser.sh to install Debian's chromium)",
                allow_module_level=True)

W, H = 320, 240
RECT = (60, 50, 180, 170)  # x0, y0, x1, y1 of the bright square in the test image


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _make_image(path: Path) -> Path:
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(0)
    base = (rng.integers(0, 30, size=(H, W, 3))).astype(np.uint8)  # dark, slightly noisy background
    img = Image.fromarray(base)
    d = ImageDraw.Draw(img)
    d.rectangle(RECT, fill=(240, 220, 40))
    d.ellipse((210, 120, 300, 210), fill=(40, 200, 240))
    img.save(path)
    return path


def _start(app):
    """Run ``app`` under uvicorn on a free 127.0.0.1 port in a thread; (server, thread, base URL)."""
    port = _free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.time() + 60
    while not srv.started:
        if not thread.is_alive():
            pytest.fail("uvicorn exited before it started (see the log above)")
        if time.time() > deadline:
            pytest.fail("uvicorn did not start within 60 s")
        time.sleep(0.05)
    return srv, thread, f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from tiny_models import BUILDERS

    from anyseg.serve import app as app_mod

    tmp = tmp_path_factory.mktemp("serve_browser")
    weights = BUILDERS["sam"](tmp / "tiny-sam")
    app = app_mod.create_app(model="sam-vit-base", weights=str(weights), db_url=f"sqlite:///{tmp}/a.db")
    srv, thread, base = _start(app)
    yield {"base": base, "tmp": tmp}
    srv.should_exit = True
    thread.join(timeout=10)


TOKEN = "browser-test-token-0123456789"


@pytest.fixture(scope="module")
def token_server(tmp_path_factory):
    """The service with an access token (classical engine: no weights)."""
    from anyseg.models import load_model
    from anyseg.serve import app as app_mod

    tmp = tmp_path_factory.mktemp("serve_browser_token")
    app = app_mod.create_app(predictor=load_model("classical"), db_url=f"sqlite:///{tmp}/t.db", token=TOKEN)
    srv, thread, base = _start(app)
    yield {"base": base, "tmp": tmp}
    srv.should_exit = True
    thread.join(timeout=10)


@pytest.fixture
def page(chromium):  # chromium: tests/conftest.py
    ctx = chromium.new_context(viewport={"width": 1280, "height": 900})
    pg = ctx.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.set_default_timeout(30_000)
    yield pg
    ctx.close()
    assert not errors, f"JavaScript errors in the page: {errors}"


def _open(page, url):
    page.goto(url)
    page.wait_for_selector("body[data-ready='1']")


# ------------------------------------------------------------------------------------------------
# JS COCO RLE codec against pycocotools
# ------------------------------------------------------------------------------------------------

def _test_masks() -> list[np.ndarray]:
    rng = np.random.default_rng(1)
    masks = [
        np.zeros((5, 7), np.uint8),
        np.ones((6, 4), np.uint8),
        (rng.random((13, 17)) > 0.5).astype(np.uint8),           # many short runs
        (rng.random((1, 50)) > 0.3).astype(np.uint8),
        (rng.random((50, 1)) > 0.7).astype(np.uint8),
    ]
    big = np.zeros((480, 640), np.uint8)                          # long runs -> multi-char, negative deltas
    big[100:400, 50:600] = 1
    big[200:220, :] = 0
    big[0, 0] = 1
    big[-1, -1] = 1
    masks.append(big)
    tri = np.tri(300, 200, -20, dtype=np.uint8)                   # runs of slowly changing lengths
    masks.append(tri)
    return masks


def test_js_rle_codec_matches_pycocotools(server, page):
    _open(page, server["base"] + "/")
    for m in _test_masks():
        h, w = m.shape
        rle = mask_util.encode(np.asfortranarray(m))
        counts = rle["counts"].decode("ascii")
        got = page.evaluate(
            """([rle, h, w]) => {
                const d = window.anyseg.decodeRLE(rle);
                const enc = window.anyseg.encodeRLE(d.data, h, w);
                return {h: d.height, w: d.width, data: Array.from(d.data), counts: enc.counts, size: enc.size};
            }""",
            [{"size": [h, w], "counts": counts}, h, w],
        )
        assert (got["h"], got["w"]) == (h, w)
        decoded = np.array(got["data"], np.uint8).reshape(h, w)  # row-major from JS
        np.testing.assert_array_equal(decoded, m)
        assert got["counts"] == counts, f"JS encode differs from pycocotools for a {h}x{w} mask"
        assert got["size"] == [h, w]
        # and pycocotools decodes what JS encoded (encoding straight from the row-major data)
        back = mask_util.decode({"size": [h, w], "counts": got["counts"].encode()})
        np.testing.assert_array_equal(back, m)


# ------------------------------------------------------------------------------------------------
# The whole annotate -> save -> reload -> export flow
# ------------------------------------------------------------------------------------------------

def _canvas_point(page, x, y):
    box = page.locator("#canvas").bounding_box()
    return {"x": x * box["width"] / W, "y": y * box["height"] / H}


def _wait_idle(page):
    page.wait_for_function("window.anyseg && window.anyseg.state.busy === 0")


def _overlay_check(page, which: str):
    """Canvas pixels vs the plain image: inside the mask they are the 50% blend, outside unchanged.

    ``which`` is "current" (the chosen candidate) or "saved" (the first saved annotation).
    Pixels near the drawn prompt points / label text are left out.
    """
    return page.evaluate(
        """(which) => {
            const s = window.anyseg.state;
            const cv = document.getElementById('canvas');
            const w = cv.width, h = cv.height;
            const drawn = cv.getContext('2d').getImageData(0, 0, w, h).data;
            const off = document.createElement('canvas'); off.width = w; off.height = h;
            const g = off.getContext('2d'); g.drawImage(s.image, 0, 0, w, h);
            const plain = g.getImageData(0, 0, w, h).data;
            const rle = which === 'current' ? s.candidates[s.chosen].rle : s.annotations[0].rle;
            const m = window.anyseg.decodeRLE(rle).data;
            const near = (x, y) => s.points.some(([px, py]) => Math.hypot(px - x, py - y) < 12)
                                   || (y < 20);  // label text row
            let inside = 0, insideChanged = 0, outside = 0, outsideChanged = 0;
            for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) {
                if (near(x, y)) continue;
                const i = y * w + x, o = 4 * i;
                const diff = Math.abs(drawn[o] - plain[o]) + Math.abs(drawn[o+1] - plain[o+1]) + Math.abs(drawn[o+2] - plain[o+2]);
                const other = which === 'current' && s.annotations.some(a => window.anyseg.decodeRLE(a.rle).data[i]);
                if (m[i]) { inside++; if (diff > 20) insideChanged++; }
                else if (!other) { outside++; if (diff > 20) outsideChanged++; }
            }
            return {inside, insideChanged, outside, outsideChanged};
        }""",
        which,
    )


def test_annotate_save_reload_export(server, page, tmp_path):
    base = server["base"]
    _open(page, base + "/")
    img_path = _make_image(tmp_path / "shapes.png")

    # an upload the server refuses shows the API's detail in the status line
    bad = tmp_path / "notes.txt"
    bad.write_text("not an image")
    with page.expect_response(lambda r: r.url.endswith("/api/images") and r.request.method == "POST") as bad_resp:
        page.set_input_files("#file", str(bad))
    assert bad_resp.value.status >= 400
    detail = bad_resp.value.json().get("detail")
    page.wait_for_selector("#status[data-state='error']")
    if isinstance(detail, str):
        assert detail in page.text_content("#status")

    # upload the image
    with page.expect_response(lambda r: r.url.endswith("/api/images") and r.request.method == "POST") as up:
        page.set_input_files("#file", str(img_path))
    assert up.value.ok, up.value.text()
    info = up.value.json()
    assert (info["width"], info["height"]) == (W, H)
    page.wait_for_function("id => String(window.anyseg.state.imageId) === String(id) && window.anyseg.state.image",
                           arg=info["id"])
    _wait_idle(page)
    state = page.evaluate("({w: window.anyseg.state.width, h: window.anyseg.state.height, p: window.anyseg.state.projectId})")
    assert (state["w"], state["h"]) == (W, H)
    pid = state["p"]
    assert pid is not None  # a "default" project was made

    # left click in the square: positive point, first predict asks for 3 candidates
    cx, cy = (RECT[0] + RECT[2]) // 2, (RECT[1] + RECT[3]) // 2
    with page.expect_response(lambda r: "/predict" in r.url) as pr:
        page.locator("#canvas").click(position=_canvas_point(page, cx, cy))
    assert pr.value.ok, pr.value.text()
    body = pr.value.request.post_data_json
    assert body["labels"] == [1] and body["multimask"] is True and body["mask_rle"] is None
    assert abs(body["points"][0][0] - cx) <= 1 and abs(body["points"][0][1] - cy) <= 1
    n_masks = len(pr.value.json()["masks"])
    page.wait_for_function("n => window.anyseg.state.candidates.length === n", arg=n_masks)
    _wait_idle(page)
    assert page.locator("#candidates button").count() == n_masks >= 1

    # keys 1/2/3 pick a candidate; choose the biggest one so the overlay check has pixels to look at
    areas = page.evaluate("window.anyseg.state.candidates.map(c => c.area ?? window.anyseg.decodeRLE(c.rle).data.reduce((a, b) => a + b, 0))")
    page.locator("#canvas").focus()
    if n_masks >= 2:
        page.keyboard.press("2")
        assert page.evaluate("window.anyseg.state.chosen") == 1
    best = int(np.argmax(areas))
    page.keyboard.press(str(best + 1))
    assert page.evaluate("window.anyseg.state.chosen") == best
    assert page.locator("#candidates button.selected").count() == 1

    chk = _overlay_check(page, "current")
    assert chk["inside"] > 0, f"every candidate mask is empty: {areas}"
    assert chk["insideChanged"] / chk["inside"] > 0.95, chk   # the mask is drawn
    assert chk["outsideChanged"] <= 0.01 * max(1, chk["outside"]), chk  # nothing else is

    # shift-click = negative point; the follow-up predict sends the previous mask
    with page.expect_response(lambda r: "/predict" in r.url) as pr2:
        page.locator("#canvas").click(position=_canvas_point(page, 20, 20), modifiers=["Shift"])
    body2 = pr2.value.request.post_data_json
    assert body2["labels"] == [1, 0] and body2["multimask"] is False
    assert body2["mask_rle"] is not None and body2["mask_rle"]["size"] == [H, W]
    _wait_idle(page)
    # right click is negative too
    with page.expect_response(lambda r: "/predict" in r.url) as pr3:
        page.locator("#canvas").click(position=_canvas_point(page, 300, 20), button="right")
    assert pr3.value.request.post_data_json["labels"] == [1, 0, 0]
    _wait_idle(page)

    # z undoes the last click, Ctrl+Z the one before: back to the single-click state and candidates
    page.locator("#canvas").focus()
    page.keyboard.press("z")
    assert page.evaluate("window.anyseg.state.labels") == [1, 0]
    page.keyboard.press("Control+z")
    assert page.evaluate("window.anyseg.state.labels") == [1]
    assert page.evaluate("window.anyseg.state.candidates.length") == n_masks
    page.keyboard.press(str(best + 1))

    # Escape clears; then drag a box around the square
    page.keyboard.press("Escape")
    assert page.evaluate("window.anyseg.state.points.length + window.anyseg.state.candidates.length") == 0
    p0, p1 = _canvas_point(page, RECT[0] - 5, RECT[1] - 5), _canvas_point(page, RECT[2] + 5, RECT[3] + 5)
    cb = page.locator("#canvas").bounding_box()
    with page.expect_response(lambda r: "/predict" in r.url) as pr4:
        page.mouse.move(cb["x"] + p0["x"], cb["y"] + p0["y"])
        page.mouse.down()
        page.mouse.move(cb["x"] + (p0["x"] + p1["x"]) / 2, cb["y"] + (p0["y"] + p1["y"]) / 2, steps=4)
        page.mouse.move(cb["x"] + p1["x"], cb["y"] + p1["y"], steps=4)
        page.mouse.up()
    box = pr4.value.request.post_data_json["box"]
    assert box is not None and all(abs(a - b) <= 3 for a, b in zip(box, [RECT[0] - 5, RECT[1] - 5, RECT[2] + 5, RECT[3] + 5])), box
    _wait_idle(page)
    # add a positive click in the square too, then choose the biggest candidate available
    with page.expect_response(lambda r: "/predict" in r.url):
        page.locator("#canvas").click(position=_canvas_point(page, cx, cy))
    _wait_idle(page)
    page.wait_for_function("window.anyseg.state.candidates.length > 0")

    # label + Save
    page.fill("#label", "yellow square")
    with page.expect_response(lambda r: r.url.endswith(f"/api/projects/{pid}/annotations")
                              and r.request.method == "POST") as sv:
        page.click("#save")
    assert sv.value.ok, sv.value.text()
    saved = sv.value.json()
    sent_rle = sv.value.request.post_data_json["rle"]
    page.wait_for_selector("#objects li")
    assert page.locator("#objects li").count() == 1
    assert page.locator("#objects li .obj-label").input_value() == "yellow square"
    assert page.evaluate("window.anyseg.state.candidates.length") == 0  # prompts reset after save

    # the URL remembers image + project; a reload brings the annotation back from the server
    assert f"image={info['id']}" in page.url and f"project={pid}" in page.url
    page.reload()
    page.wait_for_selector("body[data-ready='1']")
    page.wait_for_selector("#objects li")
    assert page.locator("#objects li").count() == 1
    assert page.locator("#objects li .obj-label").input_value() == "yellow square"
    reloaded = page.evaluate("window.anyseg.state.annotations.map(a => ({id: a.id, label: a.label, rle: a.rle}))")
    assert len(reloaded) == 1 and str(reloaded[0]["id"]) == str(saved["id"])
    saved_mask = mask_util.decode({"size": reloaded[0]["rle"]["size"],
                                   "counts": reloaded[0]["rle"]["counts"].encode()})
    sent_mask = mask_util.decode({"size": sent_rle["size"], "counts": sent_rle["counts"].encode()})
    np.testing.assert_array_equal(saved_mask, sent_mask)
    chk = _overlay_check(page, "saved")
    assert chk["inside"] > 0, "the saved mask is empty"
    assert chk["insideChanged"] / chk["inside"] > 0.95, chk   # the saved annotation is drawn
    assert chk["outsideChanged"] <= 0.01 * max(1, chk["outside"]), chk

    # a plain visit (no query) reopens what localStorage remembers
    _open(page, base + "/")
    page.wait_for_selector("#objects li")
    assert page.evaluate("String(window.anyseg.state.imageId)") == str(info["id"])

    # export links point at the project; COCO export is valid and matches the saved mask
    href = page.get_attribute("#export-coco", "href")
    assert href.endswith(f"/api/projects/{pid}/export?format=coco")
    for fmt in ("yolo", "png"):
        assert page.get_attribute(f"#export-{fmt}", "href").endswith(f"format={fmt}")
    resp = page.request.get(base + href)
    assert resp.ok, resp.text()
    coco_path = tmp_path / "coco.json"
    coco_path.write_bytes(resp.body())
    from pycocotools.coco import COCO

    coco = COCO(str(coco_path))
    anns = coco.loadAnns(coco.getAnnIds())
    assert len(anns) == 1
    assert anns[0]["category_id"] in coco.cats and coco.cats[anns[0]["category_id"]]["name"] == "yellow square"
    np.testing.assert_array_equal(coco.annToMask(anns[0]), saved_mask)
    img_entry = coco.loadImgs(anns[0]["image_id"])[0]
    assert (img_entry["width"], img_entry["height"]) == (W, H)

    # the `e` key triggers the COCO download
    page.locator("#canvas").focus()
    with page.expect_download() as dl:
        page.keyboard.press("e")
    dl_path = tmp_path / "dl.json"
    dl.value.save_as(dl_path)
    assert json.loads(dl_path.read_text())["annotations"]

    # delete from the object list
    with page.expect_response(lambda r: "/api/annotations/" in r.url and r.request.method == "DELETE") as dr:
        page.click("#objects li button.delete")
    assert dr.value.ok
    page.wait_for_function("document.querySelectorAll('#objects li').length === 0")


def test_drop_image_on_canvas(server, page, tmp_path):
    """Drag-and-drop upload: a `drop` carrying an image file opens it."""
    _open(page, server["base"] + "/")
    data = list(_make_image(tmp_path / "dropped.png").read_bytes())
    dt = page.evaluate_handle(
        """(bytes) => {
            const dt = new DataTransfer();
            dt.items.add(new File([new Uint8Array(bytes)], 'dropped.png', {type: 'image/png'}));
            return dt;
        }""",
        data,
    )
    with page.expect_response(lambda r: r.url.endswith("/api/images") and r.request.method == "POST") as up:
        page.dispatch_event("#dropzone", "drop", {"dataTransfer": dt})
    assert up.value.ok, up.value.text()
    page.wait_for_function("id => String(window.anyseg.state.imageId) === String(id) && window.anyseg.state.image",
                           arg=up.value.json()["id"])
    assert page.evaluate("[window.anyseg.state.width, window.anyseg.state.height]") == [W, H]
    assert "empty" not in (page.get_attribute("#dropzone", "class") or "")


def test_token_is_asked_once_and_sent(token_server, page, tmp_path):
    """A server with --token: the page asks once (on the first 401), then uploads, shows and exports with it."""
    asked = []

    def answer(dialog):
        asked.append(dialog.message)
        dialog.accept(TOKEN)

    page.on("dialog", answer)
    _open(page, token_server["base"] + "/")
    page.wait_for_function("window.anyseg.state.projectId !== null")
    assert len(asked) == 1 and "token" in asked[0]
    with page.expect_response(lambda r: r.url.endswith("/api/images") and r.request.method == "POST") as up:
        page.set_input_files("#file", str(_make_image(tmp_path / "tok.png")))
    assert up.value.ok, up.value.text()
    assert up.value.request.headers.get("authorization") == f"Bearer {TOKEN}"
    page.wait_for_function("window.anyseg.state.image && window.anyseg.state.width === %d" % W)
    with page.expect_download() as dl:
        page.click("#export-coco")
    path = tmp_path / "tok_coco.json"
    dl.value.save_as(path)
    assert json.loads(path.read_text())["categories"] == []
    page.reload()
    page.wait_for_selector("body[data-ready='1']")
    page.wait_for_function("window.anyseg.state.image !== null")
    assert len(asked) == 1  # kept for the tab: not asked again
