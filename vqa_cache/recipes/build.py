"""Recipe data (nested dicts, as TOML gives them) -> the recipe dataclasses, checked: unknown keys, wrong
types and values out of range are bad input named by their recipe key (`optim.epochs must be >= 1`)."""

from __future__ import annotations

import dataclasses
import math

from ..errors import BadInput
from .settings import OptimSettings

# Values outside these ranges are bad input, named by their recipe key (e.g. `optim.epochs must be >= 1`).
# Every float must be finite (no inf, no nan).
_AT_LEAST = {
    "ImageSettings.size": 16,
    "ImageSettings.batch_size": 1,
    "ImageSettings.workers": 0,
    "ImageSettings.max_pixels": 0,
    "TextSettings.max_length": 1,
    "TextSettings.batch_size": 1,
    "ExtractRecipe.shard_size": 1,
    "DatasetSettings.limit": 0,
    "HeadSettings.hidden": 0,
    "HeadSettings.layers": 0,
    "HeadSettings.embed": 0,
    "OptimSettings.epochs": 1,
    "OptimSettings.batch_size": 1,
    "OptimSettings.weight_decay": 0,
    "OptimSettings.warmup_epochs": 0,
    "OptimSettings.min_lr": 0,
    "OptimSettings.grad_clip": 0,
    "OptimSettings.patience": 0,
    "AugmentSettings.translate": 0,
    "OptimSettings.horizon_epochs": 0,
    "OptimSettings.step_epochs": 1,
    "AnswerSettings.top_k": 1,
    "AnswerSettings.min_count": 1,
}
# Upper bounds: no number is unbounded (1e308 warm-up epochs overflowed the schedule). A number without a
# bound of its own here gets CEILING.
CEILING = 10**9
_SEED = 2**32 - 1  # numpy's seeds are 32-bit
_AT_MOST = {
    "ImageSettings.size": 8192,
    "ImageSettings.batch_size": 1 << 20,
    "ImageSettings.workers": 1024,
    "ImageSettings.max_pixels": 1 << 40,
    "TextSettings.max_length": 1 << 16,
    "TextSettings.batch_size": 1 << 20,
    "ExtractRecipe.shard_size": 1 << 30,
    "DatasetSettings.limit": 1 << 40,
    "DatasetSettings.seed": _SEED,
    "HeadSettings.hidden": 1 << 16,
    "HeadSettings.layers": 1024,
    "HeadSettings.embed": 1 << 16,
    "OptimSettings.epochs": 1_000_000,
    "OptimSettings.batch_size": 1 << 24,
    "OptimSettings.weight_decay": 100,
    "OptimSettings.warmup_epochs": 1_000_000,
    "OptimSettings.min_lr": 10,
    "OptimSettings.grad_clip": 1e9,
    "OptimSettings.patience": 1_000_000,
    "AnswerSettings.top_k": 1 << 30,
    "AnswerSettings.min_count": 1 << 40,
    "TrainRecipe.seed": _SEED,
    "FinetuneSettings.lora_r": 1 << 16,
    "FinetuneSettings.lora_alpha": 1e6,
    "FinetuneSettings.eval_batch_size": 1 << 24,
    "FinetuneSettings.preload_gb": 1 << 20,
    "FinetuneSettings.workers": 1024,
    "AugmentSettings.translate": 1 << 16,
    "SweepSettings.seed": _SEED,
    "SweepSettings.parallel": 1024,
}
_AT_LEAST.update(
    {
        "DatasetSettings.seed": 0,
        "TrainRecipe.seed": 0,
        "SweepSettings.seed": 0,
        "FinetuneSettings.lora_r": 0,
        "FinetuneSettings.eval_batch_size": 1,
        "FinetuneSettings.preload_gb": 0,
        "FinetuneSettings.workers": 0,
        "AugmentSettings.translate": 0,
    }
)
_SHARE = (lambda v: 0 <= v <= 1, "in [0, 1]")
_LR = (lambda v: 0 < v <= 10, "in (0, 10]")  # a learning rate
_WITHIN = {
    "OptimSettings.lr": _LR,
    "FinetuneSettings.encoder_lr": _LR,
    "OptimSettings.eps": (lambda v: 0 < v < 1, "in (0, 1)"),
    "OptimSettings.momentum": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "OptimSettings.gamma": (lambda v: 0 < v <= 1, "in (0, 1]"),
    "OptimSettings.pct_start": (lambda v: 0 < v < 1, "in (0, 1)"),
    "ExtractRecipe.precision": (lambda v: v in ("auto", "fp32", "fp16", "bf16"), "one of auto, fp32, fp16, bf16"),
    "TrainRecipe.precision": (lambda v: v in ("auto", "fp32", "fp16", "bf16"), "one of auto, fp32, fp16, bf16"),
    "FinetuneRecipe.precision": (lambda v: v in ("auto", "fp32", "fp16", "bf16"), "one of auto, fp32, fp16, bf16"),
    "AugmentSettings.saturation": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "AugmentSettings.hue": (lambda v: 0 <= v <= 0.5, "in [0, 0.5]"),
    "AugmentSettings.crop": (lambda v: 0 < v <= 1, "in (0, 1]"),
    "OptimSettings.name": (lambda v: v in ("adamw", "adam", "sgd"), "one of adamw, adam, sgd"),
    "OptimSettings.schedule": (
        lambda v: v in ("cosine", "onecycle", "constant", "step"),
        "one of cosine, onecycle, constant, step",
    ),
    "HeadSettings.dropout": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "FinetuneSettings.lora_alpha": (lambda v: 0 < v <= 1e6, "in (0, 1e6]"),
    "FinetuneSettings.lora_dropout": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "AugmentSettings.hflip": _SHARE,
    "AugmentSettings.vflip": _SHARE,
    "AugmentSettings.brightness": _SHARE,
    "AugmentSettings.contrast": _SHARE,
    "OptimSettings.betas": (
        lambda v: len(v) == 2 and all(_number(b) and 0 <= b < 1 for b in v),
        "two numbers in [0, 1)",
    ),
}


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def check_range(cls, name: str, value, key: str) -> None:
    ids = [f"{c.__name__}.{name}" for c in cls.__mro__]  # (FinetuneRecipe.seed is TrainRecipe.seed)
    field_id = next((i for i in ids if i in _AT_LEAST or i in _AT_MOST or i in _WITHIN), ids[0])
    if isinstance(value, float) and not math.isfinite(value):
        raise BadInput(f"recipe key {key!r} must be a finite number, got {value!r}")
    if field_id in _AT_LEAST and value < _AT_LEAST[field_id]:
        raise BadInput(f"recipe key {key!r} must be >= {_AT_LEAST[field_id]}, got {value!r}")
    ceiling = _AT_MOST.get(field_id, CEILING)
    if _number(value) and field_id not in _WITHIN and value > ceiling:
        raise BadInput(f"recipe key {key!r} must be <= {ceiling}, got {value!r}")
    if _number(value) and value < -CEILING:
        raise BadInput(f"recipe key {key!r} must be >= {-CEILING}, got {value!r}")
    test, what = _WITHIN.get(field_id, (None, ""))
    if test is not None and not test(value):
        raise BadInput(f"recipe key {key!r} must be {what}, got {value!r}")


def check_together(obj, where: str) -> None:
    """Ranges that tie two keys: the schedule decays from optim.lr down to optim.min_lr; nesterov needs
    SGD's momentum."""
    if isinstance(obj, OptimSettings) and obj.min_lr > obj.lr:
        raise BadInput(f"recipe key {where + 'min_lr'!r} must be <= {where + 'lr'} ({obj.lr!r}), got {obj.min_lr!r}")
    if isinstance(obj, OptimSettings) and obj.nesterov and (obj.name != "sgd" or obj.momentum <= 0):
        raise BadInput(f'recipe key {where + "nesterov"!r} needs {where}name = "sgd" and {where}momentum > 0')


def build(cls, data: dict, where: str = ""):
    """Make dataclass `cls` from a nested dict; unknown keys and wrong types are bad input."""
    names = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise BadInput(f"unknown recipe key {where + unknown[0]!r} (known: {', '.join(sorted(names))})")
    kwargs = {}
    defaults = cls()
    for name, value in data.items():
        default = getattr(defaults, name)
        key = f"{where}{name}"
        if dataclasses.is_dataclass(default):
            if not isinstance(value, dict):
                raise BadInput(f"recipe key {key!r} must be a section, got {value!r}")
            kwargs[name] = build(type(default), value, key + ".")
        elif isinstance(default, tuple):
            kwargs[name] = tuple(value) if isinstance(value, (list, tuple)) else (value,)
        elif isinstance(default, bool):
            if not isinstance(value, bool):
                raise BadInput(f"recipe key {key!r} must be true or false, got {value!r}")
            kwargs[name] = value
        elif isinstance(default, float) and isinstance(value, (int, float)) and not isinstance(value, bool):
            kwargs[name] = float(value)
        elif isinstance(default, dict):
            if not isinstance(value, dict):
                raise BadInput(f"recipe key {key!r} must be a table, got {value!r}")
            kwargs[name] = value
        elif not isinstance(value, type(default)) or isinstance(value, bool) != isinstance(default, bool):
            raise BadInput(f"recipe key {key!r} must be {type(default).__name__}, got {value!r}")
        else:
            kwargs[name] = value
        if name in kwargs and not dataclasses.is_dataclass(kwargs[name]):
            check_range(cls, name, kwargs[name], key)
    obj = cls(**kwargs)
    check_together(obj, where)
    return obj


def to_dict(obj) -> dict:
    """A recipe as plain JSON-able data (for config.json and the checkpoints)."""
    return dataclasses.asdict(obj)
