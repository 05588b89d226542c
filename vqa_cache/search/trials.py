"""Running a sweep: each trial a `train` run in DIR/trials/NNNN (its checkpoints deleted after), on the
cache loaded once per process and shared by every trial (threads with `--jobs N`); the median pruner
stops a trial from its epochs' validation accuracy; a trial that diverges is pruned, not a failure."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import sys
import threading
import time
from pathlib import Path

import numpy as np
import optuna
import pyarrow as pa
import torch

from .. import data, heads, messages, recipes
from ..errors import BadInput, Diverged
from ..progress import progress as progress_bar
from ..recipes import SweepSettings
from ..rundir import drop_checkpoints, drop_partial_writes, pick_dir, read_json_object, write_json
from ..threads import describe, flush_denormals, note_threads, set_threads, usable_cpus
from ..training import train
from ..training.features import Features, load_features
from .groups import TrialGroups, close_trial, reporter, trial_dir
from .guard import check_resumable, sweep_lock
from .report import FINISHED, best_value, finish_sweep, write_trials_csv
from .sampler import open_study, recover
from .space import check_settings, check_space, distributions, load_sweep, make_recipe, suggest


def run_sweep(
    recipe_path: str | None,
    root: Path,
    trials: int | None = None,
    jobs: int | None = None,
    out: str | None = None,
    parallel: int | None = None,
    resume: bool = False,
    overrides=(),
    feature_overrides=(),
    extract_cmd: str = "vqa-cache extract",
    callbacks=(),
    threads: int | None = None,
    log=(),
) -> dict:
    """Run (or continue) a sweep; returns the summary written to sweep.json["result"].

    jobs: trials at a time as threads (it replaces the recipe's sweep.parallel); parallel: trials trained
    together (it wins over jobs). callbacks: extra Optuna callbacks (study, frozen_trial), e.g. tests that
    interrupt a sweep. threads: torch
    threads in all (shared by the parallel trials); default: the usable CPUs (vqa_cache/threads.py). log:
    tracker names (tensorboard, mlflow, wandb): each trial is a run of its own there, named SWEEP/trials/NNNN."""
    base, settings, space = load_sweep(recipe_path, overrides, feature_overrides)
    if trials is not None:
        settings = dataclasses.replace(settings, trials=trials)
    if jobs is not None:  # trials as threads: --jobs replaces the recipe's sweep.parallel (--parallel wins)
        settings = dataclasses.replace(settings, jobs=jobs, parallel=1)
    if parallel is not None:
        settings = dataclasses.replace(settings, parallel=parallel)
    check_settings(settings)
    dists = distributions(space)
    check_space(base, dists)
    directory = sweep_dir(base["name"], settings, out, resume)
    with sweep_lock(directory):
        if resume:
            check_resumable(directory, base["name"])  # before anything is written
        return _run_sweep(directory, base, space, dists, settings, resume, root, extract_cmd, callbacks, threads, log)


def _run_sweep(
    directory: Path,
    base: dict,
    space: dict,
    dists: dict,
    settings: SweepSettings,
    resume: bool,
    root: Path,
    extract_cmd: str,
    callbacks,
    threads,
    log,
) -> dict:
    write_sweep_json(directory, base, space, settings, resume)
    study = open_study(directory, base["name"], dists, settings)
    requeued = recover(study) if resume else 0
    if resume:  # what killed trials left in their directories: checkpoints, files they were writing
        for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.FAIL,)):
            drop_checkpoints(trial_dir(directory, t))
            drop_partial_writes(trial_dir(directory, t))
    finished = sum(t.state.name in FINISHED for t in study.get_trials(deepcopy=False))
    remaining = max(0, settings.trials - finished)
    messages.info(
        f"sweep {directory}: {len(dists)} parameters, {settings.trials} trials "
        f"({finished} done, {remaining} to run{f'; {requeued} interrupted, run again' if requeued else ''}), "
        f"{settings.epochs or base['optim']['epochs']} epochs each, "
        + (
            f"{settings.parallel} at a time trained together in one pass over the cache"
            + (f" (sweep.jobs = {settings.jobs} unused)" if settings.jobs > 1 else "")
            if settings.parallel > 1
            else f"{settings.jobs} at a time"
        )
    )
    if remaining:
        run_trials(study, remaining, base, dists, settings, directory, root, extract_cmd, callbacks, threads, log)
    return finish_sweep(study, dists, base, settings, directory)


def sweep_dir(name: str, settings: SweepSettings, out: str | None, resume: bool) -> Path:
    """--out, else sweeps/NAME (-2, -3 ...), as a run directory is picked; a sweep is resumed, or new."""
    directory = pick_dir(Path(settings.out) / name, out, resume, what="sweep")
    if resume and not (directory / "study.db").is_file():
        raise BadInput(f"--resume: {directory} holds no sweep (no study.db)")
    if not resume and (directory / "study.db").exists():
        raise BadInput(f"{directory} already holds a sweep: continue it with --resume, or choose another --out")
    return directory


def write_sweep_json(directory: Path, base: dict, space: dict, settings: SweepSettings, resume: bool) -> None:
    """sweep.json: the resolved base recipe, the space and the settings (a resumed sweep must match them)."""
    record = {
        "base": base,
        "space": space,
        "sweep": {
            k: v for k, v in dataclasses.asdict(settings).items() if k not in ("trials", "jobs", "parallel", "out")
        },
    }
    if resume:
        before = read_json_object(directory / "sweep.json", f"--resume: {directory / 'sweep.json'} is missing")
        for part in ("base", "space", "sweep"):
            if before.get(part) != record[part]:
                raise BadInput(
                    f"--resume: the {part} {'recipe' if part == 'base' else 'settings'} differ from "
                    f"those {directory} was started with (see {directory / 'sweep.json'}); start a new "
                    f"sweep instead"
                )
    directory.mkdir(parents=True, exist_ok=True)
    write_json(directory / "sweep.json", record)


def run_trials(
    study,
    remaining: int,
    base: dict,
    dists: dict,
    settings: SweepSettings,
    directory: Path,
    root: Path,
    extract_cmd: str,
    callbacks,
    threads: int | None = None,
    log=(),
) -> None:
    """Optimize for `remaining` trials, with a progress bar of the sweep (the trials' own output hidden)."""
    t0 = time.time()
    flush_denormals()  # (before the cache's first torch op: the threads started later have it)
    features_for = features_loader(root, extract_cmd, settings)
    features_for(make_recipe(base, {})[0])
    messages.info(f"cache loaded once in {time.time() - t0:.1f}s; trials write to {directory / 'trials'}/")
    before = torch.get_num_threads()
    # one intra-op pool shared by the trials' threads: the usable CPUs (or --threads), split between the
    # threads that run trials (--jobs), or that run the steps of trials trained together (--parallel)
    total = threads if threads is not None else usable_cpus()
    side = min(settings.parallel, total) if settings.parallel > 1 else settings.jobs
    set_threads(max(1, total // side) if side > 1 else total)
    if threads is None:
        note_threads(f"{total} usable CPU{'s' if total != 1 else ''}" + (f" / {side}" if side > 1 else ""))
    if settings.parallel > 1:
        messages.info(f"torch {describe()} in each of {side} threads stepping the trials trained together")
    else:
        messages.info(f"torch {describe()}{f' for each of {settings.jobs} parallel trials' if side > 1 else ''}")
    objective = make_objective(base, dists, settings, directory, root, extract_cmd, features_for, log)
    lock = threading.Lock()
    bar = progress_bar(
        total=settings.trials,
        initial=settings.trials - remaining,
        desc="sweep",
        unit="trial",
        file=sys.stderr,
        dynamic_ncols=True,
    )
    best_now = best_value(study)
    if best_now is not None:
        bar.set_postfix_str(f"best {best_now:.4f}")

    def progress(study_, frozen):
        with lock:
            if frozen.state.name in FINISHED:
                bar.update(1)
            best = best_value(study_)
            if best is not None:
                bar.set_postfix_str(f"best {best:.4f}")
            write_trials_csv(study_, dists, directory / "trials.csv")

    # the trials' own output (per-epoch lines and bars) would bury the sweep's bar
    notes: list[str] = []
    with open(os.devnull, "w") as null, contextlib.redirect_stdout(null), contextlib.redirect_stderr(null):
        try:
            if settings.parallel > 1:
                groups = TrialGroups(base, dists, settings, directory, root, features_for, log)
                notes = groups.optimize(study, remaining, side, [progress, *callbacks])
            else:
                study.optimize(
                    objective,
                    n_trials=remaining,
                    n_jobs=settings.jobs,
                    callbacks=[progress, *callbacks],
                    gc_after_trial=False,
                )
        finally:
            bar.close()
            torch.set_num_threads(before)
    for note in notes:
        messages.info(note)
    messages.info(f"{remaining} trials in {time.time() - t0:.1f}s")


def make_objective(
    base: dict,
    dists: dict,
    settings: SweepSettings,
    directory: Path,
    root: Path,
    extract_cmd: str,
    features_for,
    log=(),
):
    """The objective: a trial's parameters -> a `train` run (pruned by its epochs) -> its best accuracy."""

    def objective(trial):
        params = {k: suggest(trial, k, dist) for k, dist in dists.items()}
        recipe, _ = make_recipe(base, params, settings.epochs)
        run = trial_dir(directory, trial)
        start = time.time()
        try:
            metrics = train(
                recipe,
                root,
                out=str(run),
                extract_cmd=extract_cmd,
                features=features_for(recipe),
                on_epoch=reporter(trial),
                log=log,
                label=f"{directory.name}/trials/{trial.number:04d}",
            )
        except Diverged as e:  # a setting that diverges is a bad setting, not a broken sweep
            trial.set_user_attr("diverged", str(e))
            raise optuna.TrialPruned(f"diverged: {e}") from None
        finally:
            close_trial(trial, run, start)
        return metrics["best"]["val_accuracy"]

    return objective


def features_loader(root: Path, extract_cmd: str, settings: SweepSettings):
    """recipe -> its Features, each distinct need (features.* settings, and what the head reads: pooled or
    grid images, pooled or token questions) loaded from the cache once per process."""
    memo, lock = {}, threading.Lock()

    def get(recipe):
        need = (json.dumps(recipes.to_dict(recipe.features), sort_keys=True), json.dumps(heads.needs(recipe.head.name)))
        with lock:
            if need not in memo:
                memo[need] = subsample(load_features(recipe, root, extract_cmd), settings.train_fraction, settings.seed)
            return memo[need]

    return get


def subsample(features: Features, fraction: float, seed: int) -> Features:
    """The same features with a seeded `fraction` of the training questions (validation kept whole)."""
    if fraction >= 1:
        return features
    table = features.plan.samples
    train_name, _ = data.train_val_splits(table)
    is_train = np.asarray(table.column("split").to_pylist(), dtype=object) == train_name
    keep = ~is_train | (np.random.default_rng(seed).random(len(table)) < fraction)
    return features._replace(plan=dataclasses.replace(features.plan, samples=table.filter(pa.array(keep))))
