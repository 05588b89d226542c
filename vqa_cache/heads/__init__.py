"""Fusion heads, registered by name. A head maps cached features to answer logits.

Every head takes `(image, question)` feature tensors and returns logits [B, K]; its class attribute
`needs` says which cached features it reads (`pooled` or `grid` images; `pooled` or `tokens` questions):

    image  pooled [B, Di]      grid   [B, h*w, Di]
    question pooled [B, Dq]    tokens [B, L, Dq], padding positions all zero

A new head is one small file here with `@register` (registry.py) and `name`/`needs` class attributes,
imported below.
"""
from . import attention, bilinear, coattention, concat, hadamard  # noqa: F401  (each registers its head)
from .registry import HEADS, build, needs, register  # noqa: F401
