"""VQA v2 in its official layout, as unzipped (https://visualqa.org/download.html):

    DIR/v2_OpenEnded_mscoco_train2014_questions.json   v2_mscoco_train2014_annotations.json
    DIR/v2_OpenEnded_mscoco_val2014_questions.json     v2_mscoco_val2014_annotations.json
    DIR/v2_OpenEnded_mscoco_test2015_questions.json    (no annotations)
    DIR/train2014/COCO_train2014_000000000009.jpg ...  val2014/ ...  test2015/ ...

Splits train, val, test; every split whose questions file is there is loaded (at least one must be).
Question and answer types come from the annotations; test questions have no answers.
Image ids are "train2014/9" (COCO ids are unique, the folder keeps them unambiguous anyway);
question ids are the official integers, as strings.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import BadInput
from ..recipes import DatasetSettings
from .files import answer_list, few, field, file_identity, identifier, inside, listing_fingerprint, question_text, text
from .jsonstream import stream_records
from .schema import make_table, new_rows

VERSION = 1
SUBSETS = {"train": "train2014", "val": "val2014", "test": "test2015"}


def questions_file(sub: str) -> str:
    return f"v2_OpenEnded_mscoco_{sub}_questions.json"


def annotations_file(sub: str) -> str:
    return f"v2_mscoco_{sub}_annotations.json"


def present(base: Path) -> list[tuple[str, str]]:
    """(split, subset) for every split whose questions file exists; BadInput when none or when a
    train/val questions file has no annotations file beside it."""
    found = [(s, sub) for s, sub in SUBSETS.items() if (base / questions_file(sub)).is_file()]
    if not found:
        raise BadInput(
            f"vqa2:{base}: no VQA v2 questions file; expected "
            f"{', '.join(questions_file(s) for s in SUBSETS.values())} (at least one)"
        )
    for split, sub in found:
        if split != "test" and not (base / annotations_file(sub)).is_file():
            raise BadInput(
                f"{base / annotations_file(sub)}: no such file (the {split} questions in "
                f"{questions_file(sub)} need their annotations)"
            )
    return found


def identity(base: Path, dataset: DatasetSettings) -> dict:
    files, images = {}, {}
    for split, sub in present(base):
        names = [questions_file(sub)] + ([annotations_file(sub)] if split != "test" else [])
        for name in names:
            files[name] = file_identity(base / name)
        images[sub] = listing_fingerprint(base / sub)
    return {"kind": "vqa2", "version": VERSION, "files": files, "images": images}


def load(base: Path, dataset: DatasetSettings):
    """The samples table. The files are read record by record (jsonstream), and equal strings (answers,
    types) share one object: memory holds the rows, not the files' JSON trees."""
    rows = new_rows()
    seen: dict[str, str] = {}  # question id -> file, across splits
    shared: dict[str, str] = {}
    for split, sub in present(base):
        qpath = base / questions_file(sub)
        annotated = {}
        apath = base / annotations_file(sub)
        if split != "test":
            for i, rec in enumerate(stream_records(apath, "annotations")):
                qid = identifier(
                    field(rec, i, "question_id", apath, "annotation"), i, "question_id", apath, "annotation"
                )
                if qid in annotated:
                    raise BadInput(f"{apath}: duplicate question_id {qid} (annotation {i})")
                answers = answer_list(field(rec, i, "answers", apath, "annotation"), i, apath, "annotation")
                if not answers:
                    raise BadInput(f"{apath}: annotation {i} (question_id {qid}) has no answers")
                answers = [shared.setdefault(a, a) for a in answers]
                kinds = [
                    text(field(rec, i, k, apath, "annotation"), i, k, apath, "annotation")
                    for k in ("answer_type", "question_type")
                ]
                annotated[qid] = (answers, *(shared.setdefault(k, k) for k in kinds))
        count = 0
        for i, q in enumerate(stream_records(qpath, "questions")):
            count += 1
            qid = identifier(field(q, i, "question_id", qpath, "question"), i, "question_id", qpath, "question")
            image = field(q, i, "image_id", qpath, "question")
            if isinstance(image, bool) or not isinstance(image, int) or image < 0:
                raise BadInput(
                    f"{qpath}: question {i} 'image_id' must be a non-negative integer (COCO id), got {image!r}"
                )
            question = question_text(field(q, i, "question", qpath, "question"), i, qpath, "question")
            if qid in seen:
                raise BadInput(f"{qpath}: duplicate question_id {qid} (question {i}; first in {seen[qid]})")
            seen[qid] = qpath.name
            if split == "test":
                answers, answer_type, question_type = [], "", ""
            else:
                if qid not in annotated:
                    raise BadInput(f"{apath}: no annotation for question_id {qid} (question {i} of {qpath.name})")
                answers, answer_type, question_type = annotated.pop(qid)
            rows["question_id"].append(qid)
            rows["image_id"].append(f"{sub}/{image}")
            rows["image_path"].append(inside(f"{sub}/COCO_{sub}_{image:012d}.jpg", str(qpath)))
            rows["question"].append(question)
            rows["answers"].append(answers)
            rows["answer_type"].append(answer_type)
            rows["question_type"].append(question_type)
            rows["split"].append(split)
        if not count:
            raise BadInput(f"{qpath}: no questions in the file (expected at least one)")
        if annotated:
            extra = list(annotated)
            raise BadInput(
                f"{apath}: {len(extra)} annotation(s) for question ids not in {qpath.name} "
                f"(e.g. {few(extra)}): the files are from different releases?"
            )
    return make_table(rows)
