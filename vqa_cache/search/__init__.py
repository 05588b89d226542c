"""Hyperparameter search over stage-two recipes with Optuna: `vqa-cache sweep RECIPE --trials N`.

A sweep recipe (train/*-sweep.toml) is a train recipe (or `base = "train/x.toml"` plus overrides) with two
more tables:

    [sweep]                          # how to search (recipes.SweepSettings)
    epochs = 4                       # epochs per trial; [optim] epochs is what best.toml trains for
    [space]                          # what to search: any recipe value, by dotted key
    "optim.lr" = {low = 1e-4, high = 3e-3, log = true}      # float (int when low and high are ints)
    "head.hidden" = {choices = [256, 512, 1024]}            # categorical
    "optim.betas.1" = {low = 0.95, high = 0.999}            # one element of a list value

Sampling follows the tuning playbook: a fixed batch size (unless the space names it), scrambled Sobol
(quasi-random) points for the first `startup_trials` trials, then TPE; the median pruner stops trials whose
per-epoch validation accuracy falls below the median of earlier trials at the same epoch.

The cache is loaded once per process and shared by every trial (threads with `--jobs N`). Everything lives
in the sweep directory (default sweeps/NAME):
    study.db      the Optuna study (SQLite): `--resume` continues it; trials left RUNNING by a kill are
                  marked failed and their parameters run again
    sweep.json    the resolved base recipe, sweep settings and space (a resumed sweep must match)
    trials/NNNN/  each trial's run directory (config.json, metrics.json, curves.png; checkpoints deleted)
    trials.csv    one row per trial: state, best validation accuracy, epochs, seconds, parameters
    best.toml     the base recipe with the best trial's parameters: `vqa-cache train best.toml`
    history.png, importance.png, params.png    the plots

space.py: the recipe and its space; sampler.py: the study; trials.py: run_sweep; report.py: what it writes.
"""

from .trials import run_sweep  # noqa: F401
