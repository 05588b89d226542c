"""Recipes: TOML files -> frozen dataclasses, with `--set key=value` overrides.

An extract recipe (extract/*.toml) says which dataset goes through which encoders.
A train recipe (train/*.toml) names the extract recipe whose cache it reads (`features = "..."`),
the head and the hyperparameters. Every value can be overridden on the command line with a
dotted key: `--set optim.lr=3e-4`, `--set features.image.size=128`.
"""
from __future__ import annotations

import dataclasses
import datetime
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import BadInput

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


@dataclass(frozen=True)
class DatasetSpec:
    name: str = "easyvqa"            # easyvqa | vqa2:DIR | vizwiz:DIR | csv:DIR
    splits: tuple = ()               # () = every split the dataset has
    limit: int = 0                   # at most N questions per split (0 = all)
    answer_types: tuple = ()         # keep only these answer types, e.g. ("yes/no",)
    image_fraction: float = 1.0      # sample this share of images, keep all their questions
    val_fraction: float = 0.1        # held-out share of images when a dataset has no val split
    seed: int = 0                    # for the two samplings above
    skip_missing: bool = False       # drop questions whose image file is missing
    options: dict = field(default_factory=dict)   # adapter-specific (csv column names, ...)


@dataclass(frozen=True)
class ImageSpec:
    encoder: str = "resnet50"        # any torchvision classification model
    weights: str = "auto"            # auto | pretrained | random | PATH to a state dict
    features: str = "pooled"         # pooled | grid | pooled+grid
    size: int = 224                  # images are resized to size x size
    batch_size: int = 64
    workers: int = 2                 # DataLoader processes decoding images
    max_pixels: int = 40_000_000     # larger images are unreadable (skip_bad skips them); 0 = PIL's limit


@dataclass(frozen=True)
class TextSpec:
    encoder: str = "tinybert"        # Hugging Face id or local directory, or "bow"
    weights: str = "auto"            # auto | pretrained | random (random = bag-of-words)
    pooling: str = "mean"            # mean | cls
    tokens: bool = False             # also store per-token states and masks
    max_length: int = 32
    batch_size: int = 256


@dataclass(frozen=True)
class ExtractRecipe:
    dataset: DatasetSpec = field(default_factory=DatasetSpec)
    image: ImageSpec = field(default_factory=ImageSpec)
    text: TextSpec = field(default_factory=TextSpec)
    device: str = "auto"             # auto | cpu | cuda
    shard_size: int = 4096           # rows per shard file
    skip_bad: bool = False           # skip unreadable images (recorded in the manifest)


@dataclass(frozen=True)
class HeadSpec:
    name: str = "concat"
    hidden: int = 1024
    dropout: float = 0.3


@dataclass(frozen=True)
class OptimSpec:
    epochs: int = 20
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 1e-4
    betas: tuple = (0.9, 0.999)
    eps: float = 1e-8
    warmup_epochs: float = 1.0       # linear warm-up, then cosine decay to min_lr
    min_lr: float = 1e-5
    grad_clip: float = 1.0
    patience: int = 5                # early stopping on validation accuracy (0 = off)


@dataclass(frozen=True)
class AnswerSpec:
    top_k: int = 1000                # vocabulary = the K most frequent training answers
    min_count: int = 1


@dataclass(frozen=True)
class TrainRecipe:
    features: ExtractRecipe = field(default_factory=ExtractRecipe)
    head: HeadSpec = field(default_factory=HeadSpec)
    optim: OptimSpec = field(default_factory=OptimSpec)
    answers: AnswerSpec = field(default_factory=AnswerSpec)
    seed: int = 0
    name: str = "run"                # run directory name under out/
    out: str = "runs"
    device: str = "auto"


@dataclass(frozen=True)
class AugmentSpec:
    """Answer-preserving image augmentation for finetune (off by default). Flips are skipped for an image
    when a question on it in the batch mentions left/right; colour jitter when one asks about colour."""
    enabled: bool = False
    hflip: float = 0.5               # probability of a horizontal flip
    vflip: float = 0.0               # probability of a vertical flip
    translate: int = 0               # random shift of up to N pixels (edge-replicated)
    brightness: float = 0.0          # colour jitter: brightness factor in [1-x, 1+x]
    contrast: float = 0.0            # colour jitter: contrast factor in [1-x, 1+x]


@dataclass(frozen=True)
class FinetuneSpec:
    """`vqa-cache finetune`: the encoders live in the graph (see vqa_cache/finetune.py)."""
    train_encoders: str = "none"     # none | top:N | all  (last N trunk stages / text layers)
    train_image: str = ""            # per-encoder override of train_encoders ("" = same)
    train_text: str = ""
    lora_r: int = 0                  # > 0: LoRA adapters (peft) in the trained part instead of full weights
    lora_alpha: float = 16.0
    lora_dropout: float = 0.05
    lora_text_targets: tuple = ("query", "value")
    lora_image: bool = True          # LoRA on the image trunk's Conv2d layers too
    encoder_lr: float = 1e-4         # head uses optim.lr
    accumulate: int = 1              # optimizer step every N batches
    checkpointing: bool = False      # gradient checkpointing of the trained encoder parts
    group_by_image: bool = False     # batches hold all questions of a few images: each image once per epoch
    init_head: str = ""              # RUN_DIR of a cached `train` run to start the head from
    eval_batch_size: int = 256
    preload_gb: float = 8.0          # decoded images are held in memory up to this size
    workers: int = 2                 # processes decoding images (once, at start)
    augment: AugmentSpec = field(default_factory=AugmentSpec)


@dataclass(frozen=True)
class FinetuneRecipe(TrainRecipe):
    finetune: FinetuneSpec = field(default_factory=FinetuneSpec)


def read_toml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise BadInput(f"recipe not found: {path}")
    try:
        return tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise BadInput(f"{path}: not valid TOML: {e}") from None


def parse_value(text: str) -> Any:
    """A `--set` value: a TOML value (3e-4, true, [1, 2], "x"); anything else is the text itself
    (`--set dataset.name=csv:/data/x`). A TOML date or time is also the text (no recipe value is one)."""
    try:
        value = tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text
    except RecursionError:
        raise BadInput(f"--set value {text[:40]!r}...: nested too deeply") from None
    return text if isinstance(value, (datetime.date, datetime.time)) else value


def apply_overrides(data: dict, overrides: list | tuple = ()) -> dict:
    """Apply overrides to a nested dict (in place) and return it. An override is a `--set` string
    "key.sub=VALUE" (VALUE parsed by parse_value) or a ("key.sub", value) pair: an option's value as typed,
    set as it is (never re-parsed: a path stays the path); a callable value gets the current value (None
    when there is none) and returns the new one."""
    for item in overrides:
        if isinstance(item, tuple):
            key, value = item
        else:
            key, sep, text = item.partition("=")
            if not sep or not key.strip():
                raise BadInput(f"--set expects KEY=VALUE, got {item!r}")
            value = parse_value(text.strip())
        *parents, leaf = key.strip().split(".")
        node = data
        for p in parents:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise BadInput(f"--set {key}: {p!r} is not a section")
        node[leaf] = value(node.get(leaf)) if callable(value) else value
    return data


# Values outside these ranges are bad input, named by their recipe key (e.g. `optim.epochs must be >= 1`).
# Every float must be finite (no inf, no nan).
_AT_LEAST = {"ImageSpec.size": 16, "ImageSpec.batch_size": 1, "ImageSpec.workers": 0, "TextSpec.max_length": 1,
             "TextSpec.batch_size": 1, "ExtractRecipe.shard_size": 1, "DatasetSpec.limit": 0, "HeadSpec.hidden": 1,
             "OptimSpec.epochs": 1, "OptimSpec.batch_size": 1, "OptimSpec.weight_decay": 0,
             "OptimSpec.warmup_epochs": 0, "OptimSpec.min_lr": 0, "OptimSpec.grad_clip": 0, "OptimSpec.patience": 0,
             "AnswerSpec.top_k": 1, "AnswerSpec.min_count": 1,
             "ImageSpec.max_pixels": 0}
_LR = (lambda v: 0 < v <= 10, "in (0, 10]")        # a learning rate
_WITHIN = {"OptimSpec.lr": _LR, "FinetuneSpec.encoder_lr": _LR,
           "OptimSpec.eps": (lambda v: 0 < v < 1, "in (0, 1)"),
           "HeadSpec.dropout": (lambda v: 0 <= v < 1, "in [0, 1)"),
           "OptimSpec.betas": (lambda v: len(v) == 2 and all(_number(b) and 0 <= b < 1 for b in v),
                               "two numbers in [0, 1)")}


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def check_range(cls, name: str, value, key: str) -> None:
    field_id = f"{cls.__name__}.{name}"
    if isinstance(value, float) and not math.isfinite(value):
        raise BadInput(f"recipe key {key!r} must be a finite number, got {value!r}")
    if field_id in _AT_LEAST and value < _AT_LEAST[field_id]:
        raise BadInput(f"recipe key {key!r} must be >= {_AT_LEAST[field_id]}, got {value!r}")
    test, what = _WITHIN.get(field_id, (None, ""))
    if test is not None and not test(value):
        raise BadInput(f"recipe key {key!r} must be {what}, got {value!r}")


def check_together(obj, where: str) -> None:
    """Ranges that tie two keys: the schedule decays from optim.lr down to optim.min_lr."""
    if isinstance(obj, OptimSpec) and obj.min_lr > obj.lr:
        raise BadInput(f"recipe key {where + 'min_lr'!r} must be <= {where + 'lr'} ({obj.lr!r}), got {obj.min_lr!r}")


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


def resolve_relative(ref: str, recipe_path: Path, key: str = "features", what: str = "extract recipe") -> Path:
    """A recipe names another by a path relative to the working directory or to itself."""
    p = Path(ref)
    for candidate in (p, recipe_path.parent / p, recipe_path.parent.parent / p):
        if candidate.is_file():
            return candidate
    raise BadInput(f"{recipe_path}: {key} = {ref!r}: no such {what}")


def load_extract_dict(path: str | None) -> dict:
    return read_toml(path) if path else {}


def load_train_dict(path: str | None) -> dict:
    """The train recipe as a dict, with its `features` reference replaced by that recipe's dict."""
    if not path:
        return {}
    data = read_toml(path)
    ref = data.get("features")
    if isinstance(ref, str):
        data["features"] = read_toml(resolve_relative(ref, Path(path)))
    data.setdefault("name", Path(path).stem)
    return data


def to_dict(obj) -> dict:
    """A recipe as plain JSON-able data (for config.json and the checkpoints)."""
    return dataclasses.asdict(obj)
