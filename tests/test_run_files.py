"""The run contract's files land whole or not at all (issue 23.1): every run and sweep file goes through a
temporary file in the same directory, fsync'd and renamed; a full disk or the file-size limit is one line
naming the file and the free space, exit 2, and the file that was there stays whole; no temporary file and
no empty lock file is left; a symlink planted in a run directory is replaced, never followed. And `report`
reads metrics.json through the one checked reader (issue 23.4)."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import resource
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import FAST, run_cli

ROOT = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), *sys.path]), OMP_NUM_THREADS="1")
LIMIT = ["--limit", 120]
TRAIN = ["train", *LIMIT, *FAST, "--set", "head.hidden=16"]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    root = tmp_path_factory.mktemp("cache")
    run_cli("--cache-dir", root, "extract", *LIMIT, *FAST, "--workers", 0)
    return root


@pytest.fixture(scope="module")
def trained(cache, tmp_path_factory):
    """A finished 2-epoch run with its report (not to be modified: tests copy it)."""
    run = tmp_path_factory.mktemp("runs") / "good"
    run_cli("--cache-dir", cache, *TRAIN, "--epochs", 2, "--out", run)
    run_cli("--cache-dir", cache, "report", run)
    return run


def vqa_cache(*args, limit_bytes=None, roomy=True):
    """`vqa-cache ARGS` in a subprocess under a file-size limit (`ulimit -f`, as the issue's repro); with
    `roomy` the free-space check is fooled, so that the write itself meets EFBIG. (returncode, stderr)."""
    code = "import sys; from vqa_cache.cli import main; sys.argv[0] = 'vqa-cache'; main()"
    if roomy:
        code = "import vqa_cache.digest as s; s.free_space = lambda d: (1 << 50, 'on a roomy disk'); " + code

    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))

    r = subprocess.run(
        [sys.executable, "-c", code, *map(str, args)],
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=limit if limit_bytes is not None else None,
    )
    return r.returncode, r.stderr


def error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len([x for x in lines if x.startswith("vqa-cache:")]) == 1 and lines[-1].startswith("vqa-cache: error:"), err
    return lines[-1]


def snapshot(folder: Path) -> dict:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def leftovers(folder: Path) -> list[str]:
    return [p.name for p in folder.rglob("*") if ".tmp" in p.name or p.name == ".lock"]


# ---------------------------------------------------------------- a full disk or the file-size limit


@pytest.mark.slow  # a subprocess: not in `make test-fast`
def test_report_under_the_file_size_limit_keeps_the_old_report_whole(cache, trained, tmp_path):
    """The issue's repro: `report RUN` once, then `(ulimit -f 100; vqa-cache report RUN)`."""
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    before = snapshot(run)
    assert len(before["report.html"]) > 100 * 1024
    for roomy in (True, False):  # the write meets EFBIG / the free-space check sees the limit
        code, err = vqa_cache("--cache-dir", cache, "report", run, limit_bytes=100 * 1024, roomy=roomy)
        line = error_line(err)
        assert code == 2 and "no space left" in line and "report.html" in line and str(run) in line, err
        assert ("ulimit -f" in line) != roomy and "MiB" in line, line
        assert snapshot(run) == before and leftovers(run) == []


@pytest.mark.slow  # a subprocess: not in `make test-fast`
def test_predict_out_under_the_limit_keeps_the_old_file_whole(cache, trained, tmp_path):
    out = tmp_path / "p.json"
    out.write_text("[" + ", ".join(['{"question_id": 1, "answer": "old"}'] * 400) + "]")
    before = out.read_bytes()
    code, err = vqa_cache("--cache-dir", cache, "predict", "--run", trained, "--out", out, limit_bytes=1024)
    assert code == 2 and "p.json" in error_line(err), err
    assert out.read_bytes() == before and leftovers(tmp_path) == []


@pytest.mark.slow  # a subprocess: not in `make test-fast`
def test_resume_under_the_limit_keeps_config_and_checkpoints_whole(cache, trained, tmp_path):
    """config.json is rewritten on --resume: under a limit below its size, exit 2 and everything as it was."""
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    (run / "report.html").unlink()
    before = snapshot(run)
    code, err = vqa_cache(
        "--cache-dir",
        cache,
        *TRAIN,
        "--epochs",
        3,
        "--resume",
        "--out",
        run,
        limit_bytes=len(before["config.json"]) // 2,
    )
    assert code == 2 and "config.json" in error_line(err), err
    assert snapshot(run) == before and leftovers(run) == []


@pytest.mark.slow  # a subprocess: not in `make test-fast`
def test_a_checkpoint_that_does_not_fit_leaves_no_temporary_file(cache, tmp_path):
    """best.pt is the first file past the limit: exit 2, and no best.pt.tmp holding the space."""
    run = tmp_path / "run"
    code, err = vqa_cache("--cache-dir", cache, *TRAIN, "--epochs", 1, "--out", run, limit_bytes=8 * 1024)
    assert code == 2 and "best.pt" in error_line(err), err
    assert leftovers(run) == [] and not (run / "best.pt").exists()
    assert json.loads((run / "config.json").read_text())["head"]["hidden"] == 16  # written whole


LOCK_CODE = """
import sys
from pathlib import Path
from vqa_cache.errors import BadInput
from vqa_cache.rundir import run_lock
try:
    with run_lock(Path(sys.argv[1])):
        print("LOCKED")
except BadInput as e:
    print("BADINPUT", e)
"""


@pytest.mark.slow  # a subprocess: not in `make test-fast`
def test_the_lock_file_on_a_full_disk_is_one_line_and_leaves_no_empty_lock(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    r = subprocess.run(
        [sys.executable, "-c", LOCK_CODE, str(run)],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0)),
    )
    assert r.stdout.startswith("BADINPUT no space left") and ".lock" in r.stdout, (r.stdout, r.stderr)
    assert list(run.iterdir()) == []
    r = subprocess.run(
        [sys.executable, "-c", LOCK_CODE, str(run / "new")],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0)),
    )
    assert r.stdout.startswith("BADINPUT no space left") and list(run.iterdir()) == [], r.stdout  # (made, removed)


@pytest.mark.parametrize(
    "code, says",
    [(errno.ENOSPC, "no space left"), (errno.EDQUOT, "no space left"), (errno.EROFS, "read-only file system")],
)
def test_write_errors_are_one_line_naming_the_file_and_keep_the_old_file(tmp_path, monkeypatch, code, says):
    """ENOSPC, EDQUOT and EROFS met while writing (here at the fsync): BadInput naming the file, the old
    file whole, no temporary file."""
    from vqa_cache import digest
    from vqa_cache.errors import BadInput
    from vqa_cache.rundir import write_json

    path = tmp_path / "metrics.json"
    path.write_text('{"old": 1}')

    def full(fd):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(digest.os, "fsync", full)
    with pytest.raises(BadInput, match=says) as e:
        write_json(path, {"new": 2})
    assert "metrics.json" in str(e.value) and path.read_text() == '{"old": 1}' and leftovers(tmp_path) == []


# ---------------------------------------------------------------- readers never see half a file


def test_every_run_file_is_replaced_not_rewritten_in_place(cache, trained, tmp_path):
    """A rewrite lands by rename (a new inode), so a reader holds the old file or the new one: config.json
    and the checkpoints on --resume, metrics.json after each epoch, predictions.json, report.html, predict."""
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    out = tmp_path / "p.json"
    out.write_text("[]")
    names = ("config.json", "metrics.json", "predictions.json", "report.html", "last.pt", "curves.png", "p.json")
    # the old files held open: their inodes cannot be freed and handed to a new file (which made comparing
    # inode numbers alone pass or fail by chance)
    with contextlib.ExitStack() as stack:
        held = {name: stack.enter_context(open(out if name == "p.json" else run / name, "rb")) for name in names}
        run_cli("--cache-dir", cache, *TRAIN, "--epochs", 3, "--resume", "--out", run)
        run_cli("--cache-dir", cache, "report", run)
        run_cli("--cache-dir", cache, "predict", "--run", run, "--out", out)
        for name, f in held.items():
            old, new = os.fstat(f.fileno()), (out if name == "p.json" else run / name).stat()
            assert old.st_nlink == 0 and new.st_ino != old.st_ino, name  # unlinked by the rename, not rewritten


@pytest.mark.slow  # a subprocess: not in `make test-fast`
def test_a_reader_during_training_never_sees_invalid_json(cache, tmp_path):
    """The issue saw "metrics.json: not valid JSON" 704 times in 40 s; a reader polling metrics.json and
    config.json through a 6-epoch run must see none."""
    run = tmp_path / "run"
    bad, reads, done = [], [0], threading.Event()

    def reader():
        while not done.is_set():
            for name in ("metrics.json", "config.json"):
                try:
                    text = (run / name).read_text()
                except FileNotFoundError:
                    continue
                reads[0] += 1
                try:
                    json.loads(text)
                except ValueError:
                    bad.append((name, len(text)))

    t = threading.Thread(target=reader)
    t.start()
    try:
        code, err = vqa_cache("--cache-dir", cache, *TRAIN, "--epochs", 6, "--out", run)
    finally:
        done.set()
        t.join()
    assert code == 0, err
    assert reads[0] > 50 and bad == [], (reads, bad[:5])


# ---------------------------------------------------------------- symlinks are never followed


@pytest.mark.slow  # a subprocess: not in `make test-fast`
def test_report_replaces_a_planted_symlink_and_leaves_its_target_alone(cache, trained, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    target = tmp_path / "precious.txt"
    target.write_text("keep me")
    (run / "report.html").unlink()
    (run / "report.html").symlink_to(target)
    r = subprocess.run(
        [sys.executable, "-m", "vqa_cache", "--cache-dir", str(cache), "report", str(run)],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    assert target.read_text() == "keep me"
    assert not (run / "report.html").is_symlink() and (run / "report.html").read_text().startswith("<!DOCTYPE html>")


def test_a_planted_lock_symlink_is_refused_and_its_target_untouched(tmp_path):
    from vqa_cache.errors import BadInput
    from vqa_cache.rundir import run_lock

    run, target = tmp_path / "run", tmp_path / "precious.txt"
    run.mkdir()
    target.write_text("keep me")
    (run / ".lock").symlink_to(target)
    with pytest.raises(BadInput, match="symbolic link"), run_lock(run):
        pass
    assert target.read_text() == "keep me"


# ---------------------------------------------------------------- report reads metrics.json through the one reader


@pytest.mark.parametrize(
    "metrics, says",
    [
        ({"epochs": "abc"}, "metrics.json: not the metrics of a vqa-cache run"),
        (
            {"epochs": [{"epoch": 1, "val_accuracy": "high"}], "best": {"epoch": 1, "val_accuracy": 0.5}},
            "metrics.json: epochs[0].val_accuracy = 'high' (expected a number)",
        ),
        ({"epochs": [], "best": []}, "metrics.json: best is list"),
    ],
)
def test_report_with_malformed_metrics_is_one_line_exit_2(cli, cache, trained, tmp_path, metrics, says):
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    before = (run / "report.html").read_bytes()
    (run / "metrics.json").write_text(json.dumps(metrics))
    r = cli("--cache-dir", cache, "report", run)
    assert r.code == 2 and says in r.err and len(r.err.strip().splitlines()) == 1, r
    assert (run / "report.html").read_bytes() == before
    time.sleep(0)


def test_a_full_disk_while_torch_saves_a_checkpoint_is_no_space(tmp_path, monkeypatch):
    """torch's zip writer reports a failed write as "RuntimeError: unexpected pos ..." (seen on a full tmpfs):
    save_checkpoint names the real error (ENOSPC), keeps the old last.pt and leaves no temporary file."""
    import torch

    from vqa_cache import digest
    from vqa_cache.digest import NoSpace
    from vqa_cache.rundir import save_checkpoint

    path = tmp_path / "last.pt"
    save_checkpoint(path, {"model": {"w": torch.ones(3)}})
    before = path.read_bytes()
    real = digest.os.fdopen

    class Full:
        def __init__(self, f):
            self.f, self.written = f, 0

        def write(self, data):
            self.written += len(memoryview(data).cast("B"))
            if self.written > 100:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return self.f.write(data)

        def __getattr__(self, name):
            return getattr(self.f, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

    monkeypatch.setattr(digest.os, "fdopen", lambda fd, mode: Full(real(fd, mode)))
    with pytest.raises(NoSpace, match=r"no space left .*last\.pt"):
        save_checkpoint(path, {"model": {"w": torch.zeros(100_000)}})
    assert path.read_bytes() == before and leftovers(tmp_path) == []
