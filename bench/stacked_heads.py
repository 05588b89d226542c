"""K concat heads stepped one after another against the same K heads stacked into one, side by side in one
run (issue 22: would `sweep --parallel K` gain from stacking its trials' heads?).

Stacked: torch.func's stack_module_state + vmap(functional_call), each weight with a leading K dimension,
so each op of a step runs once for the K heads (batched matrix products) instead of K times. Both modes do
the same work per step: each head's forward on the same batch with its own dropout masks, its soft-score
BCE (vqa_cache's batch_loss, stacked: over the K heads' logits as one batch of K x B), backward, each
head's gradients clipped to norm 1 on their own, and one torch.optim.AdamW step. Before timing, the stacked forward is checked against the
separate heads' (dropout off). Printed, for each thread count: ms per step of all K heads in each mode and
the ratio stacked / separate (below 1: stacking saves time).

    python bench/stacked_heads.py                 # VQA v2 shape: ResNet50 2048 + TinyBERT 312, 3129 answers
    python bench/stacked_heads.py --image-dim 512 --question-dim 1024 --answers 1000 --hidden 256  # bench/scale.py's
    python bench/stacked_heads.py --device cuda
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import time
from types import SimpleNamespace

import torch
from torch.func import functional_call, stack_module_state, vmap

from vqa_cache.heads.concat import Concat
from vqa_cache.training.steps import batch_loss


def clip_each(grads: list[torch.Tensor], max_norm: float = 1.0) -> None:
    """Each head's gradients (dim 0: the head) scaled to a norm of at most max_norm, as clip_grad_norm_
    does for one head."""
    norms = torch.stack([g.flatten(1).norm(dim=1) for g in grads]).norm(dim=0)
    scale = (max_norm / (norms + 1e-6)).clamp(max=1.0)
    for g in grads:
        g.mul_(scale.view(-1, *[1] * (g.dim() - 1)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--k", type=int, default=4, help="heads (trials trained together)")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--image-dim", type=int, default=2048)
    ap.add_argument("--question-dim", type=int, default=312)
    ap.add_argument("--answers", type=int, default=3129)
    ap.add_argument("--hidden", type=int, default=1024)
    ap.add_argument("--dropout", type=float, default=0.3)
    ap.add_argument("--steps", type=int, default=20, help="timed steps per round")
    ap.add_argument("--rounds", type=int, default=3, help="rounds, the modes interleaved; the median is printed")
    ap.add_argument("--device", default="cpu")
    a = ap.parse_args()
    dev = torch.device(a.device)
    torch.manual_seed(0)
    B, A = a.batch, a.answers
    image = torch.randn(B, a.image_dim, device=dev)
    question = torch.randn(B, a.question_dim, device=dev)
    # a split's targets as batch_loss reads them: 10 answers each (class A: out of the vocabulary)
    split = SimpleNamespace(
        target_idx=torch.randint(0, A + 1, (B, 10), device=dev), target_val=torch.rand(B, 10, device=dev), multi=True
    )
    idx, stacked_idx = torch.arange(B, device=dev), torch.arange(B, device=dev).repeat(a.k)
    heads = [Concat(a.image_dim, a.question_dim, A, a.hidden, a.dropout).to(dev) for _ in range(a.k)]

    # stacked: copies of the same K heads' weights, each with a leading dimension of K
    params, buffers = stack_module_state(copy.deepcopy(heads))
    params = {k: v.detach().requires_grad_() for k, v in params.items()}
    base = copy.deepcopy(heads[0]).to("meta")

    def one(p, b, img, q):
        return functional_call(base, (p, b), (img, q))

    stacked = vmap(one, in_dims=(0, 0, None, None), randomness="different")
    sep_opt = [torch.optim.AdamW(h.parameters(), lr=1e-3, foreach=True) for h in heads]
    stk_opt = torch.optim.AdamW(params.values(), lr=1e-3, foreach=True)

    with torch.no_grad():  # the same function: dropout off, the stacked logits are the separate heads'
        for h in heads:
            h.eval()
        base.eval()
        want = torch.stack([h(image, question) for h in heads])
        got = stacked(params, buffers, image, question)
        err = (want - got).abs().max().item()
        losses = sum(batch_loss(w, split, idx, A) for w in want).item()
        stacked_loss = (batch_loss(got.reshape(-1, A), split, stacked_idx, A) * a.k).item()
    print(
        f"stacked forward against the separate heads' (dropout off): largest difference {err:.2e}; "
        f"summed loss {losses:.6f} separate, {stacked_loss:.6f} stacked"
    )
    assert err < 1e-3 * max(1.0, want.abs().max().item()), err
    assert abs(losses - stacked_loss) < 1e-4 * abs(losses), (losses, stacked_loss)
    for h in heads:
        h.train()
    base.train()

    def separate_step():
        for h, opt in zip(heads, sep_opt):
            batch_loss(h(image, question), split, idx, A).backward()
            torch.nn.utils.clip_grad_norm_(h.parameters(), 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)

    def stacked_step():
        logits = stacked(params, buffers, image, question)  # [K, B, A]
        # the mean over K x B rows, times K: the sum of the heads' losses (each head's gradient its own loss's)
        (batch_loss(logits.reshape(-1, A), split, stacked_idx, A) * a.k).backward()
        clip_each([p.grad for p in params.values()])
        stk_opt.step()
        stk_opt.zero_grad(set_to_none=True)

    def ms_per_step(step) -> float:
        step()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(a.steps):
            step()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        return (time.perf_counter() - t0) / a.steps * 1000

    print(
        f"{a.k} concat heads (hidden {a.hidden}, dropout {a.dropout}) on batches of {B}: image {a.image_dim}, "
        f"question {a.question_dim}, {A} answers; {dev}, {os.cpu_count()} CPUs, load average "
        f"{os.getloadavg()[0]:.1f}"
    )
    counts = sorted({1, torch.get_num_threads()}) if dev.type == "cpu" else [torch.get_num_threads()]
    for n in counts:
        torch.set_num_threads(n)
        times: dict = {"separate": [], "stacked": []}
        for _ in range(a.rounds):
            times["separate"].append(ms_per_step(separate_step))
            times["stacked"].append(ms_per_step(stacked_step))
        sep, stk = statistics.median(times["separate"]), statistics.median(times["stacked"])
        print(
            f"  torch threads {n}: one after another {sep:7.1f} ms/step, stacked {stk:7.1f} ms/step, "
            f"ratio stacked / separate {stk / sep:.2f}"
        )


if __name__ == "__main__":
    main()
