"""hadamard: project both inputs to one space and multiply element-wise (the VQA-LSTM-CNN fusion)."""

import torch
from torch import nn

from .norm import image_norm
from .registry import register


@register
class Hadamard(nn.Module):
    """image [B, Di], question [B, Dq] -> (W_i image) * (W_q question) [B, H] -> MLP -> logits [B, K]."""

    name = "hadamard"
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
        self.image = nn.Sequential(
            image_norm(image_dim, standardize), nn.Dropout(dropout), nn.Linear(image_dim, hidden), nn.Tanh()
        )
        self.question = nn.Sequential(
            nn.LayerNorm(question_dim), nn.Dropout(dropout), nn.Linear(question_dim, hidden), nn.Tanh()
        )
        self.classifier = nn.Sequential(
            nn.Dropout(dropout), nn.Linear(hidden, hidden), nn.GELU(), nn.Linear(hidden, num_answers)
        )

    def forward(self, image: torch.Tensor, question: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.image(image) * self.question(question))
