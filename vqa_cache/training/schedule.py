"""The optimizer (optim.name: adamw | adam | sgd) and the learning-rate schedule (optim.schedule: cosine |
onecycle | constant | step) of a run, and what happens to the schedule when `--resume` extends a run.

A schedule is a factor of each parameter group's lr per optimizer step (LambdaLR's, optimizer.py), computed from
the step number alone, so that a resumed run takes exactly the steps an uninterrupted one would.

- cosine: linear warm-up over optim.warmup_epochs, then cosine decay from lr to min_lr at
  optim.horizon_epochs (0 = optim.epochs), the tuning playbook's T_max; after the horizon it stays at
  min_lr (unlike CosineAnnealingLR, which would rise again past T_max).
- onecycle: torch.optim.lr_scheduler.OneCycleLR's lr (cosine annealing, pct_start = optim.pct_start,
  div_factor 25, final_div_factor 1e4) with lr as max_lr over the horizon; the final lr after it.
- constant: warm-up, then lr.
- step: warm-up, then lr * gamma ** (epochs done // step_epochs) (StepLR per epoch).

The plan (a JSON-able dict in last.pt and config.json) is the schedule as it was decided: its horizon, and
the run's extensions. `--resume` with more epochs than planned never raises the lr silently: by default the
added epochs continue the schedule's tail (its final lr: min_lr for cosine); `--extend cycle` asks for a
new cosine cycle from lr down to min_lr over the added epochs. Each metrics row says its phase (lr_phase).
"""

from __future__ import annotations

import math

from ..errors import BadInput
from ..recipes import OptimSettings
from .optimizer import Optimizer

OPTIMIZERS = ("adamw", "adam", "sgd")
SCHEDULES = ("cosine", "onecycle", "constant", "step")
EXTEND = ("tail", "cycle")
ONECYCLE_DIV, ONECYCLE_FINAL_DIV = 25.0, 1e4  # torch's OneCycleLR defaults


def make_optimizer(param_groups: list[dict], optim: OptimSettings) -> Optimizer:
    """optim.name's optimizer over the parameter groups (each may carry its own lr): torch.optim's update,
    without torch.optim.Optimizer's import of torch._dynamo (optimizer.py)."""
    if optim.name in ("adamw", "adam"):
        return Optimizer(
            optim.name,
            param_groups,
            lr=optim.lr,
            betas=tuple(optim.betas),
            eps=optim.eps,
            weight_decay=optim.weight_decay,
        )
    if optim.name == "sgd":
        return Optimizer(
            "sgd",
            param_groups,
            lr=optim.lr,
            momentum=optim.momentum,
            nesterov=optim.nesterov,
            weight_decay=optim.weight_decay,
        )
    raise BadInput(f"recipe key 'optim.name' must be one of {', '.join(OPTIMIZERS)}, got {optim.name!r}")


def new_plan(optim: OptimSettings, steps_per_epoch: int) -> dict:
    """The schedule of a fresh run: its name, horizon (epochs), the planned epochs, no extensions."""
    return {
        "schedule": optim.schedule,
        "steps_per_epoch": steps_per_epoch,
        "horizon_epochs": optim.horizon_epochs or optim.epochs,
        "epochs": optim.epochs,
        "extensions": [],
    }


def resumed_plan(
    saved: dict | None, saved_optim: dict, optim: OptimSettings, steps_per_epoch: int, extend: str | None
) -> tuple[dict, str | None]:
    """The plan of a resumed run: the checkpoint's (a run of an earlier version: made from its recipe), with
    an extension when optim.epochs goes past it ("tail" unless `extend` says "cycle"). (plan, what the run
    line says of it, or None when nothing changed)."""
    if saved is None:  # a run of an earlier version: its recipe's cosine over its epochs
        saved = {
            "schedule": saved_optim.get("schedule", "cosine"),
            "steps_per_epoch": steps_per_epoch,
            "horizon_epochs": saved_optim.get("horizon_epochs") or saved_optim["epochs"],
            "epochs": saved_optim["epochs"],
            "extensions": [],
        }
    plan = {**saved, "extensions": list(saved.get("extensions", []))}
    end = plan["epochs"]
    if extend is not None and extend not in EXTEND:
        raise BadInput(f"--extend {extend!r}: expected one of {', '.join(EXTEND)}")
    if optim.epochs <= end:
        if extend is not None:
            raise BadInput(f"--extend {extend}: the run is planned for {end} epochs; give --epochs beyond {end}")
        return plan, None
    mode = extend or "tail"
    plan["extensions"].append({"after_epoch": end, "to_epoch": optim.epochs, "mode": mode})
    plan["epochs"] = optim.epochs
    if mode == "tail":
        said = (
            f"epochs {end + 1}-{optim.epochs} continue the {plan['schedule']} schedule's tail at its final lr "
            f"(it ended at epoch {plan['horizon_epochs']:g}); --extend cycle starts a new cosine cycle instead"
        )
    else:
        said = f"epochs {end + 1}-{optim.epochs} are a new cosine cycle from lr {optim.lr:g} down to min_lr {optim.min_lr:g}"
    return plan, f"extending from {end} to {optim.epochs} epochs: {said}"


def phase(plan: dict, epoch: int) -> str:
    """What part of the plan an epoch (1-based) runs in: the schedule's name, "tail" or "cycle"."""
    for ext in plan.get("extensions", []):
        if ext["after_epoch"] < epoch <= ext["to_epoch"]:
            return ext["mode"]
    return plan["schedule"]


def lr_factor(optim: OptimSettings, plan: dict):
    """The LambdaLR factor of step s (0-based optimizer steps) under `plan`."""
    spe = max(1, plan["steps_per_epoch"])
    base = base_factor(optim, plan["schedule"], spe, max(1, round(plan["horizon_epochs"] * spe)))
    floor = optim.min_lr / optim.lr if optim.lr else 0.0
    cycles = [(e["after_epoch"] * spe, e["to_epoch"] * spe) for e in plan.get("extensions", []) if e["mode"] == "cycle"]

    def f(step):
        for start, end in reversed(cycles):
            if step >= start:
                t = min(1.0, (step - start) / max(1, end - start))
                return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * t))
        return base(step)

    return f


def base_factor(optim: OptimSettings, name: str, spe: int, total: int):
    """The schedule `name` over `total` steps (spe per epoch), as a factor of lr."""
    warm = max(0, int(optim.warmup_epochs * spe))
    floor = optim.min_lr / optim.lr if optim.lr else 0.0

    def warmup(step, value):
        return value * (step + 1) / warm if step < warm else value

    if name == "cosine":

        def f(step):
            if step < warm:
                return (step + 1) / warm
            t = min(1.0, (step - warm) / max(1, total - warm))
            return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * t))

        return f
    if name == "constant":
        return lambda step: warmup(step, 1.0)
    if name == "step":
        return lambda step: warmup(step, optim.gamma ** ((step // spe) // optim.step_epochs))
    if name == "onecycle":
        return onecycle(optim.pct_start, total)
    raise BadInput(f"recipe key 'optim.schedule' must be one of {', '.join(SCHEDULES)}, got {name!r}")


def onecycle(pct_start: float, total: int):
    """OneCycleLR's factor of max_lr (anneal_strategy cos, two phases), held at its end past `total` steps."""
    start, low = 1 / ONECYCLE_DIV, 1 / ONECYCLE_DIV / ONECYCLE_FINAL_DIV
    up = float(pct_start * total) - 1

    def anneal(a, b, pct):
        return b + (a - b) / 2.0 * (math.cos(math.pi * pct) + 1)

    def f(step):
        step = min(step, total - 1)
        if step <= up:
            return anneal(start, 1.0, step / up) if up > 0 else 1.0
        return anneal(1.0, low, (step - up) / max(1e-12, total - 1 - up))

    return f
