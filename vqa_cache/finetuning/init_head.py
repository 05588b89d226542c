"""`finetune --init-head RUN`: the head starts from a cached `train` run's best.pt (its encoders are taken
into the recipe by recipe.py)."""

from __future__ import annotations

import json
from pathlib import Path

from torch import nn

from .. import messages
from ..errors import BadInput
from ..recipes import FinetuneRecipe
from ..rundir import BEST, cache_keys_of, load_checkpoint, read_run_config
from .recipe import feature_value, run_encoders


def init_head_standardizes(run_dir) -> bool:
    """Whether RUN's head standardizes its image input (heads/norm.py; runs before it existed did not)."""
    return bool(read_run_config(run_dir).get("head", {}).get("standardize", False))


def init_head(model: nn.Module, run_dir: str, vocab, head_config: dict, plan, recipe: FinetuneRecipe) -> str:
    """Load a cached run's head into the model; its vocabulary and head shape must match this run's. Returns
    what config.json records of it: RUN, with a note when it was trained on features of other settings."""
    path = Path(run_dir) / BEST
    ckpt = load_checkpoint(path)
    if ckpt["vocab"].get("answers") != vocab.answers:
        raise BadInput(
            f"--init-head {run_dir}: its answer vocabulary ({len(ckpt['vocab'].get('answers', []))} "
            f"answers) differs from this run's ({len(vocab)}): train it on the same samples and "
            f"[answers] settings"
        )
    for k in ("name", "image_dim", "question_dim", "num_answers", "hidden"):
        if ckpt["head"].get(k) != head_config[k]:
            setting = {"image_dim": "image.encoder", "question_dim": "text.encoder"}.get(k)
            there = f" (features.{setting} = {json.dumps(run_encoders(run_dir).get(setting))})" if setting else ""
            here = f" (features.{setting} = {json.dumps(feature_value(recipe, setting))})" if setting else ""
            raise BadInput(
                f"--init-head {run_dir}: head {k} is {ckpt['head'].get(k)!r} there{there}, "
                f"{head_config[k]!r} here{here}: the same head and encoders are needed"
            )
    keys = cache_keys_of(ckpt) or {}
    note = ""
    if keys and keys != plan.cache_keys:
        note = " (NOTE: it was trained on features of other encoder settings)"
        messages.warning(
            f"warning: --init-head {run_dir} was trained on features {keys}, this run's encoders "
            f"correspond to {plan.image_key} / {plan.question_key}"
        )
    model.head.load_state_dict(ckpt["model"])
    return f"{run_dir}{note}"
