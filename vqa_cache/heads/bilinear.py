"""bilinear: low-rank bilinear pooling (MFB, of the MLB/MUTAN family) of the two pooled vectors."""

import torch
import torch.nn.functional as F
from torch import nn

from .norm import image_norm
from .registry import register


@register
class Bilinear(nn.Module):
    """image [B, Di], question [B, Dq] -> logits [B, K].

    A full bilinear map z_h = i^T W_h q costs Di*Dq*H parameters; here each W_h has rank `factors`:
    both inputs are projected to [B, H, factors], multiplied element-wise and summed over the factors
    (MFB, Yu et al. 2017), then power- (signed square root) and L2-normalized -> [B, H] -> MLP.
    """

    name = "bilinear"
    needs = {"image": "pooled", "question": "pooled"}
    defaults = {"hidden": 1024}

    def __init__(
        self,
        image_dim: int,
        question_dim: int,
        num_answers: int,
        hidden: int = 1024,
        dropout: float = 0.3,
        factors: int = 4,
        standardize: bool = False,
    ):
        super().__init__()
        self.hidden, self.factors = hidden, factors
        self.image = nn.Sequential(
            image_norm(image_dim, standardize), nn.Dropout(dropout), nn.Linear(image_dim, hidden * factors)
        )
        self.question = nn.Sequential(
            nn.LayerNorm(question_dim), nn.Dropout(dropout), nn.Linear(question_dim, hidden * factors)
        )
        self.classifier = nn.Sequential(
            nn.Dropout(dropout), nn.Linear(hidden, hidden), nn.GELU(), nn.Linear(hidden, num_answers)
        )

    def forward(self, image: torch.Tensor, question: torch.Tensor) -> torch.Tensor:
        z = (self.image(image) * self.question(question)).view(-1, self.hidden, self.factors).sum(-1)  # [B, H]
        z = torch.sign(z) * torch.sqrt(z.abs() + 1e-8)
        return self.classifier(F.normalize(z.float(), dim=-1).to(z.dtype) * self.hidden**0.5)
