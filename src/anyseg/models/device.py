"""Torch devices: :func:`check_device` (one check every entry point goes through) and :func:`default_device`.

torch is imported only where a device other than ``cpu`` has to be looked up.
"""

from __future__ import annotations

import os
import re

from anyseg.errors import InputError

__all__ = ["check_device", "default_device"]


def default_device() -> str:
    """``$ANYSEG_DEVICE`` (checked by :func:`check_device`), else ``cuda`` when available, else ``cpu``."""
    import torch

    wanted = os.environ.get("ANYSEG_DEVICE")
    if wanted:
        return check_device(wanted, what="ANYSEG_DEVICE")
    return "cuda" if torch.cuda.is_available() else "cpu"


_DEVICE_FORMS = "cpu, cuda, cuda:N or mps"


def check_device(device: str | None, what: str = "--device") -> str:
    """A torch device name this process can use, or :class:`InputError` (one line).

    ``None`` -> :func:`default_device`. Accepted: ``cpu``, ``cuda`` and ``cuda:N`` (when this
    torch build has CUDA and the device exists) and ``mps`` (when available). ``what`` names
    the setting in the message (``--device cuda: this torch build has no CUDA (torch
    2.13.0+cpu); use --device cpu``). torch is imported only for ``cuda`` and ``mps``.
    """
    if device is None:
        return default_device()
    name = device.strip() if isinstance(device, str) else device
    if not isinstance(name, str) or not re.fullmatch(r"cpu|mps|cuda(:\d{1,3})?", name):
        raise InputError(f"{what} {device!r}: unknown device; expected {_DEVICE_FORMS}")
    if name == "cpu":
        return name
    import torch

    hint = f"use {what} cpu" if what.startswith("--") else "use cpu"
    if name == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise InputError(f"{what} mps: MPS (Apple GPU) is not available to this torch ({torch.__version__}); {hint}")
        return name
    if torch.version.cuda is None:
        raise InputError(f"{what} {name}: this torch build has no CUDA (torch {torch.__version__}); {hint}")
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count == 0:
        raise InputError(f"{what} {name}: no CUDA device is visible (torch {torch.__version__}, CUDA "
                         f"{torch.version.cuda}); {hint}")
    index = int(name.partition(":")[2] or 0)
    if index >= count:
        raise InputError(f"{what} {name}: there {'is' if count == 1 else 'are'} {count} CUDA device(s), "
                         f"cuda:0..cuda:{count - 1}")
    return name
