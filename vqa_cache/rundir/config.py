"""config.json: what a run was (its recipe, cache keys and specs, splits, vocabulary, questions, head and
device; finetune and later versions add their own keys). Written at the start of a run and again when it
learns something (finetune's epoch 0, a resumed run's); read, checked, by everything that uses a run."""

from __future__ import annotations

from pathlib import Path

from ..errors import BadInput
from .checks import check_head, check_object, count
from .files import read_json_object, write_json
from .layout import CONFIG


def read_run_config(run_dir) -> dict:
    """RUN/config.json, checked: a JSON object with the run's recipe and its (train, val) split names; the
    head, cache keys and specs, vocabulary and encoders, where present, of the types a run writes."""
    path = Path(run_dir) / CONFIG
    config = read_json_object(path, f"{run_dir}: not a run directory (no config.json)")
    splits, specs = config.get("splits"), config.get("cache_specs", {})
    keys = config.get("cache_keys") or config.get("feature_keys") or {}
    problem = (
        "no recipe"
        if not isinstance(config.get("recipe"), dict)
        else "no [train, val] splits"
        if not (isinstance(splits, list) and len(splits) == 2 and all(isinstance(x, str) for x in splits))
        else "malformed cache_specs"
        if not (isinstance(specs, dict) and all(isinstance(specs.get(k) or {}, dict) for k in ("image", "question")))
        else "malformed cache_dir"
        if not isinstance(config.get("cache_dir", ""), str)
        else "malformed cache_keys"
        if not (isinstance(keys, dict) and all(isinstance(v, str) for v in keys.values()))
        else "malformed mode"
        if config.get("mode", "train") not in ("train", "finetune")
        else ""
    )
    if problem:
        raise BadInput(f"{path}: not a vqa-cache run config ({problem})")
    for key in ("head", "vocabulary", "encoders", "questions"):
        check_object(path, config, key)
    check_head(path, config.get("head", {}))
    recipe = config["recipe"]
    for key in ("features", "head", "optim"):
        check_object(path, recipe, key)
    if "head_parameters" in config and not count(config["head_parameters"]):
        raise BadInput(f"{path}: head_parameters = {config['head_parameters']!r} (expected an integer >= 0)")
    return config


def run_config(
    recipe, cache_keys: dict, split_names, vocab, splits: dict, dropped: int, head_config: dict, device
) -> dict:
    """What config.json says of every run: the recipe, the cache keys, the splits, the vocabulary, the
    questions, the head and the device (train and finetune add their own)."""
    from ..recipes import to_dict

    return {
        "recipe": to_dict(recipe),
        "cache_keys": cache_keys,
        "splits": split_names,
        "vocabulary": {
            "size": len(vocab),
            "top_k": vocab.top_k,
            "min_count": vocab.min_count,
            "coverage": round(splits["train"].coverage, 4),
        },
        "questions": {"train": len(splits["train"]), "val": len(splits["val"]), "dropped": dropped},
        "head": head_config,
        "device": str(device),
    }


def write_config(run_dir: Path, config: dict) -> None:
    """RUN/config.json (the directory made if needed), written whole or not at all."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json(run_dir / CONFIG, config)


def cache_keys_of(record: dict) -> dict | None:
    """The cache keys a checkpoint or config.json records: `cache_keys`, or `feature_keys` (finetune runs
    written before the name was made one)."""
    return record.get("cache_keys") or record.get("feature_keys")
