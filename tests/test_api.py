"""The Python API (docs/api.md): the commands as functions with the CLI's options, returning CacheKeys, Run and
Sweep; the CLI is a thin layer over it (same option names, same keys, same answers, same error line);
verbose=False is quiet but for warnings; unknown option names are BadInput naming the close ones; and
the stage packages (training, extraction, finetuning, search) have names of their own, so every
`vqa_cache.<package>` imports as a module and the API's functions are never shadowed."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from fixtures_data import make_csv

import vqa_cache
from vqa_cache import BadInput, CacheKeys, Run, Sweep
from vqa_cache.progress import progress, silenced

ROOT = Path(__file__).resolve().parent.parent
# the options that name the tiny cache, as the API takes them and as the CLI does
FEATURES = dict(limit=40, image_encoder="resnet18", image_size=32, weights="random", features="pooled+grid")
FLAGS = [
    "--limit",
    40,
    "--image-encoder",
    "resnet18",
    "--image-size",
    32,
    "--weights",
    "random",
    "--features",
    "pooled+grid",
]


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    return vqa_cache.extract(cache_dir=tmp_path_factory.mktemp("cache"), workers=0, verbose=False, **FEATURES)


@pytest.fixture(scope="module")
def run(keys, tmp_path_factory):
    """A finished 2-epoch attention run (grid image features), made through the API."""
    return vqa_cache.train(
        head="attention",
        epochs=2,
        out=tmp_path_factory.mktemp("runs") / "att",
        cache_dir=keys.root,
        verbose=False,
        **FEATURES,
    )


@pytest.fixture
def image_file():
    from vqa_cache.data import load_samples
    from vqa_cache.recipes import DatasetSettings

    return load_samples(DatasetSettings(limit=5)).column("image_path")[0].as_py()


def manifest(root: Path, kind: str, key: str) -> dict:
    return json.loads((root / kind / key / "manifest.json").read_text())


def test_extract_returns_the_keys_the_cli_finds(keys, cli):
    assert isinstance(keys, CacheKeys)
    for kind, key in (("image", keys.image), ("question", keys.question)):
        assert manifest(keys.root, kind, key)["complete"]
    r = cli("--cache-dir", keys.root, "extract", *FLAGS, "--workers", 0)
    assert r.code == 0 and "images: cached" in r.out, r
    assert f"images    {keys.image}\n  questions {keys.question}" in r.out


def test_load_features_reads_both_entries_whole(keys):
    image_ids, images, texts, questions = vqa_cache.load_features(keys)
    im, qm = manifest(keys.root, "image", keys.image), manifest(keys.root, "question", keys.question)
    assert len(image_ids) == im["rows"] and tuple(images.shape) == (im["rows"], im["dim"])
    assert len(texts) == qm["rows"] and tuple(questions.shape) == (qm["rows"], qm["dim"])
    assert len(set(texts)) == len(texts) and all(isinstance(t, str) and t for t in texts)
    _, grid, _, _ = vqa_cache.load_features(keys, image="grid")
    assert grid.ndim == 3 and grid.shape[0] == im["rows"] and grid.shape[2] == im["dim"]
    with pytest.raises(BadInput, match=f"question features {keys.question} hold pooled, not 'tokens'"):
        vqa_cache.load_features(keys, question="tokens")


def test_cache_ls_info_verify_rm_are_the_cli_cache_commands(keys, cli, tmp_path):
    root = tmp_path / "cache"
    shutil.copytree(keys.root, root)
    listed = vqa_cache.cache_ls(cache_dir=root)
    assert listed == json.loads(cli("--cache-dir", root, "cache", "ls", "--json").out)
    assert {keys.image, keys.question} <= {row["key"] for row in listed}
    info = vqa_cache.cache_info(keys.image[:12], cache_dir=root)  # a unique prefix will do
    assert info == json.loads(cli("--cache-dir", root, "cache", "info", keys.image, "--json").out)
    assert info["key"] == keys.image and info["complete"]
    ok = vqa_cache.cache_verify(keys.image, cache_dir=root)
    assert ok["ok"] and ok["problems"] == [] and ok["rows"] == info["rows"]
    shard = next((root / "image" / keys.image).glob("*.h5"))
    shard.write_bytes(shard.read_bytes()[:-10])  # damaged
    bad = vqa_cache.cache_verify(keys.image, cache_dir=root)
    assert not bad["ok"] and bad["problems"]
    removed = vqa_cache.cache_rm(keys.question, cache_dir=root)
    assert removed["key"] == keys.question and removed["bytes"] > 0
    assert keys.question not in {row["key"] for row in vqa_cache.cache_ls(cache_dir=root)}
    with pytest.raises(BadInput):
        vqa_cache.cache_info(keys.question, cache_dir=root)


def test_a_run_reads_its_directory(run, keys):
    metrics = json.loads((run.dir / "metrics.json").read_text())
    assert isinstance(run, Run) and run.dir.name == "att"
    assert run.best == metrics["best"] and run.config["head"]["name"] == "attention"
    assert list(run.metrics["epoch"]) == [1, 2]
    assert list(run.metrics["val_accuracy"]) == [row["val_accuracy"] for row in metrics["epochs"]]
    types = sorted(metrics["epochs"][0]["val_accuracy_per_type"])
    assert {f"val_accuracy_per_type.{t}" for t in types} <= set(run.metrics.columns)
    assert run.cache_keys == keys
    assert vqa_cache.Run(str(run.dir)) == run and Path(run) == run.dir  # path-like both ways


def test_metrics_without_pandas_are_the_rows_of_metrics_json(run, monkeypatch):
    monkeypatch.setitem(sys.modules, "pandas", None)  # import pandas -> ImportError
    assert run.metrics == json.loads((run.dir / "metrics.json").read_text())["epochs"]


def test_predict_and_ask_give_what_the_cli_prints(run, keys, cli, tmp_path, image_file):
    res = run.predict(out=tmp_path / "p.json", cache_dir=keys.root, verbose=False)
    written = json.loads((tmp_path / "p.json").read_text())
    assert res["split"] == run.config["splits"][1] and res["questions"] == len(written) > 0
    r = cli("--cache-dir", keys.root, "predict", "--run", run.dir, "--out", tmp_path / "cli.json")
    assert r.code == 0 and json.loads((tmp_path / "cli.json").read_text()) == written, r

    answers = vqa_cache.ask(run, image_file, "what color is the shape?", top=3, cache_dir=keys.root)
    assert len(answers) == 3 and answers == run.ask(image_file, "what color is the shape?", top=3)
    assert answers == sorted(answers, key=lambda a: -a[1]) and 0 < sum(p for _, p in answers) <= 1 + 1e-6
    r = cli(
        "--cache-dir",
        keys.root,
        "ask",
        "--run",
        run.dir,
        "--image",
        image_file,
        "--question",
        "what color is the shape?",
        "--top",
        3,
    )
    assert r.code == 0 and r.out.splitlines() == [f"{p:7.2%}  {a}" for a, p in answers], r


def test_runs_gives_the_table_of_the_cli_and_a_run_its_report(run, keys, cli, tmp_path, monkeypatch):
    table = vqa_cache.runs(run.dir.parent)
    assert list(table["name"]) == ["att"] and list(table["head"]) == ["attention"]
    assert table["val_accuracy"][0] == run.best["val_accuracy"] and table["cache_keys.image"][0] == keys.image
    r = cli("runs", run.dir.parent, "--json")
    assert r.code == 0, r
    monkeypatch.setitem(sys.modules, "pandas", None)
    assert vqa_cache.runs(run.dir.parent) == json.loads(r.out)
    monkeypatch.undo()

    res = run.report(out=tmp_path / "r.html", cache_dir=keys.root, verbose=False)
    page = tmp_path / "r.html"
    assert res["out"] == str(page) and page.stat().st_size == res["bytes"] and "<html" in page.read_text()
    assert res["questions"] == run.config["questions"]["val"]


def test_evaluate_takes_paths_or_loaded_json(tmp_path):
    questions = {"questions": [{"question_id": i, "image_id": 0, "question": "q?"} for i in (1, 2)]}
    annotations = {
        "annotations": [
            {"question_id": i, "answers": [{"answer": a}], "answer_type": "other", "question_type": "what"}
            for i, a in ((1, "red"), (2, "blue"))
        ]
    }
    predictions = [{"question_id": 1, "answer": "red"}, {"question_id": 2, "answer": "red"}]
    loaded = vqa_cache.evaluate(questions, annotations, predictions)
    assert loaded["overall"] == 50.0 and loaded["protocol"] == "current"
    for name, data in (("q", questions), ("a", annotations), ("p", predictions)):
        (tmp_path / f"{name}.json").write_text(json.dumps(data))
    assert vqa_cache.evaluate(tmp_path / "q.json", str(tmp_path / "a.json"), tmp_path / "p.json") == loaded
    with pytest.raises(BadInput, match="all as paths, or all loaded"):
        vqa_cache.evaluate(tmp_path / "q.json", annotations, predictions)


def test_verbose_false_is_quiet_but_for_warnings(keys, tmp_path, capsys):
    capsys.readouterr()
    vqa_cache.train(head="concat", epochs=1, out=tmp_path / "loud", cache_dir=keys.root, **FEATURES)
    out, _ = capsys.readouterr()
    assert "epoch   1  train loss" in out and "best val accuracy" in out
    vqa_cache.train(head="concat", epochs=1, out=tmp_path / "quiet", cache_dir=keys.root, verbose=False, **FEATURES)
    out, err = capsys.readouterr()
    assert out == "" and "epoch 1/1" not in err and (tmp_path / "quiet" / "best.pt").is_file()
    # a warning still shows: a damaged dataset entry, parsed again
    make_csv(tmp_path / "csv", train_images=4, test_images=2)
    data = dict(dataset=f"csv:{tmp_path / 'csv'}", image_encoder="resnet18", image_size=32, weights="random")
    vqa_cache.extract(cache_dir=tmp_path / "c", workers=0, verbose=False, **data)
    next((tmp_path / "c" / "dataset").glob("*/samples.parquet")).write_bytes(b"not parquet")
    capsys.readouterr()
    vqa_cache.extract(cache_dir=tmp_path / "c", workers=0, verbose=False, **data)
    out, err = capsys.readouterr()
    assert out == "" and "is damaged" in err and "parsing the dataset again" in err


def test_verbose_false_is_a_log_level_not_a_redirect(keys, tmp_path, capsys, monkeypatch):
    """verbose=False raises the `vqa_cache` logger's level for the call: the user's own prints (code of theirs
    that runs inside the call, a notebook's other cells' threads) still show, and the level comes back."""
    import logging

    from vqa_cache.training.cached import CachedFit

    describe = CachedFit.describe

    def chatty(fit):
        print("the user's own line")
        return describe(fit)

    monkeypatch.setattr(CachedFit, "describe", chatty)
    logger = logging.getLogger("vqa_cache")
    before = logger.level
    capsys.readouterr()
    vqa_cache.train(head="concat", epochs=1, out=tmp_path / "quiet", cache_dir=keys.root, verbose=False, **FEATURES)
    out, _ = capsys.readouterr()
    assert out == "the user's own line\n" and logger.level == before
    records = []
    handler = logging.Handler()
    handler.emit = records.append  # a program taking the messages over with the logging module
    logger.addHandler(handler)
    try:
        vqa_cache.train(head="concat", epochs=1, out=tmp_path / "loud", cache_dir=keys.root, **FEATURES)
    finally:
        logger.removeHandler(handler)
    assert any(r.getMessage().startswith("epoch   1  train loss") for r in records)


def test_silenced_progress_bars_are_disabled():
    assert not progress(range(3)).disable
    with silenced():
        with silenced():
            pass
        assert progress(range(3)).disable and progress(range(3), disable=False).disable
    assert not progress(range(3)).disable


@pytest.mark.parametrize(
    "command, options, named",
    [
        ("train", {"epoch": 3}, "train: unknown option 'epoch' (close matches: epochs)"),
        ("extract", {"imagesize": 32}, "extract: unknown option 'imagesize' (close matches: image_size)"),
        ("train", {"verbos": False}, "train: unknown option 'verbos' (close matches: verbose)"),
        ("sweep", {"epochs": 3}, "sweep: unknown option 'epochs' (no close match among "),
        ("finetune", {"resume": "yes"}, "finetune: option resume = 'yes': expected bool"),
        ("train", {"split": 3}, "train: option split = 3: expected a string or a list of strings"),
        ("train", {"epochs": "3"}, "recipe key 'optim.epochs' must be int, got '3'"),
    ],
)
def test_bad_options_are_bad_input_and_nothing_is_written(tmp_path, command, options, named):
    where = {} if command == "extract" else {"out": tmp_path / "out"}
    if command != "finetune":  # (finetune reads no cache)
        where["cache_dir"] = tmp_path / "cache"
    with pytest.raises(ValueError) as info:
        getattr(vqa_cache, command)(**where, **options)
    assert isinstance(info.value, BadInput) and named in str(info.value) and "\n" not in str(info.value)
    assert not (tmp_path / "cache").exists() and not (tmp_path / "out").exists()


def test_an_error_is_the_line_the_cli_prints(cli, tmp_path):
    with pytest.raises(BadInput) as info:
        vqa_cache.train(cache_dir=tmp_path, **FEATURES)
    assert "make them with: vqa-cache extract" in str(info.value)
    r = cli("--cache-dir", tmp_path, "train", *FLAGS)
    assert r.code == 2 and r.err.strip().splitlines()[-1] == f"vqa-cache: error: {info.value}", r


def test_bad_input_is_a_value_error_that_keeps_its_own_message(run, keys, cli, tmp_path):
    """predict turns a ValueError from loading the weights into "do not fit its head"; a BadInput (now a
    ValueError too) from an unknown head name keeps its own message."""
    bad = tmp_path / "bad"
    shutil.copytree(run.dir, bad)
    for name in ("best.pt", "last.pt"):
        ckpt = torch.load(bad / name, weights_only=True)
        ckpt["head"]["name"] = "nohead"
        torch.save(ckpt, bad / name)
    r = cli("--cache-dir", keys.root, "predict", "--run", bad, "--out", tmp_path / "p.json")
    assert r.code == 2 and "unknown head 'nohead' (known: " in r.err.strip().splitlines()[-1], r


@pytest.mark.parametrize("command", ["extract", "train", "finetune", "sweep"])
def test_the_api_options_are_the_cli_options(command):
    from vqa_cache.cli import cli
    from vqa_cache.options import option_names

    assert {p.name for p in cli.commands[command].params} == set(option_names(command)) | {"recipe"}


def test_docs_api_names_every_option():
    """Each function's section of docs/api.md names its options (the feature options once, above)."""
    from vqa_cache.options import FEATURE_KEYS, option_names

    text = (ROOT / "docs" / "api.md").read_text()
    features = {name for name, _, _ in FEATURE_KEYS}
    section = {
        c: text.split(f"### {c}\n", 1)[1].split("\n### ", 1)[0] for c in ("extract", "train", "finetune", "sweep")
    }
    section["finetune"] += section["train"]  # "those of `train` but `stream`, and ..."
    for command, words in section.items():
        missing = [n for n in option_names(command) if n not in features and f"`{n}`" not in words]
        assert missing == [], f"docs/api.md, {command}: options not named: {missing}"
    assert all(f"`{n}`" in text for n in features)


@pytest.mark.slow  # a long training (make test-fast leaves it out)
def test_a_sweep_through_the_api(keys, tmp_path):
    sweep = vqa_cache.sweep(
        "train/easyvqa-sweep.toml",
        trials=2,
        jobs=1,
        out=tmp_path / "s",
        cache_dir=keys.root,
        verbose=False,
        set=["sweep.epochs=1", "sweep.train_fraction=1.0", "head.hidden=32", "space.head.hidden={choices=[16, 32]}"],
        **FEATURES,
    )
    assert isinstance(sweep, Sweep) and sweep.dir == tmp_path / "s"
    assert len(sweep.trials) == 2 and set(sweep.trials["state"]) <= {"complete", "pruned"}
    assert sweep.result["trials"]["complete"] >= 1 and sweep.best_recipe == tmp_path / "s" / "best.toml"


@pytest.mark.slow  # a subprocess: not in `make test-fast`
def test_the_package_face():
    """In a fresh interpreter: `import vqa_cache` (and the CLI) load no torch; vqa_cache.train & co. are the
    API's functions, and every subpackage and its submodules import as modules under names of their own."""
    code = """
import sys, importlib, pkgutil, types
import vqa_cache, vqa_cache.cli
assert "torch" not in sys.modules, "import vqa_cache loaded torch"
assert type(vqa_cache) is types.ModuleType, "no custom module class"
from vqa_cache import api
for name in ("extract", "train", "finetune", "sweep", "runs"):
    assert getattr(vqa_cache, name) is getattr(api, name), name
import vqa_cache.training.loop as loop
from vqa_cache.training import train as stage_two
from vqa_cache.extraction.stage import extract as stage_one
from vqa_cache.run_table import table
assert loop.run_fit and table.__module__ == "vqa_cache.run_table"
assert stage_two.__module__ == "vqa_cache.training.cached" and stage_one.__module__ == "vqa_cache.extraction.stage"
for info in pkgutil.walk_packages(vqa_cache.__path__, "vqa_cache."):
    if info.name.endswith("__main__"):
        continue
    assert isinstance(importlib.import_module(info.name), types.ModuleType), info.name
for name in ("extract", "train", "finetune", "sweep", "runs"):
    assert getattr(vqa_cache, name) is getattr(api, name), name + " shadowed after the imports"
"""
    r = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        check=False,
    )
    assert r.returncode == 0, r.stderr
