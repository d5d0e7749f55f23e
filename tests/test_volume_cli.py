"""``anyseg volume``: prompts on slices, the label volume in the input's geometry, the JSON, overlays, errors.

The label file is read back with two libraries (nibabel and SimpleITK) and its geometry compared
with the input's; the JSON's volumes in mL are checked against the label voxels and the spacing.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from anyseg.cli import main
from test_volume_session import box_of, dice, phantom

nib = pytest.importorskip("nibabel")
sitk = pytest.importorskip("SimpleITK")


def write_nifti(volume, path: Path) -> Path:
    """The volume as NIfTI through SimpleITK (its LPS geometry as it is)."""
    img = sitk.GetImageFromArray(np.asarray(volume.array))
    img.SetSpacing(volume.spacing)
    img.SetOrigin(volume.origin)
    img.SetDirection(np.asarray(volume.direction).ravel().tolist())
    sitk.WriteImage(img, str(path))
    return path


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    vol, m1, m2 = phantom(second=1.5)
    return write_nifti(vol, tmp_path_factory.mktemp("vol") / "ct.nii.gz"), vol, m1, m2


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main(["volume", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


def test_segments_and_writes_the_geometry_of_the_input(case, tmp_path, capsys):
    path, vol, m1, m2 = case
    b1, b2 = box_of(m1[11]), box_of(m2[13])
    out = tmp_path / "run"
    code, stdout, err = run(capsys, path, "--prompt", "11:box=" + ",".join(map(str, b1)), "--obj", 2, "--prompt",
                            "13:box=" + ",".join(map(str, b2)), "--model", "classical", "--window", "ct-abdomen",
                            "--out", out, "--json")
    assert code == 0, err
    record = json.loads(stdout)
    assert record == json.loads((out / "volume.json").read_text())
    assert record["task"] == "volume" and record["tracker"] == "classical" and record["axis"] == "axial"
    assert record["object_ids"] == [1, 2] and [p["slice"] for p in record["prompts"]] == [11, 13]

    # read back with nibabel: the RAS affine and the (I, J, K) data
    img = nib.load(str(out / "labels.nii.gz"))
    src = nib.load(str(path))
    assert np.allclose(img.affine, src.affine, atol=1e-4) and img.shape == src.shape
    labels = np.asarray(img.dataobj).transpose(2, 1, 0)
    assert labels.dtype == np.uint8 and set(np.unique(labels).tolist()) == {0, 1, 2}
    # ... and with SimpleITK: spacing, origin, direction (LPS) and the [k, j, i] array
    itk = sitk.ReadImage(str(out / "labels.nii.gz"))
    assert np.allclose(itk.GetSpacing(), vol.spacing, atol=1e-4)
    assert np.allclose(itk.GetOrigin(), vol.origin, atol=1e-4)
    assert np.allclose(np.reshape(itk.GetDirection(), (3, 3)), vol.direction, atol=1e-4)
    assert np.array_equal(sitk.GetArrayFromImage(itk), labels)
    assert dice(labels == 1, m1) >= 0.88 and dice(labels == 2, m2) >= 0.9

    geometry = record["geometry"]
    assert geometry["shape"] == list(vol.shape) and np.allclose(geometry["direction"], vol.direction)
    ml = np.prod(vol.spacing) / 1000
    for obj, mask in ((1, m1), (2, m2)):
        rec = record["objects"][str(obj)]
        voxels = int((labels == obj).sum())
        assert rec["voxels"] == voxels and rec["volume_ml"] == pytest.approx(voxels * ml)
        assert rec["volume_ml"] == pytest.approx(mask.sum() * ml, rel=0.15)  # the true volume, to the Dice
        k, j, i = np.nonzero(labels == obj)
        assert rec["bbox_voxels"] == [i.min(), j.min(), k.min(), i.max(), j.max(), k.max()]
        corners = vol.affine_lps() @ np.array([[i.min(), j.min(), k.min(), 1], [i.max(), j.max(), k.max(), 1]]).T
        lo, hi = np.array(rec["bbox_mm"][:3]), np.array(rec["bbox_mm"][3:])
        assert (lo <= corners[:3].min(1) + 1e-6).all() and (hi >= corners[:3].max(1) - 1e-6).all()

    slices = sorted(int(p.stem) for p in (out / "overlays").glob("*.png"))
    assert slices == record["outputs"]["overlay_slices"] and slices
    assert all(labels[s].any() for s in slices) and not any(labels[s].any() for s in set(range(24)) - set(slices))
    assert (out / "sweep.mp4").stat().st_size > 0 and record["outputs"]["sweep"]["frames"] == 24
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no staging leftovers


def test_box3d_coronal_and_no_overlay(case, tmp_path, capsys):
    path, vol, m1, _ = case
    out = tmp_path / "run"
    (out / "overlays").mkdir(parents=True)
    (out / "overlays" / "0003.png").write_bytes(b"old")
    (out / "notes.txt").write_text("mine")
    j = int(np.argmax(m1.sum((0, 2))))
    b = box_of(m1[:, j, :])
    code, _, err = run(capsys, path, "--box3d", f"{b[0]},{b[1]},{j - 5},{b[2]},{b[3]},{j + 5}", "--axis", "coronal",
                       "--model", "classical", "--window", "400,40", "--out", out, "--no-overlay")
    assert code == 0, err
    assert "segmented 1 object(s)" in err
    record = json.loads((out / "volume.json").read_text())
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "labels.nii.gz")))
    assert record["axis"] == "coronal" and record["prompts"][0]["box3d"][2] == j - 5
    assert labels[:, j - 5:j + 6].any() and not labels[:, :j - 5].any() and not labels[:, j + 6:].any()
    assert not (out / "overlays" / "0003.png").exists() and not (out / "sweep.mp4").exists()
    assert (out / "notes.txt").read_text() == "mine"


@pytest.fixture(scope="module")
def flat(tmp_path_factory):
    """A one-slice NIfTI (2D) and a text file."""
    d = tmp_path_factory.mktemp("bad")
    img = nib.Nifti1Image(np.zeros((16, 16, 1), np.int16), np.eye(4))
    nib.save(img, str(d / "flat.nii.gz"))
    (d / "notes.txt").write_text("not a volume")
    return d


@pytest.mark.parametrize("args, message", [
    (["--prompt", "30:box=10,10,20,20"], "slice 30 is outside the volume"),
    (["--prompt", "5:point=60,10"], r"point \(60, 10\) is outside slice 5"),
    (["--prompt", "5:box=10,10,49,20"], "is outside slice 5"),
    (["--box3d", "10,10,5,20,20,30"], "outside the volume"),
    (["--box3d", "20,10,5,10,20,8"], "inverted"),
    (["--box3d", "1,2,3"], "malformed --box3d"),
    (["--prompt", "5:box=10,10,20,20", "--window", "ct-liver"], "--window must be one of"),
    (["--prompt", "5:box=10,10,20,20", "--format", "dicom-seg"], "dicom-seg needs a DICOM source series"),
    ([], "no prompt"),
    (["--prompt", "5:point=10,10:0"], "only negative clicks"),
    (["--obj", "300", "--prompt", "5:box=10,10,20,20"], "--obj must be an integer object id in 1..254"),
])
def test_bad_input_is_one_line(case, tmp_path, capsys, args, message):
    path = case[0]
    out = tmp_path / "never"
    code, _, err = run(capsys, path, *args, "--model", "classical", "--out", out)
    assert code == 2 and err.count("\n") == 1 and err.startswith("anyseg: error: "), err
    assert __import__("re").search(message, err), err
    if "dicom-seg" not in message:
        assert not out.exists()  # checked before anything is written


@pytest.mark.parametrize("name, message", [("flat.nii.gz", "is 2D"), ("notes.txt", "not a volume file")])
def test_2d_and_non_volume_files_are_one_line(flat, tmp_path, capsys, name, message):
    code, _, err = run(capsys, flat / name, "--prompt", "0:box=1,1,5,5", "--model", "classical", "--out", tmp_path / "o")
    assert code == 2 and err.count("\n") == 1 and message in err, err


def write_series(vol, folder: Path) -> Path:
    """The volume as a DICOM CT series (one file a slice, pydicom's CT_small.dcm as the template):
    positions, orientation and spacing from its geometry, stored values + 1024 with intercept -1024."""
    import copy

    pydicom = pytest.importorskip("pydicom")
    from pydicom.data import get_testdata_file
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    template = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    series, study, frame = generate_uid(), generate_uid(), generate_uid()
    arr, d = np.asarray(vol.array), np.asarray(vol.direction)
    for k in range(arr.shape[0]):
        ds = copy.deepcopy(template)
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.SeriesInstanceUID, ds.StudyInstanceUID, ds.FrameOfReferenceUID = series, study, frame
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient = [float(v) for v in np.asarray(vol.origin) + d[:, 2] * vol.spacing[2] * k]
        ds.ImageOrientationPatient = [float(v) for v in (*d[:, 0], *d[:, 1])]
        ds.PixelSpacing = [float(vol.spacing[1]), float(vol.spacing[0])]
        ds.SliceThickness = float(vol.spacing[2])
        ds.Rows, ds.Columns = arr.shape[1:]
        ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
        ds.PixelRepresentation, ds.BitsAllocated, ds.BitsStored, ds.HighBit = 1, 16, 16, 15
        ds.PixelData = (arr[k].astype(np.int16) + 1024).astype(np.int16).tobytes()
        if "SliceLocation" in ds:
            del ds.SliceLocation
        ds.save_as(folder / f"IM{k:03d}.dcm", enforce_file_format=True)
    return folder


def test_dicom_seg_references_the_source_series(tmp_path, capsys):
    hd = pytest.importorskip("highdicom")
    import pydicom

    vol, m1, _ = phantom()
    folder = write_series(vol, tmp_path / "series")
    out = tmp_path / "run"
    code, _, err = run(capsys, folder, "--prompt", "11:box=" + ",".join(map(str, box_of(m1[11]))), "--model",
                       "classical", "--format", "dicom-seg", "--window", "ct-abdomen", "--out", out, "--no-overlay")
    assert code == 0, err
    record = json.loads((out / "volume.json").read_text())
    assert record["outputs"]["labels"] == "labels.dcm" and not (out / "labels.nii.gz").exists()
    sources = [pydicom.dcmread(folder / f"IM{k:03d}.dcm") for k in range(24)]
    seg = hd.seg.segread(str(out / "labels.dcm"))
    assert seg.Modality == "SEG" and seg.ReferencedSeriesSequence[0].SeriesInstanceUID == sources[0].SeriesInstanceUID
    pixels = seg.get_pixels_by_source_instance(source_sop_instance_uids=[s.SOPInstanceUID for s in sources],
                                               segment_numbers=[1])[..., 0]
    assert pixels.shape == vol.shape and int(pixels.sum()) == record["objects"]["1"]["voxels"]
    assert dice(pixels > 0, m1) >= 0.9
