"""The files of a run directory, by name, and the one way a new run (or a sweep) directory is picked."""

from __future__ import annotations

from pathlib import Path

from ..digest import check_out_path
from ..errors import BadInput

CONFIG = "config.json"  # the run's recipe, cache keys and specs, splits, vocabulary, head
METRICS = "metrics.json"  # one row per finished epoch, and the best
BEST, LAST = "best.pt", "last.pt"  # checkpoints (weights_only)
CURVES = "curves.png"
PREDICTIONS = "predictions.json"  # the best model's validation predictions (official results format)
REPORT = "report.html"  # `vqa-cache report`
LOCK = ".lock"  # while a process writes the run
FILES = (CONFIG, METRICS, BEST, LAST, CURVES, PREDICTIONS)


def predictions_of(split: str, fmt: str = "json") -> str:
    """`vqa-cache predict`'s default file for a split: predictions-SPLIT.json (a DACON CSV: .csv)."""
    return f"predictions-{split}.{fmt}"


def model_checkpoint(run_dir) -> Path:
    """The checkpoint that holds a run's model: best.pt, else (a run stopped before its first best) last.pt."""
    run_dir = Path(run_dir)
    return run_dir / BEST if (run_dir / BEST).is_file() else run_dir / LAST


def is_run(folder: Path) -> bool:
    """A run directory is a folder holding a config.json."""
    return (Path(folder) / CONFIG).is_file()


def pick_dir(base: Path, out: str | None, resume: bool, what: str = "run") -> Path:
    """--out as given; else `base` (e.g. runs/NAME), or base-2, -3 ... if taken (resume: the latest of them).
    Runs (train, finetune, a sweep's trials) and sweeps are picked alike."""
    if out:
        return check_out_path(out, "--out", directory=True)
    base = check_out_path(Path(base), f"{what} directory", directory=True)
    taken = [base] + [base.with_name(f"{base.name}-{i}") for i in range(2, 1000)]
    existing = [p for p in taken if p.exists()]
    if resume:
        if not existing:
            raise BadInput(f"--resume: no {what} {base} to resume")
        return existing[-1]
    return next(p for p in taken if not p.exists())


def pick_run_dir(recipe, out: str | None, resume: bool) -> Path:
    """The directory of a train or finetune run: --out, else OUT/NAME of the recipe (pick_dir)."""
    return pick_dir(Path(recipe.out) / recipe.name, out, resume)
