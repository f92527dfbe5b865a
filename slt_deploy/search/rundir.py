"""A search's run directory: its files, the refusals before it is written, and one writer
at a time. An exclusive `flock` on `<out>/.lock`, held for the whole
search: a second search on the same directory refuses at once, and the kernel releases the
lock when the holder dies (even by SIGKILL), so there are no stale locks to clean up. What a
killed holder can leave is a half-written temporary file (atomic.py's `.<name>.*.tmp`, never
renamed into place); the next holder of the lock removes those."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from slt_deploy.atomic import remove_stale_temporaries
from slt_deploy.errors import SltError
from slt_deploy.search.config import SearchConfig

LOCK_FILE = ".lock"
CHECKPOINT_FILE = "checkpoint.safetensors"
CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "summary.json"


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


def check_run_dir(out: Path, resume: bool, force: bool) -> None:
    """Refusals that need no lock (nothing is created before them)."""
    if resume and force:
        raise SltError("give --resume or --force, not both")
    if resume and not out.is_dir():
        raise SltError(f"--resume: no run directory {out}")
    if force and out.is_file():
        try:
            out.unlink()
        except OSError as exc:
            raise SltError(f"cannot replace {out}: {exc.strerror or exc}") from None


def prepare_run_dir(out: Path, config: SearchConfig, resume: bool, force: bool) -> bool:
    """With the lock held: refuse to clobber a run unless asked (--force replaces it, --resume
    continues it). Returns whether there is a checkpoint to resume. A run killed before its
    first checkpoint starts over under --resume, if its settings are the same."""
    if resume:
        if (out / CHECKPOINT_FILE).is_file():
            return True
        if entries(out) and _recorded_config(out) != config.to_dict():
            raise SltError(f"--resume: no checkpoint in {out}")
        clear(out)
        return False
    if entries(out) and not force:
        raise SltError(f"{out} exists; pass --resume to continue it or --force to replace it")
    clear(out)
    return False


def _recorded_config(out: Path) -> dict | None:
    try:
        return json.loads((out / CONFIG_FILE).read_text())
    except (OSError, ValueError):
        return None
