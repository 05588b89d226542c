"""Finetune's augmentation (finetuning/augment.py): crop, saturation and hue; the question-aware rules,
their tally on the run line and in metrics.json, and the recipe key that turns them off."""

from __future__ import annotations

import json

import torch
from conftest import FAST


def spec(**kw):
    from vqa_cache import recipes

    return recipes.build(recipes.AugmentSettings, {"enabled": True, "hflip": 0.0, **kw})


def run(x, texts, augment, seed=0):
    from vqa_cache.finetuning.augment import augment_images, new_counts

    counts = new_counts()
    return augment_images(x, texts, augment, torch.Generator().manual_seed(seed), counts), counts


X = torch.randint(0, 256, (4, 3, 16, 16), dtype=torch.uint8)
TEXTS = [
    ["how many shapes are there?"],
    ["what color is the shape?"],
    ["what shape is it?"],
    ["is the circle on the left?"],
]


def test_crop_keeps_the_size_and_spares_counting_and_where_questions():
    y, counts = run(X, TEXTS, spec(crop=0.3))
    assert y.shape == X.shape and y.dtype == torch.uint8
    assert torch.equal(y[0], X[0]) and torch.equal(y[3], X[3])  # how many / left: not cropped
    assert not torch.equal(y[1], X[1]) and not torch.equal(y[2], X[2])
    assert counts["crop"] == 2 and counts["crop_held"] == 2 and counts["images"] == 4
    y, counts = run(X, TEXTS, spec(crop=0.3, question_rules=False))  # rules off: every image
    assert all(not torch.equal(y[i], X[i]) for i in range(4)) and counts["crop_held"] == 0


def test_saturation_and_hue_jitter_spare_colour_questions():
    for key in ("saturation", "hue"):
        y, counts = run(X, TEXTS, spec(**{key: 0.4}))
        assert torch.equal(y[1], X[1])  # a colour question: untouched
        assert not torch.equal(y[2], X[2]), key
        assert counts["colour"] == 3 and counts["colour_held"] == 1
    y, _ = run(X, TEXTS, spec(hue=0.4, question_rules=False))
    assert not torch.equal(y[1], X[1])


def test_flips_held_back_are_counted():
    y, counts = run(X, TEXTS, spec(hflip=1.0))
    assert torch.equal(y[3], X[3]) and torch.equal(y[2], X[2].flip(-1))
    assert counts["hflip"] == 3 and counts["flip_held"] == 1


def test_finetune_says_what_augmentation_did(cli, tmp_path):
    out = tmp_path / "ft"
    sets = [
        "finetune.workers=0",
        "finetune.augment.enabled=true",
        "finetune.augment.crop=0.5",
        "finetune.augment.saturation=0.3",
        "finetune.augment.hue=0.1",
        "finetune.augment.hflip=0.5",
    ]
    r = cli(
        "finetune",
        "train/easyvqa-finetune.toml",
        "--limit",
        150,
        *FAST,
        "--epochs",
        1,
        "--out",
        out,
        *[a for s in sets for a in ("--set", s)],
    )
    assert r.code == 0, r
    assert "augment hflip 0.5, crop scale 0.5-1, saturation 0.3, hue 0.1 (question rules on)" in r.out
    assert "held back by the question rules: " in r.out and "colour " in r.out
    [row] = json.loads((out / "metrics.json").read_text())["epochs"]
    tally = row["augmented"]
    assert tally["images"] > 0 and tally["colour_held"] > 0  # easy-VQA asks about colour
    assert tally["colour"] + tally["colour_held"] == tally["images"]
    r = cli(
        "finetune",
        "train/easyvqa-finetune.toml",
        "--limit",
        150,
        *FAST,
        "--epochs",
        1,
        "--out",
        tmp_path / "x",
        "--set",
        "finetune.augment.hue=0.7",
    )
    assert r.code == 2 and "'finetune.augment.hue' must be in [0, 0.5]" in r.err, r
