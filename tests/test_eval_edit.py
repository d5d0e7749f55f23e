"""``anyseg eval edit``: removal on synthetic composites (PSNR / SSIM in the hole beside a mean
fill) and the temporal consistency of video removal (flow warping error), on tiny folders."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from PIL import Image

from anyseg.cli import main
from anyseg.edit import base
from anyseg.errors import InputError
from anyseg.eval.edit import PSNR_CAP, build_composite, masked_ssim, psnr, warp_error

H, W = 64, 96


class _Telea:
    name, generative, working_size = "telea", False, None
    model_id = "cv2-telea-test"

    def inpaint(self, image, mask, prompt=None, seed=0, **options):
        return cv2.inpaint(image, mask.astype(np.uint8), 3, cv2.INPAINT_TELEA)


class _Mean(_Telea):
    name, model_id = "mean", "mean-test"

    def inpaint(self, image, mask, prompt=None, seed=0, **options):
        out = image.copy()
        out[mask] = image[~mask].mean(axis=0).round().astype(np.uint8)
        return out


@pytest.fixture(autouse=True)
def engines(monkeypatch):
    """The registered telea and mean engines; stand-ins where the classical module cannot load."""
    for name, stand_in in (("telea", _Telea), ("mean", _Mean)):
        try:
            base.engine_factory(name)()
        except Exception:
            monkeypatch.setitem(base.ENGINES, name, lambda stand_in=stand_in, **kw: stand_in())


def _smooth(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    c = [rng.uniform(60, 190) + rng.uniform(-1, 1) * xx + rng.uniform(-2, 2) * yy for _ in range(3)]
    return np.clip(np.stack(c, axis=2), 0, 255).astype(np.uint8)


def _mask_folder(tmp_path, n: int = 3):
    root = tmp_path / "grabcut"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(n):
        img = _smooth(i)
        m = np.zeros((H, W), np.uint8)
        cv2.circle(m, (30 + 10 * i, 30), 12, 255, -1)
        band = cv2.dilate(m, np.ones((3, 3), np.uint8)) - cv2.erode(m, np.ones((3, 3), np.uint8))
        m[band > 0] = 128  # GrabCut's unknown band
        img[m > 0] = (255, 0, 255)
        Image.fromarray(img).save(root / "images" / f"im{i}.png")
        Image.fromarray(m).save(root / "masks" / f"im{i}.png")
    return root


def _davis_folder(tmp_path, frames: int = 8, shift: int = 3):
    rng = np.random.default_rng(0)
    big = cv2.GaussianBlur(rng.uniform(0, 255, (H, W + shift * frames + 8, 3)).astype(np.float32), (0, 0), 2.0)
    big = np.clip((big - big.mean()) * 4 + 128, 0, 255).astype(np.uint8)
    root = tmp_path / "davis"
    fdir, adir = root / "JPEGImages" / "480p" / "pan", root / "Annotations" / "480p" / "pan"
    fdir.mkdir(parents=True)
    adir.mkdir(parents=True)
    for t in range(frames):
        f = big[:, shift * t: shift * t + W].copy()
        m = np.zeros((H, W), np.uint8)
        m[22:42, 30 + 2 * t: 46 + 2 * t] = 255
        f[m > 0] = (250, 20, 20)
        Image.fromarray(f).save(fdir / f"{t:05d}.png")
        Image.fromarray(m).save(adir / f"{t:05d}.png")
    return root


def test_psnr_and_ssim_on_known_arrays():
    a = np.full((32, 32, 3), 100, np.uint8)
    region = np.zeros((32, 32), bool)
    region[8:24, 8:24] = True
    b = a.copy()
    b[region] = 110
    assert psnr(a, a, region) == PSNR_CAP
    assert psnr(b, a, region) == pytest.approx(10 * np.log10(255 ** 2 / 100))
    b2 = a.copy()
    b2[~region] = 0  # differences outside the region do not count
    assert psnr(b2, a, region) == PSNR_CAP
    assert masked_ssim(a, a, region) == pytest.approx(1.0)
    noisy = np.clip(a + np.random.default_rng(0).normal(0, 30, a.shape), 0, 255).astype(np.uint8)
    assert masked_ssim(noisy, a, region) < 0.5
    full = np.ones((32, 32), bool)
    from skimage.metrics import structural_similarity

    _, smap = structural_similarity(noisy, a, data_range=255, channel_axis=2, gaussian_weights=True, sigma=1.5,
                                    use_sample_covariance=False, full=True)
    assert masked_ssim(noisy, a, full) == pytest.approx(float(smap.mean()), abs=1e-9)  # the standard full-image SSIM
    assert masked_ssim(noisy, a, region) == pytest.approx(float(smap.mean(axis=2)[region].mean()), abs=1e-9)
    with pytest.raises(InputError, match="empty"):
        psnr(a, a, np.zeros((32, 32), bool))


def test_composite_is_deterministic_and_exact_outside():
    obj = np.zeros((40, 50, 3), np.uint8)
    obj[10:30, 10:40] = (255, 0, 0)
    mask = np.zeros((40, 50), bool)
    mask[10:30, 10:40] = True
    bg = _smooth(3)
    a = build_composite(obj, mask, bg, np.random.default_rng(1), margin=4)
    b = build_composite(obj, mask, bg, np.random.default_rng(1), margin=4)
    assert np.array_equal(a.image, b.image) and a.box == b.box
    x0, y0, x1, y1 = a.box
    assert 4 <= x0 and x1 <= W - 4 and 4 <= y0 and y1 <= H - 4
    assert a.mask.any() and not a.mask[:, :x0].any() and not a.mask[:y0].any()
    assert np.array_equal(a.image[~a.mask], bg[~a.mask])  # the background is untouched outside the object
    assert (a.image[a.mask] == (255, 0, 0)).all()
    assert a.mask.sum() <= 0.35 * H * W + 1
    assert build_composite(obj, np.zeros((40, 50), bool), bg, np.random.default_rng(1)) is None


def test_warp_error_of_a_consistent_pan_is_small():
    rng = np.random.default_rng(0)
    big = cv2.GaussianBlur(rng.uniform(0, 255, (H, W + 10, 3)).astype(np.float32), (0, 0), 2.0).astype(np.uint8)
    a, b = big[:, :W].copy(), big[:, 3:3 + W].copy()
    region = np.zeros((H, W), bool)
    region[20:40, 30:60] = True
    e, n = warp_error(a, b, region)
    flicker = b.copy()
    flicker[region] = 255 - flicker[region]
    e2, _ = warp_error(a, flicker, region)
    assert n > 0 and e < 1e-3 and e2 > 10 * e


def _fails(capsys, *argv) -> bool:
    capsys.readouterr()
    return main(["eval", "edit", *argv]) != 0


def _run(capsys, *argv):
    code = main(["eval", "edit", *argv, "--json"])
    out = capsys.readouterr().out.strip().splitlines()[-1]
    return code, json.loads(out)["summary"]


def test_removal_cli_telea_beats_the_mean_fill_and_resumes(tmp_path, capsys):
    data = _mask_folder(tmp_path)
    out = tmp_path / "run"
    code, s = _run(capsys, "--protocol", "removal", "--data", str(data), "--engine", "telea", "--dilate", "3",
                   "--out", str(out))
    assert code == 0 and s["num_images"] == 3
    assert s["PSNR"] > s["PSNR_mean_fill"] + 1 and s["SSIM"] > s["SSIM_mean_fill"]
    assert s["PSNR_gain"] == pytest.approx(s["PSNR"] - s["PSNR_mean_fill"], abs=1e-5)
    assert s["outside_bit_exact"] == 1.0 and s["LPIPS_status"].startswith("LPIPS not available")
    lines = (out / "results.jsonl").read_text().splitlines()
    recs = [json.loads(x) for x in lines[1:] if '"name"' in x]
    assert {r["name"] for r in recs} == {"im0", "im1", "im2"}
    assert all(r["background"] != r["name"] for r in recs)  # pasted on *another* image
    assert (out / "report.md").is_file()
    code, s2 = _run(capsys, "--protocol", "removal", "--data", str(data), "--engine", "telea", "--dilate", "3",
                    "--out", str(out))
    assert s2["PSNR"] == s["PSNR"] and s2["peak_rss_mb_runs"] and len(s2["peak_rss_mb_runs"]) == 2
    assert len((out / "results.jsonl").read_text().splitlines()) == len(lines) + 1  # nothing rescored: one run line
    assert _fails(capsys, "--protocol", "removal", "--data", str(data), "--engine", "mean", "--out", str(out))
    assert "different run" in capsys.readouterr().err
    code, s3 = _run(capsys, "--protocol", "removal", "--data", str(data), "--engine", "mean", "--dilate", "3",
                    "--out", str(tmp_path / "mean"))
    assert s3["PSNR"] == s3["PSNR_mean_fill"] and s3["PSNR_gain"] == 0


def test_removal_with_backgrounds_folder(tmp_path, capsys):
    data = _mask_folder(tmp_path, n=1)
    assert _fails(capsys, "--protocol", "removal", "--data", str(data), "--out", str(tmp_path / "a"))
    assert "--backgrounds" in capsys.readouterr().err
    bgs = tmp_path / "bgs"
    bgs.mkdir()
    for i in range(2):
        Image.fromarray(_smooth(10 + i)).save(bgs / f"bg{i}.png")
    code, s = _run(capsys, "--protocol", "removal", "--data", str(data), "--backgrounds", str(bgs), "--dilate", "3",
                   "--out", str(tmp_path / "b"))
    assert code == 0 and s["num_images"] == 1


def test_temporal_video_removal_is_more_consistent_than_per_frame(tmp_path, capsys):
    data = _davis_folder(tmp_path)
    out = tmp_path / "temporal"
    code, s = _run(capsys, "--protocol", "temporal", "--data", str(data), "--engine", "telea", "--dilate", "2",
                   "--out", str(out))
    assert code == 0 and s["num_sequences"] == 1
    assert s["E_warp_video_x1000"] < s["E_warp_per_frame_x1000"]
    assert s["E_warp_ratio"] < 0.8
    assert s["propagated_share"] > 0.5
    rec = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()[1:] if '"name"' in x][0]
    assert rec["frames"] == 8 and rec["pairs"] == 7
    code, s2 = _run(capsys, "--protocol", "temporal", "--data", str(data), "--engine", "telea", "--dilate", "2",
                    "--out", str(out))
    assert s2["E_warp_ratio"] == s["E_warp_ratio"]
    code, s3 = _run(capsys, "--protocol", "temporal", "--data", str(data), "--engine", "telea", "--dilate", "2",
                    "--stride", "2", "--max-frames", "3", "--out", str(tmp_path / "short"))
    rec = [json.loads(x) for x in (tmp_path / "short" / "results.jsonl").read_text().splitlines()[1:] if '"name"' in x][0]
    assert rec["frames"] == 3


@pytest.mark.parametrize("argv, text", [
    (["--protocol", "removal", "--data", "nowhere"], "data folder not found"),
    (["--protocol", "removal", "--data", "{masks}", "--engine", "nope"], "unknown edit engine 'nope'"),
    (["--protocol", "removal", "--data", "{masks}", "--dilate", "-2"], "--dilate"),
    (["--protocol", "removal", "--data", "{masks}", "--seed", "-1"], "--seed must be in"),
    (["--protocol", "removal", "--data", "{masks}", "--window", "3"], "apply to --protocol temporal"),
    (["--protocol", "removal", "--data", "{masks}", "--stride", "2"], "--stride applies to DAVIS"),
    (["--protocol", "temporal", "--data", "{masks}", "--backgrounds", "x"], "--backgrounds applies"),
    (["--protocol", "temporal", "--data", "{masks}"], "not a DAVIS folder"),
    (["--protocol", "temporal", "--data", "{masks}", "--window", "0"], "--window must be in"),
])
def test_errors_are_one_line(tmp_path, capsys, argv, text):
    data = _mask_folder(tmp_path, n=2)
    argv = [a.replace("{masks}", str(data)) for a in argv]
    assert _fails(capsys, *argv, "--out", str(tmp_path / "run"))
    err = capsys.readouterr().err.strip()
    assert text in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "run").exists() or "nowhere" in argv
