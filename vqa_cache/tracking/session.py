"""A run's trackers as one Callbacks, opened and closed around the run (session)."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

from .base import Callback, check_names
from .writers import make


class Callbacks(Callback):
    """Several callbacks as one; `wants_steps` is False when there are none (the loop then keeps no step
    losses)."""

    def __init__(self, items=()):
        self.items = list(items)
        self.wants_steps = bool(self.items)

    def start(self, run_dir, config):
        for c in self.items:
            c.start(Path(run_dir), config)

    def steps(self, first, losses):
        for c in self.items:
            c.steps(first, losses)

    def epoch(self, row):
        for c in self.items:
            c.epoch(row)

    def end(self, metrics):
        for c in self.items:
            c.end(metrics)

    def close(self, status):
        for c in self.items:
            c.close(status)


NONE = Callbacks()


@contextmanager
def session(names, label: str | None = None):
    """The Callbacks of the trackers `names` (checked), closed with the run's status when the block ends.
    label: the run's name in mlflow and wandb (default: the run directory's name); a sweep names its trials
    SWEEP/trials/NNNN."""
    callbacks = Callbacks(make(name, label) for name in check_names(names))
    status = "FAILED"
    try:
        yield callbacks
        status = "FINISHED"
    except BaseException as e:
        status = "KILLED" if isinstance(e, KeyboardInterrupt) or type(e).__name__ == "TrialPruned" else "FAILED"
        raise
    finally:
        callbacks.close(status)
