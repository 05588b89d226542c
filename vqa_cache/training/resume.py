"""--resume: a run continued from its last.pt (training/loop.py's Fit), with its schedule extended when the
recipe's epochs go past the run's plan (schedule.py)."""

from __future__ import annotations

from ..errors import BadInput
from ..rundir import LAST, check_cache_keys, load_checkpoint, set_rng_state
from ..messages import info
from .schedule import resumed_plan
from .steps import History


def resume_history(fit, extend: str | None = None) -> History:
    """Continue from RUN/last.pt: the same kind of run, on the same cache, with the same vocabulary and head;
    its schedule plan, extended when the recipe's epochs go past it (schedule.resumed_plan)."""
    path = fit.run_dir / LAST
    ckpt = load_checkpoint(path, resume=True)
    if ckpt.get("mode") != fit.mode:
        raise BadInput(f"--resume: {fit.run_dir} is not a {fit.mode or 'train'} run")
    check_cache_keys(path, ckpt, fit.cache_keys)
    if ckpt["vocab"].get("answers") != fit.vocab.answers:
        raise BadInput(
            f"{path}: its answer vocabulary differs from this recipe's "
            f"({len(ckpt['vocab'].get('answers') or [])} vs {len(fit.vocab)} answers): resume with the "
            f"run's own recipe"
        )
    if ckpt["head"] != fit.head_config:
        raise BadInput(f"{path}: head {ckpt['head']} differs from this recipe's {fit.head_config}")
    fit.load_weights(ckpt, path)
    fit.optimizer.load_state_dict(ckpt["optimizer"])
    plan, extension = resumed_plan(
        ckpt.get("schedule"), ckpt["recipe"]["optim"], fit.recipe.optim, fit.steps_per_epoch, extend
    )
    fit.set_plan(plan)
    fit.scheduler.load_state_dict(ckpt["scheduler"])
    factor = fit.scheduler.lr_lambdas[0](fit.scheduler.last_epoch)  # the next step's lr, under the plan
    for group, base in zip(fit.optimizer.param_groups, fit.scheduler.base_lrs):
        group["lr"] = base * factor
    if fit.scaler and ckpt.get("scaler"):
        fit.scaler.load_state_dict(ckpt["scaler"])
    set_rng_state(ckpt["rng"])
    fit.restore(ckpt)
    info(f"resuming {fit.run_dir} after epoch {ckpt['epoch']}" + (f"; {extension}" if extension else ""))
    return History(ckpt["history"], ckpt["best"], ckpt["bad_epochs"], ckpt["epoch"])
