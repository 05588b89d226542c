"""The finetune command's recipe: its options (by name, options.py) over a recipe file, and with
`--init-head RUN` the encoders of RUN unless given here, so that the head meets the features it was trained on."""

from __future__ import annotations

import json
import os

from .. import messages
from ..options import feature_overrides, train_recipe
from ..recipes import FinetuneRecipe
from ..rundir import read_run_config

# what `--init-head RUN` takes from RUN's recipe (features.*), unless given on the command line or with --set
ENCODER_KEYS = (
    "image.encoder",
    "image.weights",
    "image.size",
    "image.features",
    "text.encoder",
    "text.weights",
    "text.pooling",
    "text.max_length",
    "text.tokens",
)


def finetune_recipe(recipe, options: dict) -> FinetuneRecipe:
    """The finetune options (by name, options.py) -> a FinetuneRecipe (the same overrides as `train`). With
    finetune.init_head = RUN, the image and text encoders are RUN's (ENCODER_KEYS), except the keys given
    as options or `set` items, so that the head meets the features it was trained on; it prints what it
    took."""
    built = train_recipe(recipe, options, cls=FinetuneRecipe)[0]
    if not built.finetune.init_head:
        return built
    given = [key for key, _ in feature_overrides("features.", **options)] + [
        item.partition("=")[0].strip() for item in options.get("set", ())
    ]

    def explicit(key):
        return any(f"features.{key}" == g or f"features.{key}".startswith(g + ".") for g in given)

    run = run_encoders(built.finetune.init_head)
    taken = {k: v for k, v in run.items() if not explicit(k)}
    built = train_recipe(recipe, options, cls=FinetuneRecipe, extra=[(f"features.{k}", v) for k, v in taken.items()])[0]
    if os.environ.get("RANK", "0") == "0":  # under torchrun, rank 0 alone says it
        kept = [f"{k}={json.dumps(feature_value(built, k))}" for k in run if k not in taken]
        messages.info(
            f"--init-head {built.finetune.init_head}: encoders as that run's: "
            f"{', '.join(f'{k}={json.dumps(v)}' for k, v in taken.items()) or 'none'}"
            + (f"; given here: {', '.join(kept)}" if kept else "")
        )
    return built


def feature_value(recipe: FinetuneRecipe, key: str):
    """recipe.features.image.size for key "image.size"."""
    part, name = key.split(".")
    return getattr(getattr(recipe.features, part), name)


def run_encoders(run_dir) -> dict:
    """The ENCODER_KEYS values of a run's recipe (its config.json). Weights as its cache recorded them:
    `random`, `pretrained` or the weights file, so that `auto` cannot resolve to other weights now."""
    config = read_run_config(run_dir)
    features = config["recipe"].get("features")
    features = features if isinstance(features, dict) else {}
    out = {}
    for key in ENCODER_KEYS:
        part, name = key.split(".")
        value = features.get(part, {}).get(name) if isinstance(features.get(part), dict) else None
        if value is not None:
            out[key] = value
    specs = config.get("cache_specs", {})
    image, text = str(specs.get("image", {}).get("weights", "")), specs.get("question", {})
    if image:
        out["image.weights"] = (
            "random"
            if image.startswith("random:")
            else out.get("image.weights")
            if image.startswith("sha256:")
            else "pretrained"
        )
    if text:
        out["text.weights"] = "random" if text.get("encoder") == "bow" else "pretrained"
    return out
