"""VizWiz VQA, in its official layout or with the same records stored column-wise.

Official (https://vizwiz.org/tasks-and-datasets/vqa/):

    DIR/Annotations/train.json  val.json  test.json     a list of records:
        {"image": "VizWiz_train_00000000.jpg", "question": "...", "answers": [{"answer": "...",
         "answer_confidence": "yes"}, ... 10], "answer_type": "other", "answerable": 0}
    DIR/train/VizWiz_train_00000000.jpg ...  val/ ...  test/ ...

Column-wise (as pandas' DataFrame.to_json() writes the same table; several courses ship it):

    DIR/train.json  DIR/val.json     {"image": {"0": "...", "1": ...}, "question": {"0": ...}, ...}
    DIR/train/ ...  DIR/val/ ...

Either file shape is accepted in either place. Test records have no answers. VizWiz has one
question per image and no question ids: the question id is the image file name (unique within a
split), the image id "SPLIT/NAME". There are no question types ("").
"""

from __future__ import annotations

from pathlib import Path

from ..errors import BadInput
from ..recipes import DatasetSettings
from .files import answer_list, field, file_identity, inside, listing_fingerprint, question_text, read_json, some, text
from .schema import make_table, new_rows

VERSION = 1
SPLITS = ("train", "val", "test")


def locate(base: Path) -> list[tuple[str, Path]]:
    """(split, annotation file) for every split found: Annotations/SPLIT.json, else SPLIT.json."""
    found = []
    for s in SPLITS:
        for candidate in (base / "Annotations" / f"{s}.json", base / f"{s}.json"):
            if candidate.is_file():
                found.append((s, candidate))
                break
    if not found:
        raise BadInput(
            f"vizwiz:{base}: no annotation files; expected Annotations/{{train,val,test}}.json "
            f"(official layout) or {{train,val}}.json (column-wise)"
        )
    return found


def identity(base: Path, dataset: DatasetSettings) -> dict:
    found = locate(base)
    return {
        "kind": "vizwiz",
        "version": VERSION,
        "files": {str(p.relative_to(base)): file_identity(p) for _, p in found},
        "images": {s: listing_fingerprint(base / s) for s, _ in found},
    }


def as_records(data, path: Path) -> list:
    """A list of records, from a list (records) or an object of columns keyed by row number."""
    if isinstance(data, list):
        return data
    if isinstance(data, dict) and data and all(isinstance(v, dict) for v in data.values()):
        keys = list(dict.fromkeys(k for col in data.values() for k in col))
        try:
            keys.sort(key=int)
        except ValueError:
            pass
        return [{name: col[k] for name, col in data.items() if k in col} for k in keys]
    raise BadInput(
        f"{path}: expected a list of records or an object of columns keyed by row number "
        f"(pandas to_json), got {type(data).__name__}"
    )


def load(base: Path, dataset: DatasetSettings):
    rows = new_rows()
    for split, path in locate(base):
        recs = some(as_records(read_json(path), path), path, "records")
        seen = {}
        for i, rec in enumerate(recs):
            image = text(field(rec, i, "image", path), i, "image", path)
            question = question_text(field(rec, i, "question", path), i, path)
            if split != "test" or "answers" in rec:
                answers = answer_list(field(rec, i, "answers", path), i, path)
                if split != "test" and not answers:
                    raise BadInput(f"{path}: record {i} ({image}) has no answers")
                answer_type = text(field(rec, i, "answer_type", path), i, "answer_type", path) if answers else ""
            else:
                answers, answer_type = [], ""
            if image in seen:
                raise BadInput(
                    f"{path}: duplicate question id {image!r} (records {seen[image]} and {i}: "
                    f"VizWiz has one question per image)"
                )
            seen[image] = i
            rows["question_id"].append(image)
            rows["image_id"].append(f"{split}/{image}")
            rows["image_path"].append(inside(image, f"{path} record {i}", split))
            rows["question"].append(question)
            rows["answers"].append(answers)
            rows["answer_type"].append(answer_type)
            rows["question_type"].append("")
            rows["split"].append(split)
    return make_table(rows)
