"""Answers: the official VQA normalization and ground truth (normalize.py), soft scores and the answer
vocabulary (vocabulary.py)."""

from .normalize import (  # noqa: F401
    ARTICLES,
    CONTRACTIONS,
    NORMALIZER_VERSION,
    NUMBER_WORDS,
    PROTOCOLS,
    PUNCTUATION,
    check_protocol,
    clean_whitespace,
    ground_truth,
    normalize_answer,
    prediction_as_compared,
    process_digit_article,
    process_punctuation,
)
from .vocabulary import Vocabulary, best_answer, build_vocabulary, leave_one_out_accuracy, soft_scores  # noqa: F401
