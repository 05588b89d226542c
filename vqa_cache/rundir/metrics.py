"""metrics.json: {"epochs": [one row per finished epoch], "best": {"epoch", "val_accuracy"}}, rewritten
whole after every epoch (a reader never sees half a file), and the one reader of it, which checks the shape
and the types of what it returns."""

from __future__ import annotations

from pathlib import Path

from ..errors import BadInput
from .checks import check_best, check_row
from .files import read_json_object, write_json
from .layout import METRICS


def write_metrics(run_dir: Path, history: list, best: dict) -> dict:
    metrics = {"epochs": history, "best": best}
    write_json(Path(run_dir) / METRICS, metrics)
    return metrics


def read_metrics(run_dir, missing: str | None = None) -> dict:
    """RUN/metrics.json, checked: {"epochs": [rows: epoch, losses, accuracies, learning rates, seconds],
    "best": {"epoch", "val_accuracy"}}; BadInput naming the field that is wrong, or `missing` (default: a
    message saying no epoch finished) when there is no file."""
    path = Path(run_dir) / METRICS
    metrics = read_json_object(
        path, missing or f"{run_dir}: no metrics.json (not a run directory, or no epoch finished yet)"
    )
    if not (isinstance(metrics.get("epochs"), list) and "best" in metrics):
        raise BadInput(f"{path}: not the metrics of a vqa-cache run (epochs and best)")
    for i, row in enumerate(metrics["epochs"]):
        check_row(path, i, row)
    check_best(path, metrics["best"])
    return metrics


def has_metrics(run_dir) -> bool:
    """Whether an epoch of the run finished (metrics.json is there)."""
    return (Path(run_dir) / METRICS).is_file()
