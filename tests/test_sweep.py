"""`vqa-cache sweep` on a tiny easy-VQA cache: a sweep completes, resumes after a kill, best.toml trains."""

from __future__ import annotations

import contextlib
import csv
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import FAST, run_cli

LIMIT = ["--limit", 400]
REPO = Path(__file__).resolve().parent.parent
# short trials: 2 quasi-random trials then TPE, pruning from the second finished trial on
QUICK = [
    "--set",
    "sweep.epochs=2",
    "--set",
    "sweep.train_fraction=1.0",
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
def cache(tmp_path_factory):
    root = tmp_path_factory.mktemp("cache")
    run_cli("--cache-dir", root, "extract", *LIMIT, *FAST)
    return root


def read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


@pytest.mark.slow  # trains for long: not in `make test-fast`
def test_sweep_completes_and_best_toml_trains(cli, cache, tmp_path):
    out = tmp_path / "s"
    r = cli(
        "--cache-dir",
        cache,
        "sweep",
        "train/easyvqa-sweep.toml",
        *LIMIT,
        *FAST,
        *QUICK,
        "--trials",
        4,
        "--jobs",
        2,
        "--out",
        out,
    )
    assert r.code == 0, r
    for name in ("study.db", "sweep.json", "trials.csv", "best.toml", "history.png", "importance.png", "params.png"):
        assert (out / name).is_file(), name
    rows = read_csv(out / "trials.csv")
    assert len(rows) == 4 and {row["state"] for row in rows} <= {"complete", "pruned"}
    assert {"trial", "state", "best_val_accuracy", "epochs", "seconds", "optim.lr", "head.hidden"} <= set(rows[0])
    assert all(0 <= float(row["best_val_accuracy"]) <= 1 and float(row["seconds"]) > 0 for row in rows)
    # trial run directories live in the sweep directory, without checkpoints
    assert sorted(p.name for p in (out / "trials").iterdir()) == ["0000", "0001", "0002", "0003"]
    assert not list((out / "trials").rglob("*.pt"))
    best = max((row for row in rows if row["state"] == "complete"), key=lambda row: float(row["best_val_accuracy"]))
    assert f"best val accuracy {float(best['best_val_accuracy']):.4f}" in r.out
    # best.toml: the base recipe with the best parameters, trainable as it is
    from vqa_cache.recipes import TrainRecipe, build, read_toml

    recipe = build(TrainRecipe, read_toml(out / "best.toml"))
    assert recipe.optim.lr == pytest.approx(float(best["optim.lr"]))
    assert recipe.head.hidden == int(best["head.hidden"]) and recipe.optim.epochs == 20
    assert recipe.optim.batch_size == 256 and recipe.features.dataset.limit == 400
    r = cli("--cache-dir", cache, "train", out / "best.toml", "--epochs", 2, "--out", tmp_path / "run")
    assert r.code == 0, r
    assert (tmp_path / "run" / "best.pt").is_file()
    # a second sweep into the same directory must be asked for with --resume
    r = cli(
        "--cache-dir", cache, "sweep", "train/easyvqa-sweep.toml", *LIMIT, *FAST, *QUICK, "--trials", 4, "--out", out
    )
    assert r.code == 2 and "--resume" in r.err, r


def states(db: Path) -> list[str]:
    """Trial states in number order; a RUNNING trial that has reported an epoch reads MID-TRAINING."""
    try:
        with sqlite3.connect(db, timeout=1) as con:
            reported = {i for (i,) in con.execute("select trial_id from trial_intermediate_values")}
            return [
                "MID-TRAINING" if s == "RUNNING" and i in reported else s
                for i, s in con.execute("select trial_id, state from trials order by number")
            ]
    except sqlite3.Error:
        return []


@pytest.mark.slow  # a subprocess: not in `make test-fast`
def test_killed_sweep_resumes_with_the_remaining_trials(cli, cache, tmp_path):
    out = tmp_path / "s"
    args = [
        "--cache-dir",
        cache,
        "sweep",
        "train/easyvqa-sweep.toml",
        *LIMIT,
        *FAST,
        *QUICK,
        "--set",
        "sweep.epochs=3",
        "--trials",
        4,
        "--jobs",
        1,
        "--out",
        out,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    p = subprocess.Popen(
        [sys.executable, "-m", "vqa_cache", *map(str, args)],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )

    def ready(s: list[str]) -> bool:
        return sum(x in ("COMPLETE", "PRUNED") for x in s) >= 1 and s[-1] == "MID-TRAINING"

    deadline = time.time() + 300  # a bound, not a timing: the loop leaves as soon as a trial is mid-training
    try:
        while time.time() < deadline and p.poll() is None:
            if ready(states(out / "study.db")):
                # the trial may finish between that read and the kill: stop the process, read again while it
                # cannot write, and kill only if the trial is still mid-training (else let it go on and poll)
                p.send_signal(signal.SIGSTOP)
                if ready(states(out / "study.db")):
                    break
                p.send_signal(signal.SIGCONT)
            time.sleep(0.05)
    finally:
        if p.poll() is None:
            p.send_signal(signal.SIGKILL)
        p.wait()
    assert p.returncode == -signal.SIGKILL, p.stderr.read().decode()[-2000:]
    before = states(out / "study.db")
    assert before[-1] == "MID-TRAINING"
    done_before = sum(x in ("COMPLETE", "PRUNED") for x in before)

    r = cli(*args, "--resume")  # (the killed command, resumed)
    assert r.code == 0, r
    assert f"{done_before} done, {4 - done_before} to run; 1 interrupted, run again" in r.out
    rows = read_csv(out / "trials.csv")
    # finished trials were kept, not repeated; the killed one failed and ran again with its parameters
    assert [row["state"] for row in rows[: len(before) - 1]] == [x.lower() for x in before[:-1]]
    killed = rows[len(before) - 1]
    assert killed["state"] == "fail"
    # the killed trial's checkpoints (and any file it was writing) went with --resume: it is run again elsewhere
    assert not [p.name for p in (out / "trials" / f"{int(killed['trial']):04d}").iterdir() if ".pt" in p.name]
    retry = [row for row in rows if row["retry_of"] == killed["trial"]]
    assert len(retry) == 1 and retry[0]["optim.lr"] == killed["optim.lr"] and retry[0]["state"] != "fail"
    assert (
        sum(row["state"] in ("complete", "pruned") for row in rows) == 4
        and len(rows) == len(before) + 3 - done_before + 1
    )
    # nothing left to do: a further --resume runs no trial; it rewrites the sweep's files by rename (issue
    # 23.1: a new inode each, never truncated in place) and leaves no temporary file
    written = ("sweep.json", "trials.csv", "best.toml", "history.png")
    with contextlib.ExitStack() as stack:  # (held open: their inodes cannot be handed to a new file)
        held = {name: stack.enter_context(open(out / name, "rb")) for name in written}
        r = cli(*args, "--resume")  # (the killed command, resumed)
        assert r.code == 0 and "4 done, 0 to run" in r.out, r
        assert len(read_csv(out / "trials.csv")) == len(rows)
        replaced = {name: os.fstat(f.fileno()).st_nlink == 0 for name, f in held.items()}
    assert all(replaced.values()), replaced
    assert [p.name for p in out.rglob("*") if ".tmp" in p.name] == []


@pytest.mark.parametrize(
    "args, message",
    [
        (["--set", "space.optim.nosuch={low=1, high=2}"], "space 'optim.nosuch'"),
        (["--set", "space.optim.lr={low=1e-3}"], "needs low and high"),
        (["--set", 'space.head.hidden={choices=["big"]}'], "must be int"),
        (["--set", "sweep.trials=0"], "sweep.trials"),
        (["--resume"], "no sweep"),
    ],
)
def test_sweep_bad_input(cli, cache, tmp_path, args, message):
    r = cli("--cache-dir", cache, "sweep", "train/easyvqa-sweep.toml", *LIMIT, *FAST, "--out", tmp_path / "x", *args)
    assert r.code == 2, r
    assert message in r.err and len(r.err.strip().splitlines()) == 1, r.err


def test_space_syntax():
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    from vqa_cache.search.space import distributions, make_recipe

    d = distributions(
        {
            "optim.lr": {"low": 1e-4, "high": 1e-2, "log": True},
            "head.hidden": {"low": 64, "high": 256, "step": 64},
            "optim.betas": {"choices": [[0.9, 0.999], [0.9, 0.98]]},
            "optim.betas.1": {"low": 0.9, "high": 0.99},
        }
    )
    assert isinstance(d["optim.lr"], FloatDistribution) and d["optim.lr"].log
    assert isinstance(d["head.hidden"], IntDistribution) and d["head.hidden"].step == 64
    assert isinstance(d["optim.betas"], CategoricalDistribution)
    base = {"optim": {"betas": [0.9, 0.999], "epochs": 20}, "head": {}}
    recipe, _ = make_recipe(base, {"optim.betas": d["optim.betas"].choices[1], "head.hidden": 128}, epochs=3)
    assert recipe.optim.betas == (0.9, 0.98) and recipe.head.hidden == 128 and recipe.optim.epochs == 3
    recipe, _ = make_recipe(base, {"optim.betas.1": 0.95})
    assert recipe.optim.betas == (0.9, 0.95)
    recipe, _ = make_recipe(base, {"optim.epochs": 7}, epochs=3)  # a searched epochs wins over sweep.epochs
    assert recipe.optim.epochs == 7


@pytest.mark.slow  # trains for long: not in `make test-fast`
@pytest.mark.parametrize("how", [["--jobs", 1], ["--parallel", 3]], ids=["sequential", "together"])
def test_a_diverged_trial_is_pruned_and_the_sweep_goes_on(cli, cache, tmp_path, monkeypatch, how):
    """A trial whose loss becomes NaN (training raises Diverged) is recorded as pruned with the reason;
    the other trials still run (with --parallel, those trained beside it) and best.toml is written."""
    from vqa_cache.errors import Diverged
    from vqa_cache.training import loop

    real = loop.check_finite

    def diverge_trial_1(loss_sum, first_bad, epoch, steps, run_dir, what="step"):
        if Path(run_dir).name == "0001":
            raise Diverged(f"train loss is NaN or infinite at epoch {epoch}")
        return real(loss_sum, first_bad, epoch, steps, run_dir, what)

    monkeypatch.setattr(loop, "check_finite", diverge_trial_1)
    out = tmp_path / "s"
    r = cli(
        "--cache-dir",
        cache,
        "sweep",
        "train/easyvqa-sweep.toml",
        *LIMIT,
        *FAST,
        *QUICK,
        "--trials",
        3,
        *how,
        "--out",
        out,
    )
    assert r.code == 0, r
    rows = read_csv(out / "trials.csv")
    assert [row["state"] for row in rows][1] == "pruned" and len(rows) == 3
    import optuna

    storage = f"sqlite:///{out / 'study.db'}"
    (name,) = optuna.get_all_study_names(storage)
    assert "NaN" in optuna.load_study(study_name=name, storage=storage).trials[1].user_attrs["diverged"]
    assert any(row["state"] == "complete" for row in rows) and (out / "best.toml").is_file()


def trial_metrics(out: Path) -> list[list[dict]]:
    keys = ("train_loss", "train_accuracy", "val_loss", "val_accuracy")
    return [
        [{k: row[k] for k in keys} for row in json.loads((run / "metrics.json").read_text())["epochs"]]
        for run in sorted((out / "trials").iterdir())
    ]


@pytest.mark.slow  # trains for long: not in `make test-fast`
def test_trials_trained_together_equal_their_sequential_runs(cli, cache, tmp_path):
    """`--parallel 3`: three trials in one pass over the cache, their steps on two threads, each with its
    own dropout stream: every trial's per-epoch metrics and predictions equal those of the same trial
    in a sequential sweep (the quasi-random startup trials propose the same parameters in both; the
    pruner is off, so both run every epoch). Both take their ops one thread at a time (--threads 1 alone,
    --threads 2 for two stepping threads), so the arithmetic is the same."""
    args = [*LIMIT, *FAST, *QUICK, "--set", "sweep.startup_trials=3", "--set", "sweep.prune_startup_trials=99"]
    args += ["--set", "space.head.dropout={low=0.2, high=0.5}", "--trials", 3]
    seq, par = tmp_path / "seq", tmp_path / "par"
    r = cli("--cache-dir", cache, "sweep", "train/easyvqa-sweep.toml", *args, "--jobs", 1, "--threads", 1, "--out", seq)
    assert r.code == 0, r
    assert "1 at a time" in r.out and "trained together" not in r.out, r.out  # --jobs replaced sweep.parallel = 4
    r = cli(
        "--cache-dir", cache, "sweep", "train/easyvqa-sweep.toml", *args, "--parallel", 3, "--threads", 2, "--out", par
    )
    assert r.code == 0, r
    assert "3 at a time trained together" in r.out and "in each of 2 threads" in r.out, r.out
    assert "unused" not in r.out, r.out  # (sweep.jobs is not set: nothing to say of it)
    a, b = read_csv(seq / "trials.csv"), read_csv(par / "trials.csv")
    params = [k for k in a[0] if k.startswith(("optim.", "head."))]
    assert [[row[k] for k in params] for row in a] == [[row[k] for k in params] for row in b]
    assert [row["state"] for row in b] == ["complete"] * 3
    for ma, mb in zip(trial_metrics(seq), trial_metrics(par)):
        assert len(ma) == len(mb) == 2
        for ea, eb in zip(ma, mb):
            assert eb == pytest.approx(ea, rel=1e-6, abs=1e-6), (ea, eb)
    for run in sorted((seq / "trials").iterdir()):
        assert (run / "predictions.json").read_bytes() == (par / "trials" / run.name / "predictions.json").read_bytes()


def test_group_key_keeps_runs_of_the_same_batches_together():
    from vqa_cache.recipes import TrainRecipe, build
    from vqa_cache.training.together import group_key

    base = {"optim": {"lr": 1e-3, "batch_size": 256}, "head": {"name": "concat", "hidden": 64}}

    def key(**changes):
        d = {k: {**v} for k, v in base.items()}
        for name, value in changes.items():
            part, field = name.split("__")
            d[part][field] = value
        return group_key(build(TrainRecipe, d))

    same = key()
    assert key(optim__lr=3e-4) == key(optim__weight_decay=0.1) == key(head__hidden=512) == same
    assert key(head__name="hadamard") == same  # reads pooled features too
    assert key(optim__batch_size=128) != same
    assert key(head__name="attention") != same  # grid image features
    assert group_key(build(TrainRecipe, {**base, "seed": 1})) != same


def test_a_shared_pass_makes_each_batch_once_for_readers_at_their_own_pace():
    import random
    import threading

    from vqa_cache.training.together import SharedPass

    made = []

    def source():
        for i in range(30):
            made.append(i)
            yield i

    shared = SharedPass(source(), readers=3, ahead=4)
    got, held = [[], [], []], []

    def read(r):
        pace = random.Random(r)
        for batch in shared.read(r):
            held.append(len(shared.kept))
            got[r].append(batch)
            time.sleep(pace.random() * 0.002 * (r + 1))

    threads = [threading.Thread(target=read, args=(r,)) for r in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert got == [list(range(30))] * 3 and made == list(range(30))
    assert max(held) <= 4 and not shared.kept  # at most `ahead` batches held; all let go at the end
