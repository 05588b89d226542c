"""butd: the bottom-up/top-down model (Anderson et al. 2018) on grid cells, with its own question encoder."""

import torch
from torch import nn

from .norm import image_norm
from .registry import register
from .words import QuestionRNN


class GatedTanh(nn.Module):
    """x [..., Din] -> tanh(W x) * sigmoid(W' x) [..., Dout], the paper's gated non-linearity."""

    def __init__(self, din: int, dout: int):
        super().__init__()
        self.linear = nn.Linear(din, 2 * dout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y, gate = self.linear(x).chunk(2, dim=-1)
        return torch.tanh(y) * torch.sigmoid(gate)


class TopDownAttention(nn.Module):
    """grid [B, N, Di], question [B, Dq] -> attended image [B, Di]: a_n = softmax_n(w^T f([v_n; q])), sum_n a_n v_n."""

    keep_attention, last_attention = False, None

    def __init__(self, image_dim: int, question_dim: int, hidden: int, dropout: float):
        super().__init__()
        self.joint = GatedTanh(image_dim + question_dim, hidden)
        self.score = nn.Sequential(nn.Dropout(dropout), nn.Linear(hidden, 1))

    def forward(self, v: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        joint = self.joint(torch.cat([v, q.unsqueeze(1).expand(-1, v.shape[1], -1)], dim=-1))  # [B, N, H]
        weights = self.score(joint).float().softmax(dim=1).to(v.dtype)  # [B, N, 1]
        if self.keep_attention:
            self.last_attention = weights.detach().float()[..., 0]  # [B, N]
        return (weights * v).sum(1)  # [B, Di]


@register
class BUTD(nn.Module):
    """image grid [B, N, Di], question ids [B, L] (token id + 1, 0 = padding) -> logits [B, K].

    q = GRU(Embedding(ids)) [B, H] (final state; `layers` deep); v = TopDownAttention(grid, q) [B, Di];
    h = GatedTanh(q) * GatedTanh(v) [B, H]; logits = Linear(GatedTanh(h)) [B, K] (the gated classifier).
    question_dim is the number of embedding rows (vocabulary size + 1). With `keep_attention` set, forward
    also keeps the top-down attention over the cells in `last_attention` [B, N] (vqa_cache/explain.py).
    """

    name = "butd"
    needs = {"image": "grid", "question": "ids"}
    defaults = {"hidden": 256, "layers": 1, "embed": 128}
    keep_attention, last_attention = False, None

    def __init__(
        self,
        image_dim: int,
        question_dim: int,
        num_answers: int,
        hidden: int = 256,
        dropout: float = 0.3,
        layers: int = 1,
        embed: int = 128,
        standardize: bool = False,
    ):
        super().__init__()
        self.norm_i = image_norm(image_dim, standardize)
        self.question = QuestionRNN(question_dim, embed, hidden, layers, "gru", dropout=dropout)
        self.attention = TopDownAttention(image_dim, hidden, hidden, dropout)
        self.q_net, self.v_net = GatedTanh(hidden, hidden), GatedTanh(image_dim, hidden)
        self.classifier = nn.Sequential(
            nn.Dropout(dropout), GatedTanh(hidden, hidden), nn.Dropout(dropout), nn.Linear(hidden, num_answers)
        )

    def forward(self, image: torch.Tensor, question: torch.Tensor) -> torch.Tensor:
        v = self.norm_i(image)  # [B, N, Di]
        q = self.question(question)  # [B, H]
        self.attention.keep_attention = self.keep_attention
        attended = self.attention(v, q)  # [B, Di]
        if self.keep_attention:
            self.last_attention = self.attention.last_attention
        return self.classifier(self.q_net(q) * self.v_net(attended))
