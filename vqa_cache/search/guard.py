"""A sweep directory held by one process at a time, and checked before --resume touches it.

DIR/.lock is the cache's entry Lock (an flock the kernel frees when its holder dies), as a run directory's
RUN/.lock: a second `sweep --resume` on the same directory is refused instead of adding trials beside the
first. Before a resumed sweep writes anything, sweep.json must be a JSON object with its three parts and
study.db an intact SQLite database holding this sweep's study; anything else is one line saying what is
damaged (SQLite would take a 0-byte study.db for a new, empty one and start again from trial 0)."""

from __future__ import annotations

import sqlite3
from contextlib import contextmanager
from pathlib import Path

from ..cache.store import Lock
from ..digest import WriteError
from ..errors import BadInput
from ..rundir import read_json_object

LOCK = ".lock"
SQLITE_HEADER = b"SQLite format 3\x00"


@contextmanager
def sweep_lock(directory: Path):
    """DIR/.lock for the sweep's lifetime, taken without waiting."""
    lock = Lock(Path(directory) / LOCK, wait=False)
    try:
        lock.__enter__()
    except WriteError:  # the lock file could not be written (read-only, full disk): its own line
        raise
    except BadInput:
        raise BadInput(
            f"{directory} is in use by another sweep process (host, pid: {lock.holder()}; lock "
            f"{lock.path}): wait for it to finish, or choose another --out"
        ) from None
    try:
        yield
    finally:
        lock.__exit__(None, None, None)


def check_resumable(directory: Path, name: str) -> None:
    """BadInput naming the damage when sweep.json or study.db cannot be continued from; reads only."""
    record = read_json_object(directory / "sweep.json", f"--resume: {directory / 'sweep.json'} is missing")
    missing = [part for part in ("base", "space", "sweep") if not isinstance(record.get(part), dict)]
    if missing:
        raise BadInput(
            f"--resume: {directory / 'sweep.json'} is damaged (no {', '.join(missing)} section); "
            f"the sweep cannot be continued: start a new one with another --out"
        )
    check_study_db(directory / "study.db", name)


def check_study_db(path: Path, name: str) -> None:
    damaged = f"--resume: {path} is damaged"
    try:
        with open(path, "rb") as f:
            header = f.read(len(SQLITE_HEADER))
    except OSError as e:
        raise BadInput(f"--resume: {path}: unreadable ({e.strerror or e})") from None
    if not header:
        raise BadInput(
            f"{damaged} (0 bytes: the study's trials are gone); nothing was changed: restore it from "
            f"a backup, or start a new sweep with another --out"
        )
    if header != SQLITE_HEADER:
        raise BadInput(
            f"{damaged} (not an SQLite database); nothing was changed: restore it from a backup, or "
            f"start a new sweep with another --out"
        )
    try:
        con = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            check = con.execute("PRAGMA quick_check").fetchall()
            tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            studies = {r[0] for r in con.execute("SELECT study_name FROM studies")} if "studies" in tables else set()
        finally:
            con.close()
    except sqlite3.Error as e:
        raise BadInput(
            f"{damaged} (SQLite: {e}); nothing was changed: restore it from a backup, or start a new "
            f"sweep with another --out"
        ) from None
    if check != [("ok",)]:
        raise BadInput(f"{damaged} (SQLite integrity check: {str(check[0][0])[:120]}); nothing was changed")
    if not {"studies", "trials"} <= tables:
        raise BadInput(f"{damaged} (not an Optuna study: no studies or trials table); nothing was changed")
    if name not in studies:
        raise BadInput(
            f"{damaged} (it holds no study {name!r}, only {', '.join(sorted(studies)) or 'none'}); nothing was changed"
        )
