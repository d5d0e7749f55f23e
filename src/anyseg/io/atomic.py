"""Atomic file writes: write to a temporary name in the same folder, then rename.

A failed or interrupted run never leaves a half-written file behind, and never replaces an
earlier result with a broken one.

A run killed outright (SIGKILL, power loss) cannot remove its temporary files, so their
names carry their owner: ``.NAME.anyseg-HOST-PID-START-XXXX.tmp`` for :func:`atomic_open`,
``.anyseg-staging-HOST-PID-START-XXXX`` for :func:`staged_dir` (HOST: a hash of the host
name; START: the process start time, which tells a reused pid from its first owner). The
first write of a process into a folder removes the leftovers there whose owner is gone
(:func:`clean_stale`); a live run's are kept. When the owner cannot be checked (another host,
no ``/proc``, a staging folder of an older anyseg), a leftover is removed once it is older
than :data:`UNVERIFIED_STALE_S`.

Outputs get the mode the umask gives (``0o666 & ~umask``; folders ``0o777 & ~umask``), not
the ``0o600`` of :mod:`tempfile`. The umask is read once, at import, without changing it where
``/proc`` has it (the process-wide :func:`os.umask` is not thread-safe to read).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
import threading
import time
from pathlib import Path
from typing import IO, Any, Iterator

STAGING_PREFIX = ".anyseg-staging-"
#: Age (seconds) after which a leftover whose owner cannot be checked is removed.
UNVERIFIED_STALE_S = 600.0

_OWNER = r"(?P<host>[0-9a-f]{8})-(?P<pid>\d+)-(?P<start>\d+)-"
_STAGING_RE = re.compile(rf"^{re.escape(STAGING_PREFIX)}(?:{_OWNER})?[A-Za-z0-9_]+$")
_TMP_RE = re.compile(rf"^\..+\.anyseg-{_OWNER}[A-Za-z0-9_]+\.tmp$")
_LOCK = threading.Lock()
_CLEANED: set[str] = set()  # folders this process has already cleaned
_TAG: dict[int, str] = {}  # pid -> owner tag (a forked child gets its own)


def _read_umask() -> int:
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    with _LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


UMASK = _read_umask()
#: Modes of the files and folders this module creates.
FILE_MODE = 0o666 & ~UMASK
DIR_MODE = 0o777 & ~UMASK


def _host_hash() -> str:
    import hashlib
    import socket

    return hashlib.blake2b(socket.gethostname().encode(), digest_size=4).hexdigest()


def process_start(pid: int) -> int | None:
    """Start time of process ``pid`` (clock ticks since boot), ``-1`` if it is gone or a zombie,
    ``None`` where it cannot be told (no ``/proc``)."""
    try:
        stat = Path(f"/proc/{int(pid)}/stat").read_text()
    except FileNotFoundError:
        return -1 if Path("/proc/self/stat").is_file() else None
    except (OSError, ValueError):
        return None
    fields = stat[stat.rfind(")") + 2:].split()  # after "pid (comm) ": state, ppid, ...
    if not fields or fields[0] in ("Z", "X"):
        return -1
    try:
        return int(fields[19])  # field 22 of proc(5)
    except (IndexError, ValueError):
        return None


def owner_tag() -> str:
    """``HOST-PID-START`` of this process, as temporary names carry it."""
    pid = os.getpid()
    tag = _TAG.get(pid)
    if tag is None:
        tag = _TAG[pid] = f"{_host_hash()}-{pid}-{max(0, process_start(pid) or 0)}"
    return tag


def _owner_gone(host: str, pid: int, start: int) -> bool | None:
    """Whether the owner process is gone: ``True``/``False``, or ``None`` when it cannot be told."""
    if host != _host_hash() or os.name == "nt":
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass  # alive, another user's
    except OSError:
        return None
    now = process_start(pid)
    if now == -1:
        return True
    if now is None or start == 0:
        return None
    return now != start


def is_stale(path: Path, now: float | None = None) -> bool:
    """Whether ``path`` is a temporary file or staging folder left by a run that is gone."""
    m = _STAGING_RE.match(path.name) or _TMP_RE.match(path.name)
    if m is None:
        return False
    gone = None
    if m.group("pid") is not None:
        gone = _owner_gone(m.group("host"), int(m.group("pid")), int(m.group("start")))
    if gone is not None:
        return gone
    try:
        age = (time.time() if now is None else now) - path.lstat().st_mtime
    except FileNotFoundError:
        return False
    return age > UNVERIFIED_STALE_S


def clean_stale(folder: str | os.PathLike) -> int:
    """Remove the stale temporary files and staging folders in ``folder``; returns how many."""
    import shutil

    removed = 0
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return 0
    for entry in entries:
        if not entry.name.startswith(".") or not is_stale(Path(entry.path)):
            continue
        with contextlib.suppress(OSError):  # another run may be removing it too
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path)
            else:
                os.unlink(entry.path)
            removed += 1
    return removed


def clean_stale_once(folder: str | os.PathLike) -> None:
    """:func:`clean_stale` on the first call for ``folder`` in this process (staging folders skipped)."""
    key = os.path.abspath(folder)
    if os.path.basename(key).startswith(STAGING_PREFIX):
        return
    with _LOCK:
        if key in _CLEANED:
            return
        if len(_CLEANED) >= 4096:  # a long-lived service writing into many folders: stay bounded
            _CLEANED.clear()
        _CLEANED.add(key)
    clean_stale(key)


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO[Any]]:
    """Open a temporary file next to ``path``; on success it replaces ``path`` atomically."""
    if "w" not in mode:
        raise ValueError(f"atomic_open is for writing; got mode {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_once(path.parent)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name[:120]}.anyseg-{owner_tag()}-", suffix=".tmp", dir=path.parent)
    try:
        if hasattr(os, "fchmod"):
            os.fchmod(fd, FILE_MODE)
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def staged_dir(out_dir: str | os.PathLike) -> Iterator[Path]:
    """A staging folder inside ``out_dir``; on success its files move into ``out_dir``.

    Files are moved in name order with ``*.json`` last (the record that names the others),
    each with an atomic rename. On failure the staging folder is removed and ``out_dir``
    keeps exactly what it had.
    """
    import shutil

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    clean_stale_once(out)
    stage = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{owner_tag()}-", dir=out))
    try:
        os.chmod(stage, DIR_MODE)
        yield stage
        files = sorted(stage.iterdir(), key=lambda p: (p.suffix == ".json", p.name))
        for f in files:
            os.replace(f, out / f.name)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_open(path, "wb") as f:
        f.write(data)
    return Path(path)


def write_text(path: str | os.PathLike, text: str) -> Path:
    with atomic_open(path, "w") as f:
        f.write(text)
    return Path(path)


def write_json(path: str | os.PathLike, obj: Any, indent: int | None = 2) -> Path:
    return write_text(path, json.dumps(obj, indent=indent) + "\n")
