"""Tiny datasets in the official on-disk layouts (VQA v2, VizWiz records / column-wise, DACON CSV),
made by the tests: a few 16x16 JPEGs and a few questions each. Answers are already in the
normalized form (as the released VQA answers are), so soft scores and the official metric agree."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

COLORS = ["red", "blue", "green", "yellow"]
# (question, answer type, answer for image colour index c)
KINDS = [
    ("is the picture {c}?", "yes/no", lambda c, k: "yes" if (c + k) % 2 == 0 else "no"),
    ("how many dots are there?", "number", lambda c, k: str(1 + (c + k) % 3)),
    ("what color is it?", "other", lambda c, k: COLORS[c % len(COLORS)]),
]


def image(path: Path, c: int) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    rgb = [(200, 30, 30), (30, 30, 200), (30, 200, 30), (220, 220, 30)][c % 4]
    Image.new("RGB", (16, 16), rgb).save(path, "JPEG")


def ten_answers(best: str, kind: str, rng: random.Random) -> list[str]:
    """10 human answers: `best` 4..10 times, the rest plausible others."""
    pool = {"yes/no": ["yes", "no"], "number": ["1", "2", "3", "4"], "other": COLORS + ["white"]}[kind]
    n = rng.randint(4, 10)
    others = [a for a in pool if a != best]
    answers = [best] * n + [rng.choice(others) for _ in range(10 - n)]
    rng.shuffle(answers)
    return answers


def make_vqa2(root: Path, images=(("train2014", 6), ("val2014", 4), ("test2015", 2)), seed: int = 0) -> dict:
    """VQA v2 layout; returns {split: {"questions": path, "annotations": path|None, "qids": [...]}}."""
    root.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    out = {}
    next_image = {"train2014": 9, "val2014": 42, "test2015": 1001}
    for sub, n in images:
        questions, annotations = [], []
        for j in range(n):
            image_id = next_image[sub] + 7 * j
            c = (image_id + j) % 4
            image(root / sub / f"COCO_{sub}_{image_id:012d}.jpg", c)
            for k, (q, atype, answer) in enumerate(KINDS):
                qid = image_id * 1000 + k
                questions.append({"image_id": image_id, "question": q.format(c=COLORS[k % 4]), "question_id": qid})
                best = answer(c, k)
                annotations.append(
                    {
                        "question_type": " ".join(q.split()[:2]),
                        "multiple_choice_answer": best,
                        "answers": [
                            {"answer": a, "answer_confidence": "yes", "answer_id": i + 1}
                            for i, a in enumerate(ten_answers(best, atype, rng))
                        ],
                        "image_id": image_id,
                        "answer_type": atype,
                        "question_id": qid,
                    }
                )
        qpath = root / f"v2_OpenEnded_mscoco_{sub}_questions.json"
        qpath.write_text(
            json.dumps(
                {
                    "info": {},
                    "task_type": "Open-Ended",
                    "data_type": "mscoco",
                    "license": {},
                    "data_subtype": sub,
                    "questions": questions,
                }
            )
        )
        apath = None
        if sub != "test2015":
            apath = root / f"v2_mscoco_{sub}_annotations.json"
            apath.write_text(json.dumps({"info": {}, "license": {}, "data_subtype": sub, "annotations": annotations}))
        split = {"train2014": "train", "val2014": "val", "test2015": "test"}[sub]
        out[split] = {"questions": qpath, "annotations": apath, "qids": [q["question_id"] for q in questions]}
    return out


def vizwiz_records(split: str, n: int, rng: random.Random) -> list[dict]:
    recs = []
    for i in range(n):
        k = i % len(KINDS)
        q, atype, answer = KINDS[k]
        c = i % 4
        rec = {"image": f"VizWiz_{split}_{i:08d}.jpg", "question": q.format(c=COLORS[(i // 3) % 4])}
        if split != "test":
            rec["answers"] = [{"answer": a, "answer_confidence": "yes"} for a in ten_answers(answer(c, k), atype, rng)]
            rec["answer_type"] = atype
            rec["answerable"] = 1
        recs.append(rec)
    return recs


def make_vizwiz(
    root: Path, form: str = "records", sizes=(("train", 9), ("val", 6), ("test", 3)), seed: int = 0
) -> dict:
    """VizWiz: form "records" = the official Annotations/{split}.json lists; "columns" = DIR/{split}.json
    stored column-wise (pandas to_json), train and val only. Returns {split: records}."""
    rng = random.Random(seed)
    out = {}
    for split, n in sizes:
        if form == "columns" and split == "test":
            continue
        recs = vizwiz_records(split, n, rng)
        for i, r in enumerate(recs):
            image(root / split / r["image"], i % 4)
        if form == "records":
            path = root / "Annotations" / f"{split}.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(recs))
        else:
            columns = {}
            for i, r in enumerate(recs):
                for key, value in r.items():
                    columns.setdefault(key, {})[str(i)] = value
            (root / f"{split}.json").write_text(json.dumps(columns))
        out[split] = recs
    return out


def make_csv(
    root: Path, train_images: int = 8, test_images: int = 2, columns=None, image_dir: str = "image", seed: int = 0
) -> dict:
    """DACON layout: train.csv (ID, image_id, question, answer), test.csv, image/{train,test}/<id>.jpg.
    `columns` renames the four columns. Returns {"train": rows, "test": rows}."""
    names = {"ID": "ID", "image_id": "image_id", "question": "question", "answer": "answer", **(columns or {})}
    root.mkdir(parents=True, exist_ok=True)
    out, n = {}, 0
    for split, count in (("train", train_images), ("test", test_images)):
        rows = []
        if not count:
            continue
        for j in range(count):
            img = f"{split}_{j:05d}"
            c = j % 4
            image(root / image_dir / split / f"{img}.jpg", c)
            for k, (q, _, answer) in enumerate(KINDS):
                row = {
                    names["ID"]: f"{split.upper()}_{n:06d}",
                    names["image_id"]: img,
                    names["question"]: q.format(c=COLORS[k % 4]),
                }
                if split == "train":
                    row[names["answer"]] = answer(c, k)
                rows.append(row)
                n += 1
        with open(root / f"{split}.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
        out[split] = rows
    return out
