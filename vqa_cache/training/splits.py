"""The training and validation splits of stage two: questions as row indices into the feature tensors,
with their answer targets (class ids and soft scores in the vocabulary of the training split)."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from .. import data, messages
from ..answers import Vocabulary
from ..answers.table import AnswerTable, answer_table, vocabulary
from ..cache.targets import cached_answer_table
from ..recipes import TrainRecipe


class Split:
    """One split's samples as row indices into the feature tensors, plus answer targets.

    img_row, q_row: [N] long     rows of the image / question feature tensors
    target_idx, target_val: [N, M]   each question's candidate answers (class ids, K = none) and soft scores
    """

    def __init__(self, table: pa.Table, img_row, q_row, vocab: Vocabulary, answers: AnswerTable | None = None):
        """answers: the AnswerTable of the table's rows (computed here when not given)."""
        self.table = table
        self.img_row = torch.as_tensor(img_row, dtype=torch.long)
        self.q_row = torch.as_tensor(q_row, dtype=torch.long)
        answers = answer_table(table.column("answers")) if answers is None else answers
        width = max(1, int(answers.distinct.max(initial=0)))
        idx = np.full((len(answers.n), width), len(vocab), dtype=np.int64)
        val = np.zeros((len(answers.n), width), dtype=np.float32)
        w = min(width, answers.candidates.shape[1])
        classes = answers.classes(vocab)[answers.candidates[:, :w]]  # (-1 pads -> the last entry: none)
        idx[:, :w] = classes
        val[:, :w] = np.where(classes < len(vocab), answers.scores[:, :w], 0)
        self.target_idx, self.target_val = torch.from_numpy(idx), torch.from_numpy(val)
        self.multi = int(answers.n.max(initial=1)) > 1  # 10 human answers -> soft BCE
        self.answer_type = table.column("answer_type").to_pylist()
        self.coverage = answers.coverage(vocab)  # share whose best answer is a class

    def __len__(self):
        return len(self.img_row)

    def to(self, device):
        for name in ("img_row", "q_row", "target_idx", "target_val"):
            setattr(self, name, getattr(self, name).to(device))
        return self


def make_split(table: pa.Table, tensors: dict, vocab: Vocabulary, answers: AnswerTable | None = None) -> Split:
    """The Split of a samples table's questions, whose image ids and texts are rows of tensors[kind][0]."""
    return Split(
        table,
        positions(table.column("image_id"), tensors["image"][0]),
        positions(table.column("question"), tensors["question"][0]),
        vocab,
        answers,
    )


def positions(column, ids: list) -> np.ndarray:
    """The row of each value of `column` in `ids` (every value is there)."""
    found = pc.index_in(column, value_set=pa.array(ids, type=column.type))
    if found.null_count:
        raise KeyError(f"{found.null_count} values have no row in the features")
    return found.to_numpy(zero_copy_only=False).astype(np.int64)


def with_features(table: pa.Table, image_ids: list[str]) -> tuple[pa.Table, int]:
    """The questions whose image has features (unreadable images were skipped at extraction), and how
    many were dropped."""
    keep = features_mask(table, image_ids)
    return (table, 0) if keep.all() else (table.filter(keep), int((~keep).sum()))


class Splits(NamedTuple):
    """A run's splits {"train", "val"}, the answer vocabulary of the training split, (train name, val name),
    and how many questions were dropped for want of image features."""

    splits: dict
    vocab: Vocabulary
    names: tuple[str, str]
    dropped: int


def features_mask(table: pa.Table, image_ids: list[str]) -> np.ndarray:
    column = table.column("image_id")
    return pc.is_in(column, value_set=pa.array(image_ids, type=column.type)).to_numpy(zero_copy_only=False)


def build_splits(plan, tensors: dict, recipe: TrainRecipe, root=None) -> Splits:
    """The run's Splits (see there). The answer table of the plan's samples comes from the cache under `root`
    (extract wrote it; computed here for a cache made before, or when root is None)."""
    keep = features_mask(plan.samples, tensors["image"][0])
    table, dropped = (plan.samples, 0) if keep.all() else (plan.samples.filter(keep), int((~keep).sum()))
    if dropped:
        messages.info(f"dropping {dropped} questions whose images were skipped as unreadable at extraction")
    answers = (
        cached_answer_table(root, plan.samples.column("answers"), write=False)
        if root is not None
        else answer_table(plan.samples.column("answers"))
    )
    if dropped:
        answers = answers.rows(keep)
    train_name, val_name = data.train_val_splits(table)
    split = table.column("split")
    masks = {s: pc.equal(split, s).to_numpy(zero_copy_only=False) for s in (train_name, val_name)}
    parts = {s: table.filter(m) for s, m in masks.items()}
    vocab = vocabulary(answers.rows(masks[train_name]), top_k=recipe.answers.top_k, min_count=recipe.answers.min_count)
    splits = {
        role: make_split(parts[name], tensors, vocab, answers.rows(masks[name]))
        for role, name in (("train", train_name), ("val", val_name))
    }
    return Splits(splits, vocab, (train_name, val_name), dropped)


def trainable(split: Split, num_answers: int) -> torch.Tensor:
    """Rows that have at least one answer in the vocabulary (the others teach nothing)."""
    return torch.nonzero((split.target_idx < num_answers).any(1)).squeeze(1)
