"""One process at a time writes a run directory: RUN/.lock, and the directory of a train or finetune
command picked and locked for the run."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

from ..cache.store import Lock
from ..digest import WriteError
from ..errors import BadInput
from .layout import LAST, LOCK, pick_run_dir


@contextmanager
def run_directory(recipe, out: str | None, resume: bool):
    """The run directory of a train or finetune command, locked for the run (torchrun: rank 0's choice,
    rank 0's lock; the other ranks print nothing)."""
    from .. import distributed as dist  # (lazy: it imports torch; reading runs needs none)

    if dist.init():
        dist.quiet_others()
    run_dir = dist.broadcast(pick_run_dir(recipe, out, resume))  # rank 0's choice (runs/NAME-N)
    with run_lock(run_dir, resume, take=dist.is_main()):
        yield run_dir


@contextmanager
def run_lock(run_dir: Path, resume: bool = False, take: bool = True):
    """One process at a time writes a run directory (train, finetune, --resume): RUN/.lock, the cache's
    entry Lock (an flock the kernel frees when its holder dies, kill -9 included), taken without waiting.
    Its descriptor is close-on-exec and closed in forked children (cache/store.py), so only this process
    holds it. take=False (torchrun ranks other than 0, which write nothing) does nothing. A run directory
    made here that is still empty at the end (setup failed) is removed again."""
    if not take:
        yield
        return
    run_dir = Path(run_dir)
    if resume and not (run_dir / LAST).is_file():
        started = run_dir.is_dir() and any(p.name != LOCK for p in run_dir.iterdir())
        raise BadInput(
            f"--resume: no checkpoint {run_dir / LAST} to continue from"
            + (
                " (the run stopped before its first epoch ended): run the same command again without "
                "--resume to start it over"
                if started
                else ""
            )
        )
    fresh = not run_dir.exists()
    lock = Lock(run_dir / LOCK, wait=False)
    try:
        lock.__enter__()
    except WriteError:  # the lock file could not be written (full disk, a symlink): its own line
        if fresh and run_dir.is_dir() and not any(run_dir.iterdir()):
            run_dir.rmdir()
        raise
    except BadInput:
        raise BadInput(
            f"{run_dir} is in use by another process (host, pid: {lock.holder()}; lock "
            f"{lock.path}): wait for it to finish, or choose another --out"
        ) from None
    try:
        yield
    finally:
        lock.__exit__(None, None, None)
        if fresh and run_dir.is_dir() and not any(run_dir.iterdir()):
            run_dir.rmdir()
