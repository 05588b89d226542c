"""The official VQA accuracy (vqa_cache/metrics.py).

No package on PyPI ships the official vqaEval.py unchanged and light enough to be a
test dependency, so the agreement test at the end checks vqa_cache against a second,
deliberately separate statement of the official algorithm written in this file
(character loops, str.isdecimal, explicit leave-one-out sublists, exact Fractions),
on several hundred generated adversarial questions. It also checks that the
generated questions tell the official behaviour apart from its usual mis-readings,
so that the agreement means something.
"""

import json
import random
from fractions import Fraction

import pytest

from vqa_cache.data.answers import CONTRACTIONS, normalize_answer, soft_scores
from vqa_cache.errors import BadInput
from vqa_cache.metrics import evaluate, evaluate_files, exact_match_accuracy, vqa_accuracy


# ---------------------------------------------------------------- hand-worked cases

def test_leave_one_out_values():
    humans = ["p"] + ["q"] * 2 + ["r"] * 3 + ["s"] * 4
    assert vqa_accuracy("p", humans) == pytest.approx(0.3)
    assert vqa_accuracy("q", humans) == pytest.approx(0.6)
    assert vqa_accuracy("r", humans) == pytest.approx(0.9)
    assert vqa_accuracy("s", humans) == 1.0
    assert vqa_accuracy("t", humans) == 0.0
    # "a" is an article: the prediction "a" becomes "" and matches nothing
    assert vqa_accuracy("a", ["a"] * 4 + ["b"] * 6) == 0.0


def test_prediction_is_fully_normalized():
    humans = ["2"] * 9 + ["two"]
    assert vqa_accuracy("Two", humans) == 1.0
    assert vqa_accuracy("  the TWO.\n", humans) == 1.0
    assert vqa_accuracy("dont", ["don't"] * 4 + ["no"] * 6) == 1.0
    assert vqa_accuracy("\tyes \n", ["yes"] * 3 + ["no"] * 7) == pytest.approx(0.9)


def test_human_answers_get_punctuation_only_when_they_differ():
    # Not all identical: punctuation processing only; "two" is not turned into "2".
    humans = ["two"] * 4 + ["2"] * 6
    assert vqa_accuracy("two", humans) == 1.0          # prediction becomes "2": 6 matches
    assert vqa_accuracy("four", ["two"] * 10) == 0.0
    # "red, white" -> "red white" (comma next to a space is deleted)
    assert vqa_accuracy("red white", ["red, white"] * 3 + ["blue"] * 7) == pytest.approx(0.9)
    # Human answers are never lowercased, but the prediction always is.
    assert vqa_accuracy("Dog", ["Dog"] * 5 + ["dog"] * 5) == 1.0  # matches the 5 "dog"
    assert vqa_accuracy("Dog", ["Dog"] * 7 + ["dog"] * 3) == pytest.approx(0.9)
    # Articles stay in human answers: "the dog" can never be matched.
    assert vqa_accuracy("the dog", ["the dog"] * 3 + ["cat"] * 7) == 0.0


def test_all_identical_human_answers_are_left_untouched():
    assert vqa_accuracy("yes", ["Yes"] * 10) == 0.0
    assert vqa_accuracy("red, white", ["red, white"] * 10) == 0.0   # prediction -> "red white"
    assert vqa_accuracy("red white", ["red white"] * 10) == 1.0
    assert vqa_accuracy("1000", ["1,000"] * 10) == 0.0
    assert vqa_accuracy("1000", ["1,000"] * 9 + ["many"]) == 1.0    # differ: "1,000" -> "1000"


def test_ten_answers_where_normalization_changes_the_result():
    # "yes!" -> "yes " (the mark becomes a space and nothing strips it afterwards),
    # so once the answers differ, none of the nine "yes!" can match any prediction.
    assert vqa_accuracy("yes", ["yes"] * 10) == 1.0
    assert vqa_accuracy("yes", ["yes!"] * 9 + ["yes"]) == pytest.approx(0.3)
    assert vqa_accuracy("yes!", ["yes!"] * 9 + ["no"]) == 0.0
    # and the prediction "1,000" becomes "1000", matching processed "1,000" answers
    assert vqa_accuracy("1,000", ["1,000"] * 2 + ["1000"] + ["many"] * 7) == pytest.approx(0.9)


def test_single_human_answer_is_exact_match():
    assert vqa_accuracy("Two", ["two"]) == 1.0
    assert vqa_accuracy("three", ["two"]) == 0.0
    with pytest.raises(ValueError):
        vqa_accuracy("x", [])


def test_soft_scores_equal_vqa_accuracy_on_random_questions():
    rng = random.Random(1234)
    pool = ["yes", "no", "2", "3", "10", "red", "dark blue", "don't know", "3.5", "1000",
            "10:30", "it's", "0", "tennis", "man's hat", "$5"]
    assert all(normalize_answer(a) == a for a in pool)
    for _ in range(500):
        humans = [rng.choice(pool[: rng.randint(2, len(pool))]) for _ in range(10)]
        for candidate, score in soft_scores(humans).items():
            assert score == vqa_accuracy(candidate, humans), (candidate, humans)


def test_exact_match_accuracy():
    assert exact_match_accuracy(["Two", "the cat", "no"], ["2", "cat", "yes"]) == pytest.approx(2 / 3)
    with pytest.raises(ValueError):
        exact_match_accuracy(["a"], ["a", "b"])
    with pytest.raises(ValueError):
        exact_match_accuracy([], [])


# ---------------------------------------------------------------- evaluate

def _files(specs):
    """specs: [(qid, answer_type, question_type, human answers, prediction)]"""
    questions = {"questions": [{"question_id": q, "image_id": 7, "question": "?"} for q, *_ in specs]}
    annotations = {"annotations": [
        {"question_id": q, "image_id": 7, "answer_type": at, "question_type": qt,
         "answers": [{"answer": a, "answer_confidence": "yes", "answer_id": i + 1} for i, a in enumerate(h)]}
        for q, at, qt, h, _ in specs]}
    predictions = [{"question_id": q, "answer": p} for q, *_, p in specs]
    return questions, annotations, predictions


SPECS = [
    (1, "yes/no", "is the", ["yes"] * 10, "Yes"),                           # 1.0
    (2, "number", "how many", ["2"] + ["3"] * 9, "two"),                    # 0.3
    (3, "other", "what color", ["red"] * 6 + ["blue"] * 4, "green"),        # 0.0
    (4, "other", "is the", ["blue"] * 2 + ["red"] * 8, "Blue."),            # 0.6
]


def test_evaluate_hand_computed():
    result = evaluate(*_files(SPECS))
    assert result["perQuestion"] == {1: 100.0, 2: 30.0, 3: 0.0, 4: 60.0}
    assert result["overall"] == round(100 * (1.0 + 0.3 + 0.0 + 0.6) / 4, 2) == 47.5
    assert result["perAnswerType"] == {"yes/no": 100.0, "number": 30.0, "other": 30.0}
    assert result["perQuestionType"] == {"is the": 80.0, "how many": 30.0, "what color": 0.0}
    assert set(result) == {"overall", "perAnswerType", "perQuestionType", "perQuestion"}


def test_evaluate_rounds_like_the_official_code():
    specs = [(1, "a", "t", ["x"] * 10, "x"), (2, "a", "t", ["x"] + ["y"] * 9, "x"),
             (3, "a", "t", ["x"] * 10, "z")]
    result = evaluate(*_files(specs))
    assert result["overall"] == 43.33          # 100 * 1.3 / 3 = 43.333...
    assert result["perAnswerType"] == {"a": 43.33}


def _message(excinfo):
    message = str(excinfo.value)
    assert "\n" not in message
    return message


def test_evaluate_coverage_errors():
    q, a, p = _files(SPECS)
    with pytest.raises(BadInput) as e:
        evaluate(q, a, p[1:])
    assert "1 annotated question id(s) missing (e.g. 1)" in _message(e)
    with pytest.raises(BadInput) as e:
        evaluate(q, a, p + [{"question_id": 99, "answer": "x"}, {"question_id": 98, "answer": "x"}])
    assert "2 extra question id(s) not annotated (e.g. 99, 98)" in _message(e)
    with pytest.raises(BadInput) as e:
        evaluate(q, a, [dict(r, question_id=str(r["question_id"])) for r in p])
    assert "4 annotated question id(s) missing" in _message(e) and "4 extra" in _message(e)
    with pytest.raises(BadInput) as e:
        evaluate(q, a, p + [p[0]])
    assert "predicted twice" in _message(e)


@pytest.mark.parametrize("mutate, words", [
    (lambda p: p[0].pop("question_id"), "record 0 has no 'question_id'"),
    (lambda p: p[1].pop("answer"), "record 1 has no 'answer'"),
    (lambda p: p[2].update(answer=3), "record 2 answer 3 is not a string"),
    (lambda p: p[2].update(question_id=[1]), "is not an integer or string"),
    (lambda p: p.__setitem__(0, "yes"), "record 0 is not an object"),
])
def test_evaluate_bad_prediction_records(mutate, words):
    q, a, p = _files(SPECS)
    mutate(p)
    with pytest.raises(BadInput) as e:
        evaluate(q, a, p)
    assert words in _message(e) and _message(e).startswith("predictions:")


@pytest.mark.parametrize("mutate, words", [
    (lambda a: a["annotations"][1].pop("answer_type"), "record 1 has no 'answer_type'"),
    (lambda a: a["annotations"][0].pop("question_type"), "record 0 has no 'question_type'"),
    (lambda a: a["annotations"][2].pop("answers"), "record 2 has no 'answers'"),
    (lambda a: a["annotations"][2].update(answers=[]), "'answers' must be a non-empty list"),
    (lambda a: a["annotations"][3]["answers"][0].update(answer=None), "not an object with a string 'answer'"),
    (lambda a: a["annotations"].append(dict(a["annotations"][0])), "annotated twice"),
    (lambda a: a.pop("annotations"), "expected an object with a 'annotations' list"),
])
def test_evaluate_bad_annotations(mutate, words):
    q, a, p = _files(SPECS)
    mutate(a)
    with pytest.raises(BadInput) as e:
        evaluate(q, a, p)
    assert words in _message(e) and _message(e).startswith("annotations:")


def test_evaluate_questions_must_cover_annotations():
    q, a, p = _files(SPECS)
    q["questions"] = q["questions"][:2]
    with pytest.raises(BadInput) as e:
        evaluate(q, a, p)
    assert "2 annotated question id(s) not in questions (e.g. 3, 4)" in _message(e)
    with pytest.raises(BadInput):
        evaluate({"questions": "x"}, a, p)
    with pytest.raises(BadInput):
        evaluate(q, {"annotations": []}, [])


def test_evaluate_files(tmp_path):
    paths = []
    for name, data in zip(("q.json", "a.json", "p.json"), _files(SPECS)):
        paths.append(tmp_path / name)
        paths[-1].write_text(json.dumps(data, indent=1))
    assert evaluate_files(*paths)["overall"] == 47.5

    with pytest.raises(BadInput) as e:
        evaluate_files(paths[0], paths[1], tmp_path / "nope.json")
    assert "nope.json: no such file" in _message(e)

    paths[2].write_text('[\n  {"question_id": 1, "answer": "yes"},\n  {"question_id": 2 "answer": "2"}\n]')
    with pytest.raises(BadInput) as e:
        evaluate_files(*paths)
    assert _message(e).startswith(f"{paths[2]}: malformed JSON at line 3 column 21")

    paths[2].write_text(json.dumps([{"question_id": 1, "answer": "yes"}]))
    with pytest.raises(BadInput) as e:
        evaluate_files(*paths)
    assert _message(e).startswith(f"{paths[2]}: 3 annotated question id(s) missing")


# ---------------------------------------------------------------- agreement test
#
# A second statement of the official algorithm (GT-Vision-Lab/VQA vqaEval.py), written
# from its rules in another style. Flags switch on the common mis-readings, to show
# that the generated questions catch each of them.

REF_MARKS = frozenset(["!", "?", ",", "`", "@", "<", ">", "-", "_", "\\", "+", "=", ")", "(",
                       "}", "{", '"', "]", "[", "/", ";"])
REF_NUMBERS = {w: str(i) for i, w in enumerate(
    "zero one two three four five six seven eight nine ten".split())} | {"none": "0"}
# The contraction entries the generator can produce (checked in ref_words).
REF_CONTRACTIONS = {"dont": "don't", "cant": "can't", "wont": "won't", "isnt": "isn't",
                    "thats": "that's", "whats": "what's", "youre": "you're", "theyre": "they're",
                    "somebody'd": "somebodyd", "Im": "I'm", "oclock": "o'clock", "yall": "y'all"}


def ref_marks(text, strip_after=False, running=False):
    has_digit_comma_digit = any(
        text[i].isdecimal() and text[i + 1] == "," and text[i + 2].isdecimal() for i in range(len(text) - 2))
    if running:  # mis-reading: each mark tested on the text as changed by the marks before it
        for ch in ';/[]"{}()=+\\_-><@`,?!':
            gone = has_digit_comma_digit or f"{ch} " in text or f" {ch}" in text
            text = text.replace(ch, "" if gone else " ")
        return text.strip() if strip_after else text
    chars = []
    for ch in text:
        if ch not in REF_MARKS:
            chars.append(ch)
        elif not (has_digit_comma_digit or f"{ch} " in text or f" {ch}" in text):
            chars.append(" ")
    return "".join(chars).strip() if strip_after else "".join(chars)


def ref_periods(text, cap=32, keep_after_digit=False):
    kept, removed = [], 0
    for i, ch in enumerate(text):
        digit_follows = i + 1 < len(text) and text[i + 1].isdecimal()
        digit_precedes = keep_after_digit and i > 0 and text[i - 1].isdecimal()
        if ch == "." and not digit_follows and not digit_precedes and (cap is None or removed < cap):
            removed += 1
            continue
        kept.append(ch)
    return "".join(kept)


def ref_words(text):
    out = []
    for word in text.lower().split():
        assert word in REF_CONTRACTIONS or word not in CONTRACTIONS, f"generator made {word!r}"
        word = REF_NUMBERS.get(word, word)
        if word in ("a", "an", "the"):
            continue
        out.append(REF_CONTRACTIONS.get(word, word))
    return " ".join(out)


def ref_accuracy(prediction, humans, gt_full=False, gt_always=False, **punct):
    def marks_and_periods(t):
        return ref_periods(ref_marks(t, punct.get("strip_after", False), punct.get("running", False)),
                           punct.get("cap", 32), punct.get("keep_after_digit", False))
    pred = ref_words(marks_and_periods(prediction.replace("\n", " ").replace("\t", " ").strip()))
    if len(humans) == 1:                              # vqa_cache's documented choice
        human = humans[0].replace("\n", " ").replace("\t", " ").strip()
        return Fraction(int(pred == ref_words(marks_and_periods(human))))
    gts = list(humans)
    if gt_always or len(set(humans)) > 1:
        gts = [marks_and_periods(g) for g in gts]
        if gt_full:
            gts = [ref_words(g.strip()) for g in gts]
    total = Fraction(0)
    for i in range(len(gts)):
        rest = gts[:i] + gts[i + 1:]
        total += min(Fraction(rest.count(pred), 3), Fraction(1))
    return total / len(gts)


VARIANTS = {
    "ground truth fully normalized (LAVIS-fork style)": dict(gt_full=True),
    "ground truth processed even when all identical": dict(gt_always=True),
    "all periods removed (no count of 32)": dict(cap=None),
    "period after a digit kept (look-behind as intended)": dict(keep_after_digit=True),
    "stripped after punctuation": dict(strip_after=True),
    "marks tested on the text as already changed": dict(running=True),
}

GROUPS = [
    ["2", "two", "Two", "TWO", "2.", " 2 ", "two.", "2!", "(2)", "2,"],
    ["yes", "Yes", "YES", "yes.", "yes!", "Yes, ", "yes?", " yes\n", "\tyes", "yes !"],
    ["no", "No", "no.", "none", "None", "0", "zero", "nope", "No!"],
    ["dog", "the dog", "a dog", "Dog", "The Dog.", "dogs", "an dog", "dog."],
    ["don't", "dont", "Dont", "do not", "don't know", "dont know", "cant", "can't", "wont"],
    ["1000", "1,000", "1, 000", "1 000", "one thousand", "1.000", "1,000.0", "1000."],
    ["red white", "red, white", "red,white", "red/white", "red-white", "red - white",
     "red & white", "(red) white", "red white!", "red; white", "red,-white", "red-,white",
     "red/(white)", "(red)-(white)", "red white?!"],
    ["3.5", "3.5.", "3,5", "3 .5", ".5", "3.50", "3. 5"],
    ["isn't", "isnt", "is not", "thats", "that's", "whats", "youre", "theyre", "Im", "I'm",
     "im", "somebody'd", "somebodyd", "yall", "oclock", "o'clock"],
    ["10:30", "10:30.", "ten thirty", "10.30", "10,30", "ten"],
    ["hello-world", "hello world", "hello_world", "hello=world", "hello + world", "[hello] world",
     "{hello}", "hello@world", "hello`world", 'hello "world"', "hello\\world", "hello<world>", "hello;world",
     "hello-world\t-", "hello-world\n-"],
    ["\u0663", "\u0663,\u0664", "3,4", "34", "3 4"],
    ["...", "....", "." * 40 + "x", "." * 31 + "x", "." * 33 + "x", "a.b.c", "e.g.", "u.s.a.", "usa"],
    ["", " ", "the", "a", "the the", "an"],
]


def _mangle(rng, text):
    choice = rng.randrange(6)
    if choice == 0:
        return text.upper()
    if choice == 1:
        return rng.choice(["\n", "\t", " ", "  "]) + text + rng.choice(["\n", "\t", " ", ""])
    if choice == 2:
        return rng.choice(["the ", "a ", "The "]) + text
    if choice == 3:
        return text + rng.choice([".", "!", "?", ",", " ."])
    return text


def adversarial_questions(seed=2024, count=600):
    """[(human answers, prediction)]: 10 answers each, about one in five all identical."""
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        groups = rng.sample(GROUPS, rng.choice([1, 1, 2]))
        variants = [v for g in groups for v in g]
        if rng.random() < 0.2:
            humans = [rng.choice(variants)] * 10
        else:
            weights = [rng.random() ** 3 for _ in variants]
            humans = rng.choices(variants, weights, k=10)
        pool = variants if rng.random() < 0.85 else rng.choice(GROUPS)
        prediction = rng.choice(humans) if rng.random() < 0.4 else rng.choice(pool)
        if rng.random() < 0.3:
            prediction = _mangle(rng, prediction)
        out.append((humans, prediction))
    return out


def test_agreement_with_restated_official_algorithm():
    questions = adversarial_questions()
    assert len(questions) >= 500
    assert sum(len(set(h)) == 1 for h, _ in questions) >= 80
    scores = [0.0, 0.3, 0.6, 0.9, 1.0]
    seen = set()
    for humans, prediction in questions:
        expected = ref_accuracy(prediction, humans)
        got = vqa_accuracy(prediction, humans)
        assert got == pytest.approx(float(expected), abs=1e-12), (prediction, humans)
        seen.add(min(scores, key=lambda s: abs(s - got)))
    assert seen == set(scores)  # every score level occurs


def test_agreement_of_evaluate_with_restated_official_algorithm():
    questions = adversarial_questions(seed=7, count=400)
    specs = [(1000 + i, f"type{i % 3}", f"qtype{i % 7}", humans, pred)
             for i, (humans, pred) in enumerate(questions)]
    result = evaluate(*_files(specs))
    expected = {qid: ref_accuracy(pred, humans) for qid, _, _, humans, pred in specs}
    assert result["perQuestion"] == {qid: round(float(100 * acc), 2) for qid, acc in expected.items()}
    overall = 100 * sum(expected.values()) / len(expected)
    assert result["overall"] == pytest.approx(float(overall), abs=0.005 + 1e-9)
    for i in range(3):
        accs = [expected[qid] for qid, at, *_ in specs if at == f"type{i}"]
        assert result["perAnswerType"][f"type{i}"] == pytest.approx(float(100 * sum(accs) / len(accs)), abs=0.005 + 1e-9)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_generated_questions_catch_each_misreading(variant):
    flags = VARIANTS[variant]
    differing = [(h, p) for h, p in adversarial_questions()
                 if ref_accuracy(p, h, **flags) != ref_accuracy(p, h)]
    assert len(differing) >= 3, variant
