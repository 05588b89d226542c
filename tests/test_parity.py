"""What the seed notebooks did, the tool does (issue 25): train accuracy per epoch, hold-outs after
--split, DACON CSV submissions."""
from __future__ import annotations

import json
import re

import pytest

from conftest import FAST, run_cli

LIMIT = ["--limit", 300]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    root = tmp_path_factory.mktemp("cache")
    run_cli("--cache-dir", root, "extract", *LIMIT, *FAST)
    return root


def test_train_accuracy_per_epoch_in_metrics_and_curves(cli, cache, tmp_path):
    # a learning rate of ~0 keeps the head as it started: the train accuracy of every epoch is then the
    # accuracy of that head on the training split, which predict measures independently
    run = tmp_path / "run"
    r = cli("--cache-dir", cache, "train", *LIMIT, *FAST, "--epochs", 2, "--lr", 1e-9, "--out", run,
            "--set", "head.dropout=0", "--set", "head.hidden=32", "--set", "optim.min_lr=0")
    assert r.code == 0, r
    assert "train acc" in r.out
    rows = json.loads((run / "metrics.json").read_text())["epochs"]
    assert all(0 <= row["train_accuracy"] <= 1 for row in rows)
    r = cli("--cache-dir", cache, "predict", "--run", run, "--split", "train", "--out", tmp_path / "p.json")
    assert r.code == 0, r
    measured = float(re.search(r"accuracy (\d\.\d+)", r.out).group(1))
    assert rows[0]["train_accuracy"] == pytest.approx(measured, abs=1e-4)
    # a learning head: train accuracy rises
    run = tmp_path / "learns"
    r = cli("--cache-dir", cache, "train", *LIMIT, *FAST, "--epochs", 3, "--out", run, "--set", "head.hidden=64")
    rows = json.loads((run / "metrics.json").read_text())["epochs"]
    assert rows[-1]["train_accuracy"] > rows[0]["train_accuracy"]
    from vqa_cache.training.run_dir import curves_figure
    labels = [line.get_label() for line in curves_figure(rows).axes[1].get_lines()]
    assert "train" in labels and "val (all)" in labels
