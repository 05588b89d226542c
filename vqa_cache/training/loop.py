"""The one fit loop. Cached training (train/cached.py) and fine-tuning (vqa_cache/finetuning/) both run it:
each makes a Fit (its model, data and optimizer; the hooks below say what differs) and calls run_fit.

An epoch: the epoch's batches (epoch_batches), in groups of `accumulate` batches; for each batch, under
torchrun, this rank's part of it (rank_part); the forward under autocast; the batch loss, weighted by the
batch's share of its group, backward; after the group's last batch, gradient clipping and the optimizer
and scheduler steps. A cached training step is this with accumulate = 1. Then rank 0 evaluates and
broadcasts the validation metrics (early stopping stays in step on every rank), the epoch is recorded,
and rank 0 alone writes last.pt (and best.pt) and metrics.json. At the end: the best model's predictions
on the validation split (kept from the best epoch's evaluation), metrics.json, curves.png.

Under torchrun every rank draws the same epoch order and the same global batches of optim.batch_size;
rank r takes the r-th near-equal part of each, its loss weighted by its share, so that DDP's gradient
average is the single-process batch's gradient: the same steps and schedule as one process.
"""

from __future__ import annotations

import math
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch

from .. import distributed as dist
from .. import messages, tracking
from ..device import amp, resolve_precision
from ..errors import BadInput
from ..progress import progress
from ..recipes import to_dict
from ..rundir import (
    BEST,
    CONFIG,
    CURVES,
    LAST,
    METRICS,
    PREDICTIONS,
    load_checkpoint,
    plot_curves,
    rng_state,
    save_epoch,
    write_config,
    write_metrics,
    write_predictions,
)
from .batches import accumulation_groups, epoch_batches
from .resume import resume_history
from .parts import FitParts
from .optimizer import LambdaLR
from .schedule import lr_factor, make_optimizer, new_plan, phase
from .splits import trainable
from .steps import (
    DeviceTally,
    EpochTotals,
    History,
    StepLosses,
    batch_loss,
    batch_score,
    check_finite,
    evaluate,
    rank_part,
)


class Fit:
    """One run's parts (FitParts), which run_fit drives. Subclasses (CachedFit, FinetuneFit) build them and
    override the hooks below."""

    mode = None  # checkpoints' "mode" ("finetune"; a `train` checkpoint has none)
    unit = "step"  # what a NaN message counts ("batch" when a step takes several)
    tally = DeviceTally  # how an epoch's losses are summed (steps.py)
    lr_names = ("lr",)  # the learning rate of each parameter group, in the metrics rows
    record_train_seconds = False
    callbacks = tracking.NONE  # the trackers told of the run (--log; tracking/base.py says when), rank 0 only
    val_predictions = None  # rank 0: the last validation's predictions (validate)
    best_predictions = None  # rank 0: those of the best epoch this process trained, for predictions.json

    def __init__(self, parts: FitParts):
        recipe, device, param_groups = parts.recipe, parts.device, parts.param_groups
        self.recipe, self.run_dir, self.device, self.splits, self.vocab = (
            recipe,
            parts.run_dir,
            device,
            parts.splits,
            parts.vocab,
        )
        self.model, self.head, self.image, self.question = parts.model, parts.head, parts.image, parts.question
        self.cache_keys, self.head_config, self.config = parts.cache_keys, parts.head_config, parts.config
        self.config.setdefault("head_parameters", sum(p.numel() for p in self.head.parameters()))  # (`runs` reads it)
        self.accumulate, self.eval_batch_size = parts.accumulate, parts.eval_batch_size
        self.group_by_image = parts.group_by_image
        self.rows = trainable(self.splits["train"], len(self.vocab))
        if len(self.rows) == 0:
            raise BadInput("no training question has an answer in the vocabulary")
        optim = recipe.optim
        self.params = [p for group in param_groups for p in group["params"]]
        self.optimizer = make_optimizer(param_groups, optim)
        self.batches_per_epoch = math.ceil(len(self.rows) / optim.batch_size)
        self.steps_per_epoch = math.ceil(self.batches_per_epoch / self.accumulate)
        self.set_plan(new_plan(optim, self.steps_per_epoch))
        self.used_lrs = [group["lr"] for group in self.optimizer.param_groups]
        self.precision = resolve_precision(recipe.precision, device)
        self.ctx, self.scaler = amp(device, self.precision)
        self.config["precision"] = self.precision

    def set_plan(self, plan: dict) -> None:
        """The schedule plan (schedule.py), its LambdaLR, and config.json's record of it."""
        self.schedule_plan = plan
        self.scheduler = LambdaLR(self.optimizer, lr_factor(self.recipe.optim, plan))
        self.config["schedule"] = plan

    # ------------------------------------------------------------ hooks

    def describe(self) -> str:
        """The run's first line: what trains on what."""
        raise NotImplementedError

    def start(self) -> None:
        """A fresh run, before anything is written (finetune: the head from --init-head)."""

    def before_epochs(self, resume: bool) -> None:
        """After config.json is written, before the first epoch (finetune: epoch 0 of an --init-head)."""

    def seed_rank(self, start_epoch: int) -> None:
        """Under torchrun, ranks other than 0: their own dropout masks (rank 0 keeps the one-process stream)."""
        torch.manual_seed(self.recipe.seed * 1_000_003 + dist.rank() * 7919 + start_epoch)

    def wrap_ddp(self) -> torch.nn.Module:
        # static_graph: heads whose unused parameters are the same every step are fine
        return torch.nn.parallel.DistributedDataParallel(
            self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None, static_graph=True
        )

    def global_batch(self, image, question) -> torch.Tensor | None:
        """Under torchrun, a global batch before it is cut into the ranks' parts: the keys no cut may separate
        (rank_part), or None."""
        return None

    def load_weights(self, ckpt: dict, path: Path) -> None:
        """The trained weights of a checkpoint (best.pt at the end, last.pt to resume)."""
        self.head.load_state_dict(ckpt["model"])

    def rng_state(self) -> dict:
        """The random state last.pt records (rundir.rng_state; trained together: the run's own stream)."""
        return rng_state()

    def own_rng(self):
        """Around each training forward: nothing here; trained together (together.py), the swap of this
        run's own random number stream in and out of torch's global generator."""
        return nullcontext()

    def epoch_extra(self) -> dict:  # more of an epoch's metrics row (finetune: the augmentation tally)
        return {}

    def checkpoint_extra(self) -> dict:
        return {}

    def restore(self, ckpt: dict) -> None:
        """What else a resumed run takes from last.pt."""


def run_fit(
    fit: Fit, resume: bool = False, on_epoch=None, started: float | None = None, extend: str | None = None
) -> dict:
    """Train `fit` for the recipe's epochs (from last.pt with `resume`); returns {"epochs", "best"}.
    extend: with `resume` past the run's planned epochs, "tail" (the default) or "cycle" (schedule.py).
    on_epoch(epoch, row): called after each epoch's checkpoints and metrics are written (an exception it
    raises ends the run there, exactly like a kill: `--resume` continues from last.pt)."""
    started = started or time.time()
    history, model = begin_fit(fit, resume, extend)
    for epoch in range(history.last + 1, fit.recipe.optim.epochs + 1):
        if stopped_early(fit, history):
            break
        t0 = time.time()
        mine = train_epoch(fit, model, epoch)
        trained = time.time() - t0
        end_epoch(fit, history, epoch, mine, validate(fit), t0, trained, on_epoch)
    return end_fit(fit, history, started)


def begin_fit(fit: Fit, resume: bool, extend: str | None) -> tuple[History, torch.nn.Module]:
    """Before the first epoch: the history so far (resumed from last.pt) and the model to train (DDP under
    torchrun); config.json written, the trackers started, the run line printed."""
    if extend is not None and not resume:
        raise BadInput(f"--extend {extend}: only with --resume (it extends a run's schedule)")
    history = resume_history(fit, extend) if resume else History()
    if not resume:
        fit.start()
    model = fit.model
    if dist.enabled():
        if not dist.is_main():
            fit.seed_rank(history.last)
        fit.config["world_size"] = dist.world()
        model = fit.wrap_ddp()
    if dist.is_main():
        write_config(fit.run_dir, fit.config)
        fit.callbacks.start(fit.run_dir, fit.config)
    messages.info(fit.describe())
    fit.before_epochs(resume)
    return history, model


def stopped_early(fit: Fit, history: History) -> bool:
    """Early stopping: optim.patience epochs without a better validation accuracy."""
    patience = fit.recipe.optim.patience
    return bool(patience) and history.bad_epochs >= patience


def validate(fit: Fit):
    """The validation split's (loss, accuracy, per-type accuracy) on rank 0, broadcast to every rank."""
    val = None
    if dist.is_main():
        ev = evaluate(
            fit.model, fit.splits["val"], fit.image, fit.question, fit.eval_batch_size, len(fit.vocab), fit.ctx
        )
        val = (ev.loss, ev.accuracy, ev.per_type)
        fit.val_predictions = ev.predictions  # (end_epoch keeps the best epoch's)
    return dist.broadcast(val)  # rank 0's


def end_epoch(
    fit: Fit, history: History, epoch: int, mine: EpochTotals, val, t0: float, trained: float, on_epoch=None
) -> None:
    """After an epoch's training (`mine`: this rank's totals; `trained`: its seconds; it started at `t0`) and
    validation (`val`, validate's): check its loss, record it (rank 0: checkpoints, metrics.json, trackers),
    then on_epoch(epoch, row)."""
    loss_sum, seen, score = dist.all_reduce([mine.loss_sum, float(mine.seen), mine.score])
    check_finite(loss_sum, dist.all_reduce(mine.first_bad, "min"), epoch, fit.batches_per_epoch, fit.run_dir, fit.unit)
    extra = {"train_seconds": round(trained, 3)} if fit.record_train_seconds else {}
    extra.update(fit.epoch_extra())
    used = fit.used_lrs  # the lr of the epoch's last optimizer step, as it was used
    lrs = {name: used[i] if i < len(used) else 0.0 for i, name in enumerate(fit.lr_names)}
    lrs["lr_phase"] = phase(fit.schedule_plan, epoch)
    row, improved = history.record(epoch, (loss_sum / seen, score / seen), val, lrs, t0, extra)
    if improved and dist.is_main():
        fit.best_predictions = fit.val_predictions  # predictions.json, written at the end (finish_run)
    if dist.is_main():
        save_epoch(fit.run_dir, checkpoint(fit, history), improved, history.epochs, history.best)
        fit.callbacks.epoch(row)
    if on_epoch is not None:
        on_epoch(epoch, row)


def end_fit(fit: Fit, history: History, started: float) -> dict:
    """After the last epoch: rank 0 writes the run out (finish_run); the ranks leave together."""
    if not history.epochs:
        raise BadInput(
            f"{fit.run_dir}: nothing to train (already at epoch {history.last} of {fit.recipe.optim.epochs})"
        )
    if not dist.is_main():
        dist.barrier()  # rank 0 writes the run out; the ranks then leave the process group together
        return {"epochs": history.epochs, "best": history.best}
    result = finish_run(fit, history, started)
    dist.barrier()
    return result


def train_epoch(fit: Fit, model: torch.nn.Module, epoch: int) -> EpochTotals:
    """One pass over the training batches: this rank's totals (steps.EpochTotals; the score is the VQA score
    of the batches' predictions, made in train mode before each step)."""
    optim, split = fit.recipe.optim, fit.splits["train"]
    model.train()
    tally = fit.tally(fit.device)
    batches = epoch_batches(
        split, fit.image, fit.question, fit.rows, optim.batch_size, fit.recipe.seed, epoch, fit.group_by_image
    )
    bar = progress(
        batches,
        total=fit.batches_per_epoch,
        desc=f"epoch {epoch}/{optim.epochs}",
        unit="batch",
        leave=False,
        file=sys.stderr,
        disable=not dist.is_main(),
    )
    fit.optimizer.zero_grad(set_to_none=True)
    number = 0
    steps = StepLosses(fit.callbacks, (epoch - 1) * math.ceil(fit.batches_per_epoch / fit.accumulate) + 1)
    for group in accumulation_groups(bar, fit.accumulate):
        questions = sum(len(idx) for idx, _, _ in group)
        for k, (idx, image, question) in enumerate(group):
            number += 1
            loss, count, score = fit_batch(fit, model, idx, image, question, len(idx) / questions, k == len(group) - 1)
            if tally.add(loss, count, number, score):
                bar.close()
                return tally.totals()
            steps.add(loss, count, k == len(group) - 1)
            running = tally.running(number)
            if running is not None and dist.is_main():
                bar.set_postfix(loss=running)
    bar.close()
    steps.flush()
    return tally.totals()


def fit_batch(
    fit: Fit, model: torch.nn.Module, idx: torch.Tensor, image, question, weight: float, last: bool
) -> tuple[torch.Tensor, float, torch.Tensor]:
    """Forward and backward of one batch (this rank's part of it), its loss weighted by `weight` (its share
    of the accumulation group); after the group's `last` batch, the step. (detached loss, questions counted,
    summed score of its predictions)."""
    count, world = len(idx), dist.world()
    if world > 1:  # this rank's part of the global batch
        part, share, count = rank_part(len(idx), world, dist.rank(), fit.global_batch(image, question))
        idx, image, question, weight = idx[part], image[part], question[part], weight * share
    with model.no_sync() if world > 1 and not last else nullcontext():  # sync on the group's last batch
        with fit.own_rng(), fit.ctx:  # (the forward is where a step draws random numbers: dropout)
            logits = model(image, question)
        loss = batch_loss(logits, fit.splits["train"], idx, len(fit.vocab))
        score = batch_score(logits, fit.splits["train"], idx) * (
            count / len(idx)
        )  # a whole batch on every rank: 1/world
        weighted = loss * weight
        (fit.scaler.scale(weighted) if fit.scaler else weighted).backward()
    if last:
        optimizer_step(fit)
    return loss.detach(), count, score


def optimizer_step(fit: Fit) -> None:
    if fit.scaler:
        fit.scaler.unscale_(fit.optimizer)
    fit.used_lrs = [group["lr"] for group in fit.optimizer.param_groups]
    if fit.recipe.optim.grad_clip:
        torch.nn.utils.clip_grad_norm_(fit.params, fit.recipe.optim.grad_clip)
    if fit.scaler:
        fit.scaler.step(fit.optimizer)
        fit.scaler.update()
    else:
        fit.optimizer.step()
    fit.scheduler.step()
    fit.optimizer.zero_grad(set_to_none=True)


def checkpoint(fit: Fit, history: History) -> dict:
    """last.pt / best.pt: tensors and plain values only (rundir/checkpoints.py)."""
    return {
        "model": fit.head.state_dict(),
        "head": fit.head_config,
        "vocab": fit.vocab.to_dict(),
        "cache_keys": fit.cache_keys,
        "recipe": to_dict(fit.recipe),
        "optimizer": fit.optimizer.state_dict(),
        "scheduler": fit.scheduler.state_dict(),
        "epoch": history.last,
        "history": history.epochs,
        "best": history.best,
        "bad_epochs": history.bad_epochs,
        "rng": fit.rng_state(),
        "scaler": fit.scaler.state_dict() if fit.scaler else None,
        "schedule": fit.schedule_plan,
        **fit.checkpoint_extra(),
    }


def finish_run(fit: Fit, history: History, started: float) -> dict:
    """The best model's predictions on the validation split (official results format), metrics.json,
    curves.png, and the closing lines; the metrics. The predictions are those of the best epoch's own
    evaluation; only a resumed run whose best epoch came before the resume evaluates best.pt again."""
    run_dir, val = fit.run_dir, fit.splits["val"]
    preds = fit.best_predictions
    if preds is None:
        fit.load_weights(load_checkpoint(run_dir / BEST), run_dir / BEST)
        ev = evaluate(fit.model, val, fit.image, fit.question, fit.eval_batch_size, len(fit.vocab), fit.ctx)
        preds = ev.predictions
    write_predictions(
        run_dir / PREDICTIONS,
        val.table.column("question_id").to_pylist(),
        [fit.vocab.answers[p] for p in preds.tolist()],  # (iterating the tensor would make a tensor of each item)
    )
    metrics = write_metrics(run_dir, history.epochs, history.best)
    fit.callbacks.end(metrics)
    plot_curves(run_dir / CURVES, history.epochs)
    best, first = history.best, history.epochs[0]["epoch"]
    per_type = history.epochs[best["epoch"] - first]["val_accuracy_per_type"] if first <= best["epoch"] else {}
    messages.info(
        f"\nbest val accuracy {best['val_accuracy']:.4f} at epoch {best['epoch']}"
        + (f" ({', '.join(f'{k} {v:.4f}' for k, v in per_type.items())})" if per_type else "")
    )
    messages.info(
        f"{history.last} epochs, {np.mean([h['seconds'] for h in history.epochs]):.2f} s/epoch, "
        f"{time.time() - started:.1f} s in all"
    )
    messages.info(f"results in {run_dir}/: {METRICS} {CURVES} {PREDICTIONS} {BEST} {LAST} {CONFIG}")
    return metrics
