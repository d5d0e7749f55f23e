"""The CLI test helpers the command tests share: run ``anyseg`` in-process, check one-line errors."""

from __future__ import annotations

from anyseg.cli import main


def run(capsys, *argv) -> tuple[int, str, str]:
    """``anyseg ARGV`` in this process: ``(exit code, stdout, stderr)``."""
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def one_line(err: str, *fragments: str) -> None:
    """``err`` is one ``anyseg: error: ...`` line holding every fragment."""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("anyseg: error: "), err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, err)


def assert_one_line_error(code: int, err: str, *fragments: str) -> None:
    """Exit code 2, one error line on stderr, no traceback, every fragment in it."""
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got {lines}"
    assert lines[0].startswith("anyseg: error: ") and "Traceback" not in err
    for f in fragments:
        assert f in lines[0], f"{f!r} not in {lines[0]!r}"
