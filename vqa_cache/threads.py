"""How many CPU threads torch may use: `--threads N`, or a default that does not oversubscribe.

The default is the CPUs this process may really use (its affinity mask, capped by the cgroup CPU quota:
cgroup v2 cpu.max or v1 cpu.cfs_quota_us / cpu.cfs_period_us), less the processes that run beside it
(DataLoader workers decoding images, streaming readers), and at least 1. On a shared machine (Colab,
Kaggle, a server with other jobs) os.cpu_count() is the host's count and oversubscribes.

Waiting threads must not spin for long: OpenMP's default is to busy-wait for about 3 ms between parallel
regions, which burns the CPU that other processes (and our own workers) need. prefer_passive_wait() sets
OMP_WAIT_POLICY=PASSIVE (unless the user set a policy) with GOMP_SPINCOUNT=10000 (unless set) before torch
is first imported: a waiting thread spins about 0.1 ms (libgomp's estimate: 100,000 spins a millisecond), which
catches the next op of a training step, then sleeps. It has no effect once the OpenMP runtime is loaded,
so the CLI and the API call it before importing torch.
"""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path

CGROUP = Path("/sys/fs/cgroup")
_choice = {"threads": None, "why": "torch's default"}


def prefer_passive_wait() -> None:
    """OMP_WAIT_POLICY=PASSIVE with a short spin (GOMP_SPINCOUNT=10000) for this process and its children,
    unless the user set the policy (or the spin count); only before torch loads."""
    if "torch" not in sys.modules and "OMP_WAIT_POLICY" not in os.environ:
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
        os.environ.setdefault("GOMP_SPINCOUNT", "10000")  # (libgomp's; it overrides the policy's spin count)


def cgroup_quota(root: Path = CGROUP) -> float | None:
    """The cgroup's CPU quota in CPUs (e.g. 1.5), or None when there is none (or it cannot be read)."""
    try:
        text = (root / "cpu.max").read_text().split()  # v2: "max 100000" or "150000 100000"
        if text and text[0] != "max":
            return int(text[0]) / int(text[1])
        if text:
            return None
    except (OSError, ValueError, IndexError):
        pass
    try:  # v1
        quota = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        return quota / period if quota > 0 and period > 0 else None
    except (OSError, ValueError):
        return None


def affinity() -> int:
    """How many CPUs this process may be scheduled on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # (not on macOS / Windows)
        return os.cpu_count() or 1


def usable_cpus(cpus: int | None = None, quota: float | None = None, read_quota: bool = True) -> int:
    """The CPUs this process may really use: its affinity, capped by the cgroup quota (rounded up, since a
    quota of 1.5 CPUs still lets 2 threads run half the time). cpus/quota: given values (tests)."""
    cpus = affinity() if cpus is None else cpus
    if quota is None and read_quota:
        quota = cgroup_quota()
    if quota is not None:
        cpus = min(cpus, max(1, math.ceil(quota - 1e-9)))
    return max(1, cpus)


def default_threads(
    workers: int = 0, cpus: int | None = None, quota: float | None = None, read_quota: bool = True
) -> tuple[int, str]:
    """(threads, why): the usable CPUs less `workers` processes that run beside the main one, at least 1."""
    usable = usable_cpus(cpus, quota, read_quota)
    threads = max(1, usable - max(0, workers))
    why = f"{usable} usable CPU{'s' if usable != 1 else ''}"
    if workers:
        why += f" less {workers} worker{'s' if workers != 1 else ''}"
    return threads, why


def set_threads(threads: int | None = None, workers: int = 0) -> int:
    """Set torch's intra-op threads: `threads` as asked, else default_threads(workers). Returns the number."""
    import torch  # (lazy: this module is imported before torch, to set the wait policy first)

    if threads is not None:
        n, why = int(threads), "--threads"
    else:
        n, why = default_threads(workers)
    torch.set_num_threads(n)
    try:
        torch.set_num_interop_threads(1)  # inter-op parallelism is unused; only settable once
    except RuntimeError:
        pass
    _choice.update(threads=n, why=why)
    return n


def flush_denormals() -> bool:
    """Training on the CPU: denormal floats (magnitudes below 1.2e-38) read and written as zero, on this
    thread and on the threads started after it (OpenMP's, a sweep's), unless $VQA_CACHE_DENORMALS=keep.
    The CPU takes many times longer on a denormal than on a normal float (docs/training.md, "Threads";
    measured in docs/benchmarks.md, "Denormal floats"). Call it before the first torch op of the process,
    so that OpenMP's threads start with it. Returns whether it is on."""
    import torch

    return os.environ.get("VQA_CACHE_DENORMALS", "").lower() != "keep" and torch.set_flush_denormal(True)


def note_threads(why: str) -> None:
    """Say why the threads now set were chosen (a caller that chose them itself: a sweep's split)."""
    import torch

    _choice.update(threads=torch.get_num_threads(), why=why)


def describe() -> str:
    """The choice, for the run line: "1 thread (2 usable CPUs less 1 worker)"."""
    import torch

    n = torch.get_num_threads()
    why = _choice["why"] if _choice["threads"] == n else "as set"
    return f"{n} thread{'s' if n != 1 else ''} ({why})"
