"""Command options -> recipe overrides and recipes, and the `extract` command that makes a cache.

The CLI and the Python API (vqa_cache/api/) both come here, so an option means the same in both: its name
is the CLI's flag with underscores (`--image-size` -> image_size; `--set` -> set), `command_options`
checks the names (an unknown one is bad input naming the close ones) and makes the values uniform.

An option given is a typed override of one recipe key (never re-parsed: a path stays the path); `set`
items ("KEY=VALUE") come after them and may refine what an option only implied, but not contradict an
option given in the same call. The feature options (dataset, image_encoder, ...) name a cache: extract
sets them at the top of its recipe, train-like commands under `features.`.
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path

from . import recipes
from .errors import BadInput, close_matches

# (name, flag, recipe key) of the options that set a recipe value. The feature options, in the order
# `extract` commands repeat them:
FEATURE_KEYS = (
    ("dataset", "--dataset", "dataset.name"),
    ("split", "--split", "dataset.splits"),
    ("limit", "--limit", "dataset.limit"),
    ("image_encoder", "--image-encoder", "image.encoder"),
    ("text_encoder", "--text-encoder", "text.encoder"),
    ("weights", "--weights", "image.weights"),
    ("features", "--features", "image.features"),
    ("image_size", "--image-size", "image.size"),
    ("answer_types", "--answer-types", "dataset.answer_types"),
    ("image_fraction", "--image-fraction", "dataset.image_fraction"),
    ("val_fraction", "--val-fraction", "dataset.val_fraction"),
    ("data_seed", "--data-seed", "dataset.seed"),
    ("skip_missing", "--skip-missing", "dataset.skip_missing"),
)
EXTRACT_KEYS = (
    ("batch_size", "--batch-size", "image.batch_size"),
    ("workers", "--workers", "image.workers"),
    ("device", "--device", "device"),
    ("precision", "--precision", "precision"),
    ("shard_size", "--shard-size", "shard_size"),
    ("skip_bad", "--skip-bad", "skip_bad"),
)
TRAIN_KEYS = (
    ("head", "--head", "head.name"),
    ("epochs", "--epochs", "optim.epochs"),
    ("lr", "--lr", "optim.lr"),
    ("batch_size", "--batch-size", "optim.batch_size"),
    ("seed", "--seed", "seed"),
    ("precision", "--precision", "precision"),
)
FINETUNE_KEYS = (
    ("train_encoders", "--train-encoders", "finetune.train_encoders"),
    ("lora_r", "--lora-r", "finetune.lora_r"),
    ("encoder_lr", "--encoder-lr", "finetune.encoder_lr"),
    ("accumulate", "--accumulate", "finetune.accumulate"),
    ("checkpointing", "--checkpointing", "finetune.checkpointing"),
    ("init_head", "--init-head", "finetune.init_head"),
)
# each command's options: (those that set a recipe value, those that say what the command does with it)
COMMANDS = {
    "extract": (FEATURE_KEYS + EXTRACT_KEYS, ("set", "no_wait", "dry_run", "threads")),
    "train": (FEATURE_KEYS + TRAIN_KEYS, ("set", "out", "resume", "extend", "stream", "threads", "log")),
    "finetune": (FEATURE_KEYS + TRAIN_KEYS + FINETUNE_KEYS, ("set", "out", "resume", "extend", "threads", "log")),
    "sweep": (FEATURE_KEYS, ("set", "trials", "jobs", "parallel", "out", "resume", "threads", "log")),
}
MANY = ("split", "answer_types", "set", "log")  # options given any number of times: a list of strings
# the types of the options that set no recipe value (recipes.build checks the others)
TYPES = {
    "extend": str,
    "trials": int,
    "jobs": int,
    "parallel": int,
    "threads": int,
    "out": str,
    "resume": bool,
    "stream": bool,
    "no_wait": bool,
    "dry_run": bool,
}


def option_names(command: str) -> list[str]:
    """The options of a command (extract, train, finetune, sweep), by name."""
    keys, others = COMMANDS[command]
    return [name for name, _, _ in keys] + list(others)


def command_options(command: str, options: dict, also=()) -> dict:
    """The options of one call (the CLI's or the API's), checked and made uniform: an unknown name is
    BadInput naming the close ones (`also`: more names the caller takes itself); an option not given
    (None, or an empty list) is left out; a path-like value becomes its str; a MANY option is a tuple of
    strings (one str is a tuple of one); the TYPES are checked."""
    known = option_names(command) + list(also)
    out = {}
    for name, value in options.items():
        if name not in known:
            raise BadInput(f"{command}: unknown option {name!r} ({close_matches(name, known, 'options')})")
        if isinstance(value, os.PathLike):
            value = os.fspath(value)
        if name in MANY and value is not None:
            value = (value,) if isinstance(value, str) else value
            if not isinstance(value, (list, tuple)) or not all(isinstance(v, (str, os.PathLike)) for v in value):
                raise BadInput(f"{command}: option {name} = {value!r}: expected a string or a list of strings")
            value = tuple(os.fspath(v) for v in value)
        kind = TYPES.get(name)
        if kind and value is not None and (not isinstance(value, kind) or isinstance(value, bool) != (kind is bool)):
            raise BadInput(f"{command}: option {name} = {value!r}: expected {kind.__name__}")
        if name == "threads" and value is not None and value < 1:
            raise BadInput(f"{command}: --threads {value}: expected at least 1 (leave it out for the default)")
        if name == "set" and command != "extract" and value is not None:
            value = tuple(feature_spelling(item) for item in value)
        if value is not None and value != ():
            out[name] = value
    return out


# the keys of an extract recipe that a train recipe has under `features.` (device and precision: its own)
EXTRACT_ONLY = ("dataset", "image", "text", "shard_size", "skip_bad")


def feature_spelling(item: str) -> str:
    """A train-like command's `--set` item in extract's spelling (`text.ids=true`) means the same feature
    setting as there: `features.text.ids=true`."""
    key, sep, _ = item.partition("=")
    return f"features.{item.lstrip()}" if sep and key.strip().split(".")[0] in EXTRACT_ONLY else item


def text_model_weights(current):
    """The text weights for an explicit `--text-encoder MODEL`: the recipe's, except that `random`
    (which means bag-of-words) gives way to `auto`: the model the user named is the one loaded."""
    return "auto" if current in (None, "random") else current


def label(flag: str, value) -> str:
    """How an option was given, for messages: `--epochs 3`, `--skip-bad`, `--no-checkpointing`."""
    if isinstance(value, bool):
        return flag if value else f"--no-{flag[2:]}"
    return f"{flag} {value}"


def feature_settings(prefix: str = "", **feature) -> list[tuple]:
    """The feature options given -> (label, recipe key, value) settings, values as typed (prefix 'features.'
    for train recipes). `--weights auto|pretrained|random` also sets the text weights (`random` = bag-of-words)
    unless `--text-encoder` names a model: an explicit encoder always wins over that shorthand (and over
    `random` text weights in the recipe). Settings implied by another option have no label."""
    out: list[tuple] = []
    for name, flag, key in FEATURE_KEYS:
        value = feature.get(name)
        if name == "answer_types":
            value = tuple(t.strip() for v in value or () for t in v.split(",") if t.strip())
        if value is None or value == ():
            continue
        if isinstance(value, tuple):
            out.append((" ".join(f"{flag} {v}" for v in value), prefix + key, list(value)))
        else:
            out.append((label(flag, value), prefix + key, value))
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


def given(options: dict, keys) -> list[tuple]:
    """(label, recipe key, value) settings of the options among `keys` ((name, flag, key) triples) that
    were given."""
    return [
        (label(flag, options[name]), key, options[name]) for name, flag, key in keys if options.get(name) is not None
    ]


def option_overrides(settings: list[tuple], sets=(), extra=()) -> list:
    """Typed overrides of the options given (label, key, value), then `extra` typed (key, value) pairs, then
    the `set` items, which may refine what an option only implied. A `set` item that contradicts an option
    given in the same call (`--epochs 3 --set optim.epochs=5`, `--text-encoder DIR --set
    text.weights=random`) is bad input naming both."""
    for item in sets:
        if not isinstance(item, str):
            continue
        key, _, text = item.partition("=")
        value = recipes.parse_value(text.strip())
        for label_, k, v in settings:
            if label_ is not None and k == key.strip() and (v(value) if callable(v) else v) != value:
                raise BadInput(f"{label_} conflicts with --set {item}: give one of them")
    return [(k, v) for _, k, v in settings] + list(extra) + list(sets)


def extract_recipe(recipe, options: dict):
    """The extract options (by name) -> the ExtractRecipe."""
    data = recipes.load_extract_dict(recipe)
    settings = feature_settings("", **options) + given(options, EXTRACT_KEYS)
    recipes.apply_overrides(data, option_overrides(settings, options.get("set", ())))
    return recipes.build(recipes.ExtractRecipe, data)


def train_recipe(recipe, options: dict, cls=None, extra=()):
    """The train options (by name; with cls FinetuneRecipe, the finetune options too) -> (recipe of `cls`,
    default TrainRecipe; the extract command of its cache). `extra`: typed (key, value) overrides applied
    after the options, before the `set` items."""
    cls = cls or recipes.TrainRecipe
    data = recipes.load_train_dict(recipe)
    if "finetune" in data and not issubclass(cls, recipes.FinetuneRecipe):
        raise BadInput(
            f"{recipe}: a finetune recipe (it has a [finetune] table): run it with `vqa-cache finetune {recipe}`"
        )
    keys = TRAIN_KEYS + (FINETUNE_KEYS if issubclass(cls, recipes.FinetuneRecipe) else ())
    settings = feature_settings("features.", **options) + given(options, keys)
    recipes.apply_overrides(data, option_overrides(settings, options.get("set", ()), extra))
    built = recipes.build(cls, data)
    # how to make the cache this run reads, for the error message when it is missing
    ref = recipes.read_toml(recipe).get("features") if recipe else None
    return built, extract_command(ref, options, options.get("set", ()))


def sweep_overrides(recipe, options: dict) -> tuple[list, str]:
    """A sweep's feature options -> (typed overrides of its base recipe, the extract command of its cache).
    A `set` item that contradicts a feature option is bad input, as for train."""
    data = recipes.read_toml(recipe) if recipe else {}
    ref = data.get("features")
    if not isinstance(ref, str) and isinstance(data.get("base"), str):
        base = recipes.resolve_relative(data["base"], Path(recipe), "base", "train recipe")
        ref = recipes.read_toml(base).get("features")
    settings = feature_settings("features.", **options)
    option_overrides(settings, options.get("set", ()))
    return [(k, v) for _, k, v in settings], extract_command(ref, options)


def extract_command(ref, feature: dict, sets=()) -> str:
    """The `extract` command that makes the cache of these feature options (and `--set features.*` items)."""
    argv = ["vqa-cache", "extract"] + ([ref] if isinstance(ref, str) else []) + feature_argv(feature)
    for item in sets:
        if isinstance(item, str) and item.startswith("features."):
            argv += ["--set", item[len("features.") :]]
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
