"""Issue 13, class 3: every image mode decodes faithfully or fails with one line; no decoder chatter.

Files that make native decoders fail (truncated, corrupt, bombs) are decoded in a child process
with a memory limit, so that a native crash fails the test instead of killing pytest.
"""

from __future__ import annotations

import io
import json
import struct
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image, ImageOps, PngImagePlugin

from anyseg.errors import InputError
from anyseg.io.images import (
    ImageTooLarge,
    UnsupportedImage,
    decode_image_bytes,
    load_image,
    load_mask,
    to_rgb8,
)

CHILD_MEMORY = 2 << 30  # bytes of address space for a child decoding hostile files
CHILD_TIMEOUT = 120  # seconds; a safety net against hangs, never the thing measured


def _limit_memory() -> None:
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (CHILD_MEMORY, CHILD_MEMORY))


def run_child(script: str, *args: str) -> subprocess.CompletedProcess:
    """Run ``script`` in a fresh Python with a 2 GB address-space limit; stdout/stderr captured."""
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script), *args], capture_output=True, text=True,
        timeout=CHILD_TIMEOUT, preexec_fn=_limit_memory,
    )


#: A child that decodes each file with load_image and decode_image_bytes; one JSON line per case.
DECODE_CHILD = """
    import json, sys
    from anyseg.errors import InputError
    from anyseg.io.images import decode_image_bytes, load_image
    out = []
    for path in sys.argv[1:]:
        for via in ("file", "bytes"):
            try:
                if via == "file":
                    arr = load_image(path, max_pixels=4_000_000)
                else:
                    with open(path, "rb") as f:
                        arr, _ = decode_image_bytes(f.read(), max_pixels=4_000_000, name=path)
                out.append([path, via, "ok", list(arr.shape)])
            except InputError as e:
                out.append([path, via, type(e).__name__, str(e)])
    print(json.dumps(out))
"""


def decode_in_child(*paths: Path) -> tuple[list[list], str]:
    """``[[path, via, outcome, shape-or-message], ...]`` and the child's stderr; fails on a crash."""
    proc = run_child(DECODE_CHILD, *map(str, paths))
    assert proc.returncode == 0, f"child crashed (rc {proc.returncode}): {proc.stderr[-2000:]}"
    return json.loads(proc.stdout), proc.stderr


def _png_bytes(im: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="PNG", **kw)
    return buf.getvalue()


GRADIENT16 = np.tile(np.linspace(0, 65535, 256).round().astype(np.uint16), (4, 1))
EXPECTED8 = np.tile(((np.linspace(0, 65535, 256).round().astype(np.uint32) + 128) // 257).astype(np.uint8), (4, 1))


# -- 16-bit, 32-bit and float images are scaled, not clipped ---------------------------------------------
def test_16bit_gray_png_is_scaled_not_white(tmp_path):
    path = tmp_path / "g16.png"
    Image.fromarray(GRADIENT16).save(path)
    assert Image.open(path).mode == "I;16"  # what Pillow reports for a 16-bit grey PNG
    arr = load_image(path)
    assert arr.shape == (4, 256, 3) and arr.dtype == np.uint8
    assert np.array_equal(arr[..., 0], EXPECTED8) and np.array_equal(arr[..., 0], arr[..., 2])
    row = arr[0, :, 0].astype(int)
    assert row[0] == 0 and row[-1] == 255 and np.all(np.diff(row) >= 0) and len(np.unique(row)) > 200
    assert np.array_equal(decode_image_bytes(path.read_bytes())[0], arr)


@pytest.mark.parametrize("mode", ["I;16", "I;16B"])
def test_16bit_tiff_is_scaled(tmp_path, mode):
    path = tmp_path / "g16.tif"
    data = GRADIENT16.astype(">u2" if mode == "I;16B" else "<u2").tobytes()
    Image.frombytes(mode, (256, 4), data).save(path)
    assert Image.open(path).mode == mode
    assert np.array_equal(load_image(path)[..., 1], EXPECTED8)


def test_32bit_int_tiff(tmp_path):
    Image.fromarray(GRADIENT16.astype(np.int32)).save(tmp_path / "i16.tif")  # 16-bit data in mode I
    assert Image.open(tmp_path / "i16.tif").mode == "I"
    assert np.array_equal(load_image(tmp_path / "i16.tif")[..., 0], EXPECTED8)
    wide = np.tile(np.linspace(-70000, 70000, 256).round().astype(np.int32), (4, 1))
    Image.fromarray(wide).save(tmp_path / "wide.tif")  # any other range: stretched min..max
    row = load_image(tmp_path / "wide.tif")[0, :, 0].astype(int)
    assert row[0] == 0 and row[-1] == 255 and np.all(np.diff(row) >= 0) and abs(row[128] - 128) <= 1


def test_float_tiff(tmp_path):
    unit = np.tile(np.linspace(0, 1, 256, dtype=np.float32), (4, 1))
    Image.fromarray(unit).save(tmp_path / "unit.tif")
    assert Image.open(tmp_path / "unit.tif").mode == "F"
    assert np.array_equal(load_image(tmp_path / "unit.tif")[0, :, 0], np.arange(256))
    wide = unit * 2000 - 1000
    wide[1, 3], wide[2, 5], wide[3, 7] = np.nan, np.inf, -np.inf
    Image.fromarray(wide).save(tmp_path / "wide.tif")
    arr = load_image(tmp_path / "wide.tif")[..., 0]
    assert arr[0, 0] == 0 and arr[0, -1] == 255 and np.all(np.diff(arr[0].astype(int)) >= 0)
    assert arr[1, 3] == 0 and arr[2, 5] == 0 and arr[3, 7] == 0  # NaN and infinities -> 0


# -- alpha, palettes, colour spaces ------------------------------------------------------------------------
def test_alpha_is_composited_on_black(tmp_path):
    rgba = np.zeros((2, 3, 4), np.uint8)
    rgba[0] = [[200, 100, 50, 255], [200, 100, 50, 128], [200, 100, 50, 0]]
    rgba[1] = [[9, 9, 9, 0]] * 3
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    arr = load_image(tmp_path / "rgba.png")
    assert arr[0].tolist() == [[200, 100, 50], [100, 50, 25], [0, 0, 0]] and not arr[1].any()
    la = np.stack([np.full((2, 2), 200, np.uint8), np.array([[255, 128], [0, 255]], np.uint8)], axis=2)
    Image.fromarray(la, mode="LA").save(tmp_path / "la.png")
    assert load_image(tmp_path / "la.png")[..., 0].tolist() == [[200, 100], [0, 200]]


def test_palette_with_transparency(tmp_path):
    im = Image.fromarray(np.array([[0, 1], [1, 0]], np.uint8), mode="P")
    im.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    im.save(tmp_path / "p.png", transparency=1)  # index 1 (green) is transparent
    assert Image.open(tmp_path / "p.png").info.get("transparency") == 1
    arr = load_image(tmp_path / "p.png")
    assert arr[0, 0].tolist() == [255, 0, 0] and arr[0, 1].tolist() == [0, 0, 0]
    im.save(tmp_path / "t.gif", transparency=1)
    assert load_image(tmp_path / "t.gif")[1, 0].tolist() == [0, 0, 0]


def test_cmyk_jpeg_and_tiff(tmp_path):
    cmyk = np.zeros((16, 32, 4), np.uint8)
    cmyk[:, 16:, 0] = 255  # right half: full cyan
    Image.fromarray(cmyk, mode="CMYK").save(tmp_path / "c.jpg", quality=95)
    Image.fromarray(cmyk, mode="CMYK").save(tmp_path / "c.tif")
    assert Image.open(tmp_path / "c.jpg").mode == "CMYK"
    tif = load_image(tmp_path / "c.tif")
    assert tif[0, 0].tolist() == [255, 255, 255] and tif[0, -1].tolist() == [0, 255, 255]
    jpg = load_image(tmp_path / "c.jpg").astype(int)
    assert np.abs(jpg[8, 2] - [255, 255, 255]).max() <= 8 and np.abs(jpg[8, -3] - [0, 255, 255]).max() <= 8


def test_one_bit_lab_and_multiframe(tmp_path):
    bits = np.array([[0, 1, 1], [1, 0, 0]], bool)
    Image.fromarray(bits).save(tmp_path / "b.png")
    assert load_image(tmp_path / "b.png")[..., 0].tolist() == [[0, 255, 255], [255, 0, 0]]
    rgb = np.random.default_rng(0).integers(0, 256, (6, 5, 3), dtype=np.uint8)
    Image.fromarray(rgb).convert("LAB").save(tmp_path / "lab.tif")
    assert Image.open(tmp_path / "lab.tif").mode == "LAB"
    assert np.abs(load_image(tmp_path / "lab.tif").astype(int) - rgb).max() <= 32  # 8-bit Lab quantisation
    frames = [Image.new("RGB", (8, 6), c) for c in ("red", "blue", "lime")]
    frames[0].save(tmp_path / "a.gif", save_all=True, append_images=frames[1:])
    frames[0].save(tmp_path / "m.tif", save_all=True, append_images=frames[1:])
    for name in ("a.gif", "m.tif"):
        assert Image.open(tmp_path / name).n_frames == 3
        arr = load_image(tmp_path / name)
        assert arr.shape == (6, 8, 3) and arr[0, 0].tolist() == [255, 0, 0], name  # the first frame


def test_every_pillow_mode_converts():
    """Every mode Pillow knows becomes (H, W, 3) uint8 (none needs the 'unsupported mode' error)."""
    modes = list(Image.MODES)
    assert len(modes) >= 19
    src = Image.fromarray(np.random.default_rng(1).integers(0, 256, (3, 4, 3), dtype=np.uint8))
    for mode in modes:
        try:
            im = src.convert(mode)
        except ValueError:
            im = Image.new(mode, (4, 3))
        arr = to_rgb8(im, "x")
        assert arr.shape == (3, 4, 3) and arr.dtype == np.uint8, mode
    for mode in ("YCbCr", "HSV", "CMYK", "RGBX", "P"):
        assert np.array_equal(to_rgb8(src.convert(mode)), np.asarray(src.convert(mode).convert("RGB"))), mode
    rgba = np.array([[[200, 100, 50, 128]]], np.uint8)
    assert to_rgb8(Image.fromarray(rgba).convert("RGBa")).tolist() == [[[100, 50, 25]]]


def test_unknown_mode_is_one_line_error_naming_it():
    fake = SimpleNamespace(mode="BGR;24", size=(2, 2), info={})
    with pytest.raises(InputError, match=r"mode 'BGR;24'.*expected one of") as e:
        to_rgb8(fake, "odd.bmp")
    assert "\n" not in str(e.value) and "odd.bmp" in str(e.value)


# -- EXIF orientation ------------------------------------------------------------------------------------
@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_matches_pillow(tmp_path, orientation):
    rgb = np.random.default_rng(orientation).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / "o.png"
    Image.fromarray(rgb).save(path, exif=exif.tobytes())
    want = np.asarray(ImageOps.exif_transpose(Image.open(path)).convert("RGB"))
    assert np.array_equal(load_image(path), want)
    assert (load_image(path).shape[:2] == (7, 5)) == (orientation >= 5)


def test_malformed_exif_is_ignored_not_a_crash(tmp_path):
    rgb = np.full((6, 4, 3), 77, np.uint8)
    cases = {"junk": b"Exif\x00\x00" + b"\xff" * 40, "short": b"Exif\x00\x00II*\x00\xff\xff\xff\x7f",
             "badtype": b"Exif\x00\x00II*\x00\x08\x00\x00\x00\x01\x00\x12\x01\x02\x00\x04\x00\x00\x00abc\x00"}
    for name, exif in cases.items():
        Image.fromarray(rgb).save(tmp_path / f"{name}.jpg", exif=exif, quality=95)
    results, err = decode_in_child(*(tmp_path / f"{n}.jpg" for n in cases))
    assert err == ""
    assert [r[2:] for r in results] == [["ok", [6, 4, 3]]] * 2 * len(cases)


# -- metadata bombs --------------------------------------------------------------------------------------
def _metadata_bombs(tmp_path: Path) -> list[Path]:
    over = PngImagePlugin.MAX_TEXT_CHUNK + 1024
    info = PngImagePlugin.PngInfo()
    info.add_text("comment", "a" * over, zip=True)  # a zTXt chunk
    (tmp_path / "ztxt.png").write_bytes(_png_bytes(Image.new("RGB", (4, 4)), pnginfo=info))
    info = PngImagePlugin.PngInfo()
    info.add_itxt("comment", "b" * over, zip=True)  # a compressed iTXt chunk
    (tmp_path / "itxt.png").write_bytes(_png_bytes(Image.new("RGB", (4, 4)), pnginfo=info))
    (tmp_path / "iccp.png").write_bytes(_png_bytes(Image.new("RGB", (4, 4)), icc_profile=b"\0" * over))
    return [tmp_path / n for n in ("ztxt.png", "itxt.png", "iccp.png")]


def test_metadata_bombs_are_one_line_errors(tmp_path):
    paths = _metadata_bombs(tmp_path)
    assert all(p.stat().st_size < 20_000 for p in paths)  # small files that expand past the limit
    results, err = decode_in_child(*paths)
    assert err == "" and len(results) == 6
    for path, via, outcome, message in results:
        assert outcome == "ImageTooLarge", (path, via, message)
        assert "metadata" in message and "too large" in message and path in message and "\n" not in message


def test_total_text_memory_bomb(tmp_path, monkeypatch):
    info = PngImagePlugin.PngInfo()
    for i in range(4):
        info.add_text(f"k{i}", "x" * 3000)
    data = _png_bytes(Image.new("RGB", (4, 4)), pnginfo=info)
    monkeypatch.setattr(PngImagePlugin, "MAX_TEXT_MEMORY", 8000)
    with pytest.raises(ImageTooLarge, match="metadata"):
        decode_image_bytes(data)


# -- pixel bombs: refused from the header ----------------------------------------------------------------
def _bomb_png(width: int, height: int) -> bytes:
    """A PNG signature + IHDR claiming ``width x height`` and a tiny IDAT."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


BOMB_CHILD = """
    import sys
    from anyseg.errors import InputError
    from anyseg.io.images import decode_image_bytes, load_image, load_mask
    path = sys.argv[1]
    calls = [lambda: load_image(path), lambda: load_image(path, max_pixels=10**10),
             lambda: decode_image_bytes(open(path, "rb").read(), max_pixels=10**10),
             lambda: load_mask(path, size=(10, 10), max_pixels=10**10), lambda: load_mask(path)]
    for call in calls:
        try:
            call()
            print("ok")
        except InputError as e:
            print(type(e).__name__, e)
"""


def test_pixel_bomb_refused_before_decoding(tmp_path):
    path = tmp_path / "bomb.png"
    path.write_bytes(_bomb_png(60000, 60000))  # 3.6 gigapixels, 10.8 GB of RGB: over the child's 2 GB
    proc = run_child(BOMB_CHILD, str(path))
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("ImageTooLarge") and "60000x60000" in lines[0] and "--max-pixels" in lines[0]
    # with the limit raised past what the process may allocate: a one-line error, not a crash
    assert all(line.startswith("ImageTooLarge") and "more memory" in line for line in lines[1:3]), lines
    assert lines[3] == f"InputError mask {path} is 60000x60000 but the image is 10x10"
    assert lines[4].startswith("ImageTooLarge")


def test_nested_image_over_the_limit(tmp_path):
    """An ICO whose directory says 16x16 but whose embedded PNG is 300x300."""
    png = _png_bytes(Image.new("RGB", (300, 300), "red"))
    ico = struct.pack("<HHH", 0, 1, 1) + struct.pack("<BBBBHHII", 16, 16, 0, 0, 1, 32, len(png), 22) + png
    with pytest.raises(ImageTooLarge, match="300x300"):
        decode_image_bytes(ico, max_pixels=10_000)
    assert decode_image_bytes(ico, max_pixels=100_000)[0].shape == (300, 300, 3)


# -- corrupt files: one line via both readers, no stderr chatter ----------------------------------------
def _corrupt_lzw_tiff() -> bytes:
    """An LZW TIFF whose strip is garbled: libtiff prints 'Using code not yet in table' to stderr."""
    rgb = (np.arange(64 * 64 * 3) % 251).astype(np.uint8).reshape(64, 64, 3)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="TIFF", compression="tiff_lzw")
    data = bytearray(buf.getvalue())
    tags = Image.open(io.BytesIO(bytes(data))).tag_v2
    middle = tags[273][0] + tags[279][0] // 2  # StripOffsets + StripByteCounts / 2
    data[middle:middle + 8] = b"\xff\xfe\xfd\xfc\xfb\xfa\xf9\xf8"
    return bytes(data)


def test_libtiff_chatter_never_reaches_stderr(tmp_path):
    path = tmp_path / "lzw.tif"
    path.write_bytes(_corrupt_lzw_tiff())
    control = run_child("import sys; from PIL import Image\ntry: Image.open(sys.argv[1]).load()\nexcept OSError: pass",
                        str(path))
    assert "Using code not yet in table" in control.stderr  # plain Pillow does write to stderr
    results, err = decode_in_child(path)
    assert err == ""
    for _, via, outcome, message in results:
        assert outcome == "InputError" and "corrupt or truncated" in message, (via, message)
        assert "Using code not yet in table" in message  # the decoder's words, kept in the one line


def test_truncated_files_via_both_readers(tmp_path):
    rgb = np.random.default_rng(3).integers(0, 256, (40, 50, 3), dtype=np.uint8)
    paths = []
    for ext in ("bmp", "png", "jpg", "gif", "webp", "tif"):
        full = tmp_path / f"full.{ext}"
        Image.fromarray(rgb).save(full)
        data = full.read_bytes()
        for cut in (len(data) // 2, len(data) - 20):
            paths.append(tmp_path / f"cut{cut}.{ext}")
            paths[-1].write_bytes(data[:cut])
    results, err = decode_in_child(*paths)
    assert err == "" and len(results) == 2 * len(paths)
    for path, via, outcome, message in results:
        assert outcome == "InputError" and "corrupt or truncated" in message and path in message, (path, via)


def test_declared_lengths_never_allocate_more_than_the_file(tmp_path):
    """A 42-byte GIMP brush whose header declares a 4 GB comment: read from a file, not allocated."""
    path = tmp_path / "huge-comment.gbr"
    path.write_bytes(struct.pack(">IIIII", 0xFFFFFFF0, 1, 4, 4, 1) + b"hello\0" + bytes(16))
    results, err = decode_in_child(path)  # the child may not allocate 4 GB: a MemoryError would show here
    assert err == ""
    assert [r[2] for r in results] == ["InputError", "InputError"], results
    assert all("corrupt or truncated" in r[3] for r in results)


def test_not_an_image_and_format_filter(tmp_path):
    bmp = io.BytesIO()
    Image.new("RGB", (4, 4)).save(bmp, format="BMP")
    with pytest.raises(UnsupportedImage, match="not an image"):
        decode_image_bytes(bmp.getvalue(), formats=("PNG", "JPEG"))
    assert decode_image_bytes(bmp.getvalue(), formats=("PNG", "BMP"))[1] == "BMP"
    with pytest.raises(UnsupportedImage):
        decode_image_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n")  # EPS would run Ghostscript
    with pytest.raises(UnsupportedImage, match="empty"):
        decode_image_bytes(b"")
    with pytest.raises(InputError, match="expected image bytes"):
        decode_image_bytes("a string")
    with pytest.raises(InputError, match="formats must name"):
        decode_image_bytes(bmp.getvalue(), formats=("NOPE",))
    with pytest.raises(ImageTooLarge, match="over the limit"):
        decode_image_bytes(bmp.getvalue(), max_pixels=15)
    mpo = io.BytesIO()
    Image.new("RGB", (8, 8)).save(mpo, format="MPO", save_all=True, append_images=[Image.new("RGB", (8, 8))])
    assert decode_image_bytes(mpo.getvalue(), formats=("JPEG",))[1] == "JPEG"  # a multi-picture JPEG


def test_cli_prints_exactly_one_line_for_a_corrupt_tiff(tmp_path):
    path = tmp_path / "lzw.tif"
    path.write_bytes(_corrupt_lzw_tiff())
    proc = run_child("import sys; from anyseg.cli import main; sys.exit(main(sys.argv[1:]))", "segment", str(path),
                     "--box", "1,1,5,5", "--model", "classical", "--out", str(tmp_path / "out"))
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("anyseg: error: corrupt or truncated image")


# -- masks -----------------------------------------------------------------------------------------------
def test_masks_of_every_depth(tmp_path):
    fg = np.array([[0, 1], [1, 1]], bool)
    Image.fromarray(np.where(fg, 40000, 30000).astype(np.uint16)).save(tmp_path / "m16.png")
    assert np.array_equal(load_mask(tmp_path / "m16.png"), fg)  # 16-bit: > 32767
    la = np.stack([np.where(fg, 255, 0), np.where(fg, 0, 255)], axis=2).astype(np.uint8)
    Image.fromarray(la, mode="LA").save(tmp_path / "la.png")
    assert np.array_equal(load_mask(tmp_path / "la.png"), fg)  # LA: the L channel, alpha ignored
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[..., 0] = np.where(fg, 255, 0)  # pure red: a channel over 127 (its luma is only 76)
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    assert np.array_equal(load_mask(tmp_path / "rgba.png", size=(2, 2)), fg)
    Image.fromarray(np.where(fg, 0.9, 0.1).astype(np.float32)).save(tmp_path / "f.tif")
    assert np.array_equal(load_mask(tmp_path / "f.tif"), fg)
    Image.fromarray(fg).save(tmp_path / "b.png")
    assert np.array_equal(load_mask(tmp_path / "b.png"), fg)


def test_label_image_mask_is_refused_not_read_as_empty(tmp_path):
    Image.fromarray(np.array([[0, 1], [1, 1]], np.uint8)).save(tmp_path / "labels.png")
    with pytest.raises(InputError, match="none above 127") as e:
        load_mask(tmp_path / "labels.png")
    assert "\n" not in str(e.value)
    Image.fromarray(np.zeros((3, 3), np.uint8)).save(tmp_path / "empty.png")
    assert not load_mask(tmp_path / "empty.png").any()  # an all-zero mask is a valid (empty) mask


def test_mask_size_mismatch_from_header(tmp_path):
    Image.fromarray(np.zeros((10, 12), np.uint8)).save(tmp_path / "m.png")
    with pytest.raises(InputError, match=r"is 12x10 but the image is 40x30"):
        load_mask(tmp_path / "m.png", size=(30, 40))


THREADS_CHILD = """
    import os, sys, threading
    import numpy as np
    from anyseg.errors import InputError
    from anyseg.io.images import decode_image_bytes, load_image
    good, bad = sys.argv[1], open(sys.argv[2], "rb").read()
    want = load_image(good)
    outcomes = []

    def work():
        for _ in range(10):
            outcomes.append(np.array_equal(decode_image_bytes(open(good, "rb").read())[0], want))
            try:
                decode_image_bytes(bad)
                outcomes.append(False)
            except InputError as e:
                outcomes.append("Using code not yet in table" in str(e))

    threads = [threading.Thread(target=work) for _ in range(4)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    print(len(outcomes), all(outcomes))
    os.write(2, b"stderr is back\\n")
"""


def test_concurrent_decoding_keeps_results_and_restores_stderr(tmp_path):
    good, bad = tmp_path / "good.png", tmp_path / "bad.tif"
    Image.fromarray(np.random.default_rng(5).integers(0, 256, (30, 20, 3), dtype=np.uint8)).save(good)
    bad.write_bytes(_corrupt_lzw_tiff())
    proc = run_child(THREADS_CHILD, str(good), str(bad))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["80", "True"]
    assert proc.stderr == "stderr is back\n"  # file descriptor 2 restored; no decoder chatter
