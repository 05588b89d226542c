"""finetune under torchrun: DistributedDataParallel over what trains, trained BatchNorm layers on the
statistics of the global batch."""

from __future__ import annotations

import torch
from torch import nn

from .. import distributed as dist


class RankSyncedBatchNorm(nn.modules.batchnorm._BatchNorm):
    """A trained BatchNorm layer under DDP: in training, the batch statistics are those of the global batch
    (per-channel sums, sums of squares and counts summed over the ranks, differentiably), as in one process
    (torch's SyncBatchNorm, for the CPU too). Trained BatchNorm layers are switched to this class in place
    (same parameters, buffers and state-dict keys); in eval mode, or without torchrun, it is plain BatchNorm."""

    def _check_input_dim(self, input):
        pass

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.enabled()):
            return super().forward(x)
        c = x.shape[1]
        dims = [0] + list(range(2, x.dim()))
        xf = x.float()
        count = xf.new_full((1,), xf.numel() // max(1, c))
        stats = dist.sum_with_grad(torch.cat([xf.sum(dims), (xf * xf).sum(dims), count]))
        n = stats[-1]
        mean = stats[:c] / n
        var = (stats[c : 2 * c] / n - mean * mean).clamp(min=0)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.mul_(1 - m).add_(mean.detach() * m)
                self.running_var.mul_(1 - m).add_(var.detach() * (n / (n - 1).clamp(min=1)) * m)
        shape = [1, c] + [1] * (x.dim() - 2)
        y = (xf - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y.to(x.dtype)


def wrap_ddp(model: nn.Module, device: torch.device, img_rows: torch.Tensor, q_rows: torch.Tensor) -> nn.Module:
    """DistributedDataParallel over what trains: the head and the trained encoder parameters (full
    weights or LoRA adapters); frozen parameters are left out. Trained BatchNorm layers become
    RankSyncedBatchNorm (global batch statistics, so their running statistics are the same on every
    rank), so no buffer needs DDP's broadcasts (the decoded texts, bag-of-words features and frozen
    statistics are identical on every rank by construction).

    find_unused_parameters only where needed: one eval-mode forward and backward of (img_rows, q_rows)
    (the same on every rank) tells whether some trained parameter gets no gradient."""
    trained = [p for p in model.parameters() if p.requires_grad]
    was = model.training
    model.eval()
    model(img_rows, q_rows).float().sum().backward()
    unused = any(p.grad is None for p in trained)
    for p in trained:
        p.grad = None
    model.train(was)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and any(p.requires_grad for p in m.parameters(False)):
            m.__class__ = RankSyncedBatchNorm
    ignore = [n for n, p in model.named_parameters() if not p.requires_grad]
    ignore += [n for n, _ in model.named_buffers()]
    DDP = torch.nn.parallel.DistributedDataParallel
    DDP._set_params_and_buffers_to_ignore_for_model(model, ignore)
    # not static_graph: it cannot start under no_sync (gradient accumulation)
    return DDP(model, device_ids=[device.index] if device.type == "cuda" else None, find_unused_parameters=unused)
