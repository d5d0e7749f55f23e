"""Shared by the hostile mask-input tests (issue 13, class 1): test_adversarial_rle.py and test_adversarial_masks.py.

Children under an address-space limit (a native crash or a big allocation fails the test
instead of killing pytest), the one-line-error check, and the issue's crashing RLE.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

CHILD_MEMORY = 1536 << 20  # 1.5 GiB of address space: a 1.6 GB mask cannot be allocated
CRASH_RLE = {"size": [1000000, 1000000], "counts": "PPTZZZSm0"}  # the example


def _limit_memory() -> None:
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (CHILD_MEMORY, CHILD_MEMORY))


def run_child(code: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """Runs ``code`` in a fresh interpreter under :data:`CHILD_MEMORY`; the timeout is only a safety net."""
    full_env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", **(env or {}))
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120,
                          preexec_fn=_limit_memory, env=full_env)


def one_line_error(exc: pytest.ExceptionInfo) -> str:
    """The message of a raised error, asserted to be one non-empty line (the users' contract)."""
    message = str(exc.value)
    assert "\n" not in message and message
    return message
