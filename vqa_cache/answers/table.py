"""Every question's ground truth, soft scores and best answer at once, vectorized (numpy over pyarrow).

answer_table(column) gives, for a samples table's `answers` column (list<string>), what ground_truth,
soft_scores and best_answer (normalize.py, vocabulary.py) give one question at a time, but with each
distinct raw answer string normalized once and the rest done on arrays. The soft scores are bit-identical
to soft_scores': each is summed over the question's answers in their order, in float64, as
leave_one_out_accuracy sums them (tests/test_answer_table.py compares the two on messy answers).

A table depends on the answers column alone, so the cache keeps it under the column's digest
(cache/targets.py) and a second run, or a sweep trial, reads it instead of computing it.
"""

from __future__ import annotations

import hashlib
from typing import NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .normalize import clean_whitespace, normalize_answer
from .vocabulary import Vocabulary

TABLE_VERSION = 1  # goes up when what answer_table computes changes


class AnswerTable(NamedTuple):
    """strings: the ground-truth answers seen, sorted (so a smaller id is an a-z earlier answer).
    Per question (rows of the samples table): n [Q] how many human answers; distinct [Q] how many distinct
    raw strings (a Split's target width); best [Q] the best answer's id (-1: no answers); candidates
    [Q, W] the distinct ground-truth answers in order of first appearance (-1 pads), scores [Q, W] float32
    their soft scores, counts [Q, W] how often each was given."""

    strings: list
    n: np.ndarray
    distinct: np.ndarray
    best: np.ndarray
    candidates: np.ndarray
    scores: np.ndarray
    counts: np.ndarray

    def rows(self, index) -> AnswerTable:
        """The table of these questions (an index array or a boolean mask)."""
        return self._replace(**{k: getattr(self, k)[index] for k in self._fields if k != "strings"})

    def answer_counts(self) -> np.ndarray:
        """How often each of `strings` is a ground-truth answer over these questions (build_vocabulary's)."""
        valid = self.candidates >= 0
        return np.bincount(self.candidates[valid], weights=self.counts[valid], minlength=len(self.strings)).astype(
            np.int64
        )

    def classes(self, vocab: Vocabulary) -> np.ndarray:
        """[len(strings) + 1] the class id of each answer (len(vocab): not in it; the last entry is for -1)."""
        lookup = np.full(len(self.strings) + 1, len(vocab), dtype=np.int64)
        ids = {a: i for i, a in enumerate(self.strings)}
        for c, answer in enumerate(vocab.answers):
            if answer in ids:
                lookup[ids[answer]] = c
        return lookup

    def coverage(self, vocab: Vocabulary) -> float:
        """Share of questions whose best ground-truth answer is in the vocabulary (Vocabulary.coverage)."""
        if len(self.best) == 0:
            return 0.0
        return float((self.classes(vocab)[self.best] < len(vocab)).mean())


def vocabulary(table: AnswerTable, top_k: int | None = 1000, min_count: int = 1) -> Vocabulary:
    """build_vocabulary over these questions, from the table's counts (the same list, in the same order)."""
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be at least 1 or None, got {top_k}")
    if min_count < 1:
        raise ValueError(f"min_count must be at least 1, got {min_count}")
    counts = table.answer_counts()
    kept = np.nonzero(counts >= min_count)[0]
    kept = kept[[table.strings[i] != "" for i in kept]] if len(kept) else kept
    ranked = kept[np.lexsort((kept, -counts[kept]))]  # count high first, then a-z (ids are sorted)
    if top_k is not None:
        ranked = ranked[:top_k]
    return Vocabulary([table.strings[i] for i in ranked], top_k=top_k, min_count=min_count)


def column_digest(column) -> str:
    """sha256 of an answers column's content (lengths, then each answer's UTF-8 bytes and length)."""
    col = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    h = hashlib.sha256()
    h.update(pc.list_value_length(col).fill_null(0).to_numpy(zero_copy_only=False).astype("<i8").tobytes())
    flat = pc.list_flatten(col).cast(pa.large_string())
    _, offsets, data = flat.buffers()
    if len(flat):
        off = np.frombuffer(offsets, dtype="<i8")[flat.offset : flat.offset + len(flat) + 1]
        h.update((off - off[0]).tobytes())
        h.update(memoryview(data)[off[0] : off[-1]] if data is not None else b"")
    return h.hexdigest()


def answer_table(column) -> AnswerTable:
    """The AnswerTable of an `answers` column (a pyarrow list<string> array or chunked array)."""
    col = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    n = pc.list_value_length(col).fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
    encoded = pc.dictionary_encode(pc.list_flatten(col))
    raw = encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    distinct_raw = encoded.dictionary.to_pylist()
    cleaned = [clean_whitespace(a) for a in distinct_raw]  # each distinct answer once
    normalized = [normalize_answer(a) for a in distinct_raw]
    strings = sorted(set(cleaned) | set(normalized))
    sid = {s: i for i, s in enumerate(strings)}
    clean_id = np.array([sid[s] for s in cleaned], dtype=np.int64)
    norm_id = np.array([sid[s] for s in normalized], dtype=np.int64)
    width = int(n.max(initial=0))
    q = len(n)
    out: dict = {
        "distinct": np.zeros(q, np.int16),
        "best": np.full(q, -1, np.int64),
        "candidates": np.full((q, width), -1, np.int64),
        "scores": np.zeros((q, width), np.float32),
        "counts": np.zeros((q, width), np.int16),
    }
    starts = np.concatenate([[0], np.cumsum(n)[:-1]]).astype(np.int64)
    for size in np.unique(n[n > 0]):
        rows = np.nonzero(n == size)[0]
        pos = starts[rows][:, None] + np.arange(size)[None, :]
        raw_ids = raw[pos]  # [R, size] distinct-raw ids
        cleaned_ids = clean_id[raw_ids]
        # ground_truth: normalized when one answer or when they differ once whitespace-cleaned, else cleaned
        norm = (size == 1) | (cleaned_ids.min(1) != cleaned_ids.max(1))
        gt = np.where(norm[:, None], norm_id[raw_ids], cleaned_ids)
        group(out, rows, gt, raw_ids, int(size))
    best = out["best"]
    return AnswerTable(strings, n, out["distinct"], best, out["candidates"], out["scores"], out["counts"])


def group(out: dict, rows: np.ndarray, gt: np.ndarray, raw_ids: np.ndarray, size: int) -> None:
    """Fill `out` for questions `rows`, each with `size` answers (gt: their ground-truth ids)."""
    first = np.ones(gt.shape, dtype=bool)  # first appearance of a ground-truth answer
    first_raw = np.ones(gt.shape, dtype=bool)
    matches = np.zeros(gt.shape, dtype=np.int64)
    for j in range(size):
        same = gt == gt[:, j : j + 1]
        matches[:, j] = same.sum(1)
        first[:, j] = ~same[:, :j].any(1)
        first_raw[:, j] = ~(raw_ids[:, :j] == raw_ids[:, j : j + 1]).any(1)
    if size == 1:
        scores = np.ones(gt.shape, dtype=np.float64)  # a single answer scores 1.0 (soft_scores)
    else:
        scores = np.zeros(gt.shape, dtype=np.float64)
        for j in range(size):  # leave_one_out_accuracy, summed in the answers' order
            m = matches[:, j]
            total = np.zeros(len(rows), dtype=np.float64)
            for k in range(size):
                total += np.minimum(1.0, (m - (gt[:, k] == gt[:, j])) / 3)
            scores[:, j] = total / size
    slot = np.cumsum(first, axis=1) - 1
    r, c = np.nonzero(first)
    out["candidates"][rows[r], slot[r, c]] = gt[r, c]
    out["scores"][rows[r], slot[r, c]] = scores[r, c]
    out["counts"][rows[r], slot[r, c]] = matches[r, c]
    out["distinct"][rows] = first_raw.sum(1)
    # best_answer: the most frequent, ties a-z (the smallest id: strings are sorted)
    key = np.where(first, matches * (1 << 40) - gt, np.iinfo(np.int64).min)
    out["best"][rows] = gt[np.arange(len(rows)), key.argmax(1)]
