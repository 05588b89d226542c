"""Run checkpoints (best.pt, last.pt): tensors and plain Python values only, so that they load with
torch.load(weights_only=True) and a crafted file cannot run code.

Every checkpoint holds "model" (the head's state), "head" (its settings), "vocab" and "cache_keys" (the
entries it was trained on; `feature_keys` in finetune runs written before it had one name, still read); to
resume, also the optimizer, scheduler, RNG states and the run's history.

torch and numpy are imported inside the functions (they load slowly): reading a run's JSON files
(`vqa-cache runs`) imports neither.
"""

from __future__ import annotations

import pickle
import random
import re
import threading
from pathlib import Path

from ..digest import atomic_file, is_partial_write, write_error
from ..errors import BadInput
from .config import cache_keys_of
from .layout import BEST, LAST
from .metrics import write_metrics

CHECKPOINT_KEYS = ("model", "head", "vocab")
RESUME_KEYS = ("optimizer", "scheduler", "epoch", "history", "best", "bad_epochs", "rng")
_LOADING = threading.Lock()  # safe_globals() below edits torch's process-wide allowlist


def load_checkpoint(path: Path, resume: bool = False) -> dict:
    """A run checkpoint, loaded with weights_only=True: tensors and plain Python values only, so a crafted
    file cannot run code (it is bad input). Checks it holds a head, its weights and its vocabulary (and,
    for `resume`, the training state)."""
    import torch  # (lazy: slow to import)

    if not path.is_file():
        raise BadInput(f"no checkpoint {path}")
    try:
        with _LOADING, torch.serialization.safe_globals(_numpy_rng_globals()):
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        name = re.search(r"GLOBAL (\S+)", str(e))  # what it would have called or built
        raise BadInput(
            f"{path}: not a vqa-cache checkpoint (unpickling refused{': it names ' + name.group(1) if name else ''})"
        ) from None
    except Exception as e:
        raise BadInput(f"{path}: unreadable checkpoint ({type(e).__name__}: {e})") from None
    need = CHECKPOINT_KEYS + (RESUME_KEYS if resume else ())
    missing = [k for k in need if k not in ckpt] if isinstance(ckpt, dict) else list(need)
    if missing or not all(isinstance(ckpt[k], dict) for k in CHECKPOINT_KEYS):
        raise BadInput(f"{path}: not a vqa-cache checkpoint ({'no ' + ', '.join(missing) if missing else 'malformed'})")
    return ckpt


def check_cache_keys(path: Path, ckpt: dict, keys: dict) -> None:
    """Refuse a checkpoint made on another cache than `keys`."""
    if cache_keys_of(ckpt) != keys:
        raise BadInput(f"{path} was trained on cache {cache_keys_of(ckpt)}, not on {keys}: refusing to mix caches")


def save_checkpoint(path: Path, payload: dict) -> None:
    """torch.save through a temporary file in the same directory (digest.atomic_file): `path` is whole or as
    it was, and a full disk leaves no temporary file behind."""
    import torch

    out = _Recording(None)
    try:
        with atomic_file(Path(path)) as f:
            out.f = f
            torch.save(payload, out)  # type: ignore[arg-type]  # a file-like object
    except RuntimeError:  # torch's writer turns a failed write into "unexpected pos ...": say what it was
        if out.error is None:
            raise
        raise write_error(Path(path), out.error) from None


class _Recording:
    """A file's write and flush, keeping the first OSError (ENOSPC, EFBIG) that torch's zip writer meets and
    reports only as a RuntimeError."""

    def __init__(self, f):
        self.f, self.error = f, None

    def write(self, data):
        try:
            return self.f.write(data)
        except OSError as e:
            self.error = self.error or e
            raise

    def flush(self):
        try:
            return self.f.flush()
        except OSError as e:
            self.error = self.error or e
            raise


def save_epoch(run_dir: Path, ckpt: dict, improved: bool, history: list, best: dict) -> None:
    """After each epoch: last.pt, best.pt when the epoch improved, and metrics.json."""
    run_dir = Path(run_dir)
    if improved:
        save_checkpoint(run_dir / BEST, ckpt)
    save_checkpoint(run_dir / LAST, ckpt)
    write_metrics(run_dir, history, best)


def drop_checkpoints(run_dir: Path) -> None:
    """Remove best.pt and last.pt (a sweep's trials are retrained from best.toml, not reused)."""
    for name in (BEST, LAST):
        (Path(run_dir) / name).unlink(missing_ok=True)


def drop_partial_writes(run_dir: Path) -> None:
    """Remove what a killed process left of its unfinished atomic writes in `run_dir` (digest.temporary_name's
    files: never a finished file). For a directory no live process writes."""
    for path in Path(run_dir).glob("*.tmp*"):
        if is_partial_write(path.name) and path.is_file():
            path.unlink(missing_ok=True)


def _numpy_rng_globals() -> list:
    """What the pickle of a uint32 numpy array names: older checkpoints held numpy's RNG state as
    np.random.get_state() returns it. Arrays only (data: the dtype of an object array is not allowed),
    under numpy 1's and numpy 2's module names."""
    import numpy as np

    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct  # type: ignore[no-redef]
    return [
        (_reconstruct, "numpy.core.multiarray._reconstruct"),
        (_reconstruct, "numpy._core.multiarray._reconstruct"),
        np.ndarray,
        np.dtype,
        type(np.dtype(np.uint32)),
    ]


def rng_state() -> dict:
    """Every RNG's state as tensors and plain Python values (a checkpoint loads with weights_only=True);
    numpy's: (kind, keys as an int64 tensor, pos, has_gauss, cached_gaussian)."""
    import numpy as np
    import torch

    kind, keys, *rest = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), *rest],  # type: ignore[attr-defined]
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    import numpy as np
    import torch

    torch.set_rng_state(state["torch"])
    kind, keys, *rest = state["numpy"]  # keys: a tensor, or a uint32 array in older checkpoints
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), *rest))
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
