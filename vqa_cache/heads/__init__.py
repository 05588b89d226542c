"""Fusion heads, registered by name. A head maps cached features to answer logits.

Every head takes `(image, question)` feature tensors and returns logits [B, K]; its class attribute
`needs` says which cached features it reads (`pooled` or `grid` images; `pooled` or `tokens` questions):

    image  pooled [B, Di]      grid   [B, h*w, Di]
    question pooled [B, Dq]    tokens [B, L, Dq], padding positions all zero
             ids [B, L] long: token id + 1, 0 = padding (Dq: the number of embedding rows)

A new head is one small file here with `@register` (registry.py) and `name`, `needs` and `defaults`
(its own width, and depth where it has one) class attributes, imported below. The image input is
layer-normalized, or with head.standardize standardized per dimension (norm.py; training-split statistics).
"""

from . import attention, bilinear, butd, coattention, concat, hadamard, lstm  # noqa: F401  (each registers its head)
from .norm import set_statistics  # noqa: F401
from .registry import HEADS, build, from_config, head_config, needs, register  # noqa: F401
