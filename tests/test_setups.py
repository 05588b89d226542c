"""The four classic setups (extract/ and train/ recipe pairs) end to end on an easy-VQA subset. Where the real
models cannot be had offline, options put tiny ones (built in conftest.py) or a random init in their place:
ResNet50 runs as itself with `--weights random` at 32 px, TinyBERT and BERT as the tiny BERT, GPT-2 as the
tiny GPT-2 (no pad token, like GPT-2's), the ViT as a tiny ViTModel directory (`hf:DIR`)."""

from __future__ import annotations

import json

import pytest

RESNET50 = ["--weights", "random", "--image-size", 32]


def setup(cli, tmp_path, name: str, options: list, command: str = "train", more=()):
    """Extract with extract/NAME.toml, then train (or finetune) with train/NAME.toml, the same options;
    returns the run's config.json."""
    cache = tmp_path / "cache"
    r = cli("--cache-dir", cache, "extract", f"extract/{name}.toml", *options)
    assert r.code == 0, r
    run = tmp_path / name
    r = cli("--cache-dir", cache, command, f"train/{name}.toml", *options, "--epochs", 1, *more, "--out", run)
    assert r.code == 0, r
    assert (run / "predictions.json").is_file()
    return json.loads((run / "config.json").read_text())


@pytest.mark.slow  # trains for long: not in `make test-fast`
def test_resnet50_tinybert_concat_the_default(cli, tmp_path, tiny_bert_dir):
    config = setup(
        cli, tmp_path, "resnet50-tinybert-concat", ["--limit", 60, *RESNET50, "--text-encoder", tiny_bert_dir]
    )
    assert config["recipe"]["head"]["name"] == "concat" and config["head"]["hidden"] == 1024
    image, question = config["cache_specs"]["image"], config["cache_specs"]["question"]
    assert image["encoder"] == "resnet50" and question["pooling"] == "mean" and image["outputs"] == ["pooled"]


@pytest.mark.slow  # trains for long: not in `make test-fast`
def test_resnet50_bow_lstm(cli, tmp_path):
    config = setup(cli, tmp_path, "resnet50-bow-lstm", ["--limit", 60, *RESNET50])
    assert config["head"]["name"] == "lstm" and config["cache_specs"]["question"]["encoder"] == "bow"
    assert config["cache_specs"]["question"]["ids"] and config["words"]


def test_resnet50_gpt2_yesno(cli, tmp_path, tiny_gpt2_dir):
    config = setup(cli, tmp_path, "resnet50-gpt2-yesno", ["--limit", 100, *RESNET50, "--text-encoder", tiny_gpt2_dir])
    assert config["cache_specs"]["question"]["pooling"] == "last"
    assert config["recipe"]["features"]["dataset"]["answer_types"] == ["yes/no"]
    assert config["vocabulary"]["size"] == 2


@pytest.mark.slow  # trains for long: not in `make test-fast`
def test_vit_bert_lora_finetunes_both_encoders_query_and_value(cli, tmp_path, tiny_vit_dir, tiny_bert_dir):
    """LoRA r=8 on the query and value projections of both the ViT's and BERT's attention (2 layers each),
    a quarter of the images."""
    config = setup(
        cli,
        tmp_path,
        "vit-bert-lora",
        ["--limit", 200, "--image-encoder", f"hf:{tiny_vit_dir}", "--text-encoder", tiny_bert_dir],
        "finetune",
        ["--batch-size", 16, "--set", "finetune.eval_batch_size=16"],
    )
    encoders = config["encoders"]
    assert encoders["lora_r"] == 8 and encoders["lora_targets"] == 8
    assert encoders["train_image"] == encoders["train_text"] == "all"
    assert config["recipe"]["features"]["dataset"]["image_fraction"] == 0.25
    # 2 layers x (query, value) x (A: r x 32, B: 32 x r) in each encoder
    assert encoders["trainable_encoder_params"] == 2 * 2 * 2 * 2 * 8 * 32


def test_a_finetune_recipe_given_to_train_names_the_command(cli):
    r = cli("train", "train/vit-bert-lora.toml")
    assert r.code == 2 and len(r.err.strip().splitlines()) == 1, r
    assert "a finetune recipe" in r.err and "vqa-cache finetune train/vit-bert-lora.toml" in r.err, r
