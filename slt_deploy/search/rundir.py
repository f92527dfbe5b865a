"""One writer per run directory. An exclusive `flock` on `<out>/.lock`, held for the whole
search: a second search on the same directory refuses at once, and the kernel releases the
lock when the holder dies (even by SIGKILL), so there are no stale locks to clean up. What a
killed holder can leave is a half-written temporary file (atomic.py's `.<name>.*.tmp`, never
renamed into place); the next holder of the lock removes those."""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from slt_deploy.atomic import remove_stale_temporaries
from slt_deploy.errors import SltError

LOCK_FILE = ".lock"


def _fail(out: Path, exc: OSError) -> SltError:
    return SltError(f"cannot write {out}: {exc.strerror or exc}")


@contextlib.contextmanager
def run_dir_lock(out: Path) -> Iterator[None]:
    """Create `out` if needed and hold its lock; refuse if another process holds it."""
    if out.exists() and not out.is_dir():
        raise SltError(f"{out} exists and is not a directory")
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd = os.open(out / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise _fail(out, exc) from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            raise SltError(
                f"{out} is being written by another search (pid {holder}); "
                "wait for it or choose another --out"
            ) from None
        with contextlib.suppress(OSError):  # who holds it, for the message above; best effort
            os.ftruncate(fd, 0)
            os.pwrite(fd, str(os.getpid()).encode(), 0)
        remove_stale_temporaries(out)  # none in use: only the lock holder writes here
        yield
    finally:
        os.close(fd)  # releases the lock


def entries(out: Path) -> list[Path]:
    """What the directory holds besides its lock file."""
    return [p for p in out.iterdir() if p.name != LOCK_FILE] if out.is_dir() else []


def clear(out: Path) -> None:
    """Empty a locked run directory for --force, keeping the lock file (and the lock)."""
    try:
        for path in entries(out):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
    except OSError as exc:
        raise _fail(out, exc) from None
