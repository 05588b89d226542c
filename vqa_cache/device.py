"""The device a command runs on, and its mixed precision: the bfloat16 / float16 choice is made here once.

On a GPU with bfloat16, autocast to bfloat16; on an older GPU, float16 (and, to train, a GradScaler);
on the CPU, full precision.
"""
from __future__ import annotations

from contextlib import nullcontext

import torch

from .errors import BadInput


def pick_device(name: str) -> torch.device:
    """The recipe's `device`: auto (a GPU when there is one), cpu or cuda."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise BadInput("--device cuda: no CUDA device is available here")
    if name not in ("cpu", "cuda"):
        raise BadInput(f"--device {name!r}: expected auto, cpu or cuda")
    return torch.device(name)


def half_dtype() -> torch.dtype:
    """The reduced precision of this GPU: bfloat16 where it has it, else float16."""
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def autocast(device: torch.device | str):
    """Autocast to half_dtype() on a GPU, nothing on the CPU (inference: stage one, ask)."""
    if torch.device(device).type != "cuda":
        return nullcontext()
    return torch.autocast("cuda", dtype=half_dtype())


def amp(device: torch.device):
    """(autocast context, GradScaler or None) to train with: a scaler only for float16."""
    if device.type != "cuda":
        return nullcontext(), None
    scaler = torch.amp.GradScaler("cuda") if half_dtype() == torch.float16 else None
    return autocast(device), scaler
