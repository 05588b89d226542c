"""Running under `torchrun`: the process group, and helpers that are no-ops in a single process.

torchrun sets WORLD_SIZE, RANK, LOCAL_RANK, MASTER_ADDR and MASTER_PORT; `init()` joins the group
when WORLD_SIZE > 1 (NCCL for CUDA tensors plus gloo for CPU-side coordination on GPU machines, gloo
alone on the CPU). Nothing here does anything when the process was started without torchrun.
"""

from __future__ import annotations

import atexit
import datetime
import os

import torch
import torch.distributed as td

_state = {"init": False}


def env_world() -> int:
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return 1


def init() -> bool:
    """Join the torchrun process group once (idempotent); True when running distributed."""
    if _state["init"] or (td.is_available() and td.is_initialized()):
        return enabled()
    if env_world() <= 1 or not td.is_available():
        return False
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(local_rank())
    # rank 0 writes index and manifest while the others wait at a barrier: allow long waits
    timeout = datetime.timedelta(seconds=float(os.environ.get("VQA_CACHE_DIST_TIMEOUT", str(6 * 3600))))
    td.init_process_group(backend="cpu:gloo,cuda:nccl" if cuda else "gloo", timeout=timeout)
    _state["init"] = True
    atexit.register(_shutdown)
    return True


def _shutdown() -> None:
    if td.is_initialized():
        try:
            td.destroy_process_group()
        except Exception:
            pass


def enabled() -> bool:
    return td.is_available() and td.is_initialized() and td.get_world_size() > 1


def rank() -> int:
    return td.get_rank() if enabled() else 0


def world() -> int:
    return td.get_world_size() if enabled() else 1


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    if enabled():
        td.barrier()


def device(name: str) -> torch.device:
    """Under torchrun on GPUs, each process uses the GPU of its local rank."""
    d = torch.device(name)
    if d.type == "cuda" and enabled():
        return torch.device("cuda", local_rank())
    return d


def broadcast(obj, src: int = 0):
    """rank `src`'s picklable object, on every rank."""
    if not enabled():
        return obj
    box = [obj]
    td.broadcast_object_list(box, src=src)
    return box[0]


def all_gather(obj) -> list:
    """Every rank's object, in rank order."""
    if not enabled():
        return [obj]
    out = [None] * world()
    td.all_gather_object(out, obj)
    return out


def all_reduce(values, op: str = "sum"):
    """Sum (or max/min) a float, a list of floats or a tensor over the ranks; same type back."""
    if not enabled():
        return values
    t = values if torch.is_tensor(values) else torch.as_tensor(values, dtype=torch.float64)
    red = t.detach().clone()  # CPU tensors go through gloo, CUDA ones through NCCL
    td.all_reduce(red, op={"sum": td.ReduceOp.SUM, "max": td.ReduceOp.MAX, "min": td.ReduceOp.MIN}[op])
    red = red.to(t.device)
    if torch.is_tensor(values):
        return red
    return red.tolist() if red.dim() else float(red)


def quiet_others() -> None:
    """Only rank 0 prints: the other ranks' stdout goes to /dev/null (their errors still reach stderr)."""
    import sys

    if not is_main() and not getattr(sys.stdout, "_vqa_quiet", False):
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115  (open for the life of the process)
        sys.stdout._vqa_quiet = True  # type: ignore[attr-defined]


def main_first():
    """Context: rank 0 runs the body first (downloads, parses), the others after it (reading what it made)."""
    from contextlib import contextmanager

    @contextmanager
    def ctx():
        if not is_main():
            barrier()
        yield
        if is_main():
            barrier()

    return ctx()


class _SumOverRanks(torch.autograd.Function):
    @staticmethod
    def forward(ctx, t):
        out = t.detach().clone(memory_format=torch.contiguous_format)
        td.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx, grad):
        out = grad.clone(memory_format=torch.contiguous_format)
        td.all_reduce(out)
        return out


def sum_with_grad(t: torch.Tensor) -> torch.Tensor:
    """The sum of `t` over the ranks, differentiable (the backward pass sums the gradients over the ranks
    too); `t` itself without torchrun. Every rank must call it, in the same order."""
    return _SumOverRanks.apply(t) if enabled() else t
