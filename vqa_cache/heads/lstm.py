"""lstm: the course model. Learned word embeddings, a bidirectional LSTM, fused with the pooled image."""

import torch
from torch import nn

from .norm import image_norm
from .registry import register
from .words import QuestionRNN


@register
class LSTM(nn.Module):
    """image [B, Di], question ids [B, L] (token id + 1, 0 = padding) -> logits [B, K].

    q = BiLSTM(Embedding(ids)) [B, 2H] (the final states of both directions; `layers` deep), image
    normalized and projected to [B, 2H] with tanh, fused by element-wise product (the VQA-LSTM-CNN fusion)
    -> MLP -> [B, K]. question_dim is the number of embedding rows (vocabulary size + 1).
    """

    name = "lstm"
    needs = {"image": "pooled", "question": "ids"}
    defaults = {"hidden": 256, "layers": 1, "embed": 128}

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
        self.question = QuestionRNN(question_dim, embed, hidden, layers, "lstm", bidirectional=True, dropout=dropout)
        dim = self.question.dim
        self.image = nn.Sequential(
            image_norm(image_dim, standardize), nn.Dropout(dropout), nn.Linear(image_dim, dim), nn.Tanh()
        )
        self.classifier = nn.Sequential(
            nn.Dropout(dropout), nn.Linear(dim, dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(dim, num_answers)
        )

    def forward(self, image: torch.Tensor, question: torch.Tensor) -> torch.Tensor:
        q = torch.tanh(self.question(question))  # [B, 2H]
        return self.classifier(self.image(image) * q)
