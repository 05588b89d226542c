"""training/optimizer.py against torch.optim's own classes: the same parameters after every step, bit for bit,
under LambdaLR's lr; state dicts that load into each other both ways."""

from __future__ import annotations

import io
import math

import pytest
import torch

from vqa_cache.training.optimizer import LambdaLR, Optimizer

SETTINGS = {
    "adamw": dict(lr=0.01, betas=(0.8, 0.99), eps=1e-7, weight_decay=0.05),
    "adam": dict(lr=0.01, betas=(0.9, 0.98), eps=1e-8, weight_decay=0.01),
    "adam-amsgrad": dict(lr=0.01, amsgrad=True),
    "sgd": dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3),
    "sgd-plain": dict(lr=0.05),
}
TORCH = {"adamw": "AdamW", "adam": "Adam", "sgd": "SGD"}


def factor(step: int) -> float:
    """A warm-up and a cosine: the lr changes at every step."""
    return (step + 1) / 3 if step < 3 else 0.5 * (1 + math.cos(math.pi * min(1.0, (step - 3) / 6)))


def models(seed: int = 0):
    """Two equal small models (a float64 bias among them), and their parameters split in two groups, the
    second with its own lr and one parameter that never gets a gradient."""
    pair = []
    for _ in range(2):
        torch.manual_seed(seed)
        m = torch.nn.ModuleDict(
            {"a": torch.nn.Linear(6, 5), "b": torch.nn.Linear(5, 3), "unused": torch.nn.Linear(2, 2)}
        )
        m["b"].bias = torch.nn.Parameter(m["b"].bias.double())
        pair.append(m)
    return pair


def groups(m):
    return [
        {"params": list(m["a"].parameters())},
        {"params": [*m["b"].parameters(), *m["unused"].parameters()], "lr": 0.003, "name": "second"},
    ]


def make(kind_key: str, m, ours: bool):
    kind = kind_key.split("-")[0]
    if ours:
        opt = Optimizer(kind, groups(m), **SETTINGS[kind_key])
        return opt, LambdaLR(opt, factor)
    opt = getattr(torch.optim, TORCH[kind])(groups(m), **SETTINGS[kind_key])
    return opt, torch.optim.lr_scheduler.LambdaLR(opt, factor)


def steps(m, opt, sched, n: int, seed: int) -> list[list[float]]:
    """n steps on random gradients drawn from `seed` (the same for both models); the lrs used."""
    gen = torch.Generator().manual_seed(seed)
    used = []
    for _ in range(n):
        for name in ("a", "b"):
            for p in m[name].parameters():
                p.grad = torch.randn(p.shape, generator=gen, dtype=torch.float64).to(p.dtype)
        used.append([g["lr"] for g in opt.param_groups])
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
    return used


def saved(state_dict: dict) -> dict:
    """Through a checkpoint file, as --resume reads it (no tensor shared with the saver)."""
    buf = io.BytesIO()
    torch.save(state_dict, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


def same(m1, m2) -> bool:
    return all(torch.equal(p, q) for p, q in zip(m1.parameters(), m2.parameters()))


@pytest.mark.parametrize("kind", SETTINGS)
def test_steps_equal_torch_optim_bit_for_bit(kind):
    ours_m, torch_m = models()
    ours, torch_opt = make(kind, ours_m, True), make(kind, torch_m, False)
    for seed in range(6):
        assert steps(ours_m, *ours, 1, seed) == steps(torch_m, *torch_opt, 1, seed)
        assert same(ours_m, torch_m), f"step {seed + 1}"
    assert not same(ours_m, models()[0])  # they moved
    assert ours_m["unused"].weight.equal(models()[0]["unused"].weight)


@pytest.mark.parametrize("kind", SETTINGS)
@pytest.mark.parametrize("saver", ["ours", "torch"])
def test_state_dicts_load_into_each_other(kind, saver):
    """Three steps under one, its optimizer and schedule state_dicts saved and loaded into the other on a copy
    of the model; three more steps there equal three more under the first."""
    m1, _ = models()
    first = make(kind, m1, saver == "ours")
    steps(m1, *first, 3, seed=1)
    m2, _ = models()
    m2.load_state_dict(m1.state_dict())
    second = make(kind, m2, saver != "ours")
    second[0].load_state_dict(saved(first[0].state_dict()))
    second[1].load_state_dict(saved(first[1].state_dict()))
    assert second[1].last_epoch == first[1].last_epoch == 3 and second[1].base_lrs == first[1].base_lrs
    for group, base in zip(second[0].param_groups, second[1].base_lrs):  # (resume.py sets the next step's lr)
        group["lr"] = base * factor(second[1].last_epoch)
    assert [g["name"] for g in second[0].param_groups[1:]] == ["second"]
    assert steps(m1, *first, 3, seed=2) == steps(m2, *second, 3, seed=2)
    assert same(m1, m2)


def test_state_dict_has_torch_s_keys():
    """The same group keys and per-parameter state names as torch.optim.AdamW's state_dict."""
    m1, m2 = models()
    ours, theirs = make("adamw", m1, True), make("adamw", m2, False)
    steps(m1, *ours, 1, seed=0)
    steps(m2, *theirs, 1, seed=0)
    a, b = ours[0].state_dict(), theirs[0].state_dict()
    assert a["state"].keys() == b["state"].keys() == {0, 1, 2, 3}
    assert all(a["state"][i].keys() == b["state"][i].keys() for i in a["state"])
    assert all(a["state"][i]["step"].dtype == b["state"][i]["step"].dtype for i in a["state"])
    assert [g["params"] for g in a["param_groups"]] == [g["params"] for g in b["param_groups"]]
    missing = [set(g) - set(h) for g, h in zip(b["param_groups"], a["param_groups"])]
    assert missing in ([set(), set()], [{"decoupled_weight_decay"}] * 2)  # (torch >= 2.6 says it in AdamW's)


def test_a_state_dict_of_other_groups_is_refused():
    m1, m2 = models()
    ours, _ = make("adam", m1, True)
    other = Optimizer("adam", [{"params": list(m2.parameters())}])
    with pytest.raises(ValueError, match="different number of parameter groups"):
        other.load_state_dict(ours.state_dict())


def test_grad_scaler_steps_it_like_torch_s():
    """GradScaler (float16 training on a GPU; its CPU twin here) unscales the gradients through param_groups
    and steps it, and skips the step of a batch with an inf gradient, as it does torch.optim.AdamW."""
    pair = models()
    opts = [make("adamw", pair[0], True), make("adamw", pair[1], False)]
    scalers = [torch.amp.GradScaler("cpu", init_scale=1024.0) for _ in pair]
    x = torch.randn(4, 6)
    for step in range(4):
        for m, (opt, sched), scaler in zip(pair, opts, scalers):
            loss = m["a"](x).pow(2).mean()
            scaler.scale(loss).backward()
            if step == 2:
                m["a"].weight.grad[0, 0] = float("inf")
            scaler.step(opt)
            scaler.update()
            sched.step()
            opt.zero_grad(set_to_none=True)
        assert same(*pair), f"step {step + 1}"
        assert scalers[0].get_scale() == scalers[1].get_scale()
    assert scalers[0].get_scale() == 512.0  # (halved once: the inf step was skipped)
