"""The training and validation splits of stage two: questions as row indices into the feature tensors,
with their answer targets (class ids and soft scores in the vocabulary of the training split)."""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from .. import data
from ..answers import Vocabulary, build_vocabulary, ground_truth, soft_scores
from ..recipes import TrainRecipe


class Split:
    """One split's samples as row indices into the feature tensors, plus answer targets.

    img_row, q_row: [N] long     rows of the image / question feature tensors
    target_idx, target_val: [N, M]   each question's candidate answers (class ids, K = none) and soft scores
    """

    def __init__(self, table: pa.Table, img_row, q_row, vocab: Vocabulary):
        self.table = table
        self.img_row = torch.as_tensor(img_row, dtype=torch.long)
        self.q_row = torch.as_tensor(q_row, dtype=torch.long)
        answers = table.column("answers").to_pylist()
        width = max(1, max((len(set(a)) for a in answers), default=1))
        none = len(vocab)
        idx = np.full((len(answers), width), none, dtype=np.int64)
        val = np.zeros((len(answers), width), dtype=np.float32)
        for i, raw in enumerate(answers):
            if not raw:
                continue
            for j, (answer, score) in enumerate(soft_scores(ground_truth(raw)).items()):
                c = vocab.index(answer)
                if c is not None:
                    idx[i, j], val[i, j] = c, score
        self.target_idx, self.target_val = torch.from_numpy(idx), torch.from_numpy(val)
        self.multi = max((len(a) for a in answers), default=1) > 1   # 10 human answers -> soft BCE
        self.answer_type = table.column("answer_type").to_pylist()

    def __len__(self):
        return len(self.img_row)

    def to(self, device):
        for name in ("img_row", "q_row", "target_idx", "target_val"):
            setattr(self, name, getattr(self, name).to(device))
        return self


def make_split(table: pa.Table, tensors: dict, vocab: Vocabulary) -> Split:
    """The Split of a samples table's questions, whose image ids and texts are rows of tensors[kind][0]."""
    img_pos = {k: i for i, k in enumerate(tensors["image"][0])}
    q_pos = {k: i for i, k in enumerate(tensors["question"][0])}
    return Split(table, [img_pos[i] for i in table.column("image_id").to_pylist()],
                 [q_pos[q] for q in table.column("question").to_pylist()], vocab)


def with_features(table: pa.Table, image_ids: list[str]) -> tuple[pa.Table, int]:
    """The questions whose image has features (unreadable images were skipped at extraction), and how
    many were dropped."""
    have = set(image_ids)
    keep = np.array([i in have for i in table.column("image_id").to_pylist()], dtype=bool)
    return (table, 0) if keep.all() else (table.filter(keep), int((~keep).sum()))


class Splits(NamedTuple):
    """A run's splits {"train", "val"}, the answer vocabulary of the training split, (train name, val name),
    and how many questions were dropped for want of image features."""
    splits: dict
    vocab: Vocabulary
    names: tuple[str, str]
    dropped: int


def build_splits(plan, tensors: dict, recipe: TrainRecipe) -> Splits:
    table, dropped = with_features(plan.samples, tensors["image"][0])
    if dropped:
        print(f"dropping {dropped} questions whose images were skipped as unreadable at extraction")
    train_name, val_name = data.train_val_splits(table)
    parts = {s: table.filter(pc.equal(table["split"], s)) for s in (train_name, val_name)}
    vocab = build_vocabulary(parts[train_name].column("answers").to_pylist(), top_k=recipe.answers.top_k,
                             min_count=recipe.answers.min_count)
    splits = {role: make_split(parts[name], tensors, vocab) for role, name in (("train", train_name), ("val", val_name))}
    return Splits(splits, vocab, (train_name, val_name), dropped)


def trainable(split: Split, num_answers: int) -> torch.Tensor:
    """Rows that have at least one answer in the vocabulary (the others teach nothing)."""
    return torch.nonzero((split.target_idx < num_answers).any(1)).squeeze(1)
