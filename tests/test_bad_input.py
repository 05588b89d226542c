"""Bad input that used to exit 1 or raise something other than BadInput (issue 23.5 and its weak spots):
each is one line on stderr and exit 2 (the API raises vqa_cache.BadInput), and every file that existed before
is left whole."""

from __future__ import annotations

import re

import pytest
from conftest import FAST

import vqa_cache
from vqa_cache.errors import BadInput

# ---------------------------------------------------------------- API arguments of the wrong type


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: vqa_cache.train(recipe=42), "recipe = 42: expected a path"),
        (lambda: vqa_cache.extract(recipe=["a.toml"]), "expected a path"),
        (lambda: vqa_cache.ask("runs/none", "x.png", "what?", top="3"), "ask: top = '3': expected an integer"),
        (lambda: vqa_cache.ask("runs/none", "x.png", "what?", top=True), "ask: top = True: expected an integer"),
        (lambda: vqa_cache.ask("runs/none", "x.png", "what?", top=0), "ask: top = 0: expected at least 1"),
        (lambda: vqa_cache.ask("runs/none", 7, "what?"), "ask: image = 7: expected a path"),
        (lambda: vqa_cache.ask("runs/none", "x.png", b"what?"), "ask: question = b'what?': expected a str"),
        (lambda: vqa_cache.ask(3.5, "x.png", "what?"), "Run: dir = 3.5: expected a path"),
        (lambda: vqa_cache.Run("runs/none").predict(out=5), "predict: out = 5: expected a path"),
        (
            lambda: vqa_cache.evaluate({"questions": []}, {"annotations": []}, [], protocol="x"),
            "protocol must be one of current, 2016, got 'x'",
        ),
        (lambda: vqa_cache.evaluate("q.json", "a.json", "p.json", protocol=2016), "protocol must be one of"),
        (lambda: vqa_cache.runs(directory=42), "runs: directory = 42: expected a path"),
    ],
)
def test_api_arguments_of_the_wrong_type_are_bad_input(call, message):
    with pytest.raises(BadInput, match=re.escape(message)):
        call()


# ---------------------------------------------------------------- output paths under a regular file


def test_output_paths_under_a_regular_file(cli, tmp_path):
    """`train --out FILE/run`, `sweep --out FILE/s`, `report --out FILE/r.html`, `predict --out FILE/p.json`
    and `report --out DIR` are one line and exit 2 before any work, and FILE is left as it was."""
    from vqa_cache.digest import check_out_path

    blocker = tmp_path / "FILE"
    blocker.write_text("keep me")
    r = cli(
        "--cache-dir",
        tmp_path / "cache",
        "train",
        "--out",
        blocker / "run",
        "--epochs",
        1,
        "--image-encoder",
        "resnet18",
        "--weights",
        "random",
        "--text-encoder",
        "bow",
    )
    assert r.code == 2 and f"--out {blocker / 'run'}: {blocker} is not a directory" in r.err, r
    assert len(r.err.strip().splitlines()) == 1
    r = cli("--cache-dir", tmp_path / "cache", "sweep", "train/easyvqa-sweep.toml", "--out", blocker / "s")
    assert r.code == 2 and f"{blocker} is not a directory" in r.err, r
    for command, run in (("report", [tmp_path]), ("predict", ["--run", tmp_path])):
        r = cli("--cache-dir", tmp_path / "cache", command, *run, "--out", blocker / "r.html")
        assert r.code == 2 and f"{command} --out {blocker / 'r.html'}: {blocker} is not a directory" in r.err, r
    with pytest.raises(BadInput, match="is a directory, expected a file"):
        check_out_path(tmp_path, "report --out", directory=False)
    assert check_out_path(blocker, "report --out", directory=False) == blocker  # a file to replace
    assert check_out_path(tmp_path / "new" / "deeper", "--out", directory=True)
    assert blocker.read_text() == "keep me" and sorted(p.name for p in tmp_path.iterdir()) == ["FILE"]


# ---------------------------------------------------------------- hf: datasets


def _hf_paths(d, names_for):
    """A save_to_disk dataset at `d` whose image column holds paths: names_for(i, image file) -> the path."""
    from datasets import Dataset
    from fixtures_hf import easyvqa_splits

    splits = easyvqa_splits({"train": 4})
    (d / "img").mkdir(parents=True)
    names = []
    for img, i in zip(splits["train"]["image"], splits["train"]["image_id"]):
        (d / "img" / f"{i}.png").write_bytes(img["bytes"])
        names.append(names_for(i, d / "img" / f"{i}.png"))
    Dataset.from_dict(
        {
            "image": names,
            "question": splits["train"]["question"],
            "answers": [[x["answer"] for x in a] for a in splits["train"]["answers"]],
        }
    ).save_to_disk(str(d))


@pytest.mark.parametrize("form", ["absolute", "climbing"])
def test_hf_image_paths_outside_the_dataset_are_refused_unless_allowed(cli, tmp_path, form):
    """As a CSV dataset's: an absolute or ../ image path is one line naming the option that allows it."""
    d = tmp_path / "data" / "d"
    if form == "absolute":
        _hf_paths(d, lambda i, f: str(f))
    else:
        _hf_paths(d, lambda i, f: f"../d/img/{i}.png")
    args = [
        "--cache-dir",
        tmp_path / "cache",
        "extract",
        "--dataset",
        f"hf:{d}",
        *FAST,
        "--text-encoder",
        "bow",
        "--workers",
        0,
    ]
    r = cli(*args)
    assert r.code == 2 and "is outside the dataset directory" in r.err, r
    assert "--set dataset.options.image_paths=anywhere" in r.err and len(r.err.strip().splitlines()) == 1
    assert not list((tmp_path / "cache").rglob("manifest.json"))
    r = cli(*args, "--set", "dataset.options.image_paths=anywhere")
    assert r.code == 0, r
    r = cli(*args, "--set", "dataset.options.image_paths=everywhere")
    assert r.code == 2 and "image_paths 'everywhere': expected one of inside, anywhere" in r.err, r


def test_hf_zero_row_split_and_loading_script_are_bad_input(cli, tmp_path):
    from datasets import DatasetDict
    from fixtures_hf import dataset_dict, easyvqa_splits, features

    full = dataset_dict(easyvqa_splits({"train": 4, "validation": 2}), features())
    empty = tmp_path / "empty"
    DatasetDict({"train": full["train"], "validation": full["validation"].select([])}).save_to_disk(str(empty))
    script = tmp_path / "script"
    script.mkdir()
    (script / "script.py").write_text(f"open({str(tmp_path / 'RAN')!r}, 'w')\n")
    (script / "train.csv").write_text("image,question,answers\na.png,what?,yes\n")
    for d, message in ((empty, "split 'validation' has no rows"), (script, "holds a loading script (script.py)")):
        r = cli(
            "--cache-dir",
            tmp_path / "cache",
            "extract",
            "--dataset",
            f"hf:{d}",
            *FAST,
            "--text-encoder",
            "bow",
            "--workers",
            0,
        )
        assert r.code == 2 and message in r.err, r
        assert len(r.err.strip().splitlines()) == 1
    assert not (tmp_path / "RAN").exists() and not list((tmp_path / "cache").rglob("manifest.json"))


# ---------------------------------------------------------------- hf: models


def test_hf_model_with_a_mis_shaped_tensor_is_one_line(cli, tmp_path, tiny_vit_dir, tiny_bert_dir):
    """A safetensors tensor whose shape config.json contradicts (transformers: a RuntimeError about
    ignore_mismatched_sizes) names the tensor, for an image (hf:DIR) and a text (--text-encoder DIR) model."""
    import shutil

    import torch
    from safetensors.torch import load_file, save_file

    for source, flag in ((tiny_vit_dir, "--image-encoder"), (tiny_bert_dir, "--text-encoder")):
        d = tmp_path / source.name
        shutil.copytree(source, d)
        tensors = load_file(d / "model.safetensors")
        key = next(k for k in tensors if k.endswith("query.weight"))
        tensors[key] = torch.zeros(5, 7)
        save_file(tensors, d / "model.safetensors", metadata={"format": "pt"})
        args = [flag, f"hf:{d}", "--text-encoder", "bow"] if flag == "--image-encoder" else [flag, d]
        if flag == "--text-encoder":
            args += ["--image-encoder", "resnet18", "--image-size", "32", "--weights", "random"]
        r = cli("--cache-dir", tmp_path / "cache", "extract", "--limit", 6, *args, "--workers", 0)
        assert r.code == 2 and "cannot load the model" in r.err and "[5, 7] in the checkpoint" in r.err, r
        assert len(r.err.strip().splitlines()) == 1
    assert not list((tmp_path / "cache").rglob("manifest.json"))


# ---------------------------------------------------------------- found while encoding


def _no_unfinished_entry(root):
    import json

    manifests = [json.loads(p.read_text()) for p in root.rglob("manifest.json")]
    return all(m.get("complete") for m in manifests)


def test_features_that_overflow_float16_remove_the_entry(cli, tmp_path, resnet18_file):
    """Weights scaled x1e30: the features overflow float16 at the first batch; one line, exit 2, and no
    INCOMPLETE entry is left (a second run says the same, it does not resume a dead entry)."""
    import torch

    state = torch.load(resnet18_file)
    scaled = tmp_path / "scaled.pt"
    torch.save({k: v * 1e30 if v.is_floating_point() else v for k, v in state.items()}, scaled)
    root = tmp_path / "cache"
    for _ in range(2):
        r = cli(
            "--cache-dir",
            root,
            "extract",
            "--limit",
            12,
            "--image-encoder",
            "resnet18",
            "--image-size",
            32,
            "--weights",
            scaled,
            "--text-encoder",
            "bow",
            "--workers",
            0,
        )
        assert r.code == 2 and "pooled image features overflow float16" in r.err, r
        assert "unfinished cache entry image-" in r.err and len(r.err.strip().splitlines()) == 1
        assert _no_unfinished_entry(root) and not list((root / "image").glob("image-*/"))


def test_a_tokenizer_that_gives_no_tokens_removes_the_entry(cli, tmp_path):
    """A GPT-2 tokenizer built from vocab_file + merges_file is empty under transformers 5: every question is
    no tokens (a reshape error, exit 1, before). One line, exit 2, no INCOMPLETE question entry."""
    import json

    import torch
    from tokenizers import Tokenizer, models
    from transformers import GPT2Config, GPT2Model, PreTrainedTokenizerFast

    d = tmp_path / "gpt"
    empty = Tokenizer(models.BPE(vocab={}, merges=[]))  # what such a tokenizer amounts to: nothing known
    PreTrainedTokenizerFast(tokenizer_object=empty, eos_token="<|endoftext|>").save_pretrained(d)
    torch.manual_seed(0)
    GPT2Model(GPT2Config(vocab_size=8, n_embd=16, n_layer=1, n_head=2, n_positions=40)).save_pretrained(d)
    assert json.loads((d / "config.json").read_text())["model_type"] == "gpt2"
    root = tmp_path / "cache"
    r = cli("--cache-dir", root, "extract", "--limit", 12, *FAST, "--text-encoder", d, "--workers", 0)
    assert r.code == 2 and "its tokenizer gives no tokens for" in r.err, r
    assert "unfinished cache entry question-" in r.err  # (the finished images' bar stays above it)
    assert [line for line in r.err.splitlines() if "error" in line] == [r.err.strip().splitlines()[-1]]
    assert _no_unfinished_entry(root) and not list((root / "question").glob("question-*/"))


# ---------------------------------------------------------------- --resume before the first checkpoint


def test_resume_before_the_first_checkpoint_says_to_start_over(cli, tmp_path):
    """A kill before the first epoch ended leaves config.json (and the dead writer's lock file) and no last.pt:
    --resume says to run the command again without it, which then works."""
    root, run = tmp_path / "cache", tmp_path / "run"
    data = ["--limit", 30, *FAST, "--text-encoder", "bow"]
    assert cli("--cache-dir", root, "extract", *data, "--workers", 0).code == 0
    train = ["--cache-dir", root, "train", *data, "--epochs", 1, "--batch-size", 8, "--out", run]
    assert cli(*train).code == 0
    for p in run.iterdir():
        if p.name != "config.json":
            p.unlink()
    (run / ".lock").write_text("otherhost 12345\n")
    r = cli(*train, "--resume")
    assert r.code == 2 and f"--resume: no checkpoint {run / 'last.pt'} to continue from" in r.err, r
    assert "run the same command again without --resume to start it over" in r.err
    assert len(r.err.strip().splitlines()) == 1
    r = cli(*train)
    assert r.code == 0 and (run / "last.pt").is_file(), r


# ---------------------------------------------------------------- a read-only cache


def test_read_only_cache_extract_train_and_rm(cli, tmp_path, monkeypatch):
    """Complete entries on a read-only file system (simulated: every open for writing under the root is
    EROFS): `extract` finds them without a lock file, `train` reads them, `cache rm` says the cache is
    read-only; nothing exits 1 and every file stays as it was."""
    import errno
    import os

    root = tmp_path / "cache"
    data = ["--limit", 30, *FAST, "--text-encoder", "bow"]
    assert cli("--cache-dir", root, "extract", *data, "--workers", 0).code == 0
    before = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}
    real_open, real_mkdir = os.open, os.mkdir

    def read_only_open(path, flags, *args, **kwargs):
        if str(os.fspath(path)).startswith(str(root)) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            raise OSError(errno.EROFS, "Read-only file system", os.fspath(path))
        return real_open(path, flags, *args, **kwargs)

    def read_only_mkdir(path, *args, **kwargs):
        if str(os.fspath(path)).startswith(str(root)):
            raise OSError(errno.EROFS, "Read-only file system", os.fspath(path))
        return real_mkdir(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", read_only_open)
    monkeypatch.setattr(os, "mkdir", read_only_mkdir)
    r = cli("--cache-dir", root, "extract", *data, "--workers", 0)
    assert r.code == 0 and "images: cached" in r.out and "questions: cached" in r.out, r
    r = cli("--cache-dir", root, "train", *data, "--epochs", 1, "--batch-size", 8, "--out", tmp_path / "run")
    assert r.code == 0, r
    key = next((root / "image").iterdir()).name
    r = cli("--cache-dir", root, "cache", "rm", key)
    assert r.code == 2 and f"cache entry {key} not removed" in r.err and "read-only" in r.err.lower(), r
    assert len(r.err.strip().splitlines()) == 1
    assert {p: p.read_bytes() for p in root.rglob("*") if p.is_file()} == before


# ---------------------------------------------------------------- a DataLoader worker's error


@pytest.mark.parametrize(
    "error, code, line",
    [
        (
            ValueError("the decoder broke"),
            1,
            "vqa-cache: unexpected error: ValueError: the decoder broke "
            "(in DataLoader worker process 0) (run with --debug",
        ),
        (
            BadInput("image x.png: unreadable"),
            2,
            "vqa-cache: error: image x.png: unreadable (in DataLoader worker process 0)",
        ),
    ],
)
def test_a_dataloader_worker_error_is_its_own_exception_on_one_line(cli, tmp_path, monkeypatch, error, code, line):
    """torch re-raises a worker's exception with the whole traceback as its message (1.6 KB once flattened):
    the line shows the worker's exception and which worker, nothing else."""
    import vqa_cache.extraction.images as images

    def broken(items):
        raise error

    monkeypatch.setattr(images, "collate", broken)  # runs in the worker (forked: the patch goes along)
    r = cli("--cache-dir", tmp_path, "extract", "--limit", 12, *FAST, "--text-encoder", "bow", "--workers", 1)
    assert r.code == code, r
    shown = r.err.strip().splitlines()[-1]
    assert shown.startswith(line) and "Traceback" not in r.err and len(shown) < 200, r
