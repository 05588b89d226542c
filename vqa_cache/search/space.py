"""A sweep recipe: the base train recipe, the [sweep] settings, and the [space] of values to search, as
Optuna distributions (list-valued choices, like betas, stored as JSON strings)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from .. import recipes
from ..errors import BadInput

# with no recipe: the usual suspects around the default recipe
DEFAULT_SPACE = {
    "optim.lr": {"low": 1e-4, "high": 3e-3, "log": True},
    "optim.weight_decay": {"low": 1e-6, "high": 1e-2, "log": True},
    "head.dropout": {"low": 0.0, "high": 0.5},
    "head.hidden": {"choices": [256, 512, 1024]},
}


def load_sweep(path: str | None, overrides=(), feature_overrides=()) -> tuple[dict, recipes.SweepSettings, dict]:
    """(base train recipe as a dict, sweep settings, search space) from a sweep recipe.

    `overrides` are `--set` items: `sweep.*` and `space.*` keys go to those tables, the rest to the base
    recipe; `feature_overrides` (from the feature options) go to the base recipe."""
    data = recipes.read_toml(path) if path else {}
    sweep_data = data.pop("sweep", {})
    space_data = data.pop("space", None)
    base_ref = data.pop("base", None)
    if path:
        name = data.get("name", Path(path).stem)
        if isinstance(data.get("features"), str):
            data["features"] = recipes.read_toml(recipes.resolve_relative(data["features"], Path(path)))
    else:
        name = "sweep"
    base = {}
    if base_ref is not None:
        if not isinstance(base_ref, str):
            raise BadInput(f"{path}: base must be the path of a train recipe, got {base_ref!r}")
        base = recipes.load_train_dict(str(recipes.resolve_relative(base_ref, Path(path), "base", "train recipe")))
    deep_merge(base, data)
    base["name"] = name
    if not isinstance(sweep_data, dict) or not isinstance(space_data or {}, dict):
        raise BadInput(f"{path}: [sweep] and [space] must be tables")
    space = dict(space_data or {})
    base_items, sweep_items = [], []
    for item in overrides:
        key, _, value = item.partition("=")
        key = key.strip()
        if key.startswith("space."):  # the rest of the key is one space entry: space.optim.lr={...}
            space[key[len("space.") :]] = recipes.parse_value(value.strip())
            space_data = space
        else:
            (sweep_items if key.startswith("sweep.") else base_items).append(item)
    recipes.apply_overrides(base, list(feature_overrides) + base_items)
    sweep_data = recipes.apply_overrides({"sweep": sweep_data}, sweep_items)["sweep"]
    settings = recipes.build(recipes.SweepSettings, sweep_data, "sweep.")
    space = space or (DEFAULT_SPACE if space_data is None else {})
    if not space:
        raise BadInput(f"{path}: [space] is empty: name at least one recipe value to search")
    check_settings(settings)
    # the base recipe as full plain data (tuples -> lists), validated
    resolved = json.loads(json.dumps(recipes.to_dict(recipes.build(recipes.TrainRecipe, base))))
    return resolved, settings, space


def deep_merge(into: dict, other: dict) -> dict:
    """`other`'s values into `into`, table by table (a copy of each)."""
    for k, v in other.items():
        if isinstance(v, dict) and isinstance(into.get(k), dict):
            deep_merge(into[k], v)
        else:
            into[k] = copy.deepcopy(v)
    return into


def check_settings(settings: recipes.SweepSettings) -> None:
    """The [sweep] values in range (BadInput naming the key)."""
    for field, ok, what in (
        ("trials", settings.trials >= 1, "at least 1"),
        ("epochs", settings.epochs >= 0, "0 or more"),
        ("train_fraction", 0 < settings.train_fraction <= 1, "in (0, 1]"),
        ("jobs", settings.jobs >= 1, "at least 1"),
        ("parallel", settings.parallel >= 1, "at least 1"),
        ("startup_trials", settings.startup_trials >= 0, "0 or more"),
    ):
        if not ok:
            raise BadInput(f"sweep.{field} = {getattr(settings, field)!r}: expected {what}")


def distributions(space: dict) -> dict:
    """[space] entries -> Optuna distributions. List-valued choices (betas) are stored as JSON strings."""
    out = {}
    for key, entry in space.items():
        where = f"space {key!r}"
        if not isinstance(entry, dict):
            raise BadInput(
                f"{where}: expected {{low = .., high = ..[, log = true][, step = ..]}} or {{choices = [..]}}"
            )
        unknown = set(entry) - {"low", "high", "log", "step", "choices"}
        if unknown:
            raise BadInput(f"{where}: unknown field {sorted(unknown)[0]!r} (known: low, high, log, step, choices)")
        if "choices" in entry:
            choices = entry["choices"]
            if not isinstance(choices, list) or not choices or len(entry) > 1:
                raise BadInput(f"{where}: choices must be a non-empty list, alone")
            out[key] = CategoricalDistribution([json.dumps(c) if isinstance(c, (list, dict)) else c for c in choices])
            continue
        if "low" not in entry or "high" not in entry:
            raise BadInput(f"{where}: needs low and high (or choices)")
        low, high, log, step = entry["low"], entry["high"], entry.get("log", False), entry.get("step")
        if any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in (low, high)) or not low < high:
            raise BadInput(f"{where}: low and high must be numbers with low < high, got {low!r}, {high!r}")
        if not isinstance(log, bool):
            raise BadInput(f"{where}: log must be true or false")
        if log and low <= 0:
            raise BadInput(f"{where}: a log range needs low > 0")
        try:
            if isinstance(low, int) and isinstance(high, int) and (step is None or isinstance(step, int)):
                out[key] = IntDistribution(low, high, log=log, step=step or 1)
            else:
                out[key] = FloatDistribution(float(low), float(high), log=log, step=step)
        except ValueError as e:
            raise BadInput(f"{where}: {e}") from None
    return out


def external(value):
    """A sampled value as the recipe wants it (JSON-encoded list choices decoded)."""
    if isinstance(value, str) and value[:1] in "[{":
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def make_recipe(base: dict, params: dict, epochs: int = 0):
    """(TrainRecipe, its data) of the base recipe with the parameters' values set (and `epochs`, sweep.epochs,
    unless the space searches optim.epochs)."""
    data = copy.deepcopy(base)
    for key, value in params.items():
        recipes.set_dotted(data, key, external(value), f"space {key!r}")
    if epochs and "optim.epochs" not in params:  # sweep.epochs, unless the space searches optim.epochs
        data["optim"]["epochs"] = epochs
    return recipes.build(recipes.TrainRecipe, data), data


def check_space(base: dict, dists: dict) -> None:
    """Every key must be a recipe value and every bound / choice must make a valid recipe."""
    for key, dist in dists.items():
        values = dist.choices if isinstance(dist, CategoricalDistribution) else (dist.low, dist.high)
        for v in values:
            try:
                make_recipe(base, {key: v})
            except BadInput as e:
                raise BadInput(f"space {key!r} = {external(v)!r}: {e}") from None
            except (KeyError, IndexError, ValueError, TypeError):
                raise BadInput(f"space {key!r}: not a recipe value") from None


def suggest(trial, key, dist):
    """The trial's value of one parameter, drawn from its distribution."""
    if isinstance(dist, CategoricalDistribution):
        return trial.suggest_categorical(key, dist.choices)
    if isinstance(dist, FloatDistribution):
        return trial.suggest_float(key, dist.low, dist.high, log=dist.log, step=dist.step)
    return trial.suggest_int(key, dist.low, dist.high, log=dist.log, step=dist.step)
