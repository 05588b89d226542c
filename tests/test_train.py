"""Stage two on a small easy-VQA cache: the run directory, reuse without encoders, errors, learning."""
from __future__ import annotations

import json

import pytest
import torch

from conftest import FAST

LIMIT = ["--limit", 1500]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """A small easy-VQA cache (ResNet18 random init at 32 px, bag-of-words)."""
    import sys
    from vqa_cache.cli import main
    root = tmp_path_factory.mktemp("cache")
    argv = sys.argv
    sys.argv = ["vqa-cache", "--cache-dir", str(root), "extract", *LIMIT, *FAST]
    try:
        main()
    except SystemExit as e:
        assert e.code == 0
    finally:
        sys.argv = argv
    return root


def test_train_writes_a_complete_run(cli, cache, tmp_path, monkeypatch):
    # stage two must not run an encoder nor write to the cache
    import vqa_cache.encoders.image as image_mod
    monkeypatch.setattr(image_mod.ImageEncoder, "__init__", lambda *a, **k: (_ for _ in ()).throw(AssertionError("encoder ran")))
    before = {p: p.stat().st_mtime_ns for p in cache.rglob("*")}
    run = tmp_path / "run"
    r = cli("--cache-dir", cache, "train", "train/easyvqa-concat.toml", *LIMIT, *FAST, "--epochs", 4, "--out", run)
    assert r.code == 0, r
    assert before == {p: p.stat().st_mtime_ns for p in cache.rglob("*")}
    for name in ("config.json", "metrics.json", "best.pt", "last.pt", "curves.png", "predictions.json"):
        assert (run / name).is_file(), name
    metrics = json.loads((run / "metrics.json").read_text())
    assert [e["epoch"] for e in metrics["epochs"]] == [1, 2, 3, 4]
    for e in metrics["epochs"]:
        assert set(e) >= {"epoch", "train_loss", "val_loss", "val_accuracy", "seconds"}
        assert 0 <= e["val_accuracy"] <= 1
    assert metrics["best"]["val_accuracy"] == max(e["val_accuracy"] for e in metrics["epochs"])
    # learning happened: well above the majority answer (easy-VQA's is ~0.3 of questions)
    assert metrics["best"]["val_accuracy"] > 0.6
    preds = json.loads((run / "predictions.json").read_text())
    from vqa_cache.data import load_samples
    from vqa_cache.recipes import DatasetSpec
    s = load_samples(DatasetSpec(limit=1500))
    val_ids = [int(q) for q, sp in zip(s.column("question_id").to_pylist(), s.column("split").to_pylist()) if sp == "test"]
    assert sorted(p["question_id"] for p in preds) == sorted(val_ids)
    assert all(isinstance(p["answer"], str) for p in preds)
    ckpt = torch.load(run / "best.pt", weights_only=False)
    assert ckpt["vocab"]["answers"] and ckpt["vocab"]["top_k"] == 1000
    assert ckpt["cache_keys"]["image"].startswith("image-")
    assert "run " in r.out and str(run) in r.out.splitlines()[-1]


def test_hadamard_trains_too(cli, cache, tmp_path):
    r = cli("--cache-dir", cache, "train", *LIMIT, *FAST, "--head", "hadamard", "--epochs", 2, "--out", tmp_path / "h",
            "--set", "features.image.size=32")
    assert r.code == 0, r


def test_missing_cache_names_the_extract_command(cli, tmp_path):
    r = cli("--cache-dir", tmp_path, "train", "train/easyvqa-concat.toml", "--limit", 7, *FAST)
    assert r.code == 2, r
    assert "vqa-cache extract extract/easyvqa.toml --limit 7" in r.err and len(r.err.strip().splitlines()) == 1


@pytest.mark.parametrize("args, message", [
    (["--head", "nosuch"], "unknown head"),
    (["--set", "optim.lr=fast"], "must be float"),
    (["nosuch.toml"], "recipe not found"),
])
def test_train_bad_input(cli, cache, tmp_path, args, message):
    r = cli("--cache-dir", cache, "train", *args, *LIMIT, *FAST, "--out", tmp_path / "x")
    assert r.code == 2, r
    assert message in r.err and len(r.err.strip().splitlines()) == 1


def test_cosine_schedule_with_warmup():
    from vqa_cache.recipes import OptimSpec
    from vqa_cache.training import lr_lambda
    f = lr_lambda(OptimSpec(epochs=10, lr=1e-3, min_lr=1e-5, warmup_epochs=1), steps_per_epoch=10)
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)
    assert f(10) == pytest.approx(1.0) and f(99) == pytest.approx(0.01, abs=1e-3)
    assert all(f(i) >= f(i + 1) for i in range(10, 99))
