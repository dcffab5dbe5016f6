"""One `aloe run` per run directory: an exclusive flock on <run_dir>/.lock for the whole run.

The kernel drops a flock when its holder dies, even by kill -9, so a crashed run never leaves a
stale lock behind. The file stays (unlinking it would let a waiting process lock a deleted inode
while a third creates a new file); it holds the PID of the current holder, for the error message.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

LOCK_FILE = ".lock"


class RunDirBusy(OSError):
    """Another process holds the run directory (an OSError, like the EWOULDBLOCK it comes from)."""


@contextmanager
def run_dir_lock(run_dir: Path) -> Iterator[None]:
    """Hold the run directory's lock for the block; raises RunDirBusy at once when another holds it."""
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown, just starting"
            raise RunDirBusy(f"{run_dir} is in use by another `aloe run` (pid {holder}, holding {path}); "
                             f"wait for it to finish, or pass another --run-dir") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock
