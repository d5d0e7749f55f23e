"""``anyseg volume``'s options: prompts on slices (``--prompt``, grouped by ``--obj`` as in ``anyseg
track``), MedSAM2-style 3D boxes (``--box3d``), the slicing axis, the display window, the output format.

The command itself is a task (:func:`anyseg.tasks.volume.volume_from_args` reads, checks and runs
these options), so this module only builds the parser.
"""

from __future__ import annotations

import argparse

from anyseg.commands.options import DEVICE_HELP
from anyseg.commands.track import ObjId, ObjPrompt

__all__ = ["add_parser", "ObjBox3d", "run"]


class ObjBox3d(argparse.Action):
    """``--box3d`` values paired with the ``--obj`` id in force where they appear."""

    def __call__(self, parser, namespace, values, option_string=None):  # type: ignore[override]
        items = list(getattr(namespace, "box3ds", None) or [])
        items.append((getattr(namespace, "current_obj", 1), values))
        namespace.box3ds = items


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``volume`` and its options to the ``anyseg`` sub-commands."""
    v = sub.add_parser("volume", help="segment a 3D volume (NIfTI, NRRD, MHA, TIFF stack, DICOM series) from prompts "
                                      "on slices, propagated through it in both directions")
    v.add_argument("volume", help="volume file (.nii, .nii.gz, .nrrd, .mha, .mhd, .tif) or a DICOM series folder")
    v.add_argument("--obj", action=ObjId, metavar="ID",
                   help="object id (1..254) for the --prompt / --box3d options that follow (default 1)")
    v.add_argument("--prompt", action=ObjPrompt, metavar="SLICE:KIND=VALUE", dest="prompt_args",
                   help="SLICE:box=X0,Y0,X1,Y1, SLICE:point=X,Y[:LABEL] or SLICE:mask=PNG (pixels of the slice "
                        "along --axis); repeatable")
    v.add_argument("--box3d", action=ObjBox3d, metavar="X0,Y0,Z0,X1,Y1,Z1", dest="box3d_args",
                   help="a 3D box (MedSAM2): the box X0,Y0,X1,Y1 on the middle slice (Z0+Z1)//2, the object's "
                        "masks limited to slices Z0..Z1 (inclusive)")
    v.add_argument("--axis", default="axial", choices=("axial", "coronal", "sagittal"),
                   help="the slices that are the frames: axial (along k, default), coronal (j), sagittal (i)")
    v.add_argument("--model", default="auto", metavar="NAME|PATH",
                   help="classical (optical flow), a SAM 2 / 2.1 / EdgeTAM / SAM 3 / medsam2 name or a local model "
                        "folder (a video checkpoint), or auto (best present, else classical)")
    v.add_argument("--window", default="auto", metavar="PRESET|W,L",
                   help="display window of the frames: ct-abdomen, ct-lung, ct-bone, ct-brain, mri, W,L "
                        "(width, level) or auto (the file's, else from the intensities)")
    v.add_argument("--series", metavar="UID", help="the DICOM series to read when the folder holds several")
    v.add_argument("--index", type=int, metavar="N", help="the volume (time point) of a 4D file (default 0)")
    v.add_argument("--format", default="nifti", choices=("nifti", "dicom-seg"),
                   help="label file: labels.nii.gz (default) or labels.dcm, a DICOM Segmentation of the source series")
    v.add_argument("--out", required=True, metavar="DIR",
                   help="output folder (labels.nii.gz, volume.json, overlays/NNNN.png, sweep.mp4)")
    v.add_argument("--no-overlay", action="store_true", help="skip the overlay PNGs and the mp4 sweep")
    v.add_argument("--json", action="store_true", help="print the record (volume.json) as JSON")
    v.add_argument("--device", default=None, help=DEVICE_HELP)
    return v


def run(args: argparse.Namespace) -> int:
    """``anyseg volume``: the task reads, checks and runs its own options."""
    from anyseg.tasks.volume import volume_from_args

    return volume_from_args(args)
