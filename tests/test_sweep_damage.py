"""A damaged sweep directory is refused by `sweep --resume` before anything is written (issue 23 weak spots):
a 0-byte, garbage or half-overwritten study.db (SQLite takes a 0-byte file for a new database: the sweep used to
start again from trial 0 over the old trial directories) and a cut sweep.json each give one line naming the
damage, exit 2, and leave every file as it was; a sweep directory in use by another process is refused."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from conftest import FAST, run_cli

LIMIT = ["--limit", 120]
ARGS = [
    "train/easyvqa-sweep.toml",
    *LIMIT,
    *FAST,
    "--set",
    "sweep.epochs=1",
    "--set",
    "sweep.startup_trials=1",
    "--set",
    "head.hidden=32",
    "--set",
    "space.head.hidden={choices=[16, 32]}",
    "--trials",
    1,
    "--jobs",
    1,
]


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    root = tmp_path_factory.mktemp("sweep-damage")
    run_cli("--cache-dir", root / "cache", "extract", *LIMIT, *FAST, "--workers", 0)
    run_cli("--cache-dir", root / "cache", "sweep", *ARGS, "--out", root / "s")
    return root


def snapshot(directory: Path) -> dict:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def _zero(p):
    p.write_bytes(b"")


def _garbage(p):
    p.write_bytes(b"this is not a database\n" * 100)


def _half_overwritten(p):
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2] + b"\xff" * (len(data) - len(data) // 2))


def _cut_json(p):
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize(
    "name, damage, message",
    [
        ("study.db", _zero, "study.db is damaged (0 bytes"),
        ("study.db", _garbage, "study.db is damaged (not an SQLite database)"),
        ("study.db", _half_overwritten, "study.db is damaged ("),
        ("sweep.json", _cut_json, "sweep.json: not valid JSON"),
    ],
)
def test_damaged_sweep_is_refused_and_left_alone(cli, swept, tmp_path, name, damage, message):
    out = tmp_path / "s"
    shutil.copytree(swept / "s", out)
    damage(out / name)
    before = snapshot(out)
    r = cli("--cache-dir", swept / "cache", "sweep", *ARGS[:-4], "--trials", 3, "--resume", "--out", out)
    assert r.code == 2 and message in r.err, r
    assert len(r.err.strip().splitlines()) == 1
    assert snapshot(out) == before


def test_a_sweep_in_use_is_refused(cli, swept, tmp_path):
    from vqa_cache.cache.store import Lock

    out = tmp_path / "s"
    shutil.copytree(swept / "s", out)
    before = snapshot(out)
    with Lock(out / ".lock", wait=False):  # another `sweep --resume` running on it
        r = cli("--cache-dir", swept / "cache", "sweep", *ARGS[:-4], "--trials", 3, "--resume", "--out", out)
    assert r.code == 2 and "is in use by another sweep process" in r.err, r
    assert snapshot(out) == before
    r = cli("--cache-dir", swept / "cache", "sweep", *ARGS[:-4], "--trials", 2, "--resume", "--out", out)
    assert r.code == 0 and "1 done, 1 to run" in r.out, r
