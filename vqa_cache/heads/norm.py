"""How a head normalizes its image input: LayerNorm across dimensions, or each dimension standardized with
the training split's mean and std (computed once from the cache by stage two and kept in the head's state,
so a checkpoint carries them)."""

from __future__ import annotations

import torch
from torch import nn


class Standardize(nn.Module):
    """x [..., D] -> (x - mean) / std, per dimension. mean, std [D]: buffers, set by set_statistics."""

    def __init__(self, dim: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def image_norm(dim: int, standardize: bool) -> nn.Module:
    """The image input's normalization: Standardize (statistics set later) or LayerNorm."""
    return Standardize(dim) if standardize else nn.LayerNorm(dim)


def set_statistics(head: nn.Module, mean: torch.Tensor, std: torch.Tensor) -> bool:
    """Give every Standardize of `head` the image features' per-dimension mean and std [D]. A std below 1% of
    the median one is raised to that: a dimension that (nearly) never varies in training is not blown up
    when it does vary later. Returns whether the head has one."""
    floor = max(float(std.median()) * 1e-2, 1e-6)
    found = False
    for m in head.modules():
        if isinstance(m, Standardize):
            m.mean.copy_(mean)
            m.std.copy_(std.clamp(min=floor))
            found = True
    return found
