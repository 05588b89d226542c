"""attention: question-guided top-down attention over grid cells (the bottom-up/top-down VQA head)."""

import torch
from torch import nn

from .norm import image_norm
from .registry import register


@register
class Attention(nn.Module):
    """image grid [B, N, Di] (N = h*w cells), question [B, Dq] -> logits [B, K].

    Anderson et al. 2018: a_n = softmax_n(w^T (relu(W_v v_n) * relu(W_q q))) [B, N];
    v = sum_n a_n v_n [B, Di]; joint = relu(U_v v) * relu(U_q q) [B, H] -> MLP -> [B, K].
    `glimpses` attention maps are computed and their attended vectors concatenated. With `keep_attention`
    set, forward also keeps the map over the cells, averaged over the glimpses, in `last_attention` [B, N]
    (detached float32; vqa_cache/explain.py), and returns the same logits.
    """

    name = "attention"
    needs = {"image": "grid", "question": "pooled"}
    defaults = {"hidden": 1024}
    keep_attention, last_attention = False, None  # explain.py sets the flag and reads the map

    def __init__(
        self,
        image_dim: int,
        question_dim: int,
        num_answers: int,
        hidden: int = 1024,
        dropout: float = 0.3,
        glimpses: int = 2,
        standardize: bool = False,
    ):
        super().__init__()
        self.norm_i, self.norm_q = image_norm(image_dim, standardize), nn.LayerNorm(question_dim)
        self.att_v = nn.Sequential(nn.Linear(image_dim, hidden), nn.ReLU())
        self.att_q = nn.Sequential(nn.Linear(question_dim, hidden), nn.ReLU())
        self.att = nn.Sequential(nn.Dropout(dropout), nn.Linear(hidden, glimpses))
        self.out_v = nn.Sequential(nn.Dropout(dropout), nn.Linear(image_dim * glimpses, hidden), nn.ReLU())
        self.out_q = nn.Sequential(nn.Dropout(dropout), nn.Linear(question_dim, hidden), nn.ReLU())
        self.classifier = nn.Sequential(
            nn.Dropout(dropout), nn.Linear(hidden, hidden), nn.GELU(), nn.Linear(hidden, num_answers)
        )

    def forward(self, image: torch.Tensor, question: torch.Tensor) -> torch.Tensor:
        v, q = self.norm_i(image), self.norm_q(question)  # [B, N, Di], [B, Dq]
        logits = self.att(self.att_v(v) * self.att_q(q).unsqueeze(1))  # [B, N, G]
        weights = logits.float().softmax(dim=1).to(v.dtype)  # [B, N, G]
        if self.keep_attention:
            self.last_attention = weights.detach().float().mean(-1)  # [B, N]
        attended = torch.einsum("bng,bnd->bgd", weights, v).flatten(1)  # [B, G*Di]
        return self.classifier(self.out_v(attended) * self.out_q(q))
