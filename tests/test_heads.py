"""Fusion heads: shapes, padding, and each head trained on a small grid + token-state cache, then
`predict` and `ask` on its run."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import run_cli

from vqa_cache import heads

GRID_LIMIT = ["--limit", 300]


def inputs(name, b=3, di=24, dq=16, cells=4, length=6):
    need = heads.needs(name)
    image = torch.randn(b, di) if need["image"] == "pooled" else torch.randn(b, cells, di)
    if need["question"] == "ids":  # ids + 1 below dq, zero after each question's length
        question = torch.randint(1, dq, (b, length)) * (torch.arange(length) < torch.arange(b)[:, None] + 2)
    else:
        question = torch.randn(b, dq) if need["question"] == "pooled" else torch.randn(b, length, dq)
    return image, question


@pytest.mark.parametrize("name", sorted(heads.HEADS))
def test_head_shapes_and_gradients(name):
    assert set(heads.needs(name)) == {"image", "question"}
    assert heads.needs(name)["image"] in ("pooled", "grid") and heads.needs(name)["question"] in (
        "pooled",
        "tokens",
        "ids",
    )
    torch.manual_seed(0)
    model = heads.build(name, 24, 16, 7, hidden=32, dropout=0.1)
    image, question = inputs(name)
    logits = model(image, question)
    assert logits.shape == (3, 7) and torch.isfinite(logits).all()
    logits.sum().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    assert heads.HEADS[name].__doc__ and "[B" in heads.HEADS[name].__doc__  # shapes documented


def test_all_issue_heads_registered():
    assert {"concat", "hadamard", "bilinear", "attention", "coattention", "lstm", "butd"} <= set(heads.HEADS)
    assert heads.needs("lstm") == {"image": "pooled", "question": "ids"}
    assert heads.needs("butd") == {"image": "grid", "question": "ids"}
    assert heads.needs("attention") == {"image": "grid", "question": "pooled"}
    assert heads.needs("coattention") == {"image": "grid", "question": "tokens"}


def test_each_head_has_its_own_defaults_and_old_configs_rebuild_as_they_were():
    """head.hidden / head.layers 0 take the head's own defaults, a value set wins; a checkpoint's head config
    from before these keys (no layers, no standardize) builds the head it was: LayerNorm on the image."""
    for name, cls in heads.HEADS.items():
        config = heads.head_config(name, 24, 16, 7)
        assert config["hidden"] == cls.defaults["hidden"] and config.get("layers") == cls.defaults.get("layers")
        assert heads.head_config(name, 24, 16, 7, hidden=8, standardize=True)["hidden"] == 8
    assert heads.from_config(heads.head_config("coattention", 24, 16, 7, layers=3)).enc.__len__() == 3
    old = {"name": "coattention", "image_dim": 24, "question_dim": 16, "num_answers": 7, "hidden": 1024, "dropout": 0.1}
    model = heads.from_config(old)
    assert isinstance(model.proj_i[0], torch.nn.LayerNorm) and model.proj_i[1].out_features == 512
    assert len(model.enc) == len(model.dec) == 2


def test_coattention_ignores_padding():
    torch.manual_seed(0)
    model = heads.build("coattention", 24, 16, 5, hidden=32, dropout=0.0).eval()
    image, question = inputs("coattention", length=4)
    padded = torch.cat([question, torch.zeros(3, 5, 16)], dim=1)  # 5 more all-zero (padding) tokens
    with torch.no_grad():
        a, b = model(image, question), model(image, padded)
        c = model(image, padded, mask=(padded != 0).any(-1).long())
    assert torch.allclose(a, b, atol=1e-5) and torch.allclose(a, c, atol=1e-5)


@pytest.fixture(scope="module")
def grid_cache(tmp_path_factory, tiny_bert_dir):
    """easy-VQA (300 questions per split): ResNet18 random init at 64 px, pooled + 2x2 grid;
    the tiny BERT fixture with token states and token ids."""
    root = tmp_path_factory.mktemp("gridcache")
    run_cli(
        "--cache-dir",
        root,
        "extract",
        *GRID_LIMIT,
        "--image-encoder",
        "resnet18",
        "--image-size",
        64,
        "--features",
        "pooled+grid",
        "--set",
        "image.weights=random",
        "--text-encoder",
        tiny_bert_dir,
        "--set",
        "text.tokens=true",
        "--set",
        "text.max_length=16",
        "--set",
        "text.ids=true",
    )
    return root


def grid_args(tiny_bert_dir):
    return [
        *GRID_LIMIT,
        "--image-encoder",
        "resnet18",
        "--image-size",
        64,
        "--features",
        "pooled+grid",
        "--set",
        "features.image.weights=random",
        "--text-encoder",
        tiny_bert_dir,
        "--set",
        "features.text.tokens=true",
        "--set",
        "features.text.max_length=16",
        "--set",
        "features.text.ids=true",
    ]


@pytest.mark.slow  # trains for long: not in `make test-fast`
@pytest.mark.parametrize("name", ["bilinear", "attention", "coattention", "lstm", "butd"])
def test_head_trains_predicts_and_answers(cli, grid_cache, tiny_bert_dir, tmp_path, name):
    run = tmp_path / name
    r = cli(
        "--cache-dir",
        grid_cache,
        "train",
        *grid_args(tiny_bert_dir),
        "--head",
        name,
        "--epochs",
        2,
        "--set",
        "head.hidden=64",
        "--lr",
        3e-3,
        "--out",
        run,
    )
    assert r.code == 0, r
    metrics = json.loads((run / "metrics.json").read_text())
    assert len(metrics["epochs"]) == 2
    assert set(metrics["epochs"][-1]["val_accuracy_per_type"]) == {"yes/no", "other"}
    # predict re-evaluates the best checkpoint: the same accuracy as training measured
    r = cli("--cache-dir", grid_cache, "predict", "--run", run, "--out", tmp_path / "p.json")
    assert r.code == 0, r
    assert f"accuracy {metrics['best']['val_accuracy']:.4f}" in r.out
    preds = json.loads((tmp_path / "p.json").read_text())
    assert preds == json.loads((run / "predictions.json").read_text())
    if name == "attention":  # grid features streamed from the shards, the train split
        r = cli(
            "--cache-dir",
            grid_cache,
            "predict",
            "--run",
            run,
            "--split",
            "train",
            "--out",
            tmp_path / "t.json",
            "--stream",
        )
        assert r.code == 0 and len(json.loads((tmp_path / "t.json").read_text())) == 300, r
    import easy_vqa

    r = cli(
        "ask", "--run", run, "--image", easy_vqa.get_test_image_paths()[0], "--question", "What shape is in the image?"
    )
    assert r.code == 0, r
    lines = r.out.strip().splitlines()
    assert len(lines) == 5
    probs = [float(x.split("%")[0]) for x in lines]
    assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 100.01


def test_ask_encodes_exactly_like_the_cache(cli, grid_cache, tiny_bert_dir, tmp_path):
    """The live features of `ask` equal the cached ones for an image and question of the cache."""
    import easy_vqa

    import vqa_cache
    from vqa_cache import recipes
    from vqa_cache.training.features import load_features

    run = tmp_path / "co"
    r = cli(
        "--cache-dir",
        grid_cache,
        "train",
        *grid_args(tiny_bert_dir),
        "--head",
        "coattention",
        "--epochs",
        1,
        "--set",
        "head.hidden=32",
        "--out",
        run,
    )
    assert r.code == 0, r
    config = json.loads((run / "config.json").read_text())
    plan, tensors, _ = load_features(recipes.build(recipes.TrainRecipe, config["recipe"]), grid_cache, "x")
    t = plan.samples
    image_id, text = t.column("image_id")[0].as_py(), t.column("question")[0].as_py()
    split, number = image_id.split("/")
    path = (easy_vqa.get_train_image_paths() if split == "train" else easy_vqa.get_test_image_paths())[int(number)]
    img, q = vqa_cache.load(run, cache_dir=grid_cache).features([path], [text])
    cached_img = tensors["image"][1][tensors["image"][0].index(image_id)].float()  # (float16 in memory)
    cached_q = tensors["question"][1][tensors["question"][0].index(text)].float()
    assert img.shape == (1, *cached_img.shape) and q.shape == (1, *cached_q.shape)
    assert torch.allclose(img[0], cached_img, rtol=1e-2, atol=1e-2)
    assert torch.allclose(q[0], cached_q, rtol=1e-2, atol=1e-2)
    assert ((q[0] == 0).all(-1) == (cached_q == 0).all(-1)).all()  # the same padding positions
