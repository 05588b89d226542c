"""THE RUN CONTRACT: every file of a run directory, beside the cache contract (docs/run-format.md).

A run directory (`train`, `finetune`, a sweep's trials/NNNN) holds config.json, metrics.json, best.pt,
last.pt, curves.png, predictions.json, report.html (`vqa-cache report`), predictions-SPLIT.json
(`vqa-cache predict`), and .lock while a process writes it. Everything that writes or reads these files
does it through this package; every file lands whole (a temporary file in the same directory, fsync'd,
renamed), never through a symlink.

layout.py: the file names, picking a run (or sweep) directory; files.py: JSON read and atomic writes;
config.py, metrics.py (with checks.py: the types of what is read), predictions.py, curves.py;
checkpoints.py: best.pt / last.pt (weights_only; torch imported inside its functions, so that reading a
run's JSON files imports no torch); lock.py: the run lock.
"""

from .checkpoints import (
    check_cache_keys,
    drop_checkpoints,
    drop_partial_writes,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    save_epoch,
    set_rng_state,
)
from .config import cache_keys_of, read_run_config, run_config, write_config
from .curves import curves_figure, plot_curves
from .files import read_json_object, save_figure, write_json, write_text
from .layout import (
    BEST,
    CONFIG,
    CURVES,
    LAST,
    LOCK,
    METRICS,
    PREDICTIONS,
    REPORT,
    is_run,
    model_checkpoint,
    pick_dir,
    pick_run_dir,
    predictions_of,
)
from .lock import run_directory, run_lock
from .metrics import has_metrics, read_metrics, write_metrics
from .predictions import write_predictions

__all__ = [
    "BEST",
    "CONFIG",
    "CURVES",
    "LAST",
    "LOCK",
    "METRICS",
    "PREDICTIONS",
    "REPORT",
    "cache_keys_of",
    "check_cache_keys",
    "curves_figure",
    "drop_checkpoints",
    "drop_partial_writes",
    "has_metrics",
    "is_run",
    "load_checkpoint",
    "model_checkpoint",
    "pick_dir",
    "pick_run_dir",
    "plot_curves",
    "predictions_of",
    "read_json_object",
    "read_metrics",
    "read_run_config",
    "rng_state",
    "run_config",
    "run_directory",
    "run_lock",
    "save_checkpoint",
    "save_epoch",
    "save_figure",
    "set_rng_state",
    "write_config",
    "write_json",
    "write_metrics",
    "write_predictions",
    "write_text",
]
