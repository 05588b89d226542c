"""The official VQA accuracy (GT-Vision-Lab/VQA, PythonEvaluationTools/vqaEvaluation/vqaEval.py).

What the official code does for one question, reproduced here, in two versions
(``protocol``; the rules are in ``vqa_cache.answers``, ``ground_truth`` and
``prediction_as_compared``):

* ``"current"`` (the default), vqaEval.py since commit a013f00 (11 March 2021): the
  prediction and the human answers are whitespace-cleaned (newlines/tabs to spaces,
  strip), always; when the cleaned human answers are not all the same string, both
  sides also get ``processPunctuation`` then ``processDigitArticle`` (lowercase,
  number words, articles, contractions). Ten identical answers are compared as
  given: a prediction "Yes" scores 0 against ten "yes".
* ``"2016"``, vqaEval.py from 2016 until that commit (the copy LAVIS and OpenVQA
  ship; use it to compare with numbers from those codebases): the prediction is
  cleaned and normalized, always; the human answers are left exactly as given when
  all are the same string, otherwise they get ``processPunctuation`` only (not
  lowercased, number words and articles kept).
* score, both: for each human answer left out in turn, min(matches among the
  others / 3, 1), averaged; per type and overall, the mean of those, times 100,
  rounded to 2 places with Python's ``round``; per question, ``round(100 * acc, 2)``.

Two deliberate differences, both outside what the official files contain, in both
protocols: a question with a single human answer (easy-VQA, CSV data) is scored by
exact match after normalizing both sides (the official formula gives 0 to every
prediction there), and each answer record is left out on its own (the official code
compares whole answer records, so identical records without distinct ``answer_id``
would be left out together; VQA v2 answers always carry distinct ids).
"""

from __future__ import annotations

from collections import Counter, defaultdict

from .answers import (
    best_answer,
    check_protocol,
    ground_truth,
    leave_one_out_accuracy,
    normalize_answer,
    prediction_as_compared,
)
from .data.files import read_json, records
from .errors import BadInput

__all__ = ["evaluate", "evaluate_files", "exact_match_accuracy", "per_answer", "vqa_accuracy"]

ROUND_DIGITS = 2  # the official default n=2


def vqa_accuracy(prediction: str, human_answers: list[str], protocol: str = "current") -> float:
    """Official VQA accuracy of one raw prediction against the raw human answers, 0..1.

    ``protocol``: "current" or "2016" (module docstring); ValueError for another.
    """
    if not human_answers:
        raise ValueError("vqa_accuracy needs at least one human answer")
    humans = ground_truth(human_answers, protocol)
    predicted = prediction_as_compared(prediction, human_answers, protocol)
    if len(humans) == 1:
        return float(predicted == humans[0])
    return leave_one_out_accuracy(predicted, humans)


def exact_match_accuracy(predictions: list[str], answers: list[str]) -> float:
    """Share (0..1) of predictions equal to their single answer, both normalized."""
    if len(predictions) != len(answers):
        raise ValueError(f"{len(predictions)} predictions for {len(answers)} answers")
    if not answers:
        raise ValueError("exact_match_accuracy needs at least one answer")
    hits = sum(normalize_answer(p) == normalize_answer(a) for p, a in zip(predictions, answers))
    return hits / len(answers)


def _percent(accs: list[float]) -> float:
    # Same operation order as the official setAccuracy, so the same float comes out.
    return round(100 * float(sum(accs)) / len(accs), ROUND_DIGITS)


def _few(ids: list, limit: int = 3) -> str:
    shown = ", ".join(repr(i) for i in ids[:limit])
    return shown + (", ..." if len(ids) > limit else "")


def _field(record, i: int, key: str, name: str):
    if not isinstance(record, dict):
        raise BadInput(f"{name}: record {i} is not an object")
    if key not in record:
        raise BadInput(f"{name}: record {i} has no '{key}'")
    return record[key]


def _question_id(record, i: int, name: str):
    qid = _field(record, i, "question_id", name)
    if isinstance(qid, bool) or not isinstance(qid, (int, str)):
        raise BadInput(f"{name}: record {i} question_id {qid!r} is not an integer or string")
    return qid


def _evaluate(questions, annotations, predictions, names: tuple[str, ...], protocol: str) -> dict:
    check_protocol(protocol)
    q_name, a_name, p_name = names
    question_ids = {_question_id(r, i, q_name) for i, r in enumerate(records(questions, "questions", q_name))}
    annotated = _annotated(annotations, a_name)
    unknown = [q for q in annotated if q not in question_ids]
    if unknown:
        raise BadInput(
            f"{a_name}: {len(unknown)} annotated question id(s) not in {q_name} "
            f"(e.g. {_few(unknown)}): the files are from different splits?"
        )
    predicted = _predicted(predictions, p_name, annotated)
    overall, per_answer_type, per_question_type, per_question = [], defaultdict(list), defaultdict(list), {}
    truth, compared = [], []
    for qid, (human, answer_type, question_type) in annotated.items():
        acc = vqa_accuracy(predicted[qid], human, protocol)
        truth.append(best_answer(ground_truth(human, protocol)))
        compared.append(prediction_as_compared(predicted[qid], human, protocol))
        overall.append(acc)
        per_answer_type[answer_type].append(acc)
        per_question_type[question_type].append(acc)
        per_question[qid] = round(100 * acc, ROUND_DIGITS)
    return {
        "overall": _percent(overall),
        "perAnswerType": {k: _percent(v) for k, v in per_answer_type.items()},
        "perQuestionType": {k: _percent(v) for k, v in per_question_type.items()},
        "perQuestion": per_question,
        **per_answer(truth, compared),
    }


def per_answer(truth: list[str], predicted: list[str]) -> dict:
    """Precision, recall and F1 of each answer, and their macro average, treating VQA as single-label
    classification: a question's label is its most common ground-truth answer (``best_answer`` of
    ``ground_truth``: ties go a-z), compared with the prediction as the metric compares it.

    For each answer in the union of labels and predictions (as scikit-learn's default ``labels``):
    precision = TP / predicted as it, recall = TP / labelled as it, F1 = 2PR / (P + R), each 0 where
    its denominator is 0 (sklearn's ``zero_division=0``); ``macroF1`` is the unweighted mean of the F1s
    (``f1_score(average="macro")``). Returns ``{"perAnswer": {answer: {"precision", "recall", "f1",
    "support", "predicted"}}, "macroF1"}``: fractions 0..1 rounded to 4 places, answers most frequent
    label first (ties a-z); support = questions labelled with the answer, predicted = predicted as it.
    """
    if len(truth) != len(predicted):
        raise ValueError(f"{len(predicted)} predictions for {len(truth)} labels")
    support, guessed = Counter(truth), Counter(predicted)
    hits = Counter(t for t, p in zip(truth, predicted) if t == p)
    table = {}
    for answer in sorted(set(support) | set(guessed), key=lambda a: (-support[a], -guessed[a], a)):
        tp = hits[answer]
        precision = tp / guessed[answer] if guessed[answer] else 0.0
        recall = tp / support[answer] if support[answer] else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        table[answer] = {
            "precision": round(precision, 4),
            "recall": round(recall, 4),
            "f1": round(f1, 4),
            "support": support[answer],
            "predicted": guessed[answer],
            "_f1": f1,
        }
    macro = sum(row.pop("_f1") for row in table.values()) / len(table) if table else 0.0
    return {"perAnswer": table, "macroF1": round(macro, 4)}


def _annotated(annotations, a_name: str) -> dict:
    """question_id -> (human answers, answer type, question type), in file order."""
    annotated = {}
    for i, rec in enumerate(records(annotations, "annotations", a_name)):
        qid = _question_id(rec, i, a_name)
        if qid in annotated:
            raise BadInput(f"{a_name}: question_id {qid!r} is annotated twice (record {i})")
        answers = _field(rec, i, "answers", a_name)
        if not isinstance(answers, list) or not answers:
            raise BadInput(f"{a_name}: record {i} 'answers' must be a non-empty list")
        human = []
        for answer in answers:
            if not isinstance(answer, dict) or not isinstance(answer.get("answer"), str):
                raise BadInput(
                    f"{a_name}: record {i} (question_id {qid!r}) has an answer "
                    f"that is not an object with a string 'answer': {answer!r}"
                )
            human.append(answer["answer"])
        annotated[qid] = (human, _field(rec, i, "answer_type", a_name), _field(rec, i, "question_type", a_name))
    if not annotated:
        raise BadInput(f"{a_name}: no annotations")
    return annotated


def _predicted(predictions, p_name: str, annotated: dict) -> dict:
    """question_id -> predicted answer, for exactly the annotated question ids."""
    predicted = {}
    for i, rec in enumerate(records(predictions, None, p_name)):
        qid = _question_id(rec, i, p_name)
        answer = _field(rec, i, "answer", p_name)
        if not isinstance(answer, str):
            raise BadInput(f"{p_name}: record {i} answer {answer!r} is not a string")
        if qid in predicted:
            raise BadInput(f"{p_name}: question_id {qid!r} is predicted twice (record {i})")
        predicted[qid] = answer
    missing = [q for q in annotated if q not in predicted]
    extra = [q for q in predicted if q not in annotated]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"{len(missing)} annotated question id(s) missing (e.g. {_few(missing)})")
        if extra:
            parts.append(f"{len(extra)} extra question id(s) not annotated (e.g. {_few(extra)})")
        raise BadInput(f"{p_name}: {' and '.join(parts)}; expected exactly the {len(annotated)} annotated question ids")
    return predicted


def evaluate(questions: dict, annotations: dict, predictions: list, protocol: str = "current") -> dict:
    """Score predictions against parsed official VQA files, as the official code does.

    ``questions``: ``{"questions": [{"question_id", ...}]}``; ``annotations``:
    ``{"annotations": [{"question_id", "answers": [{"answer", ...}], "answer_type",
    "question_type", ...}]}``; ``predictions``: ``[{"question_id", "answer"}]`` covering
    exactly the annotated question ids. Returns percentages rounded to 2 places:
    ``{"overall", "perAnswerType", "perQuestionType", "perQuestion": {qid: acc}, "perAnswer": {answer:
    {"precision", "recall", "f1", "support", "predicted"}}, "macroF1"}`` (the last two: ``per_answer``).
    ``protocol``: "current" (default) or "2016", see the module docstring.
    Raises BadInput with one line for malformed or mismatched input.
    """
    return _evaluate(questions, annotations, predictions, ("questions", "annotations", "predictions"), protocol)


def evaluate_files(questions_path, annotations_path, predictions_path, protocol: str = "current") -> dict:
    """``evaluate`` on the three JSON files; errors name the file at fault."""
    check_protocol(protocol)
    paths = (questions_path, annotations_path, predictions_path)
    loaded = [read_json(p) for p in paths]
    return _evaluate(*loaded, names=tuple(str(p) for p in paths), protocol=protocol)
