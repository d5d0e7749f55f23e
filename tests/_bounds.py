"""The bounds of ``anyseg everything``'s work-scaling options, derived from the constants the code checks.

Shared by test_adversarial_cli.py (values far over a bound) and test_cli_everything.py (values
under one), so that both expect the one-line error :class:`anyseg.tasks.everything.EverythingParams`
writes (with the option's name in place of the field's) and neither hard-codes a bound: raising
:data:`~anyseg.tasks.everything.MAX_POINTS_PER_SIDE` changes the expected messages with it.
"""

from __future__ import annotations

from anyseg.tasks.everything import MAX_CROP_LAYERS, MAX_POINTS_PER_BATCH, MAX_POINTS_PER_SIDE

#: option -> (lowest, highest) integer it accepts
EVERYTHING_INT_BOUNDS: dict[str, tuple[int, int]] = {
    "--points-per-side": (1, MAX_POINTS_PER_SIDE),
    "--points-per-batch": (1, MAX_POINTS_PER_BATCH),
    "--crop-layers": (0, MAX_CROP_LAYERS),
}


def bound_error(option: str, got: int | None = None) -> str:
    """The error text for ``option`` outside its bound; with ``got``, ending in ``; got VALUE`` as the CLI's does."""
    lo, hi = EVERYTHING_INT_BOUNDS[option]
    text = f"{option} must be an integer in {lo}..{hi}"
    return text if got is None else f"{text}; got {got}"
