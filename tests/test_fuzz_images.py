"""Issue 13, class 3: a decoder fuzz test.

A few hundred deterministic mutations (bit flips, byte overwrites, truncations, insertions and
format-aware edits of PNG chunks, GIF/BMP/JPEG/TIFF/WebP header fields) of small valid JPEG, PNG,
WebP, GIF, TIFF and BMP files are decoded by ``load_image`` (from a file) and
``decode_image_bytes`` (from bytes) in ONE child process with a 2 GB address-space limit, so a
native crash fails the test instead of killing pytest. The child must exit cleanly, write nothing
to stderr, and every case must either decode to a valid ``(H, W, 3)`` uint8 image (the same from
both readers) or raise the project's :class:`InputError`.

Run ``python tests/test_fuzz_images.py OUT_DIR [CASES_PER_FORMAT]`` to get the counts by hand.
"""

from __future__ import annotations

import contextlib
import io
import json
import random
import struct
import subprocess
import sys
import zlib
from collections import Counter
from pathlib import Path

import numpy as np

CASES_PER_FORMAT = 100  # x 6 formats = 600 cases, each decoded twice
MAX_PIXELS = 2_000_000
SERVICE_FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "TIFF", "GIF")
CHILD_MEMORY = 2 << 30
CHILD_TIMEOUT = 600  # seconds; a safety net against hangs, never the thing measured
INTERESTING = (0, 1, 2, 0x7F, 0x80, 0xFF, 0x100, 0x7FFF, 0xFFFF, 3000, 60000, 0x7FFFFFFF, 0xFFFFFFFF)


# -- valid seeds -------------------------------------------------------------------------------------------
def base_files() -> dict[str, list[bytes]]:
    """Small valid files per format (a few encodings each), the same on every run."""
    from PIL import Image

    rng = np.random.default_rng(13)
    rgb = Image.fromarray(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8))
    smooth = Image.fromarray(np.add.outer(np.arange(12), np.arange(16)).astype(np.uint8) * 8).convert("RGB")
    variants = {
        "JPEG": [dict(quality=90), dict(quality=75, progressive=True), dict(quality=80, subsampling=0)],
        "PNG": [dict(), dict(optimize=True), dict(bits=4)],
        "WEBP": [dict(quality=80), dict(lossless=True)],
        "GIF": [dict(), dict(interlace=False)],
        "TIFF": [dict(), dict(compression="tiff_lzw"), dict(compression="tiff_deflate"), dict(compression="packbits")],
        "BMP": [dict()],
    }
    out: dict[str, list[bytes]] = {}
    for fmt, kws in variants.items():
        out[fmt] = []
        for i, kw in enumerate(kws):
            im = (rgb if i % 2 == 0 else smooth)
            if fmt == "PNG" and "bits" in kw:
                im = im.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
            buf = io.BytesIO()
            im.save(buf, format=fmt, **kw)
            out[fmt].append(buf.getvalue())
    return out


# -- mutations -----------------------------------------------------------------------------------------------
def _value(rng: random.Random) -> int:
    return rng.choice(INTERESTING) if rng.random() < 0.7 else rng.randrange(1 << 32)


def bit_flips(d: bytearray, rng: random.Random) -> None:
    for _ in range(rng.randint(1, 8)):
        p = rng.randrange(len(d))
        d[p] ^= 1 << rng.randrange(8)


def overwrite(d: bytearray, rng: random.Random) -> None:
    for _ in range(rng.randint(1, 4)):
        p = rng.randrange(min(len(d), 64) if rng.random() < 0.5 else len(d))
        d[p] = rng.choice((0, 0xFF, 0x7F, 0x80, rng.randrange(256)))


def truncate(d: bytearray, rng: random.Random) -> None:
    del d[rng.randrange(1, len(d)):]


def splice(d: bytearray, rng: random.Random) -> None:
    """Insert random bytes, delete a range, or repeat a range."""
    p = rng.randrange(len(d))
    n = rng.randint(1, 64)
    kind = rng.randrange(3)
    if kind == 0:
        d[p:p] = bytes(rng.randrange(256) for _ in range(n))
    elif kind == 1:
        del d[p:p + n]
    else:
        d[p:p] = d[p:p + n] * rng.randint(2, 50)


def _png_chunks(d: bytes) -> list[tuple[int, bytes, int]]:
    """``(offset, type, length)`` of each chunk of a valid PNG."""
    out, p = [], 8
    while p + 8 <= len(d):
        length, kind = struct.unpack(">I4s", d[p:p + 8])
        out.append((p, kind, length))
        p += 12 + length
    return out


def png_edit(d: bytearray, rng: random.Random) -> None:
    """IHDR fields (CRC fixed, so the decoder sees them), chunk lengths, CRCs, types, drops, copies."""
    chunks = _png_chunks(bytes(d))
    p, kind, length = rng.choice(chunks)
    op = rng.randrange(6)
    if op == 0:  # IHDR width/height/bit depth/colour type/interlace, with a valid CRC
        field = rng.choice([(16, ">I"), (20, ">I"), (24, "B"), (25, "B"), (28, "B")])
        value = _value(rng) & (0xFF if field[1] == "B" else 0xFFFFFFFF)
        struct.pack_into(field[1], d, 8 + field[0] - 8, value)
        struct.pack_into(">I", d, 8 + 8 + 13, zlib.crc32(bytes(d[12:12 + 17])))
    elif op == 1:
        struct.pack_into(">I", d, p, _value(rng))
    elif op == 2:
        struct.pack_into(">I", d, p + 8 + length, rng.randrange(1 << 32))
    elif op == 3:
        d[p + 4:p + 8] = rng.choice([b"IHDR", b"IDAT", b"IEND", b"PLTE", b"tRNS", b"zTXt", b"iCCP", b"acTL", b"fcTL"])
    elif op == 4:
        del d[p:p + 12 + length]
    else:
        d[p:p] = d[p:p + 12 + length]


def gif_edit(d: bytearray, rng: random.Random) -> None:
    """Logical screen size, flags, image descriptor size/position, LZW code size."""
    desc = d.find(b"\x2c", 13)
    targets = [(6, "<H"), (8, "<H"), (10, "B")]
    if desc > 0 and desc + 11 < len(d):
        targets += [(desc + 1, "<H"), (desc + 3, "<H"), (desc + 5, "<H"), (desc + 7, "<H"), (desc + 9, "B"),
                    (desc + 10, "B")]
    off, fmt = rng.choice(targets)
    struct.pack_into(fmt, d, off, _value(rng) & (0xFF if fmt == "B" else 0xFFFF))


def bmp_edit(d: bytearray, rng: random.Random) -> None:
    """File size, data offset, header size, width, height (negative too), planes, depth, compression, colours."""
    off, fmt = rng.choice([(2, "<I"), (10, "<I"), (14, "<I"), (18, "<i"), (22, "<i"), (26, "<H"), (28, "<H"),
                           (30, "<I"), (34, "<I"), (46, "<I")])
    if off == 28:
        value = rng.choice([0, 1, 2, 4, 8, 15, 16, 24, 32, 48, 64, 7])
    elif off == 30:
        value = rng.randrange(8)
    else:
        value = _value(rng)
    if fmt == "<i":
        struct.pack_into(fmt, d, off, rng.choice([0, 1, -1, 3000, -3000, 60000, -60000, 0x7FFFFFFF, -(1 << 31)]))
    else:
        struct.pack_into(fmt, d, off, value & (0xFFFF if fmt == "<H" else 0xFFFFFFFF))


def jpeg_edit(d: bytearray, rng: random.Random) -> None:
    """SOF height/width/components, or a marker segment's length."""
    markers = [i for i in range(2, len(d) - 4) if d[i] == 0xFF and 0xC0 <= d[i + 1] <= 0xFE and d[i + 1] != 0xD8]
    sof = [i for i in markers if d[i + 1] in (0xC0, 0xC1, 0xC2)]
    if sof and rng.random() < 0.6:
        i = sof[0]
        off, fmt = rng.choice([(i + 5, ">H"), (i + 7, ">H"), (i + 9, "B"), (i + 4, "B"), (i + 11, "B")])
        struct.pack_into(fmt, d, off, _value(rng) & (0xFF if fmt == "B" else 0xFFFF))
    elif markers:
        struct.pack_into(">H", d, rng.choice(markers) + 2, _value(rng) & 0xFFFF)


def tiff_edit(d: bytearray, rng: random.Random) -> None:
    """An IFD entry's type, count or value (width, length, strips, bits, compression, ...)."""
    ifd = struct.unpack_from("<I", d, 4)[0]
    n = struct.unpack_from("<H", d, ifd)[0]
    entry = ifd + 2 + 12 * rng.randrange(n)
    off, fmt = rng.choice([(2, "<H"), (4, "<I"), (8, "<I"), (8, "<H")])
    value = rng.randrange(1, 13) if off == 2 else _value(rng)
    struct.pack_into(fmt, d, entry + off, value & (0xFFFF if fmt == "<H" else 0xFFFFFFFF))


def webp_edit(d: bytearray, rng: random.Random) -> None:
    """RIFF size, chunk size, or the VP8/VP8L frame header (width, height)."""
    off, fmt = rng.choice([(4, "<I"), (16, "<I"), (21, "<H"), (23, "<H"), (26, "<H"), (28, "<H"), (20, "B")])
    struct.pack_into(fmt, d, off, _value(rng) & (0xFF if fmt == "B" else 0xFFFF if fmt == "<H" else 0xFFFFFFFF))


STRUCTURAL = {"PNG": png_edit, "GIF": gif_edit, "BMP": bmp_edit, "JPEG": jpeg_edit, "TIFF": tiff_edit,
              "WEBP": webp_edit}
GENERIC = (bit_flips, overwrite, truncate, splice)


def cases(per_format: int = CASES_PER_FORMAT) -> list[tuple[str, str, bytes]]:
    """``(case id, format, bytes)``: deterministic mutations; about 40% are format-aware edits."""
    out = []
    for fmt, seeds in base_files().items():
        for i in range(per_format):
            rng = random.Random(f"{fmt}-{i}")
            d = bytearray(seeds[i % len(seeds)])
            for _ in range(1 if rng.random() < 0.7 else rng.randint(2, 3)):
                op = STRUCTURAL[fmt] if rng.random() < 0.4 else rng.choice(GENERIC)
                if len(d) > 16:
                    with contextlib.suppress(struct.error, IndexError, ValueError):  # an edit that no longer fits
                        op(d, rng)
            out.append((f"{fmt}-{i}-{op.__name__}", fmt, bytes(d)))
    return out


# -- the child -----------------------------------------------------------------------------------------------
def _outcome(call) -> tuple[str, np.ndarray | None, str]:
    from anyseg.errors import InputError

    try:
        arr = call()
    except InputError as e:
        message = str(e)
        return ("InputError" if "\n" not in message and message else "MultiLineError"), None, message
    except Exception as e:  # noqa: BLE001 - the point: anything else is a finding
        return type(e).__name__, None, str(e)[:300]
    bad = not (isinstance(arr, np.ndarray) and arr.dtype == np.uint8 and arr.ndim == 3 and arr.shape[2] == 3
               and arr.shape[0] * arr.shape[1] <= MAX_PIXELS and arr.size > 0)
    return ("BadOutput" if bad else "ok"), arr, ""


def child_main(out_dir: str, per_format: int) -> int:
    """Decode every case twice; write ``summary.json`` to ``out_dir`` and the last case started to ``progress``."""
    from anyseg.io.images import decode_image_bytes, load_image

    out = Path(out_dir)
    counts: Counter = Counter()
    findings = []
    progress = open(out / "progress", "w")
    for case_id, fmt, data in cases(per_format):
        progress.write(case_id + "\n")
        progress.flush()
        path = out / "case.bin"
        path.write_bytes(data)
        a = _outcome(lambda: load_image(path, max_pixels=MAX_PIXELS))
        b = _outcome(lambda: decode_image_bytes(data, max_pixels=MAX_PIXELS, formats=SERVICE_FORMATS)[0])
        if a[0] == b[0] == "ok" and not np.array_equal(a[1], b[1]):
            a = ("Mismatch", None, "load_image and decode_image_bytes decoded different pixels")
        for via, (kind, _, message) in (("file", a), ("bytes", b)):
            counts[f"{fmt} {via} {kind}"] += 1
            if kind not in ("ok", "InputError"):
                findings.append([case_id, via, kind, message])
    progress.close()
    (out / "summary.json").write_text(json.dumps({"counts": dict(sorted(counts.items())), "findings": findings}))
    return 0


# -- the test ------------------------------------------------------------------------------------------------
def _limit_memory() -> None:
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (CHILD_MEMORY, CHILD_MEMORY))


def test_decoders_survive_mutated_files(tmp_path):
    proc = subprocess.run([sys.executable, __file__, str(tmp_path), str(CASES_PER_FORMAT)], capture_output=True,
                          text=True, timeout=CHILD_TIMEOUT, preexec_fn=_limit_memory)
    last = (tmp_path / "progress").read_text().splitlines()[-1:] if (tmp_path / "progress").exists() else []
    assert proc.returncode == 0, f"child died (rc {proc.returncode}) on case {last}: {proc.stderr[-2000:]}"
    assert proc.stderr == "", f"decoders wrote to stderr: {proc.stderr[:2000]}"
    summary = json.loads((tmp_path / "summary.json").read_text())
    counts = Counter()
    for key, n in summary["counts"].items():
        counts[key.rsplit(" ", 1)[1]] += n
    print(f"fuzz: {sum(counts.values())} decodes of {6 * CASES_PER_FORMAT} cases: {dict(counts)}")
    assert summary["findings"] == [], summary["findings"][:20]
    assert sum(counts.values()) == 2 * 6 * CASES_PER_FORMAT
    assert counts["ok"] > 50 and counts["InputError"] > 200  # both outcomes are exercised


def test_mutations_are_deterministic_and_varied():
    first, again = cases(5), cases(5)
    assert first == again
    seeds = base_files()
    assert sum(data not in seeds[fmt] for _, fmt, data in first) >= 25  # nearly every case differs from its seed
    assert {fmt for _, fmt, _ in first} == set(SERVICE_FORMATS)


if __name__ == "__main__":
    sys.exit(child_main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else CASES_PER_FORMAT))
