"""Learned question encoders for heads that read token ids: an embedding table and a recurrent network.

Question ids [B, L] are token ids + 1 with 0 for padding (the cache loader shifts them: vocabulary size + 1
embedding rows, row 0 the padding). A batch is trimmed to its longest question and each distinct question
of the batch is encoded once (easy-VQA: a few dozen distinct texts per batch of 256).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence


class QuestionRNN(nn.Module):
    """ids [B, L] -> the final hidden state of each question [B, hidden * directions].

    embeddings [B, L, embed] (row 0 = padding) -> `cell` (LSTM or GRU, `layers` deep, optionally
    bidirectional) over each question's real tokens -> the last layer's final state, both directions
    concatenated: forward at the last real token, backward at the first."""

    def __init__(
        self,
        rows: int,
        embed: int,
        hidden: int,
        layers: int = 1,
        cell: str = "lstm",
        bidirectional: bool = False,
        dropout: float = 0.0,
    ):
        super().__init__()
        self.embedding = nn.Embedding(rows, embed, padding_idx=0)
        rnn = {"lstm": nn.LSTM, "gru": nn.GRU}[cell]
        self.rnn = rnn(
            embed,
            hidden,
            num_layers=layers,
            batch_first=True,
            bidirectional=bidirectional,
            dropout=dropout if layers > 1 else 0.0,
        )
        self.drop = nn.Dropout(dropout)
        self.directions = 2 if bidirectional else 1
        self.dim = hidden * self.directions

    def load_embeddings(self, matrix: torch.Tensor) -> None:
        """Start the embeddings from a text model's input embedding matrix [V, embed] (token id t -> row t + 1)."""
        rows = min(len(matrix), self.embedding.num_embeddings - 1)
        with torch.no_grad():
            self.embedding.weight[1 : rows + 1] = matrix[:rows].to(self.embedding.weight.dtype)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        lengths = (ids != 0).sum(1)  # [B]
        ids = ids[:, : max(1, int(lengths.max()))]  # trimmed to the longest question
        unique, inverse = torch.unique(ids, dim=0, return_inverse=True)  # [U, L], [B]
        lengths = (unique != 0).sum(1).clamp(min=1).cpu()  # an empty question reads the padding row
        words = self.drop(self.embedding(unique))  # [U, L, embed]
        packed = pack_padded_sequence(words, lengths, batch_first=True, enforce_sorted=False)
        _, state = self.rnn(packed)
        h = state[0] if isinstance(state, tuple) else state  # LSTM (h, c) / GRU h: [layers*dirs, U, H]
        last = h[-self.directions :]  # the last layer's directions
        return torch.cat(list(last), dim=-1)[inverse]  # [B, H * dirs]
