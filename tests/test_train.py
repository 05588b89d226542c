"""Stage two on a small easy-VQA cache: the run directory, reuse without encoders, errors, learning."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import FAST, run_cli

LIMIT = ["--limit", 1500]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """A small easy-VQA cache (ResNet18 random init at 32 px, bag-of-words)."""
    root = tmp_path_factory.mktemp("cache")
    run_cli("--cache-dir", root, "extract", *LIMIT, *FAST)
    return root


@pytest.mark.slow  # a long training (make test-fast leaves it out)
def test_train_writes_a_complete_run(cli, cache, tmp_path, monkeypatch):
    # stage two must not run an encoder nor write to the cache
    import vqa_cache.encoders.image as image_mod

    monkeypatch.setattr(
        image_mod.ImageEncoder, "__init__", lambda *a, **k: (_ for _ in ()).throw(AssertionError("encoder ran"))
    )
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
    from vqa_cache.recipes import DatasetSettings

    s = load_samples(DatasetSettings(limit=1500))
    val_ids = [
        int(q) for q, sp in zip(s.column("question_id").to_pylist(), s.column("split").to_pylist()) if sp == "test"
    ]
    assert sorted(p["question_id"] for p in preds) == sorted(val_ids)
    assert all(isinstance(p["answer"], str) for p in preds)
    ckpt = torch.load(run / "best.pt", weights_only=True)
    assert ckpt["vocab"]["answers"] and ckpt["vocab"]["top_k"] == 1000
    assert ckpt["cache_keys"]["image"].startswith("image-")
    assert "run " in r.out and str(run) in r.out.splitlines()[-1]


def test_hadamard_trains_too(cli, cache, tmp_path):
    r = cli(
        "--cache-dir",
        cache,
        "train",
        *LIMIT,
        *FAST,
        "--head",
        "hadamard",
        "--epochs",
        2,
        "--out",
        tmp_path / "h",
        "--set",
        "head.hidden=64",
        "--set",
        "features.image.size=32",
    )
    assert r.code == 0, r


def test_missing_cache_names_the_extract_command(cli, tmp_path):
    r = cli("--cache-dir", tmp_path, "train", "train/easyvqa-concat.toml", "--limit", 7, *FAST)
    assert r.code == 2, r
    assert (
        "vqa-cache extract extract/resnet50-tinybert-concat.toml --limit 7" in r.err
        and len(r.err.strip().splitlines()) == 1
    )


@pytest.mark.parametrize(
    "args, message",
    [
        (["--head", "nosuch"], "unknown head"),
        (["--set", "optim.lr=fast"], "must be float"),
        (["nosuch.toml"], "recipe not found"),
    ],
)
def test_train_bad_input(cli, cache, tmp_path, args, message):
    r = cli("--cache-dir", cache, "train", *args, *LIMIT, *FAST, "--out", tmp_path / "x")
    assert r.code == 2, r
    assert message in r.err and len(r.err.strip().splitlines()) == 1


def test_grid_and_token_heads_on_a_pooled_bow_cache_name_the_extract_options(cli, cache, tmp_path):
    r = cli("--cache-dir", cache, "train", *LIMIT, *FAST, "--head", "coattention", "--out", tmp_path / "x")
    assert r.code == 2, r
    assert len(r.err.strip().splitlines()) == 1
    assert "--features grid" in r.err and "--set text.tokens=true" in r.err and "--text-encoder" in r.err
    r = cli("--cache-dir", cache, "train", *LIMIT, *FAST, "--head", "attention", "--out", tmp_path / "x")
    assert r.code == 2 and "--features grid" in r.err and "tokens" not in r.err, r


def small_recipe(**optim):
    from vqa_cache import recipes

    data = {
        "features": {
            "dataset": {"limit": 1500},
            "image": {"encoder": "resnet18", "size": 32, "weights": "random"},
            "text": {"weights": "random"},
        },
        "head": {"hidden": 64},
        "optim": {"epochs": 5, "patience": 3, **optim},
        "seed": 3,
    }
    return recipes.build(recipes.TrainRecipe, data)


def without_seconds(metrics):
    return {
        "best": metrics["best"],
        "epochs": [{k: v for k, v in e.items() if k != "seconds"} for e in metrics["epochs"]],
    }


def test_killed_after_epoch_2_of_5_and_resumed_ends_like_an_uninterrupted_run(cli, cache, tmp_path):
    from vqa_cache.training import train
    from vqa_cache.training.features import load_features

    recipe = small_recipe()
    features = load_features(recipe, cache, "x")
    full = train(recipe, cache, out=str(tmp_path / "full"), features=features)

    class Killed(Exception):
        pass

    def kill_after_2(epoch, row):
        if epoch == 2:
            raise Killed

    with pytest.raises(Killed):
        train(recipe, cache, out=str(tmp_path / "cut"), features=features, on_epoch=kill_after_2)
    assert [e["epoch"] for e in json.loads((tmp_path / "cut" / "metrics.json").read_text())["epochs"]] == [1, 2]
    # the resume goes through the command line, loading the cache afresh
    r = cli(
        "--cache-dir",
        cache,
        "train",
        *LIMIT,
        *FAST,
        "--set",
        "head.hidden=64",
        "--epochs",
        5,
        "--seed",
        3,
        "--set",
        "optim.patience=3",
        "--resume",
        "--out",
        tmp_path / "cut",
    )
    assert r.code == 0, r
    assert "resuming" in r.out
    resumed = json.loads((tmp_path / "cut" / "metrics.json").read_text())
    assert [e["epoch"] for e in resumed["epochs"]] == [1, 2, 3, 4, 5]
    assert without_seconds(resumed) == without_seconds(full)
    assert json.loads((tmp_path / "cut" / "predictions.json").read_text()) == json.loads(
        (tmp_path / "full" / "predictions.json").read_text()
    )


def test_checkpoint_refuses_another_cache(cli, cache, tmp_path):
    from vqa_cache.training import train

    run = tmp_path / "run"
    train(small_recipe(epochs=1), cache, out=str(run))
    for name in ("last.pt", "best.pt"):
        ckpt = torch.load(run / name, weights_only=True)
        ckpt["cache_keys"]["image"] = "image-0000000000000000"
        torch.save(ckpt, run / name)
    r = cli(
        "--cache-dir",
        cache,
        "train",
        *LIMIT,
        *FAST,
        "--set",
        "head.hidden=64",
        "--epochs",
        2,
        "--seed",
        3,
        "--resume",
        "--out",
        run,
    )
    assert r.code == 2 and "refusing to mix caches" in r.err, r
    r = cli("--cache-dir", cache, "predict", "--run", run, "--out", tmp_path / "p.json")
    assert r.code == 2 and "refusing to mix caches" in r.err, r


def test_streaming_yields_every_question_once_with_its_features(cache, monkeypatch):
    """ImageStream reads small chunks in a worker process; each train question comes once per epoch,
    with exactly the image features the in-memory tensor has; memory holds a few chunks only."""
    from vqa_cache.cache import Entry
    from vqa_cache.cache.reader import ImageStream
    from vqa_cache.training.batches import stream_batches
    from vqa_cache.training.features import load_features
    from vqa_cache.training.splits import build_splits, trainable

    recipe = small_recipe()
    plan, tensors, keys = load_features(recipe, cache, "x", stream=False)
    stream = ImageStream(
        Entry(cache, keys["image"]),
        Entry(cache, keys["image"]).manifest(),
        "features",
        chunk_mib=0.05,
        workers=1,
        group=2,
    )
    assert stream.ids == tensors["image"][0] and stream.shape == tuple(tensors["image"][1].shape)
    assert len(stream.chunks) > 4
    splits, vocab, _, _ = build_splits(plan, tensors, recipe)
    s = splits["train"]
    rows = trainable(s, len(vocab))
    seen = []
    biggest = 0
    for idx, img in stream_batches(stream, s, rows, 100, torch.device("cpu"), torch.Generator().manual_seed(0)):
        assert torch.equal(img, tensors["image"][1][s.img_row[idx]])
        seen += idx.tolist()
        biggest = max(biggest, len(idx))
    assert sorted(seen) == sorted(rows.tolist()) and biggest <= 100
    assert seen != sorted(seen)  # shuffled
    # load_features decides by the memory budget; a stream never loads the image array
    import vqa_cache.cache.reader as reader

    monkeypatch.setenv("VQA_CACHE_MEMORY_BUDGET", "1K")
    real = reader.load_rows
    monkeypatch.setattr(
        reader,
        "load_rows",
        lambda e, m, what: (_ for _ in ()).throw(AssertionError("loaded")) if e.kind == "image" else real(e, m, what),
    )
    _, t2, _ = load_features(recipe, cache, "x")
    assert isinstance(t2["image"][1], ImageStream)


def test_streaming_run_trains(cli, cache, tmp_path):
    r = cli(
        "--cache-dir",
        cache,
        "train",
        *LIMIT,
        *FAST,
        "--set",
        "head.hidden=64",
        "--epochs",
        1,
        "--stream",
        "--out",
        tmp_path / "s",
    )
    assert r.code == 0, r
    assert "streaming" in r.out
    assert json.loads((tmp_path / "s" / "config.json").read_text())["stream"] is True
