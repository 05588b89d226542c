"""`vqa-cache runs [DIR]`: the table of run directories (train, finetune, a sweep's trials) agrees with what
the runs wrote; --sort, --json, --csv; bad input is one line, exit 2."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil

import pytest
import torch
from conftest import FAST, run_cli

from vqa_cache import heads

LIMIT = ["--limit", 300]
QUICK_SWEEP = [
    "--set",
    "sweep.epochs=2",
    "--set",
    "sweep.startup_trials=2",
    "--set",
    "sweep.prune_startup_trials=2",
    "--set",
    "head.hidden=64",
    "--set",
    "space.head.hidden={choices=[32, 64]}",
]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """runs/a (concat, 2 epochs), runs/b (hadamard, 3 epochs), runs/ft (finetune, 1 epoch) and
    runs/sweep/trials/0000, 0001; returns (runs dir, cache, {name: train stdout})."""
    import contextlib

    root = tmp_path_factory.mktemp("cache")
    base = tmp_path_factory.mktemp("work") / "runs"
    run_cli("--cache-dir", root, "extract", *LIMIT, *FAST, "--workers", 0)
    printed = {}
    for name, args in (
        ("a", ["--head", "concat", "--epochs", 2]),
        ("b", ["--head", "hadamard", "--epochs", 3, "--set", "head.hidden=64"]),
    ):
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            run_cli("--cache-dir", root, "train", *LIMIT, *FAST, *args, "--out", base / name)
        printed[name] = out.getvalue()
    run_cli(
        "finetune",
        "--limit",
        40,
        *FAST,
        "--epochs",
        1,
        "--set",
        "finetune.workers=0",
        "--set",
        "head.hidden=32",
        "--out",
        base / "ft",
    )
    run_cli(
        "--cache-dir",
        root,
        "sweep",
        "train/easyvqa-sweep.toml",
        *LIMIT,
        *FAST,
        *QUICK_SWEEP,
        "--trials",
        2,
        "--out",
        base / "sweep",
    )
    return base, root, printed


def metrics(run):
    return json.loads((run / "metrics.json").read_text())


def table_lines(out: str) -> list[list[str]]:
    return [re.split(r"\s{2,}", line.strip()) for line in out.strip().splitlines()]


def test_table_lists_every_run_best_first_with_what_they_wrote(cli, runs):
    base, _, printed = runs
    r = cli("runs", base)
    assert r.code == 0, r
    lines = table_lines(r.out)
    header = lines[0]
    assert header[:7] == ["name", "mode", "head", "encoders", "cache keys", "epochs", "acc"]
    assert header[-3:] == ["s/epoch", "params", "date"] and "yes/no" in header and "other" in header
    names = ["a", "b", "ft", "sweep/trials/0000", "sweep/trials/0001"]
    rows = {line[0].rstrip(" *"): dict(zip(header, line)) for line in lines[1:] if not line[0].startswith("*")}
    assert sorted(rows) == names
    best = {n: metrics(base / n)["best"]["val_accuracy"] for n in names}
    order = [line[0].rstrip(" *") for line in lines[1 : len(names) + 1]]
    assert [best[n] for n in order] == sorted(best.values(), reverse=True)
    for n in names:
        m = metrics(base / n)
        at_best = next(h for h in m["epochs"] if h["epoch"] == m["best"]["epoch"])
        assert rows[n]["acc"] == f"{m['best']['val_accuracy']:.4f}"
        assert rows[n]["yes/no"] == f"{at_best['val_accuracy_per_type']['yes/no']:.4f}"
        mean = round(sum(h["seconds"] for h in m["epochs"]) / len(m["epochs"]), 3)  # seconds_per_epoch in --json
        assert rows[n]["s/epoch"] == f"{mean:.2f}"  # shown to 2 places
    assert rows["a"]["mode"] == "train" and rows["ft"]["mode"] == "finetune" and rows["b"]["head"] == "hadamard"
    assert rows["b"]["epochs"] == "3/3" and rows["a"]["encoders"] == "resnet18 random:0 32px + bow"
    config = json.loads((base / "a" / "config.json").read_text())
    assert rows["a"]["cache keys"] == " ".join(config["cache_keys"][k][len(k) + 1 :][:8] for k in ("image", "question"))
    for n in ("a", "b"):  # the parameter count train printed, and exactly the checkpoint's
        assert f"({rows[n]['params']} params)" in printed[n]
    data = {d["name"]: d for d in json.loads(cli("runs", base, "--json").out)}
    state = torch.load(base / "a" / "best.pt", weights_only=True)["model"]
    buffers = {name for name, _ in heads.from_config(config["head"]).named_buffers()}  # image statistics
    assert data["a"]["parameters"] == sum(t.numel() for k, t in state.items() if k not in buffers)


def test_json_and_csv_hold_the_same_records(cli, runs):
    base = runs[0]
    data = json.loads(cli("runs", base, "--json").out)
    r = cli("runs", base, "--csv")
    assert r.code == 0, r
    rows = list(csv.DictReader(io.StringIO(r.out)))
    assert [row["name"] for row in rows] == [d["name"] for d in data]
    for row, d in zip(rows, data):
        assert float(row["acc"]) == d["val_accuracy"] and int(row["params"]) == d["parameters"]
        assert row["cache keys"] == f"{d['cache_keys']['image']} {d['cache_keys']['question']}"
        assert float(row["yes/no"]) == d["val_accuracy_per_type"]["yes/no"] and row["date"] == d["date"]
        assert row["finished"] == str(d["finished"]) and row["path"] == d["path"]
    assert {
        "name",
        "mode",
        "head",
        "image_encoder",
        "text_encoder",
        "cache_keys",
        "epochs",
        "epochs_planned",
        "best_epoch",
        "val_accuracy",
        "val_accuracy_per_type",
        "seconds_per_epoch",
        "parameters",
        "date",
        "finished",
        "path",
    } == set(data[0])


def test_sort_options(cli, runs, tmp_path):
    base = tmp_path / "runs"
    shutil.copytree(runs[0], base)
    for i, n in enumerate(["b", "sweep/trials/0001", "a", "ft", "sweep/trials/0000"]):
        os.utime(base / n / "metrics.json", (1_700_000_000 + 3600 * i,) * 2)

    def names(*args):
        r = cli("runs", base, "--json", *args)
        assert r.code == 0, r
        return [d["name"] for d in json.loads(r.out)]

    assert names("--sort", "name") == ["a", "b", "ft", "sweep/trials/0000", "sweep/trials/0001"]
    assert names("--sort", "date") == ["sweep/trials/0000", "ft", "a", "sweep/trials/0001", "b"]  # newest first
    data = json.loads(cli("runs", base, "--json", "--sort", "params").out)
    assert [d["parameters"] for d in data] == sorted(d["parameters"] for d in data)
    data = json.loads(cli("runs", base, "--json", "--sort", "yes/no").out)
    assert [d["val_accuracy_per_type"]["yes/no"] for d in data] == sorted(
        (d["val_accuracy_per_type"]["yes/no"] for d in data), reverse=True
    )


def test_sweep_directory_unfinished_and_unreadable_runs(cli, runs, tmp_path):
    base = tmp_path / "runs"
    shutil.copytree(runs[0], base)
    r = cli("runs", base / "sweep")
    assert r.code == 0, r
    names = [line[0].rstrip(" *") for line in table_lines(r.out)[1:] if not line[0].startswith("*")]
    assert sorted(names) == ["trials/0000", "trials/0001"]  # a sweep's trials are runs
    (base / "a" / "predictions.json").unlink()  # as a killed run leaves it
    (base / "b" / "config.json").write_text("{not json")
    (base / "ft" / "metrics.json").write_text('{"epochs": [1, 2]}')
    r = cli("runs", base, "--sort", "name")
    assert r.code == 0, r
    lines = r.out.splitlines()
    assert lines[1].startswith("a *") and lines[-1].startswith("* not finished")
    assert lines[2].startswith("b ") and lines[2].endswith("unreadable (config.json: not valid JSON)")
    assert lines[3].startswith("ft ") and "unreadable (metrics.json: not the metrics of a vqa-cache run" in lines[3]
    data = json.loads(cli("runs", base, "--json", "--sort", "name").out)
    assert not data[0]["finished"] and data[1]["error"].startswith("config.json: not valid JSON (Expecting")


def edit_json(path, change):
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


@pytest.mark.parametrize(
    "file, change, why",
    [
        (
            "config.json",
            lambda c: c["head"].update(hidden=-5),
            "config.json: head.hidden = -5 (expected a positive integer)",
        ),
        ("config.json", lambda c: c["head"].update(dropout="x"), "config.json: head.dropout = 'x'"),
        ("config.json", lambda c: c.update(head=[1]), "config.json: head is list, expected an object"),
        ("config.json", lambda c: c.update(head_parameters="many"), "config.json: head_parameters = 'many'"),
        (
            "config.json",
            lambda c: c.update(cache_keys={"image": 3}),
            "config.json: not a vqa-cache run config (malformed cache_keys)",
        ),
        (
            "metrics.json",
            lambda m: m["best"].update(val_accuracy="0.9"),
            "metrics.json: best.val_accuracy = '0.9' (expected a number)",
        ),
        ("metrics.json", lambda m: m["epochs"][0].update(seconds="abc"), "metrics.json: epochs[0].seconds = 'abc'"),
        (
            "metrics.json",
            lambda m: m["epochs"][0].update(val_accuracy_per_type={"other": None}),
            "metrics.json: epochs[0].val_accuracy_per_type",
        ),
        ("metrics.json", lambda m: m.update(epochs="abc"), "metrics.json: not the metrics of a vqa-cache run"),
    ],
)
def test_one_malformed_run_is_a_row_marked_unreadable_and_the_rest_print(cli, runs, tmp_path, file, change, why):
    """Issue 23.3: what is read is type-checked; a bad run is a row saying why (--json, --csv), exit 0."""
    base = tmp_path / "runs"
    shutil.copytree(runs[0], base)
    edit_json(base / "b" / file, change)
    r = cli("runs", base, "--sort", "name")
    assert r.code == 0 and r.err == "", r
    rows = {line[0].rstrip(" *"): line for line in table_lines(r.out)[1:]}
    assert rows["b"][1].startswith("unreadable") and rows["a"][1] == "train", r.out
    data = {d["name"]: d for d in json.loads(cli("runs", base, "--json").out)}
    assert set(data) == {"a", "b", "ft", "sweep/trials/0000", "sweep/trials/0001"}, data
    assert why in data["b"]["error"] and [n for n, d in data.items() if "error" in d] == ["b"], data["b"]
    assert all(d["val_accuracy"] is not None for n, d in data.items() if n != "b")
    assert why in cli("runs", base, "--csv").out


@pytest.mark.slow  # a subprocess: not in `make test-fast`
def test_runs_imports_no_torch(runs):
    """Issue 23 (weak spot): `vqa-cache runs` reads JSON; it imports neither torch nor numpy (config.json
    records the head's parameter count)."""
    import subprocess
    import sys

    code = (
        "import sys; from vqa_cache.cli.app import main; sys.argv = ['vqa-cache', 'runs', sys.argv[1], '--json']\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "print('LOADED', sorted(m for m in ('torch', 'numpy', 'h5py', 'pyarrow', 'matplotlib') if m in sys.modules))"
    )
    r = subprocess.run(
        [sys.executable, "-c", code, str(runs[0])],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout[: r.stdout.rindex("LOADED")])
    assert all(d["parameters"] for d in data), data
    assert r.stdout.strip().endswith("LOADED []"), r.stdout[-300:]
    code = (
        "import sys, vqa_cache.rundir, vqa_cache.run_table\n"
        "print(sorted(m for m in ('torch', 'numpy', 'h5py', 'pyarrow', 'matplotlib') if m in sys.modules))"
    )
    r = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    assert r.stdout.strip() == "[]", (r.stdout, r.stderr)  # the run contract's import loads none of them


def test_bad_input_is_one_line_exit_2(cli, runs, tmp_path):
    for args, says in (
        ([tmp_path / "nothing"], "no such directory"),
        ([runs[0], "--sort", "accuracy"], "--sort 'accuracy': expected one of name, mode"),
        ([runs[0], "--json", "--csv"], "--json and --csv: give one of them"),
    ):
        r = cli("runs", *args)
        assert r.code == 2 and len(r.err.strip().splitlines()) == 1 and says in r.err, r
    (tmp_path / "empty").mkdir()
    r = cli("runs", tmp_path / "empty")
    assert r.code == 0 and r.out.strip() == f"no runs in {tmp_path / 'empty'}"
