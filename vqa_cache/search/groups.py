"""`sweep --parallel K`: trials asked K at a time and trained together (training/together.py), each
group one pass over the cache; trials whose batches would differ (batch size, what the head reads) go
to groups of their own. Optuna's ask-and-tell: the sampler proposes the K trials at once (TPE's
constant liar keeps them apart), the pruner stops a trial from its epochs as in a sequential sweep."""

from __future__ import annotations

import time
from pathlib import Path

import optuna
from optuna.trial import TrialState

from ..errors import Diverged
from ..rundir import drop_checkpoints
from ..training.together import group_key, start, train_together
from .space import make_recipe, suggest


def trial_dir(directory: Path, trial) -> Path:
    return directory / "trials" / f"{trial.number:04d}"


def close_trial(trial, run: Path, started: float) -> None:
    """A trial's end, however it ended: its seconds recorded, its checkpoints dropped (trials are retrained
    from best.toml, not reused)."""
    trial.set_user_attr("seconds", round(time.time() - started, 2))
    drop_checkpoints(run)


def reporter(trial):
    """A trial's on_epoch: its validation accuracy reported to the pruner, which may stop it there."""

    def on_epoch(epoch, row):
        trial.set_user_attr("epochs", epoch)
        trial.report(row["val_accuracy"], epoch)
        if trial.should_prune():
            raise optuna.TrialPruned(f"val accuracy {row['val_accuracy']:.4f} at epoch {epoch}")

    return on_epoch


class TrialGroups:
    """The trials of a sweep, K at a time (settings.parallel), each group trained together."""

    def __init__(self, base: dict, dists: dict, settings, directory: Path, root: Path, features_for, log=()):
        self.base, self.dists, self.settings, self.directory = base, dists, settings, directory
        self.root, self.features_for, self.log = root, features_for, log

    def optimize(self, study, remaining: int, workers: int, callbacks) -> list[str]:
        """Run `remaining` trials, `workers` threads stepping each group; callbacks(study, frozen trial)
        after each trial, as study.optimize calls them. Returns notes for the user (groups split)."""
        notes, left = [], remaining
        while left > 0:
            asked = [study.ask() for _ in range(min(self.settings.parallel, left))]
            left -= len(asked)
            told: set[int] = set()
            try:
                groups: dict[str, list] = {}
                for trial in asked:
                    params = {k: suggest(trial, k, dist) for k, dist in self.dists.items()}
                    recipe, _ = make_recipe(self.base, params, self.settings.epochs)
                    groups.setdefault(group_key(recipe), []).append((trial, recipe))
                if len(groups) > 1:
                    sizes = "+".join(str(len(g)) for g in groups.values())
                    notes.append(
                        f"trials {asked[0].number}-{asked[-1].number}: trained in {len(groups)} groups ({sizes}): "
                        f"their batch size or what their heads read differ"
                    )
                for group in groups.values():
                    for trial, state, value in self.train(group, workers):
                        frozen = study.tell(trial, value, state)
                        told.add(trial.number)
                        for callback in callbacks:
                            callback(study, frozen)
            except BaseException:
                for trial in asked:  # (asked and never told: failed, run again by --resume)
                    if trial.number not in told:
                        study.tell(trial, state=TrialState.FAIL)
                raise
        return notes

    def train(self, group: list, workers: int):
        """Train one group; yields (trial, state, value) for each of its trials, then raises the first
        error that was not a pruning (its trial already yielded as failed)."""
        started = time.time()
        members = [
            start(
                recipe,
                self.root,
                str(trial_dir(self.directory, trial)),
                self.features_for(recipe),
                on_epoch=reporter(trial),
                log=self.log,
                label=f"{self.directory.name}/trials/{trial.number:04d}",
            )
            for trial, recipe in group
        ]
        outcomes = train_together(members, workers)
        error = None
        for (trial, _), outcome in zip(group, outcomes):
            close_trial(trial, trial_dir(self.directory, trial), started)
            if isinstance(outcome, Diverged):  # a setting that diverges is a bad setting, not a broken sweep
                trial.set_user_attr("diverged", str(outcome))
                yield trial, TrialState.PRUNED, None
            elif isinstance(outcome, optuna.TrialPruned):
                yield trial, TrialState.PRUNED, None
            elif isinstance(outcome, BaseException):
                error = error or outcome
                yield trial, TrialState.FAIL, None
            else:
                yield trial, TrialState.COMPLETE, outcome["best"]["val_accuracy"]
        if error is not None:
            raise error
