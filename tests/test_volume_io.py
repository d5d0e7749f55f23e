"""Volume I/O: readers (NIfTI, NRRD, MetaImage, TIFF stacks, DICOM series), label writers checked with a
second library, DICOM series checks, DICOM-SEG, display windows, the phantoms."""

from __future__ import annotations

import gzip
import re
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest

nib = pytest.importorskip("nibabel")
sitk = pytest.importorskip("SimpleITK")
pydicom = pytest.importorskip("pydicom")
tifffile = pytest.importorskip("tifffile")

from anyseg.errors import InputError  # noqa: E402
from anyseg.volume import io as vio  # noqa: E402
from anyseg.volume.base import Volume  # noqa: E402
from anyseg.volume.io import LazySlices, load_volume, save_labels  # noqa: E402
from anyseg.volume.window import PRESETS, auto_window, pixel_size, resolve_window, rgb_slices, to_uint8  # noqa: E402
from phantoms import ct_small_series, ellipsoid_phantom, oblique_direction, write_dicom_series  # noqa: E402

NIB_DATA = Path(pytest.importorskip("nibabel.testing").data_path)


def _one_line_error(fn, *args, match: str = "", **kwargs) -> str:
    with pytest.raises(InputError) as e:
        fn(*args, **kwargs)
    text = str(e.value)
    assert "\n" not in text and text
    if match:
        assert re.search(match, text, re.I), text
    return text


def _sitk_geometry(img) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return (np.asarray(img.GetSpacing()), np.asarray(img.GetOrigin()),
            np.asarray(img.GetDirection()).reshape(img.GetDimension(), img.GetDimension())[:3, :3])


def _assert_geometry(volume: Volume, spacing, origin, direction, atol: float = 1e-4) -> None:
    np.testing.assert_allclose(volume.spacing, np.asarray(spacing)[:3], atol=atol)
    np.testing.assert_allclose(volume.origin, np.asarray(origin)[:3], atol=atol)
    np.testing.assert_allclose(volume.direction, direction, atol=atol)


# ------------------------------------------------------------------------------------------- phantoms

def test_phantom_is_what_it_says():
    vol, labels = ellipsoid_phantom()
    assert vol.shape == labels.shape == (24, 40, 48) and labels.dtype == np.uint8
    assert vol.spacing == (0.8, 0.8, 2.5) and vol.intensity == "HU"
    assert np.allclose(vol.direction.T @ vol.direction, np.eye(3)) and not np.allclose(vol.direction, np.eye(3))
    counts = np.bincount(labels.ravel(), minlength=3)
    assert counts[1] > 3000 and counts[2] > 300
    assert abs(float(vol.array[labels == 1].mean()) - 100) < 5 and abs(float(vol.array[labels == 2].mean()) - 300) < 5
    tube_rows = [np.flatnonzero((labels[k] == 2).any(axis=1)).mean() for k in (6, 17)]
    assert tube_rows[1] > tube_rows[0] + 3  # the tube drifts across slices
    again, _ = ellipsoid_phantom()
    assert np.array_equal(again.array, vol.array)  # seeded
    assert np.linalg.det(ellipsoid_phantom(direction="flipped")[0].direction) < 0


# ------------------------------------------------------------------------- writing, read by a 2nd library

@pytest.mark.parametrize("direction", ["oblique", "flipped", "identity"])
def test_nifti_labels_read_back_by_simpleitk(tmp_path, direction):
    vol, labels = ellipsoid_phantom(direction=direction)
    path = save_labels(labels, vol, tmp_path / "labels.nii.gz")
    img = sitk.ReadImage(str(path))
    _assert_geometry(vol, *_sitk_geometry(img))
    assert np.array_equal(sitk.GetArrayFromImage(img), labels)
    hdr = nib.load(str(path)).header
    assert int(hdr["qform_code"]) == 1 and int(hdr["sform_code"]) == 1 and hdr.get_data_dtype() == np.uint8
    np.testing.assert_allclose(hdr.get_qform(), vol.affine_ras(), atol=1e-4)
    np.testing.assert_allclose(hdr.get_sform(), vol.affine_ras(), atol=1e-4)
    back = load_volume(path)
    assert back.same_geometry(vol) and np.array_equal(np.asarray(back.array), labels)


def test_nifti_written_by_simpleitk_read_by_anyseg(tmp_path):
    vol, _ = ellipsoid_phantom(direction="flipped")
    img = sitk.GetImageFromArray(vol.array)
    img.SetSpacing(vol.spacing), img.SetOrigin(vol.origin), img.SetDirection(vol.direction.ravel().tolist())
    sitk.WriteImage(img, str(tmp_path / "x.nii"))
    back = load_volume(tmp_path / "x.nii")
    assert isinstance(back.array, LazySlices)
    _assert_geometry(back, vol.spacing, vol.origin, vol.direction)
    assert np.array_equal(np.asarray(back.array), vol.array)


def _parse_nrrd(path: Path) -> tuple[dict, np.ndarray]:
    raw = path.read_bytes()
    head, data = raw.split(b"\n\n", 1)
    fields = dict(ln.split(": ", 1) for ln in head.decode().splitlines()[1:] if ": " in ln)
    assert fields["space"] == "left-posterior-superior" and fields["type"] == "unsigned char"
    vecs = np.array([[float(v) for v in m.split(",")] for m in re.findall(r"\(([^)]*)\)", fields["space directions"])])
    origin = np.array([float(v) for v in fields["space origin"].strip("()").split(",")])
    sizes = [int(v) for v in fields["sizes"].split()]
    body = gzip.decompress(data) if fields["encoding"] == "gzip" else data
    array = np.frombuffer(body, dtype=np.uint8).reshape(sizes[::-1])
    spacing = np.linalg.norm(vecs, axis=1)
    return {"spacing": spacing, "origin": origin, "direction": (vecs / spacing[:, None]).T}, array


def _parse_mha(path: Path) -> tuple[dict, np.ndarray]:
    raw = path.read_bytes()
    end = raw.index(b"ElementDataFile = LOCAL\n") + len(b"ElementDataFile = LOCAL\n")
    fields = dict(ln.split(" = ", 1) for ln in raw[:end].decode().splitlines())
    nums = {k: [float(v) for v in fields[k].split()] for k in ("TransformMatrix", "Offset", "ElementSpacing")}
    sizes = [int(v) for v in fields["DimSize"].split()]
    body = zlib.decompress(raw[end:]) if fields.get("CompressedData") == "True" else raw[end:]
    array = np.frombuffer(body, dtype=np.uint8).reshape(sizes[::-1])
    # MetaIO lists each axis' direction in turn (ITK MetaImageIO): the rows are the axis vectors
    direction = np.asarray(nums["TransformMatrix"]).reshape(3, 3).T
    return {"spacing": np.asarray(nums["ElementSpacing"]), "origin": np.asarray(nums["Offset"]),
            "direction": direction}, array


@pytest.mark.parametrize("suffix,parse", [(".nrrd", _parse_nrrd), (".mha", _parse_mha)])
def test_nrrd_mha_labels_read_back_by_hand(tmp_path, suffix, parse):
    vol, labels = ellipsoid_phantom(direction="flipped")
    path = save_labels(labels, vol, tmp_path / f"labels{suffix}")
    geo, array = parse(path)
    _assert_geometry(vol, geo["spacing"], geo["origin"], geo["direction"])
    assert np.array_equal(array, labels)
    back = load_volume(path)
    assert back.same_geometry(vol) and np.array_equal(back.array, labels)


def test_save_labels_formats_and_errors(tmp_path):
    vol, labels = ellipsoid_phantom(shape=(6, 10, 12))
    assert save_labels(labels, vol, tmp_path / "noext", format="nifti").name == "noext.nii.gz"
    assert save_labels(labels, vol, tmp_path / "x", format="mha").name == "x.mha"
    big = labels.astype(np.uint16) * 300
    assert nib.load(str(save_labels(big, vol, tmp_path / "big.nii"))).get_data_dtype() == np.uint16
    _one_line_error(save_labels, labels[:3], vol, tmp_path / "a.nii.gz", match="shape")
    _one_line_error(save_labels, labels.astype(float), vol, tmp_path / "a.nii.gz", match="integers")
    _one_line_error(save_labels, labels, vol, tmp_path / "a.nrrd", format="nifti", match="suffix")
    _one_line_error(save_labels, labels, vol, tmp_path / "a.png", match="suffix")
    _one_line_error(save_labels, labels, vol, tmp_path / "a.dcm", match="DICOM source")
    assert not list(tmp_path.glob(".*tmp"))


# ---------------------------------------------------------------------------------- NIfTI (real files)

def test_real_nifti_geometry_matches_simpleitk():
    for name in ("anatomical.nii", "example4d.nii.gz", "functional.nii"):
        path = NIB_DATA / name
        index = 1 if name != "anatomical.nii" else None
        vol = load_volume(path, index=index)
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(path))
        img = reader.Execute()
        _assert_geometry(vol, *_sitk_geometry(img))
        ref = sitk.GetArrayFromImage(img)
        ref = ref[index] if ref.ndim == 4 else ref
        np.testing.assert_allclose(np.asarray(vol.array), ref, rtol=1e-5, atol=1e-3)
        assert vol.meta["format"] == "nifti" and vol.meta["index"] == (index or 0)
    two = nib.load(str(NIB_DATA / "example_nifti2.nii.gz"))  # NIfTI-2 (SimpleITK cannot read it)
    vol = load_volume(NIB_DATA / "example_nifti2.nii.gz", index=1)
    np.testing.assert_allclose(vol.affine_ras(), two.affine, atol=1e-4)
    assert np.array_equal(np.asarray(vol.array), np.asarray(two.dataobj)[..., 1].transpose(2, 1, 0))


def test_nifti_4d_index_and_scaling():
    text = _one_line_error(load_volume, NIB_DATA / "example4d.nii.gz", match="4D with 2 volumes")
    assert "--index" in text
    _one_line_error(load_volume, NIB_DATA / "example4d.nii.gz", index=2, match="outside")
    func = nib.load(str(NIB_DATA / "functional.nii"))
    vol = load_volume(NIB_DATA / "functional.nii", index=7)
    assert vol.array.dtype == np.float32  # scl_slope / scl_inter applied
    np.testing.assert_allclose(vol.slice(2), func.get_fdata()[:, :, 2, 7].T, rtol=1e-6)
    assert vol.meta["n_volumes"] == 20


def test_nifti_lazy_gz_memmap_and_eager(tmp_path, monkeypatch):
    vol, _ = ellipsoid_phantom(shape=(8, 12, 14))
    img = nib.Nifti1Image(vol.array.transpose(2, 1, 0), vol.affine_ras())
    nib.save(img, str(tmp_path / "v.nii.gz"))
    monkeypatch.setattr(vio, "GZIP_IN_MEMORY_BYTES", 0)  # force the decompress-once memory map
    lazy = load_volume(tmp_path / "v.nii.gz")
    assert isinstance(lazy.array, LazySlices) and lazy.same_geometry(vol)
    assert np.array_equal(lazy.slice(5), vol.array[5]) and np.array_equal(lazy.array[7], vol.array[7])
    eager = load_volume(tmp_path / "v.nii.gz", lazy=False)
    assert isinstance(eager.array, np.ndarray) and np.array_equal(eager.array, vol.array)


def test_nifti_sheared_and_2d(tmp_path):
    affine = np.array([[1.0, 0.3, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
    img = nib.Nifti1Image(np.zeros((4, 5, 6), np.int16), affine)
    img.set_qform(None, code=0)
    nib.save(img, str(tmp_path / "shear.nii"))
    _one_line_error(load_volume, tmp_path / "shear.nii", match="sheared")
    img.set_qform(np.diag([2.0, 2, 2, 1]), code=1)  # a valid qform: used instead, with a note
    nib.save(img, str(tmp_path / "shear_q.nii"))
    vol = load_volume(tmp_path / "shear_q.nii")
    assert vol.spacing == (2.0, 2.0, 2.0) and "qform" in vol.meta["warnings"][0]
    nib.save(nib.Nifti1Image(np.ones((7, 9), np.float32), np.eye(4)), str(tmp_path / "flat.nii"))
    assert load_volume(tmp_path / "flat.nii").shape == (1, 9, 7)  # a 2D NIfTI: one slice


# -------------------------------------------------------------------------------------------- bad input

def test_bad_inputs_are_one_line_errors(tmp_path, monkeypatch):
    from PIL import Image

    _one_line_error(load_volume, tmp_path / "nope.nii.gz", match="no such file")
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "photo.jpg")
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "slice.png")
    assert "anyseg segment" in _one_line_error(load_volume, tmp_path / "photo.jpg", match="2D image")
    assert "anyseg segment" in _one_line_error(load_volume, tmp_path / "slice.png", match="2D image")
    (tmp_path / "notes.txt").write_text("hello\n" * 50)
    _one_line_error(load_volume, tmp_path / "notes.txt", match="not a volume")
    (tmp_path / "bad.nii").write_bytes(b"\0" * 400)
    _one_line_error(load_volume, tmp_path / "bad.nii", match="NIfTI")
    good = gzip.compress(nib.Nifti1Image(np.zeros((30, 30, 30), np.int16), np.eye(4)).to_bytes())
    (tmp_path / "cut.nii.gz").write_bytes(good[: len(good) // 2])
    _one_line_error(load_volume, tmp_path / "cut.nii.gz")
    (tmp_path / "bad.nrrd").write_bytes(b"NRRD0004\nnonsense: yes\n\n\x00\x01")
    _one_line_error(load_volume, tmp_path / "bad.nrrd", match="NRRD")
    tifffile.imwrite(tmp_path / "one.tif", np.zeros((8, 8), np.uint8))
    _one_line_error(load_volume, tmp_path / "one.tif", match="2D image")
    (tmp_path / "solo").mkdir()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "solo" / "s1.png")
    _one_line_error(load_volume, tmp_path / "solo", match="one 2D image")
    (tmp_path / "empty").mkdir()
    _one_line_error(load_volume, tmp_path / "empty", match="no DICOM")
    _one_line_error(load_volume, NIB_DATA / "anatomical.nii", series="1.2.3", match="DICOM")
    _one_line_error(load_volume, NIB_DATA / "anatomical.nii", spacing=(1, 1, 1), match="spacing")
    monkeypatch.setenv("ANYSEG_MAX_VOXELS", "1000")
    _one_line_error(load_volume, NIB_DATA / "anatomical.nii", match="over the limit")
    monkeypatch.setenv("ANYSEG_MAX_VOXELS", "many")
    _one_line_error(load_volume, NIB_DATA / "anatomical.nii", match="ANYSEG_MAX_VOXELS")


# ------------------------------------------------------------------------------------- NRRD, MetaImage

def test_itk_4d_index(tmp_path):
    arr = np.arange(3 * 4 * 5 * 6, dtype=np.int16).reshape(3, 4, 5, 6)  # (T, K, J, I)
    img = sitk.GetImageFromArray(arr, isVector=False)
    sitk.WriteImage(img, str(tmp_path / "t.mha"))
    _one_line_error(load_volume, tmp_path / "t.mha", match="4D with 3 volumes")
    vol = load_volume(tmp_path / "t.mha", index=2)
    assert vol.shape == (4, 5, 6) and np.array_equal(vol.array, arr[2])


# ---------------------------------------------------------------------------------------- TIFF stacks

def test_tiff_stack_lazy_spacing(tmp_path):
    stack = np.random.default_rng(0).integers(0, 4000, size=(7, 9, 11)).astype(np.uint16)
    tifffile.imwrite(tmp_path / "s.tif", stack)
    vol = load_volume(tmp_path / "s.tif")
    assert isinstance(vol.array, LazySlices) and np.array_equal(np.asarray(vol.array), stack)
    assert vol.spacing == (1.0, 1.0, 1.0) and "default 1 mm" in vol.meta["spacing_source"]
    vol = load_volume(tmp_path / "s.tif", spacing=(0.5, 0.5, 2.0))
    assert vol.spacing == (0.5, 0.5, 2.0) and vol.meta["spacing_source"] == "--spacing"
    tifffile.imwrite(tmp_path / "ij.tif", stack, imagej=True, resolution=(1 / 0.25, 1 / 0.25),
                     metadata={"spacing": 3.0, "unit": "um"})
    vol = load_volume(tmp_path / "ij.tif")
    np.testing.assert_allclose(vol.spacing, (0.00025, 0.00025, 0.003))
    assert vol.meta["spacing_source"] == "ImageJ metadata"
    _one_line_error(load_volume, tmp_path / "s.tif", spacing=(1, 0, 1), match="positive")


def test_tiff_hyperstack_index(tmp_path):
    stack = np.arange(2 * 3 * 8 * 9, dtype=np.uint16).reshape(2, 3, 8, 9)
    tifffile.imwrite(tmp_path / "tz.tif", stack, imagej=True, metadata={"axes": "TZYX"})
    _one_line_error(load_volume, tmp_path / "tz.tif", match="4D with 2 volumes")
    vol = load_volume(tmp_path / "tz.tif", index=1)
    assert isinstance(vol.array, LazySlices) and np.array_equal(np.asarray(vol.array), stack[1])


def test_folder_of_slices_natural_order(tmp_path):
    from PIL import Image

    for k in (1, 2, 10, 11):  # natural order: 1, 2, 10, 11 (not 1, 10, 11, 2)
        Image.fromarray(np.full((6, 8), k, np.uint8)).save(tmp_path / f"slice{k}.png")
    vol = load_volume(tmp_path)
    assert vol.shape == (4, 6, 8) and [int(vol.slice(k)[0, 0]) for k in range(4)] == [1, 2, 10, 11]
    rgb = tmp_path / "rgb"
    rgb.mkdir()
    for k in range(3):
        Image.fromarray(np.full((6, 8, 3), 50 * k, np.uint8)).save(rgb / f"{k}.png")
    assert np.array_equal(np.asarray(load_volume(rgb).array)[:, 0, 0], [0, 50, 100])
    Image.fromarray(np.zeros((5, 8), np.uint8)).save(tmp_path / "slice3.png")  # a size that does not match
    _one_line_error(lambda: np.asarray(load_volume(tmp_path).array), match="must match")


# ---------------------------------------------------------------------------------------------- DICOM

def test_dicom_phantom_series_geometry_and_values(tmp_path):
    vol, _ = ellipsoid_phantom(shape=(7, 20, 24), direction="oblique")
    paths = write_dicom_series(vol, tmp_path / "dcm")
    for source in (tmp_path / "dcm", paths[3]):  # a folder, or one file of it
        got = load_volume(source)
        assert isinstance(got.array, LazySlices) and got.same_geometry(vol)
        assert np.array_equal(np.asarray(got.array), vol.array)
        assert got.intensity == "HU" and got.window == (40.0, 400.0) and got.meta["modality"] == "CT"
    # a left-handed grid (det -1) cannot be a DICOM stack (k is always row x column): the slices come
    # back in the opposite order, at the same places
    flipped, _ = ellipsoid_phantom(shape=(5, 20, 24), direction="flipped")
    write_dicom_series(flipped, tmp_path / "flip")
    got = load_volume(tmp_path / "flip")
    assert np.array_equal(np.asarray(got.array), flipped.array[::-1])
    np.testing.assert_allclose(got.affine_lps() @ [3, 2, 0, 1], flipped.affine_lps() @ [3, 2, 4, 1], atol=1e-4)
    np.testing.assert_allclose(got.direction[:, 2], -flipped.direction[:, 2], atol=1e-6)


def test_dicom_ct_small_series_sorting_and_rescale(tmp_path):
    paths = ct_small_series(tmp_path, n=5, step=3.0)
    ref = pydicom.dcmread(paths[0])
    vol = load_volume(tmp_path)
    assert vol.shape == (5, 128, 128)
    np.testing.assert_allclose(vol.spacing, (0.661468, 0.661468, 3.0), atol=1e-6)  # 3 mm from positions, not 5
    np.testing.assert_allclose(vol.origin, [float(v) for v in ref.ImagePositionPatient], atol=1e-6)
    assert vol.meta["dicom_files"] == [str(p) for p in paths]  # sorted by position, not InstanceNumber
    np.testing.assert_array_equal(vol.slice(0), ref.pixel_array.astype(np.int32) - 1024)
    assert vol.intensity == "HU"


def test_dicom_several_series(tmp_path):
    a = ct_small_series(tmp_path, n=3, description="arterial")
    ct_small_series(tmp_path, n=4, description="venous")
    uid_a = str(pydicom.dcmread(a[0]).SeriesInstanceUID)
    text = _one_line_error(load_volume, tmp_path, match="2 DICOM series")
    assert uid_a in text and "arterial, 3 files" in text and "venous, 4 files" in text
    assert load_volume(tmp_path, series=uid_a).shape[0] == 3
    assert load_volume(a[1]).shape[0] == 3  # one file: its own series
    _one_line_error(load_volume, tmp_path, series="1.2.3.4", match="no DICOM series 1.2.3.4")


@pytest.mark.parametrize("kwargs,match", [
    ({"drop": [2]}, "missing"),
    ({"orientation": {3: [0, 1, 0, 0, 0, -1]}}, "mixed orientations"),
    ({"steps": [3.0, 3.0, 4.2, 3.0]}, "varies"),
    ({"steps": [3.0, 0.0, 3.0, 3.0]}, "share a position"),
    ({"rows": {1: 64}}, "mixed image sizes"),
])
def test_dicom_inconsistent_series_errors(tmp_path, kwargs, match):
    ct_small_series(tmp_path, n=5, step=3.0, **kwargs)
    _one_line_error(load_volume, tmp_path, match=match)


def test_dicom_small_spacing_variation_warns(tmp_path):
    ct_small_series(tmp_path, n=5, steps=[3.0, 3.05, 2.98, 3.0])
    with pytest.warns(UserWarning, match="varies"):
        vol = load_volume(tmp_path)
    assert abs(vol.spacing[2] - 12.03 / 4) < 1e-6 and "varies" in vol.meta["warnings"][0]


def test_dicom_gantry_tilt_is_refused(tmp_path):
    paths = ct_small_series(tmp_path, n=4, step=3.0)
    for k, p in enumerate(paths):
        ds = pydicom.dcmread(p)
        pos = [float(v) for v in ds.ImagePositionPatient]
        ds.ImagePositionPatient = [f"{pos[0]:.6f}", f"{pos[1] + 0.8 * k:.6f}", f"{pos[2]:.6f}"]
        ds.save_as(p)
    _one_line_error(load_volume, tmp_path, match="gantry tilt")


def test_dicom_multiframe_enhanced(tmp_path):
    hd = pytest.importorskip("highdicom")
    vol, labels = ellipsoid_phantom(shape=(5, 16, 20))
    dss = [pydicom.dcmread(p) for p in write_dicom_series(vol, tmp_path / "single")]
    mf = hd.legacy.LegacyConvertedEnhancedCTImage(dss, series_instance_uid=hd.UID(), series_number=3,
                                                  sop_instance_uid=hd.UID(), instance_number=1)
    (tmp_path / "mf").mkdir()
    mf.save_as(tmp_path / "mf" / "enhanced.dcm")
    got = load_volume(tmp_path / "mf" / "enhanced.dcm")
    assert got.same_geometry(vol) and np.array_equal(np.asarray(got.array), vol.array)
    assert got.intensity == "HU" and got.window == (40.0, 400.0)
    seg = hd.seg.segread(save_labels(labels, got, tmp_path / "mf_seg.dcm"))
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == mf.SeriesInstanceUID


def test_dicom_seg_references_the_series(tmp_path):
    hd = pytest.importorskip("highdicom")
    paths = ct_small_series(tmp_path / "ct", n=4, step=2.5)
    vol = load_volume(tmp_path / "ct")
    labels = np.zeros(vol.shape, np.uint8)
    labels[1:3, 40:60, 50:80] = 3  # label values need not be consecutive
    labels[2, 90:100, 20:30] = 7
    out = save_labels(labels, vol, tmp_path / "seg.dcm", segment_names={3: "liver", 7: "lesion"})
    ds = pydicom.dcmread(out)
    assert ds.Modality == "SEG" and ds.SegmentationType == "BINARY"
    src_series = str(pydicom.dcmread(paths[0]).SeriesInstanceUID)
    assert ds.ReferencedSeriesSequence[0].SeriesInstanceUID == src_series
    assert [s.SegmentLabel for s in ds.SegmentSequence] == ["liver", "lesion"]
    assert int(ds.NumberOfFrames) == 3  # non-empty frames: segment 1 on slices 1, 2; segment 2 on slice 2
    seg = hd.seg.segread(out)
    uids = [str(pydicom.dcmread(p).SOPInstanceUID) for p in paths]
    pix = seg.get_pixels_by_source_instance(source_sop_instance_uids=uids, segment_numbers=[1, 2])
    assert np.array_equal(pix[..., 0].astype(bool), labels == 3)
    assert np.array_equal(pix[..., 1].astype(bool), labels == 7)
    _one_line_error(save_labels, np.zeros(vol.shape, np.uint8), vol, tmp_path / "empty.dcm", match="empty")


def test_every_pydicom_test_file_loads_or_fails_in_one_line(tmp_path):
    """Real DICOM files of every kind (SR, SEG, RT, colour, compressed, truncated, no preamble)."""
    import shutil

    folder = Path(pydicom.data.get_testdata_file("CT_small.dcm")).parent
    loaded = 0
    for n, f in enumerate(sorted(folder.glob("*.dcm"))):
        (tmp_path / str(n)).mkdir()
        shutil.copy(f, tmp_path / str(n) / f.name)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                vol = load_volume(tmp_path / str(n) / f.name)
                assert np.asarray(vol.array).shape == vol.shape
                loaded += 1
            except InputError as e:
                assert "\n" not in str(e)
    assert loaded >= 5  # CT_small, MR_small and its transfer-syntax variants at least


# -------------------------------------------------------------------------------------------- windows

def test_window_presets_and_specs():
    assert PRESETS["ct-lung"] == (-600.0, 1500.0) and PRESETS["ct-bone"] == (400.0, 1800.0)
    assert resolve_window("ct-abdomen") == (40.0, 400.0) and resolve_window("ct-brain") == (40.0, 80.0)
    assert resolve_window("400,40") == (40.0, 400.0)  # W,L: width first
    assert resolve_window((40, 400)) == (40.0, 400.0)  # a tuple is (center, width)
    for bad in ("soft", "400", "0,40", "a,b"):
        _one_line_error(resolve_window, bad, match="window")
    vol, _ = ellipsoid_phantom(noise=0.0, direction="identity")
    assert resolve_window("auto", vol) == (40.0, 400.0)  # the file's own window
    c, w = resolve_window("mri", vol)  # percentiles of the values 0 .. 300
    assert 0 <= c - w / 2 < 1 and 299 < c + w / 2 <= 300
    plain = vol.with_array(vol.array)
    object.__setattr__(plain, "window", None)
    assert resolve_window("auto", plain) == (c, w)


def test_to_uint8_mapping():
    s = np.array([[-160.0, 40.0, 240.0, 1000.0]])
    assert to_uint8(s, (40, 400)).tolist() == [[0, 128, 255, 255]]
    assert to_uint8(s, "ct-abdomen").dtype == np.uint8
    assert to_uint8(np.array([[0.0, 0.5, 1.0]]), (0.5, 1.0)).tolist() == [[0, 128, 255]]
    _one_line_error(to_uint8, np.zeros((2, 2, 2)), (0, 1), match="2D")


def test_auto_window_is_bounded():
    calls = []
    vol, _ = ellipsoid_phantom(shape=(60, 12, 14))
    lazy = LazySlices(vol.shape, vol.array.dtype, lambda k: (calls.append(k), vol.array[k])[1])
    auto_window(Volume(lazy, vol.spacing))
    assert len(calls) <= 16


def test_rgb_slices_orientation_and_laziness():
    vol, _ = ellipsoid_phantom(shape=(6, 10, 12))
    reads = []
    lazy = vol.with_array(LazySlices(vol.shape, vol.array.dtype, lambda k: (reads.append(k), vol.array[k])[1]))
    axial = rgb_slices(lazy, "axial", "ct-abdomen")
    frame = axial[4]
    assert len(axial) == 6 and frame.shape == (10, 12, 3) and frame.dtype == np.uint8 and reads == [4]
    assert np.array_equal(frame[..., 0], to_uint8(vol.array[4], (40, 400)))
    coronal = rgb_slices(vol, "coronal", "400,40")
    assert len(coronal) == 10 and np.array_equal(coronal[3][..., 1], to_uint8(vol.array[:, 3, :], (40, 400)))
    sagittal = rgb_slices(vol, 2, (40, 400))
    assert len(sagittal) == 12 and np.array_equal(sagittal[-1][..., 2], to_uint8(vol.array[:, :, 11], (40, 400)))
    assert pixel_size(vol, "coronal") == (2.5, 0.8) and pixel_size(vol, "axial") == (0.8, 0.8)
    with pytest.raises(IndexError):
        axial[6]
    _one_line_error(rgb_slices, vol, "oblique")


def test_lazy_slices_indexing():
    arr = np.arange(4 * 3 * 5).reshape(4, 3, 5)
    src = LazySlices(arr.shape, np.int64, lambda k: arr[k])
    assert np.array_equal(src[2], arr[2]) and np.array_equal(src[-1], arr[3])
    assert np.array_equal(src[1:3], arr[1:3]) and np.array_equal(src[2, 1:, 3], arr[2, 1:, 3])
    assert np.array_equal(src[:, 1, :], arr[:, 1, :]) and np.array_equal(np.asarray(src), arr)
    assert Volume(src).slice(1).shape == (3, 5) and isinstance(src, object)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert oblique_direction().shape == (3, 3)
