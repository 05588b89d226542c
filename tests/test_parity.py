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
    r = cli(
        "--cache-dir",
        cache,
        "train",
        *LIMIT,
        *FAST,
        "--epochs",
        2,
        "--lr",
        1e-9,
        "--out",
        run,
        "--set",
        "head.dropout=0",
        "--set",
        "head.hidden=32",
        "--set",
        "optim.min_lr=0",
    )
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
    from vqa_cache.rundir import curves_figure

    labels = [line.get_label() for line in curves_figure(rows).axes[1].get_lines()]
    assert "train" in labels and "val (all)" in labels


def test_split_first_then_the_val_fraction_hold_out(tmp_path):
    from fixtures_data import make_vqa2

    from vqa_cache.data import load_samples
    from vqa_cache.recipes import DatasetSettings

    d = tmp_path / "vqa"
    make_vqa2(d)
    table = load_samples(DatasetSettings(name=f"vqa2:{d}", splits=("train",), val_fraction=0.5))
    by_split = {}
    for split, image in zip(table.column("split").to_pylist(), table.column("image_id").to_pylist()):
        by_split.setdefault(split, set()).add(image)
    assert set(by_split) == {"train", "val"}  # val held out of train, val2014 left out
    assert len(by_split["val"]) == 3 and not by_split["val"] & by_split["train"]
    whole = load_samples(DatasetSettings(name=f"vqa2:{d}"))
    val2014 = {i for s, i in zip(whole.column("split").to_pylist(), whole.column("image_id").to_pylist()) if s == "val"}
    assert not by_split["val"] & val2014
    # with the dataset's own val split selected, nothing is held out
    both = load_samples(DatasetSettings(name=f"vqa2:{d}", splits=("train", "val"), val_fraction=0.5))
    assert {
        i for s, i in zip(both.column("split").to_pylist(), both.column("image_id").to_pylist()) if s == "val"
    } == val2014


def test_the_recipes_hold_out_command_runs_for_train_and_finetune(cli, tmp_path):
    """`finetune train/vit-bert-lora.toml --dataset vqa2:DIR --split train --val-fraction 0.2` (the recipe's
    own documented command, on tiny encoders) and the same for train."""
    from fixtures_data import make_vqa2

    d = tmp_path / "vqa"
    make_vqa2(d, images=(("train2014", 40), ("val2014", 2)))  # the recipe samples a quarter of the images
    tiny = ["--image-encoder", "resnet18", "--image-size", "32", "--weights", "random", "--text-encoder", "bow"]
    ds = ["--dataset", f"vqa2:{d}", "--split", "train", "--val-fraction", "0.2"]
    r = cli(
        "finetune",
        "train/vit-bert-lora.toml",
        *ds,
        *tiny,
        "--epochs",
        1,
        "--set",
        "finetune.workers=0",
        "--out",
        tmp_path / "ft",
    )
    assert r.code == 0, r
    config = json.loads((tmp_path / "ft" / "config.json").read_text())
    assert config["splits"] == ["train", "val"] and config["questions"]["val"] > 0
    cache = tmp_path / "cache"
    r = cli("--cache-dir", cache, "extract", *ds, *tiny)
    assert r.code == 0, r
    r = cli("--cache-dir", cache, "train", *ds, *tiny, "--epochs", 1, "--out", tmp_path / "tr")
    assert r.code == 0, r
    assert json.loads((tmp_path / "tr" / "config.json").read_text())["questions"]["val"] == 24  # 8 of 40 images


def test_dacon_csv_submission_in_test_then_sample_submission_order(cli, tmp_path):
    import csv

    from fixtures_data import make_csv

    d = tmp_path / "dacon"
    rows = make_csv(d, train_images=8, test_images=3)
    test_ids = [r["ID"] for r in rows["test"]]
    cache, run = tmp_path / "cache", tmp_path / "run"
    # the GPT-2 seed's yes/no study: --answer-types must not silently drop test.csv
    ds = ["--dataset", f"csv:{d}", "--answer-types", "yes/no", "--val-fraction", "0.25", *FAST]
    r = cli("--cache-dir", cache, "extract", *ds)
    assert r.code == 0, r
    assert f"'test' ({len(test_ids)} questions) has no answers, so no answer types: kept whole for prediction" in r.out
    r = cli("--cache-dir", cache, "train", *ds, "--epochs", 1, "--set", "head.hidden=16", "--out", run)
    assert r.code == 0, r
    sub = tmp_path / "sub.csv"
    r = cli("--cache-dir", cache, "predict", "--run", run, "--split", "test", "--format", "csv", "--out", sub)
    assert r.code == 0, r
    got = list(csv.reader(sub.open()))
    assert got[0] == ["ID", "answer"] and [g[0] for g in got[1:]] == test_ids
    assert {g[1] for g in got[1:]} <= {"yes", "no"}
    # sample_submission.csv present: its order and its header
    order = test_ids[::-1]
    (d / "sample_submission.csv").write_text("ID,answer\n" + "".join(f"{i},0\n" for i in order))
    r = cli("--cache-dir", cache, "predict", "--run", run, "--split", "test", "--format", "csv", "--out", sub)
    assert r.code == 0, r
    assert [g[0] for g in list(csv.reader(sub.open()))[1:]] == order
    # an ID the predictions lack: one line, exit 2, the old file untouched
    before = sub.read_text()
    (d / "sample_submission.csv").write_text("ID,answer\nNOT_AN_ID,0\n" + "".join(f"{i},0\n" for i in order))
    r = cli("--cache-dir", cache, "predict", "--run", run, "--split", "test", "--format", "csv", "--out", sub)
    assert (
        r.code == 2
        and "1 of the 10 IDs of sample_submission.csv have no prediction (first: 'NOT_AN_ID')" in r.err
        and len(r.err.strip().splitlines()) == 1
    ), r
    assert sub.read_text() == before
