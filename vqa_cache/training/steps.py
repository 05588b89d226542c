"""The pieces of a training step and of an epoch: the loss, a rank's part of a batch under
torchrun, the loss tally of an epoch (NaN and infinite losses included), evaluate(), and the History of
the epochs (best epoch, early stopping)."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from .. import distributed as dist
from .. import messages
from ..errors import Diverged
from ..rundir import BEST, LAST
from .batches import batches
from .splits import Split


def batch_score(logits, split: Split, idx) -> torch.Tensor:
    """The summed VQA score of a batch's top answers (min(1, matching annotators / 3), or 0/1), on the device."""
    p = logits.detach().argmax(1)
    return ((split.target_idx[idx] == p[:, None]).float() * split.target_val[idx]).sum()


def batch_loss(logits, split: Split, idx, K: int):
    """Soft-score BCE for 10-answer data (x K, the usual scaling), cross-entropy for one answer.
    A validation answer outside the vocabulary (class K) has no cross-entropy: it is left out of the mean."""
    ti, tv = split.target_idx[idx], split.target_val[idx]
    if split.multi:
        target = torch.zeros(len(idx), K + 1, device=logits.device).scatter_(1, ti, tv)[:, :K]
        return F.binary_cross_entropy_with_logits(logits.float(), target) * K
    target = ti[:, 0]
    known = (target < K).float()
    losses = F.cross_entropy(logits.float(), target.clamp(max=K - 1), reduction="none")
    return (losses * known).sum() / known.sum().clamp(min=1)


def rank_part(n: int, world: int, rank: int, keys: torch.Tensor | None = None) -> tuple[slice, float, float]:
    """This rank's part of a global batch of `n`: (slice of the batch, loss weight, questions it counts for).

    Without `keys`: the r-th of `world` near-equal contiguous parts (torch.tensor_split's). With `keys`
    (one per item, equal keys adjacent, e.g. the image rows of a group_by_image batch): cuts fall only
    where the key changes, each as near as possible to the equal-split point, every rank at least one
    group. A batch that cannot give every rank something (fewer items, or groups, than ranks) goes whole
    to every rank (weight 1, each counting 1/world of it). The weight len(part) * world / n makes DDP's
    gradient average the gradient of the whole batch's mean loss."""
    if world <= 1:
        return slice(0, n), 1.0, n
    if keys is None:
        if n < world:
            return slice(0, n), 1.0, n / world
        starts = [r * (n // world) + min(r, n % world) for r in range(world + 1)]
    else:
        keys = keys.reshape(-1).cpu()
        bounds = [0] + (torch.nonzero(keys[1:] != keys[:-1]).reshape(-1) + 1).tolist() + [n]
        groups = len(bounds) - 1
        if groups < world:
            return slice(0, n), 1.0, n / world
        starts, j = [0], 0
        for r in range(1, world):  # the boundary nearest r*n/world, leaving a group to each later rank
            lo, hi = j + 1, groups - (world - r)
            j = min(range(lo, hi + 1), key=lambda k: (abs(bounds[k] * world - r * n), k))
            starts.append(bounds[j])
        starts.append(n)
    a, b = starts[rank], starts[rank + 1]
    return slice(a, b), (b - a) * world / n, b - a


NEVER = 2**62  # "no bad step" (exact in float64, for the all-reduce)


def note_bad_step(first_bad: torch.Tensor, loss: torch.Tensor, step: int) -> torch.Tensor:
    """`first_bad` (0-dim long, on the loss's device) becomes `step` at the first non-finite loss. Computed on
    the device: no host sync per step (the epoch's end reads it once)."""
    return torch.where(torch.isfinite(loss) | (first_bad != NEVER), first_bad, step)


class DeviceTally:
    """An epoch's train loss summed on the device, with no host sync per step: a step on cached features
    is short, and a sync would cost more than the step. A NaN or infinite loss is noted (the first bad
    step) and the epoch runs on; check_finite stops the run at its end."""

    def __init__(self, device: torch.device):
        self.total, self.seen, self.first_bad = 0.0, 0, torch.tensor(NEVER, device=device)
        self.score = 0.0  # the VQA scores of the batches' predictions (train accuracy)

    def add(self, loss: torch.Tensor, count: float, number: int, score=0.0) -> bool:
        """Count the loss of batch `number` (1-based) over `count` questions, and the summed score of its
        predictions; True: stop the epoch here."""
        self.total = self.total + loss * count
        self.score = self.score + score
        self.first_bad = note_bad_step(self.first_bad, loss, number)
        self.seen += count
        return False

    def running(self, number: int) -> str | None:
        """The running mean loss for the progress bar, every 50 steps (it syncs)."""
        return f"{float(self.total) / self.seen:.4f}" if number % 50 == 0 else None

    def totals(self) -> EpochTotals:
        """This rank's epoch so far."""
        return EpochTotals(float(self.total), self.seen, float(self.first_bad), float(self.score))


class HostTally(DeviceTally):
    """An epoch's train loss read batch by batch: a finetune step runs the encoders, so the sync is free
    next to it. In one process the epoch stops at the first NaN or infinite loss; under torchrun every
    rank ends the epoch, then all stop (check_finite)."""

    def __init__(self, device: torch.device):
        self.total, self.seen, self.first_bad, self.score = 0.0, 0, NEVER, 0.0

    def add(self, loss: torch.Tensor, count: float, number: int, score=0.0) -> bool:
        value = loss.item()
        self.total += value * count
        self.score += float(score)
        self.seen += count
        if math.isfinite(value):
            return False
        self.first_bad = min(self.first_bad, number)
        return dist.world() == 1

    def running(self, number: int) -> str | None:
        return f"{self.total / self.seen:.4f}"


class StepLosses:
    """The train loss of each optimizer step of an epoch (the mean over its questions), kept on the device and
    handed to the trackers (fit.callbacks.steps) once, at the epoch's end: no host sync per step. Nothing is
    kept when no tracker wants them."""

    def __init__(self, callbacks, first: int):
        self.callbacks, self.first, self.wanted = callbacks, first, callbacks.wants_steps
        self.values, self.total, self.count = [], 0.0, 0

    def add(self, loss: torch.Tensor, count: float, last: bool) -> None:
        """A batch's loss over its `count` questions; `last`: the step's last batch (accumulation)."""
        if self.wanted:
            self.total, self.count = self.total + loss.float() * count, self.count + count
            if last:
                self.values.append(self.total / self.count)
                self.total, self.count = 0.0, 0

    def flush(self) -> None:
        if self.values:
            self.callbacks.steps(self.first, torch.stack(self.values).tolist())


def check_finite(loss_sum: float, first_bad: float, epoch: int, steps: int, run_dir: Path, what: str = "step") -> None:
    """Raise Diverged when the epoch's summed train loss is NaN or infinite, naming the epoch and the first
    bad step, before anything of the epoch is written."""
    if math.isfinite(loss_sum):
        return
    where = f"epoch {epoch}" + (f", {what} {int(first_bad)} of {steps}" if first_bad < NEVER else "")
    kept = (
        f"{run_dir / LAST} (epoch {epoch - 1}) and {BEST} are kept"
        if (run_dir / LAST).is_file()
        else "no checkpoint was written"
    )
    raise Diverged(
        f"train loss is NaN or infinite at {where}: run stopped; {kept}. Lower optim.lr "
        f"(or set optim.grad_clip) and train again"
    )


class Evaluation(NamedTuple):
    """A split evaluated: mean loss, accuracy, the predicted class per question, per-answer-type accuracy."""

    loss: float
    accuracy: float
    predictions: torch.Tensor
    per_type: dict


@torch.no_grad()
def evaluate(model, split: Split, image, question, batch_size: int, K: int, ctx) -> Evaluation:
    """The model on a split (Evaluation)."""
    model.eval()
    preds = torch.zeros(len(split), dtype=torch.long)
    score = torch.zeros(len(split))
    loss_sum = 0.0
    rows = torch.arange(len(split), device=split.img_row.device)
    for idx, img, q in batches(split, image, question, rows, batch_size):
        with ctx:
            logits = model(img, q)
        loss_sum += batch_loss(logits, split, idx, K).item() * len(idx)
        p = logits.argmax(1)
        hit = (split.target_idx[idx] == p[:, None]).float() * split.target_val[idx]
        score[idx.cpu()] = hit.sum(1).cpu()
        preds[idx.cpu()] = p.cpu()
    per_type = {}
    types = np.array(split.answer_type, dtype=object)
    for t in sorted(set(split.answer_type)):
        per_type[t] = round(float(score[torch.from_numpy(types == t)].mean()), 4)
    return Evaluation(loss_sum / max(1, len(split)), float(score.mean()) if len(split) else 0.0, preds, per_type)


class EpochTotals(NamedTuple):
    """One rank's epoch: summed loss, questions, the first bad (NaN) batch or NEVER, summed score."""

    loss_sum: float
    seen: float
    first_bad: float
    score: float


@dataclass
class History:
    """The epochs of a run so far, the best one, and early stopping's count of epochs without progress."""

    epochs: list = field(default_factory=list)
    best: dict = field(default_factory=lambda: {"epoch": 0, "val_accuracy": -1.0})
    bad_epochs: int = 0
    last: int = 0  # the last finished epoch

    def record(self, epoch: int, train: tuple, val: tuple, lrs: dict, t0: float, extra: dict) -> tuple[dict, bool]:
        """Append the epoch's metrics row (train: (loss, accuracy); learning rates before "seconds", `extra`
        after it) and print the epoch line; (the row, whether the epoch is the best so far)."""
        val_loss, val_acc, per_type = val
        train_loss, train_acc = train
        row = {
            "epoch": epoch,
            "train_loss": round(train_loss, 6),
            "train_accuracy": round(train_acc, 6),
            "val_loss": round(val_loss, 6),
            "val_accuracy": round(val_acc, 6),
            "val_accuracy_per_type": per_type,
            **lrs,
            "seconds": round(time.time() - t0, 3),
            **extra,
        }
        self.epochs.append(row)
        improved = round(val_acc, 6) > self.best["val_accuracy"]
        if improved:
            self.best, self.bad_epochs = {"epoch": epoch, "val_accuracy": round(val_acc, 6)}, 0
        else:
            self.bad_epochs += 1
        self.last = epoch
        messages.info(
            f"epoch {epoch:>3}  train loss {row['train_loss']:.4f}  train acc {train_acc:.4f}  val loss {val_loss:.4f}  "
            f"val acc {val_acc:.4f}{' *' if improved else ''}  {row['seconds']:.1f}s"
        )
        return row, improved
