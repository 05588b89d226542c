"""A run directory: config.json, metrics.json, best.pt, last.pt, curves.png, predictions.json, and .lock
while a process writes it. One process at a time writes it (run_lock)."""
from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path

from .. import distributed as dist
from ..cache.store import Lock
from ..digest import check_out_path
from ..errors import BadInput
from ..plot_text import plain
from ..recipes import TrainRecipe, to_dict
from .checkpoints import save_checkpoint


def pick_run_dir(recipe: TrainRecipe, out: str | None, resume: bool) -> Path:
    """--out as given; else runs/NAME, or runs/NAME-2, -3 ... if taken (resume: the latest of them)."""
    if out:
        return check_out_path(out, "--out", directory=True)
    base = check_out_path(Path(recipe.out) / recipe.name, "run directory", directory=True)
    taken = [base] + [base.with_name(f"{base.name}-{i}") for i in range(2, 1000)]
    existing = [p for p in taken if p.exists()]
    if resume:
        if not existing:
            raise BadInput(f"--resume: no run {base} to resume")
        return existing[-1]
    return next(p for p in taken if not p.exists())


@contextmanager
def run_directory(recipe: TrainRecipe, out: str | None, resume: bool):
    """The run directory of a train or finetune command, locked for the run (torchrun: rank 0's choice,
    rank 0's lock; the other ranks print nothing)."""
    if dist.init():
        dist.quiet_others()
    run_dir = dist.broadcast(pick_run_dir(recipe, out, resume))     # rank 0's choice (runs/NAME-N)
    with run_lock(run_dir, resume, take=dist.is_main()):
        yield run_dir


@contextmanager
def run_lock(run_dir: Path, resume: bool = False, take: bool = True):
    """One process at a time writes a run directory (train, finetune, --resume): RUN/.lock, the cache's
    entry Lock (an flock the kernel frees when its holder dies, kill -9 included), taken without waiting.
    Its descriptor is close-on-exec and closed in forked children (cache/store.py), so only this process
    holds it. take=False (torchrun ranks other than 0, which write nothing) does nothing. A run directory
    made here that is still empty at the end (setup failed) is removed again."""
    if not take:
        yield
        return
    if resume and not (run_dir / "last.pt").is_file():
        raise BadInput(f"--resume: no checkpoint {run_dir / 'last.pt'} to continue from")
    fresh = not run_dir.exists()
    lock = Lock(run_dir / ".lock", wait=False)
    try:
        lock.__enter__()
    except BadInput:
        raise BadInput(f"{run_dir} is in use by another process (host, pid: {lock.holder()}; lock "
                       f"{lock.path}): wait for it to finish, or choose another --out") from None
    try:
        yield
    finally:
        lock.__exit__(None, None, None)
        if fresh and not any(run_dir.iterdir()):
            run_dir.rmdir()


def read_json_object(path: Path, missing: str) -> dict:
    """A run's JSON file as an object; BadInput `missing` when it is not there, or naming what is wrong."""
    if not path.is_file():
        raise BadInput(missing)
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
        raise BadInput(f"{path}: not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise BadInput(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def read_run_config(run_dir) -> dict:
    """RUN/config.json, checked: a JSON object with the run's recipe and its (train, val) split names."""
    path = Path(run_dir) / "config.json"
    config = read_json_object(path, f"{run_dir}: not a run directory (no config.json)")
    splits, specs = config.get("splits"), config.get("cache_specs", {})
    problem = ("no recipe" if not isinstance(config.get("recipe"), dict) else
               "no [train, val] splits" if not (isinstance(splits, list) and len(splits) == 2 and
                                                all(isinstance(x, str) for x in splits)) else
               "malformed cache_specs" if not (isinstance(specs, dict) and
                                               all(isinstance(specs.get(k, {}), dict) for k in ("image", "question"))) else
               "malformed cache_dir" if not isinstance(config.get("cache_dir", ""), str) else "")
    if problem:
        raise BadInput(f"{path}: not a vqa-cache run config ({problem})")
    return config


def run_config(recipe: TrainRecipe, cache_keys: dict, split_names, vocab, splits: dict, dropped: int,
               head_config: dict, device) -> dict:
    """What config.json says of every run: the recipe, the cache keys, the splits, the vocabulary, the
    questions, the head and the device (train and finetune add their own)."""
    answers = splits["train"].table.column("answers").to_pylist()
    return {"recipe": to_dict(recipe), "cache_keys": cache_keys, "splits": split_names,
            "vocabulary": {"size": len(vocab), "top_k": vocab.top_k, "min_count": vocab.min_count,
                           "coverage": round(vocab.coverage(answers), 4)},
            "questions": {"train": len(splits["train"]), "val": len(splits["val"]), "dropped": dropped},
            "head": head_config, "device": str(device)}


def write_config(run_dir: Path, config: dict) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.json").write_text(json.dumps(config, indent=1))


def save_epoch(run_dir: Path, ckpt: dict, improved: bool, history: list, best: dict) -> None:
    """After each epoch: last.pt, best.pt when the epoch improved, and metrics.json."""
    if improved:
        save_checkpoint(run_dir / "best.pt", ckpt)
    save_checkpoint(run_dir / "last.pt", ckpt)
    write_metrics(run_dir, history, best)


def write_metrics(run_dir: Path, history: list, best: dict) -> dict:
    metrics = {"epochs": history, "best": best}
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=1))
    return metrics


def read_metrics(run_dir) -> dict:
    """RUN/metrics.json, checked: {"epochs": [one row per finished epoch], "best": {"epoch", "val_accuracy"}}."""
    path = Path(run_dir) / "metrics.json"
    metrics = read_json_object(path, f"{run_dir}: no metrics.json (not a run directory, or no epoch finished yet)")
    if not (isinstance(metrics.get("epochs"), list) and
            all(isinstance(row, dict) for row in metrics["epochs"]) and isinstance(metrics.get("best"), dict)):
        raise BadInput(f"{path}: not the metrics of a vqa-cache run (epochs and best)")
    return metrics


def write_predictions(path: Path, question_ids: list[str], answers: list[str]) -> None:
    """Official results format: [{"question_id", "answer"}], integer ids where the dataset's are."""
    rows = [{"question_id": int(q) if q.isdigit() else q, "answer": a} for q, a in zip(question_ids, answers)]
    path.write_text(json.dumps(rows))


def curves_figure(history: list, height: float = 4.0):
    """Train and validation loss, train accuracy, and validation accuracy overall and per answer type, per epoch (a
    matplotlib Figure: no pyplot, so sweep trials can draw in threads)."""
    import numpy as np
    from matplotlib.figure import Figure        # (lazy: slow to import)
    from matplotlib.ticker import MaxNLocator

    epochs = [h["epoch"] for h in history]
    fig = Figure(figsize=(10, height))
    loss_ax, acc_ax = fig.subplots(1, 2)
    loss_ax.plot(epochs, [h["train_loss"] for h in history], label="train")
    loss_ax.plot(epochs, [h["val_loss"] for h in history], label="val")
    loss_ax.set(xlabel="epoch", ylabel="loss", title="loss")
    loss_ax.legend()
    acc_ax.plot(epochs, [h["val_accuracy"] for h in history], label="val (all)", color="black", linewidth=2)
    if any("train_accuracy" in h for h in history):          # (runs of earlier versions have none)
        acc_ax.plot(epochs, [h.get("train_accuracy", np.nan) for h in history], label="train", color="black",
                    linestyle="--")
    for kind in sorted({t for h in history for t in h.get("val_accuracy_per_type", {})}):
        acc_ax.plot(epochs, [h.get("val_accuracy_per_type", {}).get(kind, np.nan) for h in history], label=plain(kind))
    acc_ax.set(xlabel="epoch", ylabel="accuracy", title="accuracy (validation; train dashed)", ylim=(0, 1))
    acc_ax.legend(fontsize=8)
    for ax in (loss_ax, acc_ax):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.tight_layout()
    return fig


def plot_curves(path: Path, history: list) -> None:
    """curves.png (see curves_figure)."""
    curves_figure(history).savefig(path, dpi=100)
