"""Type checks of what a run's JSON files hold, so that a malformed file is one line naming the field (and
a table of runs can mark that run unreadable and go on), never a TypeError deep in a reader."""

from __future__ import annotations

from pathlib import Path

from ..errors import BadInput


def number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def count(value, least: int = 0) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= least


# a head's config (heads.registry.KEYS + SETTINGS): what each key must be where it is present
HEAD_FIELDS = {
    "name": (lambda v: isinstance(v, str) and v != "", "a head name"),
    "image_dim": (lambda v: count(v, 1), "a positive integer"),
    "question_dim": (lambda v: count(v, 1), "a positive integer"),
    "num_answers": (lambda v: count(v, 1), "a positive integer"),
    "hidden": (lambda v: count(v, 1), "a positive integer"),
    "dropout": (lambda v: number(v) and 0 <= v < 1, "a number in [0, 1)"),
    "layers": (lambda v: count(v, 0), "an integer >= 0"),
    "embed": (lambda v: count(v, 0), "an integer >= 0"),
    "standardize": (lambda v: isinstance(v, bool), "true or false"),
}


def check_head(path: Path, head, where: str = "head") -> None:
    """A head config as a checkpoint and config.json record it (keys present are checked)."""
    if not isinstance(head, dict):
        raise BadInput(f"{path}: {where} is {type(head).__name__}, expected an object")
    for key, (ok, expected) in HEAD_FIELDS.items():
        if key in head and not ok(head[key]):
            raise BadInput(f"{path}: {where}.{key} = {head[key]!r} (expected {expected})")


def check_row(path: Path, i: int, row) -> None:
    """One metrics.json epoch row: epoch an integer; losses, accuracies, learning rates and seconds numbers
    (null allowed for a loss that was not measured); per-type accuracies an object of numbers. Keys added
    later (by newer versions) are not checked here."""
    where = f"{path}: epochs[{i}]"
    if not isinstance(row, dict):
        raise BadInput(f"{where} is {type(row).__name__}, expected an object")
    if not count(row.get("epoch")):
        raise BadInput(f"{where}.epoch = {row.get('epoch')!r} (expected an integer >= 0)")
    for key, value in row.items():
        if key.endswith(("_loss", "accuracy", "seconds", "_lr")) or key == "lr":
            if not (number(value) or (value is None and key.endswith("_loss"))):
                raise BadInput(f"{where}.{key} = {value!r} (expected a number)")
    per_type = row.get("val_accuracy_per_type", {})
    if not (isinstance(per_type, dict) and all(isinstance(k, str) and number(v) for k, v in per_type.items())):
        raise BadInput(f"{where}.val_accuracy_per_type: expected an object of answer type -> accuracy")


def check_best(path: Path, best) -> None:
    if not isinstance(best, dict):
        raise BadInput(f"{path}: best is {type(best).__name__}, expected an object")
    if not count(best.get("epoch")):
        raise BadInput(f"{path}: best.epoch = {best.get('epoch')!r} (expected an integer >= 0)")
    if not number(best.get("val_accuracy")):
        raise BadInput(f"{path}: best.val_accuracy = {best.get('val_accuracy')!r} (expected a number)")


def check_object(path: Path, config: dict, key: str) -> None:
    """config[key], where present, is a JSON object."""
    if key in config and not isinstance(config[key], dict):
        raise BadInput(f"{path}: {key} is {type(config[key]).__name__}, expected an object")
