"""The heads by name: each head module registers its class here (@register) with its `name` and `needs`."""
from __future__ import annotations

from torch import nn

from ..errors import BadInput

HEADS: dict[str, type[nn.Module]] = {}


def register(cls):
    HEADS[cls.name] = cls
    return cls


def build(name: str, image_dim: int, question_dim: int, num_answers: int, hidden: int, dropout: float) -> nn.Module:
    if name not in HEADS:
        raise BadInput(f"unknown head {name!r} (known: {', '.join(sorted(HEADS))})")
    return HEADS[name](image_dim, question_dim, num_answers, hidden=hidden, dropout=dropout)


def needs(name: str) -> dict:
    """What a head reads: {"image": "pooled" | "grid", "question": "pooled" | "tokens"}."""
    if name not in HEADS:
        raise BadInput(f"unknown head {name!r} (known: {', '.join(sorted(HEADS))})")
    return HEADS[name].needs
