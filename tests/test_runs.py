"""Run directories and checkpoints: safe loading, the run lock, a diverging loss, bad input to predict/ask."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import FAST, run_cli

LIMIT = ["--limit", 300]
TRAIN = ["train", *LIMIT, *FAST, "--set", "head.hidden=64"]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    root = tmp_path_factory.mktemp("cache")
    run_cli("--cache-dir", root, "extract", *LIMIT, *FAST, "--workers", 0)
    return root


@pytest.fixture(scope="module")
def trained(cache, tmp_path_factory):
    """A finished 2-epoch run (not to be modified: tests copy it)."""
    run = tmp_path_factory.mktemp("runs") / "good"
    run_cli("--cache-dir", cache, *TRAIN, "--epochs", 2, "--out", run)
    return run


@pytest.fixture
def image_file():
    from vqa_cache.data import load_samples
    from vqa_cache.recipes import DatasetSettings

    return load_samples(DatasetSettings(limit=5)).column("image_path")[0].as_py()


def one_line(r) -> str:
    """The one error line on stderr (progress bars aside), which is its last line."""
    lines = [line for line in r.err.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("vqa-cache:")]
    assert len(errors) == 1 and lines[-1] == errors[0], r
    return errors[0]


# ---------------------------------------------------------------- checkpoints load with weights_only=True


def test_checkpoints_hold_tensors_and_plain_values_only(trained):
    for name in ("best.pt", "last.pt"):
        ckpt = torch.load(trained / name, weights_only=True)  # no allow-list needed
        assert ckpt["epoch"] >= 1 and ckpt["vocab"]["answers"] and ckpt["cache_keys"]["image"].startswith("image-")
        kind, keys, *_ = ckpt["rng"]["numpy"]
        assert kind == "MT19937" and isinstance(keys, torch.Tensor) and keys.shape == (624,)


class Shell:
    """A pickle that runs a shell command when it is unpickled without restrictions."""

    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


@pytest.mark.parametrize("command", ["predict", "ask", "finetune --init-head", "train --resume"])
def test_a_crafted_checkpoint_runs_nothing(cli, cache, trained, tmp_path, image_file, command):
    """best.pt and last.pt whose pickle would create a marker file, next to the run's good config.json."""
    run, marker = tmp_path / "evil", tmp_path / "marker"
    run.mkdir()
    shutil.copy(trained / "config.json", run / "config.json")
    for name in ("best.pt", "last.pt"):
        torch.save({"model": Shell(f"touch {marker}"), "head": {}, "vocab": {}}, run / name)
    args = {
        "predict": ["predict", "--run", run, "--out", tmp_path / "p.json"],
        "ask": ["ask", "--run", run, "--image", image_file, "--question", "what shape is in the image?"],
        "finetune --init-head": [
            "finetune",
            "train/easyvqa-finetune.toml",
            "--limit",
            20,
            *FAST,
            "--init-head",
            run,
            "--set",
            "finetune.workers=0",
            "--out",
            tmp_path / "ft",
        ],
        "train --resume": [*TRAIN, "--epochs", 3, "--resume", "--out", run],
    }[command]
    r = cli("--cache-dir", cache, *args)
    line = one_line(r)
    assert r.code == 2 and not marker.exists(), r
    assert "not a vqa-cache checkpoint (unpickling refused: it names posix.system)" in line, line
    assert line.split("error: ")[1].startswith(str(run / ("last.pt" if "resume" in command else "best.pt")))


def old_format(run) -> None:
    """Rewrite a run's checkpoints as vqa-cache 0.1.0 wrote them: numpy's RNG state as a numpy array."""
    for name in ("best.pt", "last.pt"):
        ckpt = torch.load(run / name, weights_only=True)
        kind, keys, *rest = ckpt["rng"]["numpy"]
        ckpt["rng"]["numpy"] = (kind, keys.numpy().astype(np.uint32), *rest)
        torch.save(ckpt, run / name)


def test_checkpoints_of_the_previous_format_still_predict_and_resume(cli, cache, trained, tmp_path):
    run = tmp_path / "old"
    shutil.copytree(trained, run)
    old_format(run)
    with pytest.raises(Exception, match="numpy"):  # not loadable without the allow-list
        torch.load(run / "best.pt", weights_only=True)
    r = cli("--cache-dir", cache, "predict", "--run", run, "--out", tmp_path / "p.json")
    assert r.code == 0, r
    assert json.loads((tmp_path / "p.json").read_text()) == json.loads((trained / "predictions.json").read_text())
    r = cli("--cache-dir", cache, *TRAIN, "--epochs", 3, "--resume", "--out", run)
    assert r.code == 0 and "resuming" in r.out, r
    assert [e["epoch"] for e in json.loads((run / "metrics.json").read_text())["epochs"]] == [1, 2, 3]


# ---------------------------------------------------------------- the run lock


def hold_lock(run):
    from vqa_cache.cache.store import Lock

    lock = Lock(run / ".lock", wait=False)
    lock.__enter__()
    return lock


@pytest.mark.parametrize("command", ["train", "train --resume", "finetune"])
def test_a_locked_run_directory_is_refused(cli, cache, trained, tmp_path, command):
    run = tmp_path / "run"
    if command == "train --resume":
        shutil.copytree(trained, run)
    lock = hold_lock(run)
    before = {p.name: p.stat().st_mtime_ns for p in run.iterdir()}
    try:
        args = {
            "train": [*TRAIN, "--epochs", 1],
            "train --resume": [*TRAIN, "--epochs", 3, "--resume"],
            "finetune": [
                "finetune",
                "train/easyvqa-finetune.toml",
                "--limit",
                20,
                *FAST,
                "--set",
                "finetune.workers=0",
                "--epochs",
                1,
            ],
        }[command]
        r = cli("--cache-dir", cache, *args, "--out", run)
        line = one_line(r)
        assert r.code == 2, r
        assert f"{run} is in use by another process (host, pid: {socket.gethostname()} {os.getpid()}" in line
        assert {p.name: p.stat().st_mtime_ns for p in run.iterdir()} == before  # nothing written
    finally:
        lock.__exit__(None, None, None)
    r = cli("--cache-dir", cache, *args, "--out", run)  # free again: it runs
    assert r.code == 0, r
    assert not (run / ".lock").exists()


HOLDER = """
import os, sys, time
from pathlib import Path
from vqa_cache.rundir import run_lock
with run_lock(Path(sys.argv[1])):
    child = os.fork()                    # like a DataLoader worker: it must not keep the lock
    if child == 0:                       # (its at-fork handler has run: it says so)
        os.write(1, b"child\\n")         # (one write each: the two lines never interleave)
        time.sleep(60)
        os._exit(0)
    os.write(1, f"{child}\\n".encode())
    time.sleep(60)
"""


@pytest.mark.slow  # a subprocess: not in `make test-fast`
def test_the_lock_dies_with_its_process_not_with_its_forked_children(tmp_path):
    from vqa_cache.errors import BadInput
    from vqa_cache.rundir import run_lock

    run = tmp_path / "run"
    p = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(run)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    child = int(next(line for line in (p.stdout.readline(), p.stdout.readline()) if line.strip() != "child"))
    try:
        with pytest.raises(BadInput, match=f"host, pid: {socket.gethostname()} {p.pid}"), run_lock(run):
            pass
        p.kill()  # kill -9 of the holder
        p.wait()
        with run_lock(run):  # free at once; its child still lives
            os.kill(child, 0)
    finally:
        p.kill()
        try:
            os.kill(child, 9)
        except ProcessLookupError:
            pass


# ---------------------------------------------------------------- a diverging loss


def test_a_nan_loss_stops_the_run_naming_epoch_and_step(cli, cache, trained, tmp_path, monkeypatch):
    """The 3rd training step of epoch 2 gets a NaN loss: exit 1, one line naming epoch 2, step 3; the
    checkpoints and metrics of epoch 1 stay as they were."""
    from vqa_cache.training import loop

    steps = -(-json.loads((trained / "config.json").read_text())["questions"]["train"] // 64)
    calls, real = [], loop.batch_loss

    def poisoned(logits, split, idx, K):
        loss = real(logits, split, idx, K)
        if torch.is_grad_enabled():  # a training step (evaluation runs without grad)
            calls.append(1)
            if len(calls) == steps + 3:
                return loss * float("nan")
        return loss

    monkeypatch.setattr(loop, "batch_loss", poisoned)
    run = tmp_path / "run"
    r = cli("--cache-dir", cache, *TRAIN, "--batch-size", 64, "--epochs", 3, "--out", run)
    line = one_line(r)
    assert r.code == 1, r
    assert f"train loss is NaN or infinite at epoch 2, step 3 of {steps}" in line, line
    assert "last.pt (epoch 1) and best.pt are kept" in line
    assert [e["epoch"] for e in json.loads((run / "metrics.json").read_text())["epochs"]] == [1]
    for name in ("last.pt", "best.pt"):
        ckpt = torch.load(run / name, weights_only=True)
        assert ckpt["epoch"] == 1 and all(torch.isfinite(v).all() for v in ckpt["model"].values())
    assert not (run / "predictions.json").exists()


# ---------------------------------------------------------------- bad input: exit 2, one line


@pytest.mark.parametrize("budget", ["infG", "nan", "-1G", "0"])
def test_memory_budget_must_be_a_positive_number(cli, cache, tmp_path, monkeypatch, budget):
    monkeypatch.setenv("VQA_CACHE_MEMORY_BUDGET", budget)
    r = cli("--cache-dir", cache, *TRAIN, "--epochs", 1, "--out", tmp_path / "run")
    assert r.code == 2 and f"VQA_CACHE_MEMORY_BUDGET={budget!r}" in one_line(r), r
    assert not (tmp_path / "run").exists()  # the run directory it made, empty, is gone


@pytest.mark.parametrize("top", [0, -3])
def test_ask_top_must_be_at_least_one(cli, cache, trained, image_file, top):
    r = cli(
        "--cache-dir", cache, "ask", "--run", trained, "--image", image_file, "--question", "what shape?", "--top", top
    )
    assert r.code == 2 and f"--top {top}: expected" in one_line(r), r


@pytest.mark.parametrize(
    "text, message",
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "expected a JSON object, got list"),
        ('{"splits": ["train", "test"]}', "(no recipe)"),
        ('{"recipe": {}, "splits": "test"}', "(no [train, val] splits)"),
        ('{"recipe": {"optim": {"lr": "fast"}}, "splits": ["train", "test"]}', "'optim.lr' must be float"),
    ],
)
@pytest.mark.parametrize("command", ["predict", "ask"])
def test_a_corrupt_run_config_is_bad_input(cli, cache, trained, tmp_path, image_file, text, message, command):
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    (run / "config.json").write_text(text)
    args = (
        ["predict", "--run", run, "--out", tmp_path / "p.json"]
        if command == "predict"
        else ["ask", "--run", run, "--image", image_file, "--question", "what shape?"]
    )
    r = cli("--cache-dir", cache, *args)
    line = one_line(r)
    assert r.code == 2 and message in line and str(run / "config.json") in line, r


@pytest.mark.parametrize(
    "args, message",
    [
        (["predict", "--run", "{run}", "--out", "{tmp}/p.json"], "not a run directory (no config.json)"),
        (["ask", "--run", "{run}", "--image", "{tmp}/x.png", "--question", "what?"], "not a run directory"),
        ([*TRAIN, "--resume", "--out", "{run}"], "--resume: no checkpoint"),
        (["finetune", "--limit", 20, *FAST, "--init-head", "{run}"], "not a run directory"),
    ],
)
def test_a_missing_run_directory_is_bad_input(cli, cache, tmp_path, args, message):
    run = tmp_path / "nosuch"
    r = cli("--cache-dir", cache, *[str(a).format(run=run, tmp=tmp_path) for a in args])
    assert r.code == 2 and message in one_line(r), r
    assert not run.exists()
