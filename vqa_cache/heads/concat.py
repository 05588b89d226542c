"""concat: the course baseline. [image; question] -> MLP -> answers."""

import torch
from torch import nn

from .norm import image_norm
from .registry import register


@register
class Concat(nn.Module):
    """image [B, Di], question [B, Dq] -> logits [B, K].

    Each input is normalized first (the image layer-normalized, or standardized per dimension; the question
    layer-normalized), so frozen features of any scale (random-init backbones give large ones) train with
    the same learning rate.
    """

    name = "concat"
    needs = {"image": "pooled", "question": "pooled"}
    defaults = {"hidden": 1024}

    def __init__(
        self,
        image_dim: int,
        question_dim: int,
        num_answers: int,
        hidden: int = 1024,
        dropout: float = 0.3,
        standardize: bool = False,
    ):
        super().__init__()
        self.norm_i, self.norm_q = image_norm(image_dim, standardize), nn.LayerNorm(question_dim)
        self.mlp = nn.Sequential(
            nn.Dropout(dropout),
            nn.Linear(image_dim + question_dim, hidden),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, num_answers),
        )

    def forward(self, image: torch.Tensor, question: torch.Tensor) -> torch.Tensor:
        return self.mlp(torch.cat([self.norm_i(image), self.norm_q(question)], dim=-1))
