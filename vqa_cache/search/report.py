"""What a sweep leaves: trials.csv, best.toml (the base recipe with the best trial's parameters), the
summary in sweep.json, and three plots (history.png, importance.png, params.png)."""

from __future__ import annotations

import csv
import io
import json
import math
import warnings
from pathlib import Path

import numpy as np
import optuna
from matplotlib.figure import Figure  # no pyplot: thread-safe
from matplotlib.ticker import NullFormatter
from optuna.distributions import CategoricalDistribution

from .. import messages, recipes
from ..plot_text import plain
from ..recipes import SweepSettings
from ..rundir import save_figure, write_json, write_text
from .space import external, make_recipe

FINISHED = ("COMPLETE", "PRUNED")
STYLE: dict[str, dict] = {
    "COMPLETE": dict(color="C0", marker="o", label="complete"),
    "PRUNED": dict(color="C7", marker="x", label="pruned"),
}


def finish_sweep(study, dists: dict, base: dict, settings: SweepSettings, directory: Path) -> dict:
    """trials.csv, best.toml, the plots, and the summary (also in sweep.json["result"]), which it returns."""
    write_trials_csv(study, dists, directory / "trials.csv")
    trials = study.get_trials(deepcopy=False)
    done = [t for t in trials if t.state.name == "COMPLETE"]
    counts = {s: sum(t.state.name.lower() == s for t in trials) for s in ("complete", "pruned", "fail")}
    result = {
        "dir": str(directory),
        "trials": counts,
        "seconds": round(sum(t.user_attrs.get("seconds", 0) for t in trials), 1),
    }
    if not done:
        messages.info(f"no trial completed ({counts}); no best.toml")
        return result
    best = max(done, key=lambda t: t.value)
    write_best_toml(directory, best, base, settings)
    result.update(
        best_trial=best.number,
        best_val_accuracy=round(best.value, 6),
        best_params={k: external(v) for k, v in best.params.items()},
    )
    plot_history(study, directory)
    plot_importance(study, directory)
    plot_params(study, dists, directory)
    record = json.loads((directory / "sweep.json").read_text())
    record["result"] = result
    write_json(directory / "sweep.json", record)
    messages.info(f"trials: {counts['complete']} complete, {counts['pruned']} pruned, {counts['fail']} failed")
    messages.info(f"best val accuracy {best.value:.4f} (trial {best.number}):")
    for k, v in best.params.items():
        messages.info(f"  {k} = {fmt(external(v))}")
    messages.info(f"results in {directory}/: trials.csv best.toml history.png importance.png params.png")
    return result


def write_best_toml(directory: Path, best, base: dict, settings: SweepSettings) -> None:
    """best.toml: the base recipe with the best trial's parameters, trainable as it is."""
    _, data = make_recipe(base, best.params)
    data["name"] = f"{base['name']}-best"
    subset = f" on {settings.train_fraction:.0%} of the training questions" if settings.train_fraction < 1 else ""
    header = (
        f"# best of sweep {directory} (trial {best.number}, val accuracy {best.value:.4f} with "
        f"{settings.epochs or base['optim']['epochs']} epochs{subset}).\n"
        f"# optim.epochs is the recipe's own ({data['optim']['epochs']}). "
        f"`vqa-cache train {directory / 'best.toml'}`\n"
    )
    write_text(
        directory / "best.toml",
        header + "\n".join(f"# {k} = {external(v)!r}" for k, v in best.params.items()) + "\n\n" + recipes.to_toml(data),
    )


def fmt(v):
    return f"{v:.4g}" if isinstance(v, float) else json.dumps(v)


def best_value(study):
    """The best validation accuracy of the finished trials so far, or None."""
    values = [trial_value(t) for t in study.get_trials(deepcopy=False) if t.state.name in FINISHED]
    values = [v for v in values if v is not None]
    return max(values) if values else None


def trial_value(t):
    """Best validation accuracy of a trial: its value, or for a pruned one its best reported epoch."""
    if t.state.name == "COMPLETE":
        return t.value
    if t.intermediate_values:
        return max(t.intermediate_values.values())
    return None


def write_trials_csv(study, dists, path: Path) -> None:
    """trials.csv: one row per trial (state, best validation accuracy, epochs, seconds, parameters)."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        value = trial_value(t)
        row = {
            "trial": t.number,
            "state": t.state.name.lower(),
            "best_val_accuracy": "" if value is None else round(value, 6),
            "epochs": t.user_attrs.get("epochs", len(t.intermediate_values) or ""),
            "seconds": t.user_attrs.get("seconds", ""),
            "retry_of": t.user_attrs.get("retry_of", ""),
        }
        for k in dists:
            row[k] = t.params.get(k, "")
        rows.append(row)
    buf = io.StringIO(newline="")
    writer = csv.DictWriter(
        buf, fieldnames=["trial", "state", "best_val_accuracy", "epochs", "seconds", *dists, "retry_of"]
    )
    writer.writeheader()
    writer.writerows(rows)
    write_text(path, buf.getvalue())


def finished_trials(study) -> list:
    return [t for t in study.get_trials(deepcopy=False) if t.state.name in FINISHED and trial_value(t) is not None]


def plot_history(study, directory: Path) -> None:
    """history.png: each finished trial's best validation accuracy, and the best so far."""
    trials = finished_trials(study)
    if not trials:
        return
    fig = Figure(figsize=(8, 4.5))
    ax = fig.subplots()
    for state, style in STYLE.items():
        points = [(t.number, trial_value(t)) for t in trials if t.state.name == state]
        if points:
            ax.scatter(*zip(*points), s=22, **style)
    done = sorted((t.number, t.value) for t in trials if t.state.name == "COMPLETE")
    if done:
        xs, ys = zip(*done)
        ax.step(xs, np.maximum.accumulate(ys), where="post", color="C3", label="best so far")
    ax.set(xlabel="trial", ylabel="best validation accuracy", title="optimization history")
    ax.legend(loc="lower right")
    fig.tight_layout()
    save_figure(directory / "history.png", fig, dpi=100)


def plot_importance(study, directory: Path) -> None:
    """importance.png: parameter importances (Optuna's default evaluator, on the completed trials)."""
    trials = finished_trials(study)
    if not trials:
        return
    evaluator = optuna.importance.PedAnovaImportanceEvaluator()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            importance = optuna.importance.get_param_importances(study, evaluator=evaluator)
    except Exception as e:  # too few completed trials, or no parameter varied
        messages.info(f"no parameter importances ({type(e).__name__}: {e})")
        return
    if not importance:
        return
    fig = Figure(figsize=(7, 0.5 * len(importance) + 1.5))
    ax = fig.subplots()
    names = list(importance)[::-1]
    ax.barh([plain(n) for n in names], [importance[n] for n in names], color="C0")
    ax.set(
        xlabel=f"importance ({type(evaluator).__name__}, normalized)",
        title=f"parameter importances ({sum(t.state.name == 'COMPLETE' for t in trials)} completed trials)",
    )
    fig.tight_layout()
    save_figure(directory / "importance.png", fig, dpi=100)


def plot_params(study, dists: dict, directory: Path) -> None:
    """params.png: validation accuracy against each parameter."""
    trials = finished_trials(study)
    if not trials:
        return
    cols = min(3, len(dists))
    rows = math.ceil(len(dists) / cols)
    fig = Figure(figsize=(4.2 * cols, 3.4 * rows))
    axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
    for ax, (key, dist) in zip(axes, dists.items()):
        for state, style in STYLE.items():
            points = [(t.params[key], trial_value(t)) for t in trials if t.state.name == state and key in t.params]
            if not points:
                continue
            xs, ys = zip(*points)
            if isinstance(dist, CategoricalDistribution):
                xs = [list(dist.choices).index(x) for x in xs]
            ax.scatter(xs, ys, s=18, alpha=0.8, **style)
        if isinstance(dist, CategoricalDistribution):
            ax.set_xticks(range(len(dist.choices)), [plain(external(c)) for c in dist.choices])
        elif dist.log:
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set(xlabel=plain(key), ylabel="val accuracy")
    for ax in axes[len(dists) :]:
        ax.set_visible(False)
    axes[0].legend(loc="lower right", fontsize=8)
    fig.suptitle("validation accuracy against each parameter")
    fig.tight_layout()
    save_figure(directory / "params.png", fig, dpi=90)
