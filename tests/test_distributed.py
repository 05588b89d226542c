"""torchrun with 2 CPU processes (gloo): sharded extraction equals a single-process cache, survives a kill
of every process, and DistributedDataParallel training (with --resume) and finetuning match single-process runs.

Each torchrun starts three Python processes on a shared 2-core machine: the tests keep to four of them.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import FAST, run_cli

pytestmark = pytest.mark.slow  # torchrun: not in `make test-fast`
ROOT = Path(__file__).resolve().parents[1]
EXTRACT = ["extract", "--limit", 1000, *FAST, "--shard-size", 8, "--batch-size", 4, "--workers", 0]
# constant learning rate and no dropout: a 2-rank run takes the same steps as one process (DDP averages
# the gradients of the two halves of each batch), so the two can be compared closely, across a --resume too
TRAIN = [
    "train",
    "train/easyvqa-concat.toml",
    "--limit",
    1000,
    *FAST,
    "--batch-size",
    64,
    "--lr",
    0.003,
    "--set",
    "head.hidden=64",
    "--set",
    "head.dropout=0",
    "--set",
    "optim.warmup_epochs=0",
    "--set",
    "optim.min_lr=0.003",
    "--set",
    "optim.patience=0",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun_cmd(cache_dir, *args, nproc: int = 2) -> list[str]:
    exe = Path(sys.executable).with_name("torchrun")
    launcher = [str(exe)] if exe.is_file() else [sys.executable, "-m", "torch.distributed.run"]
    return [
        *launcher,
        "--nproc-per-node",
        str(nproc),
        "--master-addr",
        "127.0.0.1",
        "--master-port",
        str(free_port()),
        "-m",
        "vqa_cache",
        "--cache-dir",
        str(cache_dir),
        *map(str, args),
    ]


ENV = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")


def torchrun(cache_dir, *args, timeout: float = 120) -> subprocess.CompletedProcess:
    p = subprocess.run(
        torchrun_cmd(cache_dir, *args), cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert p.returncode == 0, f"exit {p.returncode}\nstdout: {p.stdout[-3000:]}\nstderr: {p.stderr[-3000:]}"
    return p


def manifest(root, kind) -> dict:
    [p] = Path(root).glob(f"{kind}/*/manifest.json")
    return json.loads(p.read_text())


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    """The same extraction in one process (in-process, the reference)."""
    root = tmp_path_factory.mktemp("single")
    run_cli("--cache-dir", root, *EXTRACT)
    return root


def assert_same_cache(cli, dist_root, single_root):
    """Same keys, same shards byte for byte (sha256), same ids and features read with h5py/pyarrow,
    `cache verify` ok, no leftovers (progress files, temporaries)."""
    import h5py
    import pyarrow.parquet as pq

    for kind in ("image", "question"):
        a, b = manifest(dist_root, kind), manifest(single_root, kind)
        assert a["key"] == b["key"] and a["complete"] and a["rows"] == b["rows"] and a["dim"] == b["dim"]
        assert [(s["file"], s["start"], s["stop"], s["rows"], s["sha256"]) for s in a["shards"]] == [
            (s["file"], s["start"], s["stop"], s["rows"], s["sha256"]) for s in b["shards"]
        ]
        v = cli("--cache-dir", dist_root, "cache", "verify", a["key"])
        assert v.code == 0 and v.out.startswith("ok "), v
        d = Path(dist_root) / kind / a["key"]
        assert sorted(p.name for p in d.iterdir()) == sorted(
            p.name for p in (Path(single_root) / kind / a["key"]).iterdir()
        )
    key = manifest(single_root, "image")["key"]
    ia = pq.read_table(Path(dist_root) / "image" / key / "index.parquet").to_pydict()
    ib = pq.read_table(Path(single_root) / "image" / key / "index.parquet").to_pydict()
    assert ia == ib and len(set(ia["image_id"])) == len(ia["image_id"])
    for name in set(ia["shard"]):
        with (
            h5py.File(Path(dist_root) / "image" / key / name) as fa,
            h5py.File(Path(single_root) / "image" / key / name) as fb,
        ):
            np.testing.assert_array_equal(fa["features"][:], fb["features"][:])


def test_two_process_extraction_equals_single_process(cli, single, tmp_path):
    p = torchrun(tmp_path, *EXTRACT)
    assert_same_cache(cli, tmp_path, single)
    # rank 0 prints, the other rank stays quiet
    assert p.stdout.count("dataset easyvqa:") == 1 and p.stdout.count("images: ") == 1, p.stdout
    assert "shards over 2 processes" in p.stdout


def test_two_process_extraction_killed_then_resumed(cli, single, tmp_path):
    import psutil

    proc = subprocess.Popen(
        torchrun_cmd(tmp_path, *EXTRACT),
        cwd=ROOT,
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.time() + 300  # a bound for a loaded machine, not a timing
        while time.time() < deadline:
            if any(_records(p) for p in tmp_path.glob("image/*/progress-rank*.json")):
                # torchrun starts each worker in a session of its own: SIGKILL them all, like a lost node
                for child in psutil.Process(proc.pid).children(recursive=True):
                    try:
                        os.killpg(child.pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                os.killpg(proc.pid, signal.SIGKILL)
                break
            assert proc.poll() is None, "torchrun ended before its first shard was seen"
            time.sleep(0.005)
        else:
            pytest.fail("no shard landed within 300 s")
    finally:
        proc.kill()
        proc.wait()
    state = manifest(tmp_path, "image")
    assert not state["complete"], "kill came too late"
    finished = sum(_records(p) for p in tmp_path.glob("image/*/progress-rank*.json"))
    assert 0 < finished < -(-state["rows"] // 8)

    p = torchrun(tmp_path, *EXTRACT)
    assert "images: resuming" in p.stdout and "finished shards kept" in p.stdout, p.stdout
    assert_same_cache(cli, tmp_path, single)


def _records(path) -> int:
    try:
        return len(json.loads(path.read_text())["shards"])
    except (OSError, ValueError, KeyError):
        return 0


def test_two_process_training_and_resume_match_single_process(cli, single, tmp_path):
    dist_run, one_run = tmp_path / "ddp", tmp_path / "one"
    p = torchrun(single, *TRAIN, "--epochs", 2, "--out", dist_run)
    assert p.stdout.count("run ") == 1, p.stdout  # rank 0 alone prints
    assert [e["epoch"] for e in json.loads((dist_run / "metrics.json").read_text())["epochs"]] == [1, 2]
    p = torchrun(single, *TRAIN, "--epochs", 4, "--resume", "--out", dist_run)
    assert "resuming" in p.stdout
    r = cli("--cache-dir", single, *TRAIN, "--epochs", 4, "--out", one_run)
    assert r.code == 0, r

    ddp = json.loads((dist_run / "metrics.json").read_text())
    one = json.loads((one_run / "metrics.json").read_text())
    assert [e["epoch"] for e in ddp["epochs"]] == [1, 2, 3, 4]
    assert one["best"]["val_accuracy"] > 0.6  # it learned something
    assert abs(ddp["best"]["val_accuracy"] - one["best"]["val_accuracy"]) <= 0.01
    for a, b in zip(ddp["epochs"], one["epochs"]):
        assert abs(a["val_accuracy"] - b["val_accuracy"]) <= 0.01
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-3)
    config = json.loads((dist_run / "config.json").read_text())
    assert config["world_size"] == 2
    for name in ("best.pt", "last.pt", "predictions.json", "curves.png"):
        assert (dist_run / name).is_file()
    # the checkpoint is a plain head's (no DDP "module." prefix): predict reads it like any other
    import torch

    state = torch.load(dist_run / "best.pt", weights_only=False)["model"]
    assert not any(k.startswith("module.") for k in state)


FINETUNE = [
    "finetune",
    "train/easyvqa-finetune.toml",
    "--limit",
    200,
    *FAST,
    "--train-encoders",
    "top:1",
    "--epochs",
    2,
    "--set",
    "head.dropout=0",
    "--set",
    "finetune.workers=0",
]


def test_two_process_finetune_matches_single_process(cli, tmp_path):
    """DDP finetune with ResNet18's layer4 trained (its BatchNorm on the global batch's statistics) and
    group_by_image batches cut between images: the single-process metrics, rank 0 alone writing."""
    dist_run, one_run, cache = tmp_path / "ddp", tmp_path / "one", tmp_path / "cache"
    p = torchrun(cache, *FINETUNE, "--out", dist_run)
    assert p.stdout.count("run ") == 1 and p.stdout.count("epoch   1 ") == 1, p.stdout  # rank 0 alone prints
    r = cli("--cache-dir", cache, *FINETUNE, "--out", one_run)
    assert r.code == 0, r

    ddp = json.loads((dist_run / "metrics.json").read_text())
    one = json.loads((one_run / "metrics.json").read_text())
    assert [e["epoch"] for e in ddp["epochs"]] == [e["epoch"] for e in one["epochs"]] == [1, 2]
    assert one["epochs"][1]["train_loss"] < 0.8 * one["epochs"][0]["train_loss"]  # it learned something
    assert abs(ddp["best"]["val_accuracy"] - one["best"]["val_accuracy"]) <= 0.01
    for a, b in zip(ddp["epochs"], one["epochs"]):
        assert abs(a["val_accuracy"] - b["val_accuracy"]) <= 0.01
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-2)
    assert json.loads((dist_run / "config.json").read_text())["world_size"] == 2
    for name in ("best.pt", "last.pt", "predictions.json", "curves.png"):
        assert (dist_run / name).is_file()
    # the checkpoint holds what a single-process run's does: plain head, layer4 weights and BN statistics
    import torch

    a, b = (torch.load(d / "last.pt", weights_only=False) for d in (dist_run, one_run))
    assert (
        a["model"].keys() == b["model"].keys()
        and a["encoders"]["image_enc"].keys() == b["encoders"]["image_enc"].keys()
    )
    assert any("running_mean" in k for k in a["encoders"]["image_enc"])
