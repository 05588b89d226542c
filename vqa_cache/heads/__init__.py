"""Fusion heads, registered by name. A head maps cached features to answer logits.

Every head takes `(image, question)` feature tensors and returns logits [B, K]; its class attribute
`needs` says which cached features it reads (`pooled` or `grid` images; `pooled` or `tokens` questions):

    image  pooled [B, Di]      grid   [B, h*w, Di]
    question pooled [B, Dq]    tokens [B, L, Dq], padding positions all zero

A new head is one small file here with `@register` and `name`/`needs` class attributes, imported below.
"""
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
    if name not in HEADS:
        raise BadInput(f"unknown head {name!r} (known: {', '.join(sorted(HEADS))})")
    return HEADS[name].needs


from . import attention, bilinear, coattention, concat, hadamard  # noqa: E402,F401  (registers them)
