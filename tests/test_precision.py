"""`--precision auto|fp32|fp16|bf16` for extract, train and finetune (device.py): auto keeps AMP on CUDA and
fp32 on the CPU; bf16 autocast runs on the CPU; what ran is on the run line and in config.json."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import FAST

LIMIT = ["--limit", 200]


def test_resolution_and_autocast():
    from vqa_cache.device import amp, autocast, resolve_precision

    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu) == "fp32" and resolve_precision("bf16", cpu) == "bf16"
    ctx, scaler = amp(cpu, "bf16")
    with ctx:
        y = torch.nn.Linear(4, 4)(torch.ones(2, 4))
    assert y.dtype == torch.bfloat16 and scaler is None
    with autocast(cpu):  # auto on the CPU: full precision
        assert torch.nn.Linear(4, 4)(torch.ones(2, 4)).dtype == torch.float32


@pytest.mark.slow  # trains for long: not in `make test-fast`
def test_extract_train_and_finetune_in_bf16_on_the_cpu(cli, tmp_path):
    r = cli("--cache-dir", tmp_path / "c", "extract", *LIMIT, *FAST, "--precision", "bf16", "--workers", 0)
    assert r.code == 0, r
    assert "device cpu, precision bf16" in r.out
    for precision, want in (("bf16", "bf16"), (None, "fp32")):
        run = tmp_path / f"run-{precision}"
        r = cli(
            "--cache-dir",
            tmp_path / "c",
            "train",
            *LIMIT,
            *FAST,
            "--epochs",
            1,
            "--set",
            "head.hidden=32",
            "--out",
            run,
            *(["--precision", precision] if precision else []),
        )
        assert r.code == 0, r
        assert f"device cpu, precision {want}" in r.out
        assert json.loads((run / "config.json").read_text())["precision"] == want
        rows = json.loads((run / "metrics.json").read_text())["epochs"]
        assert all(0 <= row["val_accuracy"] <= 1 and row["train_loss"] == row["train_loss"] for row in rows)
    run = tmp_path / "ft"
    r = cli(
        "finetune",
        "train/easyvqa-finetune.toml",
        *LIMIT,
        *FAST,
        "--epochs",
        1,
        "--precision",
        "bf16",
        "--set",
        "finetune.workers=0",
        "--set",
        'finetune.train_encoders="top:1"',
        "--out",
        run,
    )
    assert r.code == 0, r
    assert "precision bf16" in r.out and json.loads((run / "config.json").read_text())["precision"] == "bf16"


@pytest.mark.parametrize(
    "args, message",
    [
        (["--precision", "fp16"], "--precision fp16 needs a CUDA device"),
        (["--set", 'precision="fp8"'], "'precision' must be one of auto, fp32, fp16, bf16"),
    ],
)
def test_bad_precision_is_one_line(cli, tmp_path, args, message):
    if not torch.cuda.is_available() or args[0] != "--precision":
        r = cli("--cache-dir", tmp_path, "extract", *LIMIT, *FAST, *args)
        assert r.code == 2 and message in r.err and len(r.err.strip().splitlines()) == 1, r
