"""Finetune runs in predict / ask / report / runs; `vqa-cache export`; `vqa_cache.load`; `ask --model`."""

from __future__ import annotations

import json
import shutil

import pytest
from conftest import FAST, run_cli

LIMIT = ["--limit", 300]
QUESTIONS = ["What color is the shape?", "What shape is in the image?", "Is there a circle?", "Is the shape red?"]


def images(n=20):
    import easy_vqa

    paths = easy_vqa.get_test_image_paths()  # {image id: path}
    return [paths[k] for k in sorted(paths)[:n]]


def pairs(n=20):
    return images(n), [QUESTIONS[i % len(QUESTIONS)] for i in range(n)]


def asked(cli, *where):
    """`vqa-cache ask ...` on 20 images: the printed answers of each."""
    out = []
    for image, question in zip(*pairs()):
        r = cli(*where, "--image", image, "--question", question, "--top", 3)
        assert r.code == 0, r
        out.append(r.out)
    return out


@pytest.fixture(scope="module")
def ft_run(tmp_path_factory, tiny_bert_dir):
    """A tiny finetune run: ResNet18 at 32 px and the tiny BERT, both with LoRA adapters (r = 4), one epoch."""
    d = tmp_path_factory.mktemp("ft")
    run_cli(
        "finetune",
        "train/easyvqa-finetune.toml",
        *LIMIT,
        *FAST,
        "--text-encoder",
        tiny_bert_dir,
        "--set",
        'features.text.weights="auto"',
        "--train-encoders",
        "all",
        "--lora-r",
        4,
        "--epochs",
        1,
        "--set",
        "finetune.workers=0",
        "--set",
        "head.hidden=64",
        "--out",
        d / "run",
    )
    return d / "run"


@pytest.mark.slow  # a long training (make test-fast leaves it out)
def test_predict_a_finetune_run_gives_its_recorded_accuracy(cli, ft_run, tmp_path):
    best = json.loads((ft_run / "metrics.json").read_text())["best"]["val_accuracy"]
    r = cli("predict", "--run", ft_run, "--out", tmp_path / "p.json")
    assert r.code == 0, r
    import vqa_cache

    res = vqa_cache.Run(ft_run).predict(out=tmp_path / "p2.json", verbose=False)
    assert res["accuracy"] == best and res["questions"] == 300
    assert len(json.loads((tmp_path / "p.json").read_text())) == 300
    r = cli("report", ft_run, "--out", tmp_path / "r.html")
    assert r.code == 0 and f"accuracy {best:.4f}" in r.out, r
    r = cli("runs", ft_run.parent)
    assert r.code == 0 and "finetune" in r.out, r


@pytest.mark.slow  # a long training (make test-fast leaves it out)
def test_export_a_finetune_run_and_ask_it_without_the_run(cli, ft_run, tmp_path, monkeypatch):
    import vqa_cache

    run_answers = asked(cli, "ask", "--run", ft_run)
    expected = vqa_cache.load(ft_run).predict(*pairs())
    image, question = images(1)[0], QUESTIONS[0]
    explained = vqa_cache.load(ft_run).explain(image, question, top=3)
    assert explained["method"] == "grad-cam"  # a pooled head on a CNN: Grad-CAM on the trained trunk
    out = tmp_path / "model"
    r = cli("export", ft_run, out)
    assert r.code == 0, r
    files = {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()}
    assert {
        "config.json",
        "model.safetensors",
        "README.md",
        "image_encoder/model.safetensors",
        "text_encoder/config.json",
        "text_encoder/model.safetensors",
    } <= files
    assert not [f for f in files if f.endswith((".bin", ".pt", ".pth", ".pkl"))]
    config = json.loads((out / "config.json").read_text())
    assert config["head"]["name"] == "concat" and config["text"]["trained"] == "all, LoRA r=4"
    assert len(config["vocab"]["answers"]) == config["head"]["num_answers"]
    card = (out / "README.md").read_text()
    assert "library_name: vqa-cache" in card and config["source"]["cache_keys"]["image"] in card
    # LoRA merged: the text encoder is a plain Hugging Face model directory
    from transformers import AutoModel

    assert not any("lora" in n for n, _ in AutoModel.from_pretrained(out / "text_encoder").named_parameters())

    moved = tmp_path / "gone"
    shutil.move(ft_run, moved)  # no run directory, a fresh empty cache
    monkeypatch.setenv("VQA_CACHE_HOME", str(tmp_path / "fresh-cache"))
    try:
        assert asked(cli, "ask", "--model", out) == run_answers
        got = vqa_cache.load(out).predict(*pairs())
        r = cli(
            "ask",
            "--model",
            out,
            "--image",
            image,
            "--question",
            question,
            "--top",
            3,
            "--json",
            "--explain",
            tmp_path / "where.png",
        )
        assert r.code == 0 and (tmp_path / "where.png").stat().st_size > 0, r
    finally:
        shutil.move(moved, ft_run)
    assert [a for a, _ in got] == [a for a, _ in expected]
    assert max(abs(s - t) for (_, s), (_, t) in zip(got, expected)) < 1e-5
    again = json.loads(r.out)
    assert [a["answer"] for a in again["answers"]] == [a["answer"] for a in explained["answers"]]
    assert again["method"] == "grad-cam" and again["grid"] == explained["grid"]
    import numpy as np

    assert np.allclose(again["attention"], explained["attention"], atol=1e-5)


@pytest.mark.slow  # trains for long: not in `make test-fast`
@pytest.mark.parametrize("head", ["concat", "lstm"])
def test_export_a_train_run_answers_as_the_run_with_no_cache(cli, tmp_path, tiny_bert_dir, monkeypatch, head):
    """A train run (tiny BERT pooled for concat; bag-of-words word ids for lstm) exported; with its cache moved
    away and a fresh VQA_CACHE_HOME, `ask --model` prints what `ask --run` printed, on 20 images."""
    import vqa_cache

    cache = tmp_path / "cache"
    text = (
        ["--text-encoder", tiny_bert_dir, "--set", 'text.weights="auto"']
        if head == "concat"
        else ["--set", "text.ids=true"]
    )
    run_cli("--cache-dir", cache, "extract", *LIMIT, *FAST, *text, "--workers", 0)
    run = tmp_path / "run"
    train_text = [str(a).replace("text.", "features.text.") if str(a).startswith("text.") else a for a in text]
    r = cli(
        "--cache-dir",
        cache,
        "train",
        *LIMIT,
        *FAST,
        *train_text,
        "--head",
        head,
        "--epochs",
        1,
        "--set",
        "head.hidden=64",
        "--out",
        run,
    )
    assert r.code == 0, r
    run_answers = asked(cli, "--cache-dir", cache, "ask", "--run", run)
    expected = vqa_cache.load(run, cache_dir=cache).predict(*pairs())
    out = tmp_path / "model"
    assert vqa_cache.export(run, out, cache_dir=cache) == out
    assert (out / "text_encoder").is_dir() == (head == "concat")
    shutil.move(cache, tmp_path / "cache-gone")
    shutil.move(run, tmp_path / "run-gone")
    monkeypatch.setenv("VQA_CACHE_HOME", str(tmp_path / "fresh"))
    assert asked(cli, "ask", "--model", out) == run_answers
    got = vqa_cache.load(out).predict(*pairs())
    assert [a for a, _ in got] == [a for a, _ in expected]
    assert max(abs(s - t) for (_, s), (_, t) in zip(got, expected)) < 1e-5


def test_a_bad_model_directory_is_one_line_exit_2(cli, ft_run, tmp_path):
    out = tmp_path / "model"
    assert cli("export", ft_run, out).code == 0
    image = images(1)[0]

    def ask(where):
        r = cli("ask", "--model", where, "--image", image, "--question", "What color is the shape?")
        lines = r.err.strip().splitlines()
        assert r.code == 2 and len(lines) == 1 and lines[0].startswith("vqa-cache: error:"), r
        return lines[0]

    r = cli("export", ft_run, out)  # never over an existing model
    assert r.code == 2 and "not an empty directory" in r.err, r
    r = cli("runs", tmp_path)  # a model directory is not a run
    assert r.code == 0 and r.out.startswith("no runs in"), r
    assert cli("ask", "--model", out, "--run", ft_run, "--image", image, "--question", "q?").code == 2
    bad = tmp_path / "pickled"
    shutil.copytree(out, bad)
    (bad / "text_encoder" / "pytorch_model.bin").write_bytes(b"\x80\x04.")
    assert "pickle" in ask(bad)
    bad = tmp_path / "missing"
    shutil.copytree(out, bad)
    (bad / "image_encoder" / "model.safetensors").unlink()
    assert "missing" in ask(bad)
    bad = tmp_path / "shapes"
    shutil.copytree(out, bad)
    config = json.loads((bad / "config.json").read_text())
    config["head"]["hidden"] = 32
    (bad / "config.json").write_text(json.dumps(config))
    assert "does not fit the head" in ask(bad)
    bad = tmp_path / "image-shapes"
    shutil.copytree(out, bad)
    config["head"]["hidden"] = 64
    config["image"]["encoder"] = "resnet34"
    (bad / "config.json").write_text(json.dumps(config))
    assert "does not fit the image encoder resnet34" in ask(bad)
    config["image"]["encoder"], config["text"] = "resnet18", "bow"
    (bad / "config.json").write_text(json.dumps(config))
    assert "malformed text" in ask(bad)


@pytest.mark.slow  # a long training (make test-fast leaves it out)
def test_a_whole_trained_trunk_predicts_its_recorded_accuracy_and_exports(cli, tmp_path):
    """No LoRA: ResNet18's layer4 trained whole (weights and BatchNorm statistics from the checkpoint)."""
    import vqa_cache

    run = tmp_path / "run"
    r = cli(
        "finetune",
        "train/easyvqa-finetune.toml",
        *LIMIT,
        *FAST,
        "--train-encoders",
        "top:1",
        "--epochs",
        1,
        "--set",
        "finetune.workers=0",
        "--set",
        "head.hidden=64",
        "--out",
        run,
    )
    assert r.code == 0, r
    best = json.loads((run / "metrics.json").read_text())["best"]["val_accuracy"]
    assert vqa_cache.Run(run).predict(out=tmp_path / "p.json", verbose=False)["accuracy"] == best
    expected = vqa_cache.load(run).predict(*pairs(8))
    model = vqa_cache.export(run, tmp_path / "model")
    assert json.loads((model / "config.json").read_text())["image"]["trained"] == "top:1"
    got = vqa_cache.load(model).predict(*pairs(8))
    assert [a for a, _ in got] == [a for a, _ in expected]
    assert max(abs(s - t) for (_, s), (_, t) in zip(got, expected)) < 1e-5
