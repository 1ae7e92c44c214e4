"""A run's ownership of its workdir: created if needed, then locked for as long as the run lasts.

:func:`owned` creates the workdir and takes an exclusive, non-blocking ``fcntl.flock`` on
``<workdir>/run.lock``, which holds the owner's PID and host. The operating system releases the
lock when the process ends, however it ends (SIGKILL included), so a stale lock file never
blocks a rerun. A second run on the same workdir stops at once with a :class:`WorkdirError`
naming the process that holds it. In a multi-process run only the writing process (process 0)
takes the lock.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import socket
from collections.abc import Iterator
from pathlib import Path

LOCK_FILE = "run.lock"


class WorkdirError(Exception):
    """The workdir cannot be created, written or owned. The message is one line with the fix."""


def create(workdir: str | os.PathLike) -> Path:
    """Creates ``workdir`` (and its parents) if needed; returns it.

    Raises:
      WorkdirError: it is a file, or it cannot be created (permissions, read-only disk...).
    """
    path = Path(workdir)
    if path.exists() and not path.is_dir():
        raise WorkdirError(f"--workdir {path} is a file, not a folder: pass a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise WorkdirError(
            f"cannot create the workdir {path} ({error.strerror}): pass a --workdir you can write"
        ) from None
    return path


@contextlib.contextmanager
def owned(workdir: str | os.PathLike, *, lock: bool = True) -> Iterator[Path]:
    """Creates ``workdir`` and holds its lock for the block (``lock=False``: creates only).

    Raises:
      WorkdirError: the workdir cannot be created or written, or another process holds it.
    """
    path = create(workdir)
    if not lock:
        yield path
        return
    lock_path = path / LOCK_FILE
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as error:
        raise WorkdirError(
            f"cannot write {lock_path} ({error.strerror}): pass a --workdir you can write"
        ) from None
    try:
        _lock(fd, path)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()} {socket.gethostname()}\n".encode())
        yield path
    finally:
        os.close(fd)  # Releases the lock.


def _lock(fd: int, path: Path) -> None:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        owner = os.pread(fd, 200, 0).decode(errors="replace").split()
        pid, host = (owner + ["?", "?"])[:2]
        raise WorkdirError(
            f"the workdir {path} is in use by another run (process {pid} on {host}): wait for "
            "it to finish or stop it, or pass another --workdir"
        ) from None


def describe_write_failure(error: OSError) -> str:
    """One line for a failed write: the path, the reason and the fix."""
    path = error.filename or "a file of the workdir"
    if error.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
        fix = "free disk space (or raise the file-size limit), then rerun the same command to resume"
    elif error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        fix = "make it writable or pass another --workdir, then rerun"
    else:
        fix = "fix it or pass another --workdir, then rerun the same command to resume"
    return f"cannot write {path} ({error.strerror or error}): {fix}"
