"""The device a command runs on, and its precision (`--precision auto|fp32|fp16|bf16`, the recipes'
`precision` key): the choice is made here once.

auto: on a GPU with bfloat16, autocast to bfloat16; on an older GPU, float16 (and, to train, a
GradScaler); on the CPU, full precision. bf16 autocasts to bfloat16 on the GPU or the CPU; fp16 to
float16 with a GradScaler, on a GPU only; fp32 never autocasts.
"""

from __future__ import annotations

from contextlib import contextmanager, nullcontext
from contextvars import ContextVar

import torch

from .errors import BadInput

PRECISIONS = ("auto", "fp32", "fp16", "bf16")
DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}
_SCOPE: ContextVar[str] = ContextVar("precision", default="auto")  # stage one's --precision (precision_scope)


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


def resolve_precision(precision: str | None, device) -> str:
    """What `precision` runs as on `device`: fp32, fp16 or bf16 (auto decided; bad choices refused)."""
    precision = precision or "auto"
    kind = torch.device(device).type
    if precision not in PRECISIONS:
        raise BadInput(f"--precision {precision!r}: expected one of {', '.join(PRECISIONS)}")
    if precision == "auto":
        return "fp32" if kind != "cuda" else ("bf16" if half_dtype() == torch.bfloat16 else "fp16")
    if precision == "fp16" and kind != "cuda":
        raise BadInput(
            "--precision fp16 needs a CUDA device (float16 autocast with a gradient scaler); "
            "on the CPU use bf16 or fp32"
        )
    if precision == "bf16" and kind == "cuda" and not torch.cuda.is_bf16_supported():
        raise BadInput("--precision bf16: this GPU has no bfloat16; use fp16 or fp32")
    return precision


@contextmanager
def precision_scope(precision: str | None):
    """Stage one's precision for the autocast() calls inside (the encoders take no precision argument)."""
    token = _SCOPE.set(precision or "auto")
    try:
        yield
    finally:
        _SCOPE.reset(token)


def autocast(device: torch.device | str, precision: str | None = None):
    """Autocast to the precision's dtype (None: the precision_scope's, auto by default), or nothing for fp32
    (inference: stage one, ask)."""
    resolved = resolve_precision(precision or _SCOPE.get(), device)
    if resolved == "fp32":
        return nullcontext()
    return torch.autocast(torch.device(device).type, dtype=DTYPES[resolved])


def amp(device: torch.device, precision: str | None = "auto"):
    """(autocast context, GradScaler or None) to train with: a scaler only for float16."""
    resolved = resolve_precision(precision, device)
    scaler = torch.amp.GradScaler("cuda") if resolved == "fp16" else None
    return autocast(device, resolved), scaler
