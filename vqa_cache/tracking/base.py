"""The callback interface between the fit loop and the trackers, and what they log.

The fit loop (training/loop.py) calls, on rank 0 only:
    start(run_dir, config)   after config.json is written (a resumed run: again, from where it resumes)
    steps(first, losses)     after each epoch: the train loss of optimizer steps first, first + 1, ... (one
                             float per step, the mean over its questions; read once an epoch, so a step
                             costs no host sync)
    epoch(row)               after each epoch: its metrics.json row
    end(metrics)             when the run finished: metrics.json
and session.py closes each tracker with the run's status (FINISHED, KILLED for an interrupt or a pruned
sweep trial, else FAILED).

What is logged (the same names in every tracker):
    step/train_loss          per optimizer step (step = (epoch - 1) * steps per epoch + k)
    every number of an epoch's metrics.json row but "epoch", at step = the epoch: train_loss, val_loss,
    val_accuracy, val_accuracy_per_type/<type>, lr (and encoder_lr), seconds, ...
    params: the recipe (optim.lr, head.name, features.image.encoder, ...), cache_keys.image and .question,
    encoders.image / .image_weights / .text / .text_weights, head_config.*, vocabulary.*, mode
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from ..errors import BadInput

# tracker name -> (the module it needs, the extra that installs it)
TRACKERS = {"tensorboard": ("tensorboard", "tensorboard"), "mlflow": ("mlflow", "mlflow"), "wandb": ("wandb", "wandb")}


class Callback:
    """One tracker: what the fit loop tells it (see the module docstring). Every method may be left alone."""

    def start(self, run_dir: Path, config: dict) -> None:
        pass

    def steps(self, first: int, losses: list[float]) -> None:
        pass

    def epoch(self, row: dict) -> None:
        pass

    def end(self, metrics: dict) -> None:
        pass

    def close(self, status: str) -> None:
        pass


def check_names(names) -> tuple[str, ...]:
    """--log values, checked before any work: known names, their libraries installed (else one line naming
    the install command). A name given twice counts once."""
    names = (names,) if isinstance(names, str) else tuple(names or ())
    out = []
    for name in names:
        if name not in TRACKERS:
            raise BadInput(f"--log {name!r}: expected one of {', '.join(TRACKERS)}")
        module, extra = TRACKERS[name]
        if importlib.util.find_spec(module) is None:
            raise BadInput(
                f"--log {name}: {module} is not installed; install it with "
                f"pip install 'vqa-cache[{extra}]' (or pip install {module})"
            )
        if name not in out:
            out.append(name)
    return tuple(out)


def epoch_values(row: dict) -> dict[str, float]:
    """The numbers of a metrics.json row, but the epoch, nested dicts flattened with "/"
    (val_accuracy_per_type/yes/no)."""
    out = {}
    for key, value in row.items():
        if isinstance(value, dict):
            out.update({f"{key}/{k}": v for k, v in epoch_values(value).items()})
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and key != "epoch":
            out[key] = value
    return out


def flatten(prefix: str, value, out: dict) -> dict:
    """Nested dicts -> dotted keys; lists and None as JSON text."""
    if isinstance(value, dict):
        for k, v in value.items():
            flatten(f"{prefix}.{k}" if prefix else str(k), v, out)
    elif isinstance(value, (str, int, float, bool)):
        out[prefix] = value
    else:
        out[prefix] = json.dumps(value)
    return out


def params_of(config: dict) -> dict:
    """A run's hyperparameters, cache keys and encoder identities, from its config.json (module docstring)."""
    out = flatten("", config.get("recipe") or {}, {})
    specs, enc = config.get("cache_specs") or {}, config.get("encoders") or {}
    image, text = specs.get("image") or {}, specs.get("question") or {}
    recipe_features = (config.get("recipe") or {}).get("features") or {}
    out.update(
        {
            "mode": config.get("mode", "train"),
            "encoders.image": image.get("encoder") or (recipe_features.get("image") or {}).get("encoder", ""),
            "encoders.image_weights": image.get("weights") or enc.get("image", ""),
            "encoders.text": text.get("encoder") or (recipe_features.get("text") or {}).get("encoder", ""),
            "encoders.text_weights": text.get("weights") or enc.get("text", ""),
        }
    )
    for part in ("cache_keys", "head_config", "vocabulary"):
        flatten(part, config.get("head" if part == "head_config" else part) or {}, out)
    return {k: v for k, v in out.items() if k}
