"""Hyperparameter search over stage-two recipes with Optuna: `vqa-cache sweep RECIPE --trials N`.

A sweep recipe (train/*-sweep.toml) is a train recipe (or `base = "train/x.toml"` plus overrides) with two
more tables:

    [sweep]                          # how to search (recipes.SweepSettings below)
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
"""
from __future__ import annotations

import contextlib
import copy
import csv
import dataclasses
import json
import math
import os
import sys
import threading
import time
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from . import recipes
from .errors import BadInput, Diverged


# with no recipe: the usual suspects around the default recipe
DEFAULT_SPACE = {
    "optim.lr": {"low": 1e-4, "high": 3e-3, "log": True},
    "optim.weight_decay": {"low": 1e-6, "high": 1e-2, "log": True},
    "head.dropout": {"low": 0.0, "high": 0.5},
    "head.hidden": {"choices": [256, 512, 1024]},
}

FINISHED = ("COMPLETE", "PRUNED")


# ---------------------------------------------------------------- the recipe

def load_sweep(path: str | None, overrides=(), feature_overrides=()) -> tuple[dict, recipes.SweepSettings, dict]:
    """(base train recipe as a dict, sweep settings, search space) from a sweep recipe.

    `overrides` are `--set` items: `sweep.*` and `space.*` keys go to those tables, the rest to the base
    recipe; `feature_overrides` (from the feature options) go to the base recipe."""
    data = recipes.read_toml(path) if path else {}
    sweep_data = data.pop("sweep", {})
    space_data = data.pop("space", None)
    base_ref = data.pop("base", None)
    if path:
        name = data.get("name", Path(path).stem)
        if isinstance(data.get("features"), str):
            data["features"] = recipes.read_toml(recipes.resolve_relative(data["features"], Path(path)))
    else:
        name = "sweep"
    base = {}
    if base_ref is not None:
        if not isinstance(base_ref, str):
            raise BadInput(f"{path}: base must be the path of a train recipe, got {base_ref!r}")
        base = recipes.load_train_dict(str(recipes.resolve_relative(base_ref, Path(path), "base", "train recipe")))
    deep_merge(base, data)
    base["name"] = name
    if not isinstance(sweep_data, dict) or not isinstance(space_data or {}, dict):
        raise BadInput(f"{path}: [sweep] and [space] must be tables")
    space = dict(space_data or {})
    base_items, sweep_items = [], []
    for item in overrides:
        key, _, value = item.partition("=")
        key = key.strip()
        if key.startswith("space."):        # the rest of the key is one space entry: space.optim.lr={...}
            space[key[len("space."):]] = recipes.parse_value(value.strip())
            space_data = space
        else:
            (sweep_items if key.startswith("sweep.") else base_items).append(item)
    recipes.apply_overrides(base, list(feature_overrides) + base_items)
    sweep_data = recipes.apply_overrides({"sweep": sweep_data}, sweep_items)["sweep"]
    spec = recipes.build(recipes.SweepSettings, sweep_data, "sweep.")
    space = space or (DEFAULT_SPACE if space_data is None else {})
    if not space:
        raise BadInput(f"{path}: [space] is empty: name at least one recipe value to search")
    check_spec(spec)
    # the base recipe as full plain data (tuples -> lists), validated
    resolved = json.loads(json.dumps(recipes.to_dict(recipes.build(recipes.TrainRecipe, base))))
    return resolved, spec, space


def deep_merge(into: dict, other: dict) -> dict:
    for k, v in other.items():
        if isinstance(v, dict) and isinstance(into.get(k), dict):
            deep_merge(into[k], v)
        else:
            into[k] = copy.deepcopy(v)
    return into


def check_spec(spec: recipes.SweepSettings) -> None:
    for field, ok, what in (("trials", spec.trials >= 1, "at least 1"), ("epochs", spec.epochs >= 0, "0 or more"),
                            ("train_fraction", 0 < spec.train_fraction <= 1, "in (0, 1]"),
                            ("jobs", spec.jobs >= 1, "at least 1"),
                            ("startup_trials", spec.startup_trials >= 0, "0 or more")):
        if not ok:
            raise BadInput(f"sweep.{field} = {getattr(spec, field)!r}: expected {what}")


def distributions(space: dict) -> dict:
    """[space] entries -> Optuna distributions. List-valued choices (betas) are stored as JSON strings."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    out = {}
    for key, d in space.items():
        where = f"space {key!r}"
        if not isinstance(d, dict):
            raise BadInput(f"{where}: expected {{low = .., high = ..[, log = true][, step = ..]}} or {{choices = [..]}}")
        unknown = set(d) - {"low", "high", "log", "step", "choices"}
        if unknown:
            raise BadInput(f"{where}: unknown field {sorted(unknown)[0]!r} (known: low, high, log, step, choices)")
        if "choices" in d:
            choices = d["choices"]
            if not isinstance(choices, list) or not choices or len(d) > 1:
                raise BadInput(f"{where}: choices must be a non-empty list, alone")
            out[key] = CategoricalDistribution([json.dumps(c) if isinstance(c, (list, dict)) else c for c in choices])
            continue
        if "low" not in d or "high" not in d:
            raise BadInput(f"{where}: needs low and high (or choices)")
        low, high, log, step = d["low"], d["high"], d.get("log", False), d.get("step")
        if any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in (low, high)) or not low < high:
            raise BadInput(f"{where}: low and high must be numbers with low < high, got {low!r}, {high!r}")
        if not isinstance(log, bool):
            raise BadInput(f"{where}: log must be true or false")
        if log and low <= 0:
            raise BadInput(f"{where}: a log range needs low > 0")
        try:
            if isinstance(low, int) and isinstance(high, int) and (step is None or isinstance(step, int)):
                out[key] = IntDistribution(low, high, log=log, step=step or 1)
            else:
                out[key] = FloatDistribution(float(low), float(high), log=log, step=step)
        except ValueError as e:
            raise BadInput(f"{where}: {e}") from None
    return out


def external(value):
    """A sampled value as the recipe wants it (JSON-encoded list choices decoded)."""
    if isinstance(value, str) and value[:1] in "[{":
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def make_recipe(base: dict, params: dict, epochs: int = 0):
    data = copy.deepcopy(base)
    for key, value in params.items():
        recipes.set_dotted(data, key, external(value), f"space {key!r}")
    if epochs and "optim.epochs" not in params:      # sweep.epochs, unless the space searches optim.epochs
        data["optim"]["epochs"] = epochs
    return recipes.build(recipes.TrainRecipe, data), data


def check_space(base: dict, dists: dict) -> None:
    """Every key must be a recipe value and every bound / choice must make a valid recipe."""
    from optuna.distributions import CategoricalDistribution

    for key, d in dists.items():
        values = d.choices if isinstance(d, CategoricalDistribution) else (d.low, d.high)
        for v in values:
            try:
                make_recipe(base, {key: v})
            except BadInput as e:
                raise BadInput(f"space {key!r} = {external(v)!r}: {e}") from None
            except (KeyError, IndexError, ValueError, TypeError):
                raise BadInput(f"space {key!r}: not a recipe value") from None


# ---------------------------------------------------------------- sampling

def make_sampler(dists: dict, spec: recipes.SweepSettings):
    """Scrambled Sobol points for trial numbers < startup_trials, TPE after."""
    from optuna.samplers import BaseSampler, QMCSampler, TPESampler

    class QmcThenTpe(BaseSampler):
        def __init__(self):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")   # QMCSampler and multivariate TPE are "experimental"
                self.qmc = QMCSampler(scramble=True, seed=spec.seed, warn_independent_sampling=False)
                self.tpe = TPESampler(seed=spec.seed, n_startup_trials=0, multivariate=True, constant_liar=True)
            self.lock = threading.Lock()    # QMC's sample counter is a read-then-write of a study attribute

        def _qmc(self, trial):
            return trial.number < spec.startup_trials

        def infer_relative_search_space(self, study, trial):
            # QMC: the whole declared space from the first trial on (not inferred from finished trials)
            return dict(dists) if self._qmc(trial) else self.tpe.infer_relative_search_space(study, trial)

        def sample_relative(self, study, trial, search_space):
            if self._qmc(trial):
                with self.lock, warnings.catch_warnings():
                    warnings.simplefilter("ignore")      # scipy: Sobol balance wants 2^k points
                    return self.qmc.sample_relative(study, trial, search_space)
            return self.tpe.sample_relative(study, trial, search_space)

        def sample_independent(self, study, trial, name, dist):
            return (self.qmc if self._qmc(trial) else self.tpe).sample_independent(study, trial, name, dist)

        def before_trial(self, study, trial):
            (self.qmc if self._qmc(trial) else self.tpe).before_trial(study, trial)

        def after_trial(self, study, trial, state, values):
            (self.qmc if self._qmc(trial) else self.tpe).after_trial(study, trial, state, values)

        def reseed_rng(self):
            self.qmc.reseed_rng()
            self.tpe.reseed_rng()

    return QmcThenTpe()


# ---------------------------------------------------------------- the sweep

def subsample(features, fraction: float, seed: int):
    """The same features with a seeded `fraction` of the training questions (validation kept whole)."""
    if fraction >= 1:
        return features
    import pyarrow as pa
    from . import data

    plan, tensors, keys = features
    table = plan.samples
    train_name, _ = data.train_val_splits(table)
    is_train = np.asarray(table.column("split").to_pylist(), dtype=object) == train_name
    keep = ~is_train | (np.random.default_rng(seed).random(len(table)) < fraction)
    return dataclasses.replace(plan, samples=table.filter(pa.array(keep))), tensors, keys


def sweep_dir(name: str, spec: recipes.SweepSettings, out: str | None, resume: bool) -> Path:
    from .training import pick_run_dir
    d = pick_run_dir(SimpleNamespace(out=spec.out, name=name), out, resume)
    if resume and not (d / "study.db").is_file():
        raise BadInput(f"--resume: {d} holds no sweep (no study.db)")
    if not resume and (d / "study.db").exists():
        raise BadInput(f"{d} already holds a sweep: continue it with --resume, or choose another --out")
    return d


def run_sweep(recipe_path: str | None, root: Path, trials: int | None = None, jobs: int | None = None,
              out: str | None = None, resume: bool = False, overrides=(), feature_overrides=(),
              extract_cmd: str = "vqa-cache extract", callbacks=()) -> dict:
    """Run (or continue) a sweep; returns the summary written to sweep.json["result"].

    callbacks: extra Optuna callbacks (study, frozen_trial), e.g. tests that interrupt a sweep."""
    import optuna
    from tqdm import tqdm

    from .training import train

    base, spec, space = load_sweep(recipe_path, overrides, feature_overrides)
    if trials is not None:
        spec = dataclasses.replace(spec, trials=trials)
    if jobs is not None:
        spec = dataclasses.replace(spec, jobs=jobs)
    check_spec(spec)
    dists = distributions(space)
    check_space(base, dists)
    d = sweep_dir(base["name"], spec, out, resume)
    settings = {"base": base, "space": space, "sweep": {k: v for k, v in dataclasses.asdict(spec).items()
                                                        if k not in ("trials", "jobs", "out")}}
    if resume:
        before = json.loads((d / "sweep.json").read_text())
        for part in ("base", "space", "sweep"):
            if before.get(part) != settings[part]:
                raise BadInput(f"--resume: the {part} {'recipe' if part == 'base' else 'settings'} differ from "
                               f"those {d} was started with (see {d / 'sweep.json'}); start a new sweep instead")
    d.mkdir(parents=True, exist_ok=True)
    (d / "sweep.json").write_text(json.dumps(settings, indent=1))

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = LockedRDBStorage(f"sqlite:///{(d / 'study.db').resolve()}",
                               engine_kwargs={"connect_args": {"timeout": 60}})
    study = optuna.create_study(storage=storage, study_name=base["name"], direction="maximize",
                                load_if_exists=True, sampler=make_sampler(dists, spec),
                                pruner=optuna.pruners.MedianPruner(n_startup_trials=spec.prune_startup_trials,
                                                                   n_warmup_steps=spec.prune_from_epoch))
    requeued = recover(study) if resume else 0
    finished = sum(t.state.name in FINISHED for t in study.get_trials(deepcopy=False))
    remaining = max(0, spec.trials - finished)
    print(f"sweep {d}: {len(dists)} parameters, {spec.trials} trials "
          f"({finished} done, {remaining} to run{f'; {requeued} interrupted, run again' if requeued else ''}), "
          f"{spec.epochs or base['optim']['epochs']} epochs each, {spec.jobs} at a time")

    if remaining:
        t0 = time.time()
        features_for = features_loader(root, extract_cmd, spec)
        features_for(make_recipe(base, {})[0])
        print(f"cache loaded once in {time.time() - t0:.1f}s; trials write to {d / 'trials'}/")
        import torch
        threads = torch.get_num_threads()
        if spec.jobs > 1:     # one intra-op pool shared by the trials' threads: split the cores
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // spec.jobs))

        def objective(trial):
            params = {k: suggest(trial, k, dist) for k, dist in dists.items()}
            recipe, _ = make_recipe(base, params, spec.epochs)
            feats = features_for(recipe)
            run = d / "trials" / f"{trial.number:04d}"
            start = time.time()

            def on_epoch(epoch, row):
                trial.set_user_attr("epochs", epoch)
                trial.report(row["val_accuracy"], epoch)
                if trial.should_prune():
                    raise optuna.TrialPruned(f"val accuracy {row['val_accuracy']:.4f} at epoch {epoch}")
            try:
                metrics = train(recipe, root, out=str(run), extract_cmd=extract_cmd, features=feats,
                                on_epoch=on_epoch)
            except Diverged as e:          # a setting that diverges is a bad setting, not a broken sweep
                trial.set_user_attr("diverged", str(e))
                raise optuna.TrialPruned(f"diverged: {e}") from None
            finally:
                trial.set_user_attr("seconds", round(time.time() - start, 2))
                for ckpt in run.glob("*.pt"):      # trials are retrained from best.toml, not reused
                    ckpt.unlink(missing_ok=True)
            return metrics["best"]["val_accuracy"]

        lock = threading.Lock()
        real_err = sys.stderr
        bar = tqdm(total=spec.trials, initial=finished, desc="sweep", unit="trial", file=real_err, dynamic_ncols=True)
        best_now = best_value(study)
        if best_now is not None:
            bar.set_postfix_str(f"best {best_now:.4f}")

        def progress(study_, frozen):
            with lock:
                if frozen.state.name in FINISHED:
                    bar.update(1)
                b = best_value(study_)
                if b is not None:
                    bar.set_postfix_str(f"best {b:.4f}")
                write_trials_csv(study_, dists, d / "trials.csv")

        # the trials' own output (per-epoch lines and bars) would bury the sweep's bar
        with open(os.devnull, "w") as null, contextlib.redirect_stdout(null), contextlib.redirect_stderr(null):
            try:
                study.optimize(objective, n_trials=remaining, n_jobs=spec.jobs,
                               callbacks=[progress, *callbacks], gc_after_trial=False)
            finally:
                bar.close()
                torch.set_num_threads(threads)
        print(f"{remaining} trials in {time.time() - t0:.0f}s")
    return finish(study, dists, base, spec, d)


def _locked_rdb_storage():
    import optuna

    class Locked(optuna.storages.RDBStorage):
        """SQLite ignores SELECT ... FOR UPDATE, so two threads could both take the same queued (WAITING)
        trial; the state change is made atomic within this process (one sweep process per directory)."""
        _lock = threading.Lock()

        def set_trial_state_values(self, trial_id, state, values=None):
            with self._lock:
                return super().set_trial_state_values(trial_id, state, values)
    return Locked


def LockedRDBStorage(*args, **kwargs):
    return _locked_rdb_storage()(*args, **kwargs)


def features_loader(root, extract_cmd, spec: recipes.SweepSettings):
    """recipe -> its (plan, tensors, keys), each distinct need (features.* settings, and what the head
    reads: pooled or grid images, pooled or token questions) loaded from the cache once per process."""
    from . import heads
    from .training import load_features

    memo, lock = {}, threading.Lock()

    def get(recipe):
        k = (json.dumps(recipes.to_dict(recipe.features), sort_keys=True), json.dumps(heads.needs(recipe.head.name)))
        with lock:
            if k not in memo:
                memo[k] = subsample(load_features(recipe, root, extract_cmd), spec.train_fraction, spec.seed)
            return memo[k]
    return get


def suggest(trial, key, dist):
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    if isinstance(dist, CategoricalDistribution):
        return trial.suggest_categorical(key, dist.choices)
    if isinstance(dist, FloatDistribution):
        return trial.suggest_float(key, dist.low, dist.high, log=dist.log, step=dist.step)
    return trial.suggest_int(key, dist.low, dist.high, log=dist.log, step=dist.step)


def recover(study) -> int:
    """Trials a kill left RUNNING are failed; every failed trial not yet retried is queued again with
    its parameters. Returns how many were queued."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    for t in trials:
        if t.state == TrialState.RUNNING:
            study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
    retried = {t.user_attrs.get("retry_of") for t in trials}
    n = 0
    for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,)):
        if t.number not in retried and t.params:
            study.enqueue_trial(t.params, user_attrs={"retry_of": t.number}, skip_if_exists=False)
            n += 1
    return n


def best_value(study):
    vals = [trial_value(t) for t in study.get_trials(deepcopy=False) if t.state.name in FINISHED]
    vals = [v for v in vals if v is not None]
    return max(vals) if vals else None


def trial_value(t):
    """Best validation accuracy of a trial: its value, or for a pruned one its best reported epoch."""
    if t.state.name == "COMPLETE":
        return t.value
    if t.intermediate_values:
        return max(t.intermediate_values.values())
    return None


def write_trials_csv(study, dists, path: Path) -> None:
    rows = []
    for t in study.get_trials(deepcopy=False):
        v = trial_value(t)
        row = {"trial": t.number, "state": t.state.name.lower(),
               "best_val_accuracy": "" if v is None else round(v, 6),
               "epochs": t.user_attrs.get("epochs", len(t.intermediate_values) or ""),
               "seconds": t.user_attrs.get("seconds", ""), "retry_of": t.user_attrs.get("retry_of", "")}
        for k in dists:
            row[k] = t.params.get(k, "")
        rows.append(row)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["trial", "state", "best_val_accuracy", "epochs", "seconds", *dists,
                                          "retry_of"])
        w.writeheader()
        w.writerows(rows)
    tmp.replace(path)


def finish(study, dists, base, spec, d: Path) -> dict:
    """trials.csv, best.toml, the plots, and a summary."""
    write_trials_csv(study, dists, d / "trials.csv")
    trials = study.get_trials(deepcopy=False)
    done = [t for t in trials if t.state.name == "COMPLETE"]
    counts = {s: sum(t.state.name.lower() == s for t in trials) for s in ("complete", "pruned", "fail")}
    result = {"dir": str(d), "trials": counts, "seconds": round(sum(t.user_attrs.get("seconds", 0) for t in trials), 1)}
    if not done:
        print(f"no trial completed ({counts}); no best.toml")
        return result
    best = max(done, key=lambda t: t.value)
    _, best_data = make_recipe(base, best.params)
    best_data["name"] = f"{base['name']}-best"
    header = (f"# best of sweep {d} (trial {best.number}, val accuracy {best.value:.4f} with "
              f"{spec.epochs or base['optim']['epochs']} epochs"
              f"{f' on {spec.train_fraction:.0%} of the training questions' if spec.train_fraction < 1 else ''}).\n"
              f"# optim.epochs is the recipe's own ({best_data['optim']['epochs']}). `vqa-cache train {d / 'best.toml'}`\n")
    (d / "best.toml").write_text(header + "\n".join(f"# {k} = {external(v)!r}" for k, v in best.params.items())
                                 + "\n\n" + recipes.to_toml(best_data))
    result.update(best_trial=best.number, best_val_accuracy=round(best.value, 6),
                  best_params={k: external(v) for k, v in best.params.items()})
    plot_all(study, dists, d)
    settings = json.loads((d / "sweep.json").read_text())
    settings["result"] = result
    (d / "sweep.json").write_text(json.dumps(settings, indent=1))
    print(f"trials: {counts['complete']} complete, {counts['pruned']} pruned, {counts['fail']} failed")
    print(f"best val accuracy {best.value:.4f} (trial {best.number}):")
    for k, v in best.params.items():
        print(f"  {k} = {fmt(external(v))}")
    print(f"results in {d}/: trials.csv best.toml history.png importance.png params.png")
    return result


def fmt(v):
    return f"{v:.4g}" if isinstance(v, float) else json.dumps(v)


# ---------------------------------------------------------------- plots

def plot_all(study, dists, d: Path) -> None:
    from matplotlib.figure import Figure
    from matplotlib.ticker import NullFormatter
    from optuna.distributions import CategoricalDistribution

    trials = [t for t in study.get_trials(deepcopy=False) if t.state.name in FINISHED and trial_value(t) is not None]
    if not trials:
        return
    style = {"COMPLETE": dict(color="C0", marker="o", label="complete"),
             "PRUNED": dict(color="C7", marker="x", label="pruned")}

    # optimization history
    fig = Figure(figsize=(8, 4.5))
    ax = fig.subplots()
    for state, st in style.items():
        pts = [(t.number, trial_value(t)) for t in trials if t.state.name == state]
        if pts:
            ax.scatter(*zip(*pts), s=22, **st)
    done = sorted((t.number, t.value) for t in trials if t.state.name == "COMPLETE")
    if done:
        xs, ys = zip(*done)
        ax.step(xs, np.maximum.accumulate(ys), where="post", color="C3", label="best so far")
    ax.set(xlabel="trial", ylabel="best validation accuracy", title="optimization history")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(d / "history.png", dpi=100)

    # parameter importances (Optuna's default evaluator, on the completed trials)
    import optuna
    evaluator = optuna.importance.PedAnovaImportanceEvaluator()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            imp = optuna.importance.get_param_importances(study, evaluator=evaluator)
    except Exception as e:    # too few completed trials, or no parameter varied
        imp = {}
        print(f"no parameter importances ({type(e).__name__}: {e})")
    if imp:
        fig = Figure(figsize=(7, 0.5 * len(imp) + 1.5))
        ax = fig.subplots()
        names = list(imp)[::-1]
        ax.barh(names, [imp[n] for n in names], color="C0")
        ax.set(xlabel=f"importance ({type(evaluator).__name__}, normalized)",
               title=f"parameter importances ({sum(t.state.name == 'COMPLETE' for t in trials)} completed trials)")
        fig.tight_layout()
        fig.savefig(d / "importance.png", dpi=100)

    # validation accuracy against each parameter
    n = len(dists)
    cols = min(3, n)
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(4.2 * cols, 3.4 * rows))
    axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
    for ax, (k, dist) in zip(axes, dists.items()):
        for state, st in style.items():
            pts = [(t.params[k], trial_value(t)) for t in trials if t.state.name == state and k in t.params]
            if not pts:
                continue
            xs, ys = zip(*pts)
            if isinstance(dist, CategoricalDistribution):
                xs = [list(dist.choices).index(x) for x in xs]
            ax.scatter(xs, ys, s=18, alpha=0.8, **st)
        if isinstance(dist, CategoricalDistribution):
            ax.set_xticks(range(len(dist.choices)), [str(external(c)) for c in dist.choices])
        elif dist.log:
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set(xlabel=k, ylabel="val accuracy")
    for ax in axes[n:]:
        ax.set_visible(False)
    axes[0].legend(loc="lower right", fontsize=8)
    fig.suptitle("validation accuracy against each parameter")
    fig.tight_layout()
    fig.savefig(d / "params.png", dpi=90)
