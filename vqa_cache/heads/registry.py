"""The heads by name: each head module registers its class here (@register) with its `name`, `needs` and
`defaults` (its own width and depth, used when the recipe leaves head.hidden / head.layers at 0).

A head's *config* is what a checkpoint records of it (and what rebuilds it): name, image_dim, question_dim,
num_answers, hidden, dropout, and where they apply layers, embed, standardize. Configs written before these
keys existed rebuild as they were built then (no key: the head's default depth, LayerNorm on the image)."""

from __future__ import annotations

from typing import Any

from torch import nn

from ..errors import BadInput

HEADS: dict[str, Any] = {}  # nn.Module classes; each also has `name`, `needs` and `defaults` (see above)
KEYS = ("name", "image_dim", "question_dim", "num_answers", "hidden", "dropout")
SETTINGS = ("layers", "embed", "standardize")  # config keys added since KEYS; a head takes those it has


def register(cls):
    HEADS[cls.name] = cls
    return cls


def head_class(name: str) -> Any:
    """The registered class (an nn.Module with `name`, `needs`, `defaults`)."""
    if name not in HEADS:
        raise BadInput(f"unknown head {name!r} (known: {', '.join(sorted(HEADS))})")
    return HEADS[name]


def needs(name: str) -> dict:
    """What a head reads: {"image": "pooled" | "grid", "question": "pooled" | "tokens" | "ids"}."""
    return head_class(name).needs


def head_config(
    name: str,
    image_dim: int,
    question_dim: int,
    num_answers: int,
    hidden: int = 0,
    dropout: float = 0.3,
    layers: int = 0,
    embed: int = 0,
    standardize: bool = False,
) -> dict:
    """The config of a head with the recipe's settings, its defaults filled in (0 = the head's own).
    question_dim of a head reading token ids is the number of embedding rows (vocabulary size + 1)."""
    cls = head_class(name)
    defaults = cls.defaults
    config = {
        "name": name,
        "image_dim": image_dim,
        "question_dim": question_dim,
        "num_answers": num_answers,
        "hidden": hidden or defaults["hidden"],
        "dropout": dropout,
    }
    for key, value in (("layers", layers), ("embed", embed)):
        if key in defaults:
            config[key] = value or defaults[key]
        elif value:
            which = "with a depth" if key == "layers" else "with learned question embeddings"
            raise BadInput(
                f"head.{key} = {value}: head {name!r} has no {key} to set (heads {which}: "
                f"{', '.join(n for n, c in HEADS.items() if key in c.defaults)})"
            )
    config["standardize"] = standardize
    return config


def build(
    name: str, image_dim: int, question_dim: int, num_answers: int, hidden: int = 0, dropout: float = 0.3, **settings
) -> nn.Module:
    """A head from its config (head_config's keys; a checkpoint's "head"). Keys it lacks take their defaults."""
    config = head_config(name, image_dim, question_dim, num_answers, hidden, dropout)
    config.update({k: v for k, v in settings.items() if k in SETTINGS})
    args = {k: v for k, v in config.items() if k not in ("name", "image_dim", "question_dim", "num_answers")}
    try:
        return HEADS[name](image_dim, question_dim, num_answers, **args)
    except TypeError as e:  # a config key this head does not take (a malformed or foreign config)
        raise BadInput(f"head {name!r}: settings {args} do not fit it ({e})") from None


def from_config(config: dict) -> nn.Module:
    """The head a checkpoint's (or config.json's) "head" describes, built as it was."""
    return build(**{k: v for k, v in config.items() if k in KEYS + SETTINGS})
