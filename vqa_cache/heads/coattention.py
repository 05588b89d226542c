"""coattention: a small MCAN-style transformer over question tokens and grid cells."""

import torch
from torch import nn

from .norm import image_norm
from .registry import register


class Block(nn.Module):
    """Pre-norm self-attention (+ optional guided attention to another sequence) + feed-forward."""

    def __init__(self, dim: int, heads: int, dropout: float, guided: bool):
        super().__init__()
        self.n1 = nn.LayerNorm(dim)
        self.self_att = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.guided = guided
        if guided:
            self.n2 = nn.LayerNorm(dim)
            self.cross = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.n3 = nn.LayerNorm(dim)
        self.ff = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(4 * dim, dim))
        self.drop = nn.Dropout(dropout)

    def forward(self, x, pad, other=None, other_pad=None):
        h = self.n1(x)
        x = x + self.drop(self.self_att(h, h, h, key_padding_mask=pad, need_weights=False)[0])
        if self.guided:
            h = self.n2(x)
            x = x + self.drop(self.cross(h, other, other, key_padding_mask=other_pad, need_weights=False)[0])
        return x + self.drop(self.ff(self.n3(x)))


@register
class CoAttention(nn.Module):
    """image grid [B, N, Di], question token states [B, L, Dq] -> logits [B, K].

    Padding positions of the question are all-zero vectors (the cache loader multiplies token states
    by the attention mask), so the mask is recovered from the tensor itself; a `mask` [B, L] (1 = real
    token) may also be passed. Encoder-decoder MCAN (Yu et al. 2019) with `layers` layers of width
    `dim` (default hidden // 2: 128 at this head's default hidden of 256, sized for a CPU; MCAN's is 512):
    the question goes through self-attention layers; the grid cells through self-attention plus attention
    guided by the encoded question. Both are then attention-pooled, summed and classified. With
    `keep_attention` set, forward also keeps the grid's attention pooling (the weight of each cell in the
    pooled image vector) in `last_attention` [B, N] (vqa_cache/explain.py).
    """

    name = "coattention"
    needs = {"image": "grid", "question": "tokens"}
    defaults = {"hidden": 256, "layers": 2}
    keep_attention, last_attention = False, None

    def __init__(
        self,
        image_dim: int,
        question_dim: int,
        num_answers: int,
        hidden: int = 256,
        dropout: float = 0.1,
        layers: int = 2,
        dim: int | None = None,
        heads: int = 8,
        standardize: bool = False,
    ):
        super().__init__()
        dim = dim or max(heads, hidden // 2 // heads * heads)
        self.proj_i = nn.Sequential(image_norm(image_dim, standardize), nn.Linear(image_dim, dim))
        self.proj_q = nn.Sequential(nn.LayerNorm(question_dim), nn.Linear(question_dim, dim))
        self.cells = 64  # learned positions for up to 64 grid cells
        self.pos_i = nn.Parameter(torch.zeros(1, self.cells, dim))
        self.enc = nn.ModuleList(Block(dim, heads, dropout, guided=False) for _ in range(layers))
        self.dec = nn.ModuleList(Block(dim, heads, dropout, guided=True) for _ in range(layers))
        self.pool_q, self.pool_i = nn.Linear(dim, 1), nn.Linear(dim, 1)
        self.norm = nn.LayerNorm(dim)
        self.classifier = nn.Sequential(
            nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, num_answers)
        )

    def _pool(self, x, score, pad, keep: bool = False):
        s = score(x).squeeze(-1).float()
        if pad is not None:
            s = s.masked_fill(pad, float("-inf"))
        weights = s.softmax(-1)
        if keep:
            self.last_attention = weights.detach()  # [B, N]
        return torch.einsum("bn,bnd->bd", weights.to(x.dtype), x)

    def forward(self, image: torch.Tensor, question: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        pad = (mask == 0) if mask is not None else (question == 0).all(-1)  # [B, L] True = padding
        length = int((~pad).any(0).nonzero().max()) + 1 if (~pad).any() else 1
        question, pad = question[:, :length], pad[:, :length]  # trimmed: the longest question
        pad = pad & ~pad.all(-1, keepdim=True)  # an empty question attends to all
        q = self.proj_q(question)  # [B, L, dim]
        v = self.proj_i(image)  # [B, N, dim]
        n = v.shape[1]
        if n <= self.cells:
            v = v + self.pos_i[:, :n]
        for block in self.enc:
            q = block(q, pad)
        for block in self.dec:
            v = block(v, None, q, pad)
        return self.classifier(
            self.norm(self._pool(q, self.pool_q, pad) + self._pool(v, self.pool_i, None, self.keep_attention))
        )
