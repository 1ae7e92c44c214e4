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


def folder_problem(path: str | os.PathLike, *, writable: bool) -> str | None:
    """What stops ``path`` from serving as a folder, in words (``"is a file, not a folder"``), or
    ``None`` when it can: read (``writable=False``: it must exist), or written (created if missing,
    with its parents). Writes nothing: the path checks of every command line, before any work.
    """
    path = Path(path)
    if path.is_dir():
        mode, verb = (os.W_OK, "write") if writable else (os.R_OK, "read")
        if not os.access(path, mode | os.X_OK):
            return f"is a folder you cannot {verb} (permission denied)"
        return None
    if path.exists():
        return "is a file, not a folder"
    if path.is_symlink():
        return "is a broken symbolic link"
    if not writable:
        return "does not exist"
    parent = path.parent
    while not parent.exists() and not parent.is_symlink() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        return f"cannot be created: {parent} is a file, not a folder"
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"cannot be created: {parent} is a folder you cannot write (permission denied)"
    return None


def file_problem(path: str | os.PathLike, *, writable: bool) -> str | None:
    """What stops ``path`` from serving as a file, in words, or ``None`` when it can: read
    (``writable=False``), or written (its folder created if missing). Writes nothing."""
    path = Path(path)
    if path.is_dir():
        return "is a folder, not a file"
    if not writable:
        if not path.exists():
            return "does not exist"
        return None if os.access(path, os.R_OK) else "is a file you cannot read (permission denied)"
    if path.exists() and not os.access(path, os.W_OK):
        return "is a file you cannot write (permission denied)"
    problem = folder_problem(path.parent, writable=True)
    return None if problem is None else f"cannot be written: its folder {path.parent} {problem}"


def check(workdir: str | os.PathLike) -> None:
    """Checks, writing nothing, that ``workdir`` can be this run's: a folder (or one that can be
    created) that can be written and that no other run holds. The cheap checks a command line
    makes before it loads data or compiles; :func:`owned` makes them again when it takes it.

    Raises:
      WorkdirError: naming the problem.
    """
    path = Path(workdir)
    problem = folder_problem(path, writable=True)
    if problem == "is a file, not a folder":
        raise WorkdirError(f"--workdir {path} is a file, not a folder: pass a folder")
    if problem is not None and problem.startswith("cannot be created: "):
        reason = problem.removeprefix("cannot be created: ")
        raise WorkdirError(
            f"cannot create the workdir {path} ({reason}): pass a --workdir you can write"
        )
    if problem is not None:
        raise WorkdirError(f"--workdir {path} {problem}: pass a --workdir you can write")
    lock_path = path / LOCK_FILE
    try:
        fd = os.open(lock_path, os.O_RDONLY)
    except OSError:
        return  # no lock file yet (or unreadable: owned() says so)
    try:
        _lock(fd, path)
    finally:
        os.close(fd)  # Releases the probe's lock at once.


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
        fix = (
            "free disk space (or raise the file-size limit), then rerun the same command to resume"
        )
    elif error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        fix = "make it writable or pass another --workdir, then rerun"
    else:
        fix = "fix it or pass another --workdir, then rerun the same command to resume"
    return f"cannot write {path} ({error.strerror or error}): {fix}"
