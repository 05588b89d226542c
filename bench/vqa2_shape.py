"""A generated dataset of VQA v2's shape, in its official layout (bench/scale.py uses it).

N images (two thirds train2014, one third val2014) as small JPEGs; about 5.4 questions per image; ten
human answers per question with VQA v2's answer-type mix (about 38% yes/no, 12% number, 50% other), a
majority answer the annotators mostly agree on, and the usual mess (case, trailing periods, number words,
articles); question texts from templates: about 45% from a small pool of common questions (a Zipf over
their objects), the rest from a space of millions, so that about half of the texts are distinct and the
distinct texts grow about linearly with N, as in the issue's workload. Its own generator
(numpy, seeded): the same N and seed give the same files.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

SYLLABLES = (
    "ba be bi bo bu ca ce co da de di do fa fe fi ga go ka ke ki ko la le li lo lu ma me mi mo mu na ne "
    "ni no pa pe pi po ra re ri ro sa se si so ta te ti to va ve vi wa we zo".split()
)
COLORS = "red blue green yellow white black brown gray orange pink purple silver".split()
PLACES = "on the table|in the water|on the left|near the window|in the sky|on the street|under the tree".split("|")
YESNO = [
    "Is there a {o} in the picture?",
    "Is the {o} {c}?",
    "Are the {o}s {p}?",
    "Is this {o} {c}?",
    "Does the {o} look {c}?",
]
NUMBER = ["How many {o}s are there?", "How many {o}s are {p}?"]
OTHER = [
    "What color is the {o}?",
    "What is the {o} holding?",
    "What is {p}?",
    "What kind of {o} is this?",
    "Where is the {o}?",
    "What is next to the {o}?",
    "What is the {o} made of?",
]
NUMBER_WORDS = "zero one two three four five six seven eight nine ten".split()


def words(n: int, rng) -> list[str]:
    out, seen = [], set()
    while len(out) < n:
        w = "".join(rng.choice(SYLLABLES, size=rng.integers(2, 4)))
        if w not in seen:
            seen.add(w)
            out.append(w)
    return out


def messy(answer: str, rng) -> str:
    r = rng.random()
    if r < 0.04:
        return answer.capitalize()
    if r < 0.06:
        return answer + "."
    if r < 0.07:
        return "the " + answer
    if r < 0.08:
        return " " + answer + " "
    return answer


def ten_answers(kind: str, rng, objects, zipf_other) -> list[str]:
    if kind == "yes/no":
        best = "yes" if rng.random() < 0.5 else "no"
        agree, alt = 0.9, lambda: "no" if best == "yes" else "yes"
    elif kind == "number":
        k = int(min(rng.geometric(0.35), 12))
        best = str(k)
        agree, alt = 0.65, lambda: str(max(0, k + int(rng.integers(-2, 3))))
    else:
        best = zipf_other()
        agree, alt = 0.55, zipf_other
    out = []
    for _ in range(10):
        a = best if rng.random() < agree else alt()
        if kind == "number" and rng.random() < 0.05 and a.isdigit() and int(a) <= 10:
            a = NUMBER_WORDS[int(a)]
        out.append(messy(a, rng))
    return out


def make_dataset(root: Path, images: int, seed: int = 0, size: int = 32) -> dict:
    """Write the dataset under `root`; returns {"images", "questions", "distinct_texts", "files"}."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    objects = words(20000, rng)
    answers_vocab = words(20000, rng)

    def zipf(a, n):
        return min(int(rng.zipf(a)), n) - 1

    def other():
        if rng.random() < 0.7:
            return answers_vocab[zipf(1.4, len(answers_vocab))]
        return COLORS[int(rng.integers(len(COLORS)))]

    subsets = {"train2014": (images * 2) // 3, "val2014": images - (images * 2) // 3}
    texts, qid, files = set(), 0, {}
    for sub, count in subsets.items():
        (root / sub).mkdir(parents=True, exist_ok=True)
        questions, annotations = [], []
        offset = 1 if sub == "train2014" else 10_000_000
        for k in range(count):
            image_id = offset + k
            colour = tuple(int(v) for v in rng.integers(0, 256, 3))
            im = Image.new("RGB", (size, size), colour)
            x, y = (int(v) for v in rng.integers(0, size // 2, 2))
            im.paste(tuple(255 - c for c in colour), (x, y, x + size // 3, y + size // 3))
            im.save(root / sub / f"COCO_{sub}_{image_id:012d}.jpg", quality=75)
            for _ in range(1 + int(rng.poisson(4.4))):
                r = rng.random()
                kind, templates = ("yes/no", YESNO) if r < 0.38 else ("number", NUMBER) if r < 0.5 else ("other", OTHER)
                template = templates[int(rng.integers(len(templates)))]
                # about 45% from a small pool of common questions, the rest from a space of millions
                common = rng.random() < 0.45
                obj = objects[zipf(1.3, 60) if common else int(rng.integers(len(objects)))]
                text = template.format(
                    o=obj,
                    c=COLORS[int(rng.integers(3 if common else len(COLORS)))],
                    p=PLACES[int(rng.integers(2 if common else len(PLACES)))],
                )
                texts.add(text)
                qid += 1
                raw = ten_answers(kind, rng, objects, other)
                questions.append({"image_id": image_id, "question": text, "question_id": qid})
                annotations.append(
                    {
                        "question_type": " ".join(text.lower().split()[:2]),
                        "multiple_choice_answer": raw[0],
                        "image_id": image_id,
                        "answer_type": kind,
                        "question_id": qid,
                        "answers": [
                            {"answer": a, "answer_confidence": "yes", "answer_id": j + 1} for j, a in enumerate(raw)
                        ],
                    }
                )
        head = {"info": {"description": "generated, VQA v2 shaped"}, "license": {"name": "none"}, "data_subtype": sub}
        qfile, afile = root / f"v2_OpenEnded_mscoco_{sub}_questions.json", root / f"v2_mscoco_{sub}_annotations.json"
        qfile.write_text(json.dumps({**head, "task_type": "Open-Ended", "data_type": "mscoco", "questions": questions}))
        afile.write_text(json.dumps({**head, "annotations": annotations}))
        files[sub] = {"questions": qfile, "annotations": afile}
    return {"images": images, "questions": qid, "distinct_texts": len(texts), "files": files}
