"""Optimizers and learning-rate schedules (training/schedule.py): the recipe keys, each schedule's lr, the lr
recorded per epoch, a sweep over them, and `--resume` past the planned epochs (tail by default, a new cycle
only with --extend cycle)."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from conftest import FAST, run_cli

LIMIT = ["--limit", 300]
SMALL = [*LIMIT, *FAST, "--set", "head.hidden=32", "--batch-size", 64, "--set", "optim.patience=0"]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    root = tmp_path_factory.mktemp("cache")
    run_cli("--cache-dir", root, "extract", *LIMIT, *FAST)
    return root


def optim(**kw):
    from vqa_cache import recipes

    return recipes.build(recipes.OptimSettings, kw)


def factor(o, spe=10, **plan):
    from vqa_cache.training.schedule import lr_factor, new_plan

    return lr_factor(o, {**new_plan(o, spe), **plan})


def test_cosine_schedule_with_warmup():
    f = factor(optim(epochs=10, lr=1e-3, min_lr=1e-5, warmup_epochs=1))
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)
    assert f(10) == pytest.approx(1.0) and f(99) == pytest.approx(0.01, abs=1e-3)
    assert all(f(i) >= f(i + 1) for i in range(10, 99))


def test_cosine_horizon_apart_from_the_epochs_holds_min_lr_after_it():
    f = factor(optim(epochs=10, lr=1e-3, min_lr=1e-5, warmup_epochs=0, horizon_epochs=4))
    assert f(0) == pytest.approx(1.0) and f(40) == pytest.approx(0.01) and f(99) == pytest.approx(0.01)
    assert all(f(i) >= f(i + 1) for i in range(99))


def test_onecycle_follows_torch_onecyclelr():
    o = optim(epochs=3, lr=0.01, schedule="onecycle", pct_start=0.25)
    f = factor(o, spe=7)
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=0.001)
    ref = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.01, total_steps=21, pct_start=0.25, cycle_momentum=False)
    for step in range(21):
        assert 0.01 * f(step) == pytest.approx(opt.param_groups[0]["lr"], rel=1e-9), step
        opt.step()
        ref.step()
    assert f(50) == f(20)  # held at its end past the horizon


def test_constant_and_step_schedules():
    c = factor(optim(epochs=5, schedule="constant", warmup_epochs=0.5))
    assert c(0) == pytest.approx(0.2) and c(5) == c(49) == 1.0
    s = factor(optim(epochs=6, schedule="step", step_epochs=2, gamma=0.5, warmup_epochs=0))
    assert [s(e * 10) for e in range(6)] == [1.0, 1.0, 0.5, 0.5, 0.25, 0.25]


@pytest.mark.parametrize(
    "key, message",
    [
        ("optim.name=lion", "'optim.name' must be one of adamw, adam, sgd"),
        ("optim.schedule=linear", "'optim.schedule' must be one of cosine, onecycle, constant, step"),
        ("optim.nesterov=true", "'optim.nesterov' needs optim.name = \"sgd\""),
        ("optim.momentum=1.5", "'optim.momentum' must be in [0, 1)"),
        ("optim.horizon_epochs=-1", "'optim.horizon_epochs' must be >= 0"),
        ("optim.pct_start=0", "'optim.pct_start' must be in (0, 1)"),
    ],
)
def test_bad_optimizer_keys_are_bad_input(cli, tmp_path, key, message):
    r = cli("--cache-dir", tmp_path, "train", *SMALL, "--set", key, "--out", tmp_path / "x")
    assert r.code == 2 and message in r.err and len(r.err.strip().splitlines()) == 1, r


def test_old_no_schedule_recipe_still_loads():
    o = optim(lr=3e-4, min_lr=3e-4, warmup_epochs=0)  # the old "no schedule" spelling
    f = factor(o)
    assert o.schedule == "cosine" and {f(i) for i in range(0, 200, 7)} == {1.0}


def test_sgd_nesterov_step_schedule_trains_and_records_the_lr_used(cli, cache, tmp_path):
    from vqa_cache.training.schedule import lr_factor

    run = tmp_path / "sgd"
    r = cli(
        "--cache-dir",
        cache,
        "train",
        *SMALL,
        "--epochs",
        3,
        "--lr",
        0.05,
        "--out",
        run,
        "--set",
        "optim.name=sgd",
        "--set",
        "optim.nesterov=true",
        "--set",
        "optim.schedule=step",
        "--set",
        "optim.step_epochs=1",
        "--set",
        "optim.gamma=0.5",
        "--set",
        "optim.warmup_epochs=0",
    )
    assert r.code == 0, r
    config = json.loads((run / "config.json").read_text())
    plan = config["schedule"]
    assert config["recipe"]["optim"]["name"] == "sgd" and plan["schedule"] == "step" and plan["extensions"] == []
    rows = json.loads((run / "metrics.json").read_text())["epochs"]
    ckpt = torch.load(run / "last.pt", weights_only=True)
    assert ckpt["optimizer"]["param_groups"][0]["nesterov"] is True
    assert [row["lr"] for row in rows] == pytest.approx([0.05, 0.025, 0.0125])
    assert {row["lr_phase"] for row in rows} == {"step"}
    from vqa_cache import recipes

    o = recipes.build(recipes.OptimSettings, config["recipe"]["optim"])
    f = lr_factor(o, plan)
    spe = plan["steps_per_epoch"]
    assert [row["lr"] for row in rows] == pytest.approx([0.05 * f(e * spe - 1) for e in (1, 2, 3)])


def test_resume_with_more_epochs_never_raises_the_lr_unless_asked(cli, cache, tmp_path):
    base = tmp_path / "base"
    common = [*SMALL, "--set", "optim.warmup_epochs=0", "--set", "optim.min_lr=1e-5", "--lr", 1e-3]
    r = cli("--cache-dir", cache, "train", *common, "--epochs", 2, "--out", base)
    assert r.code == 0, r
    tail, cycle = tmp_path / "tail", tmp_path / "cycle"
    shutil.copytree(base, tail)
    shutil.copytree(base, cycle)
    r = cli("--cache-dir", cache, "train", *common, "--epochs", 4, "--resume", "--out", tail)
    assert r.code == 0, r
    assert "extending from 2 to 4 epochs: epochs 3-4 continue the cosine schedule's tail" in r.out
    rows = json.loads((tail / "metrics.json").read_text())["epochs"]
    assert [row["lr_phase"] for row in rows] == ["cosine", "cosine", "tail", "tail"]
    assert rows[2]["lr"] == rows[3]["lr"] == pytest.approx(1e-5)
    assert all(a["lr"] >= b["lr"] for a, b in zip(rows, rows[1:]))
    plan = json.loads((tail / "config.json").read_text())["schedule"]
    assert plan["extensions"] == [{"after_epoch": 2, "to_epoch": 4, "mode": "tail"}] and plan["epochs"] == 4
    # a new cosine cycle only when asked: the lr rises again, said and recorded
    r = cli("--cache-dir", cache, "train", *common, "--epochs", 4, "--resume", "--extend", "cycle", "--out", cycle)
    assert r.code == 0, r
    assert "epochs 3-4 are a new cosine cycle from lr 0.001 down to min_lr 1e-05" in r.out
    rows = json.loads((cycle / "metrics.json").read_text())["epochs"]
    assert [row["lr_phase"] for row in rows] == ["cosine", "cosine", "cycle", "cycle"]
    assert rows[2]["lr"] > 10 * rows[1]["lr"] and rows[3]["lr"] == pytest.approx(rows[1]["lr"])  # the same cosine
    # --extend without more epochs, or without --resume: one line, exit 2
    r = cli("--cache-dir", cache, "train", *common, "--epochs", 4, "--resume", "--extend", "cycle", "--out", cycle)
    assert r.code == 2 and "give --epochs beyond 4" in r.err, r
    r = cli("--cache-dir", cache, "train", *common, "--epochs", 4, "--extend", "cycle", "--out", tmp_path / "n")
    assert r.code == 2 and "only with --resume" in r.err, r


def test_a_sweep_searches_optimizers_and_schedules(cli, cache, tmp_path):
    recipe = tmp_path / "s.toml"
    recipe.write_text(
        "[sweep]\ntrials = 2\nepochs = 1\nstartup_trials = 2\n\n[space]\n"
        '"optim.name" = {choices = ["adam", "sgd"]}\n'
        '"optim.schedule" = {choices = ["onecycle", "constant"]}\n'
        '"optim.horizon_epochs" = {low = 0.5, high = 2.0}\n'
    )
    r = cli(
        "--cache-dir", cache, "sweep", str(recipe), *LIMIT, *FAST, "--set", "head.hidden=32", "--out", tmp_path / "sw"
    )
    assert r.code == 0, r
    configs = [json.loads(p.read_text()) for p in (tmp_path / "sw").rglob("config.json")]
    assert len(configs) == 2
    assert all(c["recipe"]["optim"]["name"] in ("adam", "sgd") for c in configs)
    assert all(c["schedule"]["schedule"] in ("onecycle", "constant") for c in configs)
    assert all(0.5 <= c["schedule"]["horizon_epochs"] <= 2.0 for c in configs)
