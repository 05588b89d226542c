"""The vectorized answer table (answers/table.py) against the one-question-at-a-time functions it replaces
(ground_truth, soft_scores, best_answer, build_vocabulary, Vocabulary.coverage), bit for bit, on messy
answers; and its cache entry (cache/targets.py): read back equal, computed once, recomputed when damaged."""

from __future__ import annotations

import random

import numpy as np
import pyarrow as pa
import pytest

from vqa_cache.answers import Vocabulary, build_vocabulary, ground_truth, soft_scores
from vqa_cache.answers.table import answer_table, column_digest, vocabulary
from vqa_cache.cache import targets
from vqa_cache.training.splits import Split

MESSY = [
    "yes",
    "Yes",
    "yes ",
    " yes\n",
    "yes.",
    "no",
    "No!",
    "2",
    "two",
    "Two",
    "2.",
    "2,000",
    "2000",
    "a dog",
    "the dog",
    "dog",
    "dogs",
    "dont",
    "don't",
    "Dont",
    "red;blue",
    "red / blue",
    "red/blue",
    "3.5",
    "3 .5",
    "",
    " ",
    "the",
    "an apple",
    "ten",
    "10",
    "left-",
    "i'm",
    "im",
    "couldnt",
    "...",
    "ok.",
    "ok",
    "x" * 40,
    "a.b.c.d.e.f.g.h.i.j.k.l.m.n.o.p.q.r.s.t.u.v.w.x.y.z.a.b.c.d.e.f.g.h.i",
    "café",
    "Café ",
    "\t",
]


def messy_answers(n: int, seed: int = 0) -> list[list[str]]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        size = rng.choice([0, 1, 1, 3, 10, 10, 10, 10, 5])
        pool = rng.sample(MESSY, rng.randint(1, 4))
        out.append([rng.choice(pool) for _ in range(size)])
    out += [["yes"] * 10, ["Yes\t"] * 10, [" 2\n"] * 7 + ["Two"] * 3, ["a", "b"] * 5, ["x"], [""], ["  "] * 2]
    return out


def reference_targets(answers: list[list[str]], vocab: Vocabulary):
    """The Split targets as they were computed before answers/table.py: one question at a time."""
    width = max(1, max((len(set(a)) for a in answers), default=1))
    idx = np.full((len(answers), width), len(vocab), dtype=np.int64)
    val = np.zeros((len(answers), width), dtype=np.float32)
    for i, raw in enumerate(answers):
        if not raw:
            continue
        for j, (answer, score) in enumerate(soft_scores(ground_truth(raw)).items()):
            c = vocab.index(answer)
            if c is not None:
                idx[i, j], val[i, j] = c, score
    return idx, val


def samples(answers):
    return pa.table(
        {"answers": pa.array(answers, pa.list_(pa.string())), "answer_type": pa.array(["other"] * len(answers))}
    )


@pytest.mark.parametrize("top_k, min_count", [(1000, 1), (7, 1), (None, 2), (3, 3)])
def test_split_targets_vocabulary_and_coverage_equal_the_one_at_a_time_code(top_k, min_count):
    answers = messy_answers(600)
    table = answer_table(pa.array(answers, pa.list_(pa.string())))
    vocab = vocabulary(table, top_k=top_k, min_count=min_count)
    assert vocab == build_vocabulary(answers, top_k=top_k, min_count=min_count)
    split = Split(samples(answers), np.zeros(len(answers)), np.zeros(len(answers)), vocab)
    idx, val = reference_targets(answers, vocab)
    assert np.array_equal(split.target_idx.numpy(), idx)
    assert split.target_val.numpy().tobytes() == val.tobytes()  # bit for bit
    answered = [a for a in answers if a]
    assert table.rows(table.n > 0).coverage(vocab) == vocab.coverage(answered)


def test_every_soft_score_is_bit_identical_and_candidates_in_first_appearance_order():
    answers = messy_answers(400, seed=1)
    table = answer_table(
        pa.chunked_array(
            [pa.array(answers[:150], pa.list_(pa.string())), pa.array(answers[150:], pa.list_(pa.string()))]
        )
    )
    for i, raw in enumerate(answers):
        expected = soft_scores(ground_truth(raw)) if raw else {}
        got = {table.strings[c]: s for c, s in zip(table.candidates[i], table.scores[i]) if c >= 0}
        assert list(got) == list(expected), raw
        assert all(np.float32(expected[a]) == got[a] for a in got), raw
        assert table.n[i] == len(raw) and table.distinct[i] == len(set(raw))


def test_sliced_columns_digest_by_content():
    answers = messy_answers(50)
    whole = pa.array(answers, pa.list_(pa.string()))
    assert column_digest(whole.slice(10, 20)) == column_digest(pa.array(answers[10:30], pa.list_(pa.string())))
    assert column_digest(whole.slice(10, 20)) != column_digest(whole.slice(11, 20))
    assert column_digest(pa.array([["ab"], ["c"]], pa.list_(pa.string()))) != column_digest(
        pa.array([["a"], ["bc"]], pa.list_(pa.string()))
    )


def test_the_cache_entry_is_computed_once_and_recomputed_when_damaged(tmp_path, monkeypatch):
    column = pa.array(messy_answers(300, seed=2), pa.list_(pa.string()))
    targets._MEMO.clear()
    targets.cached_answer_table(tmp_path, column, write=False)  # (stage two reads, never writes)
    assert not (tmp_path / "answers").exists()
    first = targets.cached_answer_table(tmp_path, column)
    entries = list((tmp_path / "answers").iterdir())
    assert [p.name for p in entries if p.is_dir()] and (entries[0] / "manifest.json").is_file()

    def boom(*a, **k):
        raise AssertionError("computed again")

    monkeypatch.setattr(targets, "answer_table", boom)
    targets._MEMO.clear()  # read from the entry, not this process's memo
    again = targets.cached_answer_table(tmp_path, column)
    for name in first._fields:
        a, b = getattr(first, name), getattr(again, name)
        assert (a == b) if name == "strings" else (np.array_equal(a, b) and a.dtype.kind == b.dtype.kind), name
    monkeypatch.undo()
    entry = next(p for p in (tmp_path / "answers").iterdir() if p.is_dir())
    path = entry / targets.TARGETS
    path.write_bytes(path.read_bytes()[:-10])  # truncated: read as damaged, computed again
    targets._MEMO.clear()
    assert targets.read_answer_table(targets.Entry(tmp_path, entry.name)) is None
    again = targets.cached_answer_table(tmp_path, column)
    assert np.array_equal(again.scores, first.scores)
    assert targets.read_answer_table(targets.Entry(tmp_path, entry.name)) is not None  # and replaced
