"""A run's optimizer and lr schedule: torch.optim's own AdamW, Adam and SGD update functions
(torch.optim.adamw.adamw, adam.adam, sgd.sgd: the functions torch.optim's classes call in step) over
parameter groups, with torch.optim's state_dict layout, and LambdaLR's schedule.

Why not torch.optim.AdamW itself: every method of a torch.optim.Optimizer (its constructor, step, zero_grad,
state_dict) goes through torch._disable_dynamo, whose first call imports torch._dynamo (sympy, torch.fx):
1.2 to 2 s and 0.14 GiB on this project's 2-core machines, more than all of a cached head's other setup at
20,000 images, paid by every run. The update functions are free of it outside torch.compile.

What holds (tests/test_optimizer.py, against torch.optim's classes): the same parameters after every step,
bit for bit; state dicts that load into each other both ways (a checkpoint of either resumes under the
other); LambdaLR's lr at every step and its state_dict keys. GradScaler steps it like a torch optimizer (it
reads param_groups and calls step).
"""

from __future__ import annotations

import copy
from collections import defaultdict
from collections.abc import Callable

import torch
from torch.optim.adam import adam
from torch.optim.adamw import adamw
from torch.optim.sgd import sgd

# Each kind's group keys with torch.optim's defaults (the keys its classes put in param_groups; the recipe
# sets lr, betas, eps, weight_decay, momentum, nesterov).
ADAM = {
    "lr": 1e-3,
    "betas": (0.9, 0.999),
    "eps": 1e-8,
    "weight_decay": 0.0,
    "amsgrad": False,
    "maximize": False,
    "foreach": None,
    "capturable": False,
    "differentiable": False,
    "fused": None,
}
DEFAULTS = {
    "adamw": {**ADAM, "weight_decay": 1e-2},
    "adam": ADAM,
    "sgd": {
        "lr": 1e-3,
        "momentum": 0.0,
        "dampening": 0.0,
        "weight_decay": 0.0,
        "nesterov": False,
        "maximize": False,
        "foreach": None,
        "differentiable": False,
        "fused": None,
    },
}


class Optimizer:
    """torch.optim.{AdamW, Adam, SGD}(param_groups, **settings) without torch.optim.Optimizer: `kind` names
    the update; each group is a dict with "params" and any of DEFAULTS[kind]'s keys (others, such as a
    group's "name", are kept as they are)."""

    def __init__(self, kind: str, param_groups: list[dict], **settings):
        self.kind = kind
        self.defaults = {**DEFAULTS[kind], **settings}
        self.param_groups = [{**self.defaults, **g, "params": list(g["params"])} for g in param_groups]
        self.state: defaultdict[torch.Tensor, dict] = defaultdict(dict)

    def zero_grad(self, set_to_none: bool = True) -> None:
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    if set_to_none:
                        p.grad = None
                    else:
                        p.grad.detach_().zero_()

    @torch.no_grad()
    def step(self) -> None:
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if params:
                (self.sgd_step if self.kind == "sgd" else self.adam_step)(group, params)

    def adam_step(self, group: dict, params: list[torch.Tensor]) -> None:
        """torch.optim.Adam(W).step on one group: its lazy state (step on the CPU, as torch keeps it when
        neither capturable nor fused), then the update function."""
        for p in params:
            state = self.state[p]
            if not state:
                state["step"] = torch.tensor(
                    0.0, dtype=torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32
                )
                state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                if group["amsgrad"]:
                    state["max_exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        states = [self.state[p] for p in params]
        beta1, beta2 = group["betas"]
        (adamw if self.kind == "adamw" else adam)(
            params,
            [p.grad for p in params],
            [s["exp_avg"] for s in states],
            [s["exp_avg_sq"] for s in states],
            [s["max_exp_avg_sq"] for s in states] if group["amsgrad"] else [],
            [s["step"] for s in states],
            foreach=group["foreach"],
            capturable=group["capturable"],
            differentiable=group["differentiable"],
            fused=group["fused"],
            has_complex=any(torch.is_complex(p) for p in params),
            amsgrad=group["amsgrad"],
            beta1=beta1,
            beta2=beta2,
            lr=group["lr"],
            weight_decay=group["weight_decay"],
            eps=group["eps"],
            maximize=group["maximize"],
        )

    def sgd_step(self, group: dict, params: list[torch.Tensor]) -> None:
        """torch.optim.SGD.step on one group: the update function fills the momentum buffers it is given."""
        momentum = group["momentum"] != 0
        buffers = [self.state[p].get("momentum_buffer") for p in params] if momentum else []
        sgd(
            params,
            [p.grad for p in params],
            buffers,
            has_sparse_grad=any(p.grad.is_sparse for p in params),
            foreach=group["foreach"],
            fused=group["fused"],
            weight_decay=group["weight_decay"],
            momentum=group["momentum"],
            lr=group["lr"],
            dampening=group["dampening"],
            nesterov=group["nesterov"],
            maximize=group["maximize"],
        )
        for p, buf in zip(params, buffers):
            self.state[p]["momentum_buffer"] = buf

    def state_dict(self) -> dict:
        """torch.optim.Optimizer.state_dict's layout: parameters numbered in group order, state by number."""
        index = {}
        groups = []
        for group in self.param_groups:
            for p in group["params"]:
                index.setdefault(id(p), len(index))
            groups.append(
                {**{k: v for k, v in group.items() if k != "params"}, "params": [index[id(p)] for p in group["params"]]}
            )
        return {"state": {index[id(p)]: s for p, s in self.state.items()}, "param_groups": groups}

    def load_state_dict(self, state_dict: dict) -> None:
        """A state_dict of this class or of torch.optim's (the same layout): the groups' settings as saved,
        the state cast to each parameter's dtype and device (a step counter stays as it is)."""
        saved = copy.deepcopy(state_dict["param_groups"])
        if len(saved) != len(self.param_groups) or any(
            len(s["params"]) != len(g["params"]) for s, g in zip(saved, self.param_groups)
        ):
            raise ValueError("loaded state dict has a different number of parameter groups or parameters")
        params = {i: p for s, g in zip(saved, self.param_groups) for i, p in zip(s["params"], g["params"])}
        self.state = defaultdict(dict)
        for i, s in state_dict["state"].items():
            p = params[i]
            self.state[p] = {
                k: v if k == "step" or not torch.is_tensor(v) else v.to(dtype=p.dtype, device=p.device)
                for k, v in s.items()
            }
        self.param_groups = [{**self.defaults, **s, "params": g["params"]} for s, g in zip(saved, self.param_groups)]


class LambdaLR:
    """torch.optim.lr_scheduler.LambdaLR(optimizer, factor): each group's lr is its initial_lr times
    factor(steps taken), set at the start and after each step; state_dict has LambdaLR's keys."""

    def __init__(self, optimizer: Optimizer, factor: Callable[[int], float]):
        self.optimizer = optimizer
        for group in optimizer.param_groups:
            group.setdefault("initial_lr", group["lr"])
        self.base_lrs = [group["initial_lr"] for group in optimizer.param_groups]
        self.lr_lambdas = [factor] * len(self.base_lrs)
        self.last_epoch = 0  # (LambdaLR's name for the number of steps taken)
        self.apply()

    def apply(self) -> None:
        for group, base, factor in zip(self.optimizer.param_groups, self.base_lrs, self.lr_lambdas):
            group["lr"] = base * factor(self.last_epoch)

    def step(self) -> None:
        self.last_epoch += 1
        self.apply()

    def state_dict(self) -> dict:
        return {
            "base_lrs": list(self.base_lrs),
            "last_epoch": self.last_epoch,
            "_step_count": self.last_epoch + 1,
            "_last_lr": [group["lr"] for group in self.optimizer.param_groups],
            "lr_lambdas": [None] * len(self.base_lrs),
        }

    def load_state_dict(self, state_dict: dict) -> None:
        """LambdaLR's own state_dict or this one's: the steps taken and the base lrs (the lr is set by the
        caller or the next step, as with LambdaLR)."""
        self.base_lrs = list(state_dict["base_lrs"])
        self.last_epoch = state_dict["last_epoch"]
