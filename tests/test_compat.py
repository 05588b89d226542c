"""Caches and run directories written before the redesign of the package (issue 12) are read by this code.

tests/fixtures/pre-redesign/ was written by vqa-cache at commit 2f94d37 (before any module moved), with
OMP_NUM_THREADS=1, by these commands (FAST = --limit 20 --image-encoder resnet18 --image-size 32
--weights random); only what the checks below read was kept (no last.pt, no curves.png):

    vqa-cache --cache-dir cache extract FAST --workers 0
    vqa-cache --cache-dir cache train train/easyvqa-concat.toml FAST --set head.hidden=2 --epochs 2 \
        --batch-size 8 --out train-run
    vqa-cache --cache-dir cache finetune train/easyvqa-finetune.toml FAST --train-encoders none \
        --set head.hidden=2 --epochs 2 --batch-size 8 --set finetune.workers=0 --out finetune-run

(hidden 2, not more: the bag-of-words is 1024-d, so with concat's layer norms and Adam's state a
checkpoint is ~100 KB at any width; a wider head only adds to it.)

Recipe keys added since are listed in ADDED: a new run's config.json holds them at the values that make
the old behaviour, and only them besides the old keys (the heads' LayerNorm on the image stays the default;
`head.standardize = true` is the per-dimension standardization added since).

The losses are compared to 1e-4 relative, not to the bit: they are float32 sums that another CPU's
kernels may round differently in the last place, and metrics.json keeps 6 digits. Accuracies,
predictions, learning rates and keys are compared exactly.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "pre-redesign"
FAST = ["--limit", 20, "--image-encoder", "resnet18", "--image-size", 32, "--weights", "random"]
TRAIN = ["train", "train/easyvqa-concat.toml", *FAST, "--set", "head.hidden=2", "--epochs", 2, "--batch-size", 8]
# config.json keys added since the fixtures were made, with the values that keep the old behaviour
ADDED = {
    ("recipe", "features", "text", "ids"): False,
    ("recipe", "head", "layers"): 0,
    ("recipe", "head", "embed"): 0,
    ("recipe", "head", "standardize"): False,
    ("recipe", "head", "init_embeddings"): False,
    ("head", "standardize"): False,
    # issue 25: optimizers and schedules (the defaults are the old AdamW + cosine), precision
    ("recipe", "optim", "name"): "adamw",
    ("recipe", "optim", "momentum"): 0.9,
    ("recipe", "optim", "nesterov"): False,
    ("recipe", "optim", "schedule"): "cosine",
    ("recipe", "optim", "horizon_epochs"): 0.0,
    ("recipe", "optim", "pct_start"): 0.3,
    ("recipe", "optim", "step_epochs"): 10,
    ("recipe", "optim", "gamma"): 0.1,
    ("recipe", "precision"): "auto",
    ("recipe", "features", "precision"): "auto",
    ("precision",): "fp32",
    ("schedule",): lambda plan: plan["schedule"] == "cosine" and plan["extensions"] == [],
    ("head_parameters",): 6161,
}  # the head's parameter count (`vqa-cache runs` reads it, without torch)
# metrics row keys added since (issue 25): checked for sense, then left out of the comparison
ROW_ADDED = {"train_accuracy": lambda v: 0 <= v <= 1, "lr_phase": lambda v: v == "cosine"}
FINETUNE = [
    "finetune",
    "train/easyvqa-finetune.toml",
    *FAST,
    "--train-encoders",
    "none",
    "--set",
    "head.hidden=2",
    "--epochs",
    2,
    "--batch-size",
    8,
    "--set",
    "finetune.workers=0",
]


@pytest.fixture
def old(tmp_path, monkeypatch):
    """A copy of the fixtures (the cache, the train run and the finetune run), so that nothing writes to them.
    On the CPU, as they were made (device auto), also where there is a GPU."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    shutil.copytree(FIXTURES, tmp_path / "old")
    return tmp_path / "old"


def keys_of(cache: Path) -> dict:
    return {kind: next((cache / kind).iterdir()).name for kind in ("image", "question")}


def same_numbers(new: dict, old: dict, config: dict) -> None:
    """metrics.json of two runs: the same epochs, accuracies and learning rates; losses to 1e-4 (module doc).
    Since issue 25 a row's lr is the one the epoch's last step used (before: the next step's): both are
    checked against the run's schedule (config.json's plan)."""
    from vqa_cache import recipes
    from vqa_cache.training.schedule import lr_factor

    assert new["best"] == old["best"]
    assert len(new["epochs"]) == len(old["epochs"])
    plan = config["schedule"]
    recipe = config["recipe"]
    f = lr_factor(recipes.build(recipes.OptimSettings, recipe["optim"]), plan)
    bases = {"lr": recipe["optim"]["lr"], "encoder_lr": recipe.get("finetune", {}).get("encoder_lr", 0.0)}
    for a, b in zip(new["epochs"], old["epochs"]):
        for key, ok in ROW_ADDED.items():
            assert ok(a.pop(key)), key
        step = a["epoch"] * plan["steps_per_epoch"]
        for key in [k for k in bases if k in a]:
            if b[key] == 0.0:  # (a finetune run with no encoder parameters)
                assert a.pop(key) == b.pop(key) == 0.0
                continue
            assert a.pop(key) == pytest.approx(bases[key] * f(step - 1)), key
            assert b.pop(key) == pytest.approx(bases[key] * f(step)), key
        losses = ("train_loss", "val_loss")
        assert {k: v for k, v in a.items() if k not in losses and "seconds" not in k} == {
            k: v for k, v in b.items() if k not in losses and "seconds" not in k
        }
        for k in losses:
            assert a[k] == pytest.approx(b[k], rel=1e-4), k


def without_added(config: dict) -> dict:
    """A new config.json with the ADDED keys checked and taken out."""
    config = json.loads(json.dumps(config))
    for path, value in ADDED.items():
        *parents, leaf = path
        node = config
        for part in parents:
            node = node[part]
        got = node.pop(leaf)
        assert value(got) if callable(value) else got == value, path
    return config


def test_the_same_recipe_finds_the_old_cache_which_verifies(cli, old):
    keys = keys_of(old / "cache")

    def files():
        return {p: p.stat().st_mtime_ns for p in (old / "cache").rglob("*") if p.is_file()}

    before = files()
    r = cli("--cache-dir", old / "cache", "extract", *FAST, "--workers", 0)
    assert r.code == 0, r
    assert f"images: cached ({keys['image']}" in r.out and f"questions: cached ({keys['question']}" in r.out, r
    after = files()  # nothing rewritten (lock files come and go); the
    assert {p: after.get(p) for p in before} == before  # answers entry (issue 22) is added beside the old ones
    assert all(p.relative_to(old / "cache").parts[0] == "answers" for p in set(after) - set(before))
    for key in keys.values():
        r = cli("--cache-dir", old / "cache", "cache", "verify", key)
        assert r.code == 0 and r.out.startswith(f"ok {key}"), r


def test_train_on_the_old_cache_gives_the_old_runs_metrics(cli, old, tmp_path):
    r = cli("--cache-dir", old / "cache", *TRAIN, "--out", tmp_path / "run")
    assert r.code == 0, r
    same_numbers(
        json.loads((tmp_path / "run" / "metrics.json").read_text()),
        json.loads((old / "train-run" / "metrics.json").read_text()),
        json.loads((tmp_path / "run" / "config.json").read_text()),
    )
    new, before = (json.loads((d / "config.json").read_text()) for d in (tmp_path / "run", old / "train-run"))
    new = without_added(new)
    assert {k: v for k, v in new.items() if k != "cache_dir"} == {k: v for k, v in before.items() if k != "cache_dir"}
    assert (tmp_path / "run" / "predictions.json").read_text() == (old / "train-run" / "predictions.json").read_text()


def test_predict_with_the_old_run_reproduces_its_predictions(cli, old, tmp_path):
    """predict reads the entries from --cache-dir when it holds them, else from the run's config cache_dir."""
    expected = json.loads((old / "train-run" / "predictions.json").read_text())
    r = cli("--cache-dir", old / "cache", "predict", "--run", old / "train-run", "--out", tmp_path / "p.json")
    assert r.code == 0, r
    assert json.loads((tmp_path / "p.json").read_text()) == expected
    config = json.loads((old / "train-run" / "config.json").read_text())
    config["cache_dir"] = str(old / "cache")  # (absolute: the fixtures were made elsewhere)
    (old / "train-run" / "config.json").write_text(json.dumps(config))
    r = cli("--cache-dir", tmp_path / "empty", "predict", "--run", old / "train-run", "--out", tmp_path / "q.json")
    assert r.code == 0, r
    assert json.loads((tmp_path / "q.json").read_text()) == expected


def test_finetune_gives_the_old_runs_metrics(cli, old, tmp_path):
    r = cli(*FINETUNE, "--out", tmp_path / "run")
    assert r.code == 0, r
    same_numbers(
        json.loads((tmp_path / "run" / "metrics.json").read_text()),
        json.loads((old / "finetune-run" / "metrics.json").read_text()),
        json.loads((tmp_path / "run" / "config.json").read_text()),
    )


def test_the_old_finetune_runs_feature_keys_are_read(cli, old, tmp_path):
    """--init-head from the old finetune run (its checkpoint names its cache keys `feature_keys`), with the
    images at 48 px instead of 32: the head fits (ResNet18 either way), and the warning names the old keys."""
    keys = keys_of(old / "cache")
    r = cli(*FINETUNE, "--image-size", 48, "--epochs", 1, "--init-head", old / "finetune-run", "--out", tmp_path / "ft")
    assert r.code == 0, r
    assert f"was trained on features {keys}" in r.err, r
    assert "NOTE" in json.loads((tmp_path / "ft" / "config.json").read_text())["init_head"]


def test_the_old_runs_are_read_through_the_run_contract(cli, old, tmp_path):
    """`runs`, `report`, the API's Run and the checkpoint reader (vqa_cache.rundir) read the old train and
    finetune runs: no row unreadable, the head's parameters counted for runs without head_parameters."""
    import vqa_cache
    from vqa_cache.rundir import cache_keys_of, load_checkpoint, read_metrics, read_run_config

    keys = keys_of(old / "cache")
    r = cli("runs", old, "--json")
    assert r.code == 0, r
    rows = {d["name"]: d for d in json.loads(r.out)}
    assert set(rows) == {"train-run", "finetune-run"} and not any("error" in d for d in rows.values()), rows
    for name, d in rows.items():
        assert d["val_accuracy"] == read_metrics(old / name)["best"]["val_accuracy"] and d["parameters"] == 6161, d
        assert d["cache_keys"] == keys, d
    for name in ("train-run", "finetune-run"):
        run = vqa_cache.Run(old / name)
        assert run.best == json.loads((old / name / "metrics.json").read_text())["best"]
        assert (
            cache_keys_of(read_run_config(old / name)) == keys == cache_keys_of(load_checkpoint(old / name / "best.pt"))
        )
    r = cli("--cache-dir", old / "cache", "report", old / "train-run", "--out", tmp_path / "r.html")
    assert r.code == 0 and (tmp_path / "r.html").read_text().startswith("<!DOCTYPE html>"), r
