"""curves.png: the loss and accuracy curves of a run's metrics rows (also drawn into the report)."""

from __future__ import annotations

from pathlib import Path

from ..plot_text import plain
from .files import save_figure


def curves_figure(history: list, height: float = 4.0):
    """Train and validation loss, train accuracy, and validation accuracy overall and per answer type, per epoch (a
    matplotlib Figure: no pyplot, so sweep trials can draw in threads)."""
    import numpy as np
    from matplotlib.figure import Figure  # (lazy: slow to import)
    from matplotlib.ticker import MaxNLocator

    epochs = [h["epoch"] for h in history]
    fig = Figure(figsize=(10, height))
    loss_ax, acc_ax = fig.subplots(1, 2)
    loss_ax.plot(epochs, [h["train_loss"] for h in history], label="train")
    loss_ax.plot(epochs, [h["val_loss"] for h in history], label="val")
    loss_ax.set(xlabel="epoch", ylabel="loss", title="loss")
    loss_ax.legend()
    acc_ax.plot(epochs, [h["val_accuracy"] for h in history], label="val (all)", color="black", linewidth=2)
    if any("train_accuracy" in h for h in history):  # (runs of earlier versions have none)
        acc_ax.plot(
            epochs, [h.get("train_accuracy", np.nan) for h in history], label="train", color="black", linestyle="--"
        )
    for kind in sorted({t for h in history for t in h.get("val_accuracy_per_type", {})}):
        acc_ax.plot(epochs, [h.get("val_accuracy_per_type", {}).get(kind, np.nan) for h in history], label=plain(kind))
    acc_ax.set(xlabel="epoch", ylabel="accuracy", title="accuracy (validation; train dashed)", ylim=(0, 1))
    acc_ax.legend(fontsize=8)
    for ax in (loss_ax, acc_ax):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.tight_layout()
    return fig


def plot_curves(path: Path, history: list) -> None:
    """curves.png (see curves_figure), written whole or not at all."""
    save_figure(path, curves_figure(history), dpi=100)
