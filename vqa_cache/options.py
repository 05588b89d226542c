"""Command-line options -> recipe overrides and recipes, and the `extract` command that makes a cache.

An option given on the command line is a typed override of one recipe key (never re-parsed: a path stays
the path); `--set KEY=VALUE` items come after them and may refine what an option only implied, but not
contradict an option given on the same command line. The feature options (--dataset, --image-encoder, ...)
name a cache: extract sets them at the top of its recipe, train-like commands under `features.`.
"""
from __future__ import annotations

import shlex
from pathlib import Path

from . import recipes
from .errors import BadInput

# (parameter, flag, recipe key) of the feature options, in the order `extract` commands repeat them
FEATURE_KEYS = (
    ("dataset", "--dataset", "dataset.name"), ("splits", "--split", "dataset.splits"),
    ("limit", "--limit", "dataset.limit"), ("image_encoder", "--image-encoder", "image.encoder"),
    ("text_encoder", "--text-encoder", "text.encoder"), ("weights", "--weights", "image.weights"),
    ("feature_kind", "--features", "image.features"), ("image_size", "--image-size", "image.size"),
    ("answer_types", "--answer-types", "dataset.answer_types"),
    ("image_fraction", "--image-fraction", "dataset.image_fraction"),
    ("val_fraction", "--val-fraction", "dataset.val_fraction"), ("data_seed", "--data-seed", "dataset.seed"),
    ("skip_missing", "--skip-missing", "dataset.skip_missing"),
)


def text_model_weights(current):
    """The text weights for an explicit `--text-encoder MODEL`: the recipe's, except that `random`
    (which means bag-of-words) gives way to `auto`: the model the user named is the one loaded."""
    return "auto" if current in (None, "random") else current


def feature_settings(prefix: str = "", **feature) -> list[tuple]:
    """The feature options given -> (label, recipe key, value) settings, values as typed (prefix 'features.'
    for train recipes). `--weights auto|pretrained|random` also sets the text weights (`random` = bag-of-words)
    unless `--text-encoder` names a model: an explicit encoder always wins over that shorthand (and over
    `random` text weights in the recipe). Settings implied by another option have no label."""
    out = []
    for name, flag, key in FEATURE_KEYS:
        value = feature.get(name)
        if name == "answer_types":
            value = tuple(t.strip() for v in value or () for t in v.split(",") if t.strip())
        if value is None or value == ():
            continue
        if isinstance(value, tuple):
            out.append((" ".join(f"{flag} {v}" for v in value), prefix + key, list(value)))
        else:
            out.append((flag if isinstance(value, bool) else f"{flag} {value}", prefix + key, value))
    weights, text = feature.get("weights"), feature.get("text_encoder")
    model = text is not None and text != "bow"
    if model:
        out.append((f"--text-encoder {text}", prefix + "text.weights", text_model_weights))
    if weights in ("auto", "pretrained") or (weights == "random" and not model):
        out.append((None, prefix + "text.weights", weights))
    return out


def feature_overrides(prefix: str = "", **feature) -> list[tuple]:
    """The feature options given -> typed ("key", value) overrides for recipes.apply_overrides."""
    return [(key, value) for _, key, value in feature_settings(prefix, **feature)]


def given(*options) -> list[tuple]:
    """(flag, recipe key, value) of command options -> settings for option_overrides, those given only."""
    return [(flag if isinstance(value, bool) else f"{flag} {value}", key, value) for flag, key, value in options
            if value is not None]


def option_overrides(settings: list[tuple], sets=()) -> list:
    """Typed overrides of the options given (label, key, value), then the `--set` items, which may refine what
    an option only implied. A `--set` that contradicts an option given on the same command line
    (`--epochs 3 --set optim.epochs=5`, `--text-encoder DIR --set text.weights=random`) is bad input
    naming both."""
    for item in sets:
        if not isinstance(item, str):
            continue
        key, _, text = item.partition("=")
        value = recipes.parse_value(text.strip())
        for label, k, v in settings:
            if label is not None and k == key.strip() and (v(value) if callable(v) else v) != value:
                raise BadInput(f"{label} conflicts with --set {item}: give one of them")
    return [(k, v) for _, k, v in settings] + list(sets)


def extract_recipe(recipe, batch_size, workers, device, shard_size, skip_bad, sets, feature: dict):
    """The extract options -> the ExtractRecipe."""
    data = recipes.load_extract_dict(recipe)
    settings = feature_settings("", **feature) + given(
        ("--batch-size", "image.batch_size", batch_size), ("--workers", "image.workers", workers),
        ("--device", "device", device), ("--shard-size", "shard_size", shard_size),
        ("--skip-bad", "skip_bad", skip_bad))
    recipes.apply_overrides(data, option_overrides(settings, sets))
    return recipes.build(recipes.ExtractRecipe, data)


def train_recipe(recipe, head, epochs, lr, batch_size, seed, sets, feature, cls=None):
    """The train-like options -> (recipe of `cls`, default TrainRecipe; the extract command of its cache)."""
    data = recipes.load_train_dict(recipe)
    settings = feature_settings("features.", **feature) + given(
        ("--head", "head.name", head), ("--epochs", "optim.epochs", epochs), ("--lr", "optim.lr", lr),
        ("--batch-size", "optim.batch_size", batch_size), ("--seed", "seed", seed))
    recipes.apply_overrides(data, option_overrides(settings, sets))
    built = recipes.build(cls or recipes.TrainRecipe, data)
    # how to make the cache this run reads, for the error message when it is missing
    ref = recipes.read_toml(recipe).get("features") if recipe else None
    return built, extract_command(ref, feature, sets)


def finetune_sets(train_encoders, lora_r, encoder_lr, accumulate, checkpointing, init_head, sets) -> list:
    """The finetune options (then the `--set` items) -> overrides for finetune_recipe's `sets`."""
    return option_overrides(given(
        ("--train-encoders", "finetune.train_encoders", train_encoders), ("--lora-r", "finetune.lora_r", lora_r),
        ("--encoder-lr", "finetune.encoder_lr", encoder_lr), ("--accumulate", "finetune.accumulate", accumulate),
        ("--checkpointing" if checkpointing else "--no-checkpointing", "finetune.checkpointing", checkpointing),
        ("--init-head", "finetune.init_head", init_head)), sets)


def sweep_overrides(recipe, sets, feature: dict) -> tuple[list, str]:
    """A sweep's feature options -> (typed overrides of its base recipe, the extract command of its cache).
    A `--set` that contradicts a feature option is bad input, as for train."""
    data = recipes.read_toml(recipe) if recipe else {}
    ref = data.get("features")
    if not isinstance(ref, str) and isinstance(data.get("base"), str):
        base = recipes.resolve_relative(data["base"], Path(recipe), "base", "train recipe")
        ref = recipes.read_toml(base).get("features")
    settings = feature_settings("features.", **feature)
    option_overrides(settings, sets)
    return [(k, v) for _, k, v in settings], extract_command(ref, feature)


def extract_command(ref, feature: dict, sets=()) -> str:
    """The `extract` command that makes the cache of these feature options (and `--set features.*` items)."""
    argv = ["vqa-cache", "extract"] + ([ref] if isinstance(ref, str) else []) + feature_argv(feature)
    for item in sets:
        if isinstance(item, str) and item.startswith("features."):
            argv += ["--set", item[len("features."):]]
    return shlex.join(argv)


def feature_argv(feature: dict) -> list[str]:
    """The feature options as they were given, to repeat them in an `extract` command."""
    argv = []
    for name, flag, _ in FEATURE_KEYS:
        value = feature.get(name)
        if isinstance(value, tuple):
            for v in value:
                argv += [flag, str(v)]
        elif value is True:
            argv.append(flag)
        elif value is not None and value is not False:
            argv += [flag, str(value)]
    return argv
