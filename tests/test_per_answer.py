"""Per-answer precision, recall and F1 and macro-F1 (vqa_cache.metrics.per_answer; `eval --json`)."""

import json

import pytest

from vqa_cache.metrics import evaluate, per_answer

# A known example; the expected values are what scikit-learn 1.9.1 printed for it:
# precision_recall_fscore_support(truth, predicted, labels=sorted(set(truth) | set(predicted)),
# zero_division=0) and f1_score(truth, predicted, average="macro", zero_division=0) = 0.56.
TRUTH = ["yes", "yes", "yes", "no", "no", "red", "red", "blue"]
PREDICTED = ["yes", "no", "yes", "no", "red", "red", "green", "blue"]
SKLEARN = {
    "blue": (1.0, 1.0, 1.0, 1),
    "green": (0.0, 0.0, 0.0, 0),
    "no": (0.5, 0.5, 0.5, 2),
    "red": (0.5, 0.5, 0.5, 2),
    "yes": (1.0, 2 / 3, 0.8, 3),
}


def test_per_answer_matches_scikit_learn_on_a_known_example():
    result = per_answer(TRUTH, PREDICTED)
    assert set(result["perAnswer"]) == set(SKLEARN)
    for answer, (p, r, f, support) in SKLEARN.items():
        row = result["perAnswer"][answer]
        assert (row["precision"], row["recall"], row["f1"], row["support"]) == (
            pytest.approx(p, abs=5e-5),
            pytest.approx(r, abs=5e-5),
            pytest.approx(f, abs=5e-5),
            support,
        )
    assert result["perAnswer"]["green"]["predicted"] == 1  # predicted, never a label: F1 0, in the mean
    assert result["macroF1"] == pytest.approx(0.56, abs=5e-5)
    assert list(result["perAnswer"])[:3] == ["yes", "no", "red"]  # most frequent label first


def test_per_answer_edge_cases():
    assert per_answer([], []) == {"perAnswer": {}, "macroF1": 0.0}
    assert per_answer(["a", "b"], ["a", "b"])["macroF1"] == 1.0
    with pytest.raises(ValueError):
        per_answer(["a"], [])


def official(truth_lists, predictions):
    ids = range(1, len(truth_lists) + 1)
    questions = {"questions": [{"question_id": i} for i in ids]}
    annotations = {
        "annotations": [
            {
                "question_id": i,
                "answers": [{"answer": a} for a in humans],
                "answer_type": "other",
                "question_type": "what",
            }
            for i, humans in zip(ids, truth_lists)
        ]
    }
    return questions, annotations, [{"question_id": i, "answer": p} for i, p in zip(ids, predictions)]


def test_evaluate_labels_each_question_with_its_most_common_human_answer(tmp_path, cli):
    # ten human answers: the label is the most common one ("two" -> "2" once normalized); one answer: itself
    humans = [["two"] * 6 + ["3"] * 4, ["red"] * 3 + ["blue"] * 7, ["Yes"]]
    q, a, p = official(humans, ["2", "red", "yes"])
    result = evaluate(q, a, p)
    assert result["perAnswer"]["2"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 1, "predicted": 1}
    assert result["perAnswer"]["blue"]["recall"] == 0.0 and result["perAnswer"]["red"]["precision"] == 0.0
    assert result["perAnswer"]["yes"]["f1"] == 1.0
    assert result["macroF1"] == pytest.approx(0.5)  # 2, yes: 1; blue, red: 0
    for name, data in (("q.json", q), ("a.json", a), ("p.json", p)):
        (tmp_path / name).write_text(json.dumps(data))
    args = [
        "eval",
        "--questions",
        str(tmp_path / "q.json"),
        "--annotations",
        str(tmp_path / "a.json"),
        "--predictions",
        str(tmp_path / "p.json"),
    ]
    out = cli(*args, "--json")
    assert out.code == 0, out.err
    printed = json.loads(out.out)
    assert printed["macroF1"] == 0.5 and printed["perAnswer"]["blue"]["support"] == 1
    assert "macro F1 over 4 answers: 0.5000" in cli(*args).out
