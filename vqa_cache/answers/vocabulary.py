"""Soft scores (what predicting each answer scores under the official metric) and the answer vocabulary.

Both are computed from ``ground_truth`` answer lists (normalize.py), so a class string scores in training
what predicting it scores under the current metric.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from ..errors import BadInput
from .normalize import NORMALIZER_VERSION, ground_truth


def leave_one_out_accuracy(candidate: str, answers: list[str]) -> float:
    """VQA accuracy of ``candidate`` against ``answers`` compared as given (no normalization).

    The average, over each human answer left out in turn, of min(matches among the
    others / 3, 1). Summed in the official order, so the float is bit-identical.
    """
    if not answers:
        raise ValueError("leave_one_out_accuracy needs at least one answer")
    matches = sum(1 for a in answers if a == candidate)
    total = 0.0
    for a in answers:
        total += min(1.0, (matches - (a == candidate)) / 3)
    return total / len(answers)


def soft_scores(answers: list[str]) -> dict[str, float]:
    """Soft target for each distinct answer among ``answers`` (a ``ground_truth`` list).

    Each candidate scores what the current official metric gives for predicting it
    (exactly, for every candidate that ``normalize_answer`` maps to itself: all but
    answers with more than 32 periods). With 10 answers, 1/2/3/4+ matches give
    0.3/0.6/0.9/1.0 (the 0.9 is (3*2/3 + 7*1)/10).
    With fewer answers the same formula applies (two identical answers score 1/3).
    Choice: a single answer scores 1.0, because single-answer datasets are scored by
    exact match (the official formula would give every prediction 0 there).
    """
    if not answers:
        raise ValueError("soft_scores needs at least one answer")
    if len(answers) == 1:
        return {answers[0]: 1.0}
    return {c: leave_one_out_accuracy(c, answers) for c in dict.fromkeys(answers)}


def best_answer(answers: list[str]) -> str:
    """The answer with the highest soft score; ties go to the most frequent, then a-z first.

    A soft score never falls as the count rises, so this is the most frequent answer
    (ties a-z), found from the counts alone. (Comparing the float scores would not do:
    two answers with equal counts can score one ulp apart, because the official
    summation order depends on where the answers sit in the list.)
    """
    if not answers:
        raise ValueError("best_answer needs at least one answer")
    counts = Counter(answers)
    return min(counts, key=lambda a: (-counts[a], a))


@dataclass
class Vocabulary:
    """The answer classes of a model: ``answers[i]`` is class ``i``.

    Answers are ``ground_truth`` strings; ``index`` looks an answer up as given.
    ``top_k``, ``min_count`` and ``normalizer`` record how the list was built and
    travel with every checkpoint.
    """

    answers: list[str]
    top_k: int | None = None
    min_count: int = 1
    normalizer: str = NORMALIZER_VERSION
    _ids: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._ids = {a: i for i, a in enumerate(self.answers)}
        if len(self._ids) != len(self.answers):
            raise ValueError("vocabulary answers must be distinct")

    def __len__(self) -> int:
        return len(self.answers)

    def index(self, answer: str) -> int | None:
        """Class id of a normalized answer, or None when it is not in the vocabulary."""
        return self._ids.get(answer)

    def coverage(self, answer_lists: list[list[str]]) -> float:
        """Share of questions whose best ``ground_truth`` answer is in the vocabulary, 0..1."""
        if not answer_lists:
            return 0.0
        hits = 0
        for i, answers in enumerate(answer_lists):
            if not answers:
                raise ValueError(f"question {i} has no answers")
            hits += best_answer(ground_truth(answers)) in self._ids
        return hits / len(answer_lists)

    def to_dict(self) -> dict:
        return {
            "answers": list(self.answers),
            "top_k": self.top_k,
            "min_count": self.min_count,
            "normalizer": self.normalizer,
        }

    @classmethod
    def from_dict(cls, data: dict) -> Vocabulary:
        """Inverse of ``to_dict``; BadInput on a malformed record.

        The stored normalizer is kept as it was (an older one loads too: the answers
        are plain strings); compare it with ``NORMALIZER_VERSION`` when it matters how
        the list was built.
        """
        if not isinstance(data, dict):
            raise BadInput(f"vocabulary: expected an object, got {type(data).__name__}")
        missing = [k for k in ("answers", "top_k", "min_count", "normalizer") if k not in data]
        if missing:
            raise BadInput(f"vocabulary: missing field(s) {', '.join(missing)}")
        answers = data["answers"]
        if not isinstance(answers, list) or not all(isinstance(a, str) for a in answers):
            raise BadInput("vocabulary: 'answers' must be a list of strings")
        if len(set(answers)) != len(answers):
            raise BadInput("vocabulary: 'answers' has duplicates")
        return cls(list(answers), data["top_k"], data["min_count"], data["normalizer"])


def build_vocabulary(answer_lists: list[list[str]], top_k: int | None = 1000, min_count: int = 1) -> Vocabulary:
    """The answer vocabulary of a training split.

    Every ``ground_truth`` answer of every question is counted (a question with ten
    answers contributes ten counts). Answers seen fewer than ``min_count`` times are
    dropped; the rest are ordered by count (highest first), ties by the answer string
    (a-z), and the first ``top_k`` kept (all of them when ``top_k`` is None). The empty
    string (e.g. "the" among differing answers) is never a class.
    """
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be at least 1 or None, got {top_k}")
    if min_count < 1:
        raise ValueError(f"min_count must be at least 1, got {min_count}")
    counts = Counter(a for answers in answer_lists for a in ground_truth(answers))
    kept = [a for a, n in counts.items() if n >= min_count and a]
    ranked = sorted(kept, key=lambda a: (-counts[a], a))
    if top_k is not None:
        ranked = ranked[:top_k]
    return Vocabulary(ranked, top_k=top_k, min_count=min_count)
