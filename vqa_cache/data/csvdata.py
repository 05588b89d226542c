"""CSV datasets in the DACON layout:

    DIR/train.csv        columns ID, image_id, question, answer
    DIR/test.csv         columns ID, image_id, question (optional file; no answers)
    DIR/image/train/<image_id>.jpg
    DIR/image/test/<image_id>.jpg

Options (`--set dataset.options.KEY=VALUE`, or `[dataset.options]` in a recipe) rename what differs:
id_column, image_column, question_column, answer_column, image_dir ("image"), image_ext (".jpg"),
train_file ("train.csv"), test_file ("test.csv").
One answer per question; answer types are derived from the answer: "yes/no", "number" (digits after
normalization) or "other"; question types are the question's first words. There is no validation
split: one is held out of train by image id (`--val-fraction`, `--data-seed`), see subsets.py.
Image ids are "train/<image_id>", question ids the ID column.
"""

from __future__ import annotations

import csv
from pathlib import Path

from ..answers import normalize_answer
from ..errors import BadInput
from ..recipes import DatasetSettings
from .files import file_identity, inside, listing_fingerprint, short
from .schema import layout_options, make_table, new_rows, question_type

VERSION = 1
DEFAULTS = {
    "id_column": "ID",
    "image_column": "image_id",
    "question_column": "question",
    "answer_column": "answer",
    "image_dir": "image",
    "image_ext": ".jpg",
    "train_file": "train.csv",
    "test_file": "test.csv",
}


def options(dataset: DatasetSettings) -> dict:
    opts = layout_options("csv", dataset.options, DEFAULTS, lambda k: k == "image_ext")
    for k in ("image_dir", "train_file", "test_file"):
        opts[k] = inside(opts[k], f"csv dataset option {k}")
    return opts


def files(base: Path, opts: dict) -> list[tuple[str, Path]]:
    train = base / opts["train_file"]
    if not train.is_file():
        raise BadInput(
            f"{train}: no such file (a csv dataset needs {opts['train_file']} with columns "
            f"{opts['id_column']}, {opts['image_column']}, {opts['question_column']}, "
            f"{opts['answer_column']})"
        )
    out = [("train", train)]
    test = base / opts["test_file"]
    if test.is_file():
        out.append(("test", test))
    return out


def identity(base: Path, dataset: DatasetSettings) -> dict:
    opts = options(dataset)
    found = files(base, opts)
    return {
        "kind": "csv",
        "version": VERSION,
        "options": {k: opts[k] for k in sorted(opts)},
        "files": {p.name: file_identity(p) for _, p in found},
        "images": {s: listing_fingerprint(base / opts["image_dir"] / s) for s, _ in found},
    }


def answer_type(answer: str) -> str:
    a = normalize_answer(answer)
    if a in ("yes", "no"):
        return "yes/no"
    return "number" if a.isdigit() else "other"


def load(base: Path, dataset: DatasetSettings):
    opts = options(dataset)
    rows = new_rows()
    seen: dict[str, str] = {}
    for split, path in files(base, opts):
        before = len(rows["question_id"])
        need = [opts["id_column"], opts["image_column"], opts["question_column"]]
        if split == "train":
            need.append(opts["answer_column"])
        try:
            with open(path, encoding="utf-8-sig", newline="") as f:
                reader = csv.reader(f)
                header = next(reader, None)
                if header is None:
                    raise BadInput(f"{path}: empty file, expected a header row with {', '.join(need)}")
                header = [h.strip() for h in header]
                missing = [c for c in need if c not in header]
                if missing:
                    raise BadInput(
                        f"{path}: missing column(s) {', '.join(repr(c) for c in missing)} "
                        f"(has: {', '.join(header)}); rename with --set dataset.options.<x>_column=NAME"
                    )
                col = {c: header.index(c) for c in need}
                has_answer = opts["answer_column"] in header
                a_col = header.index(opts["answer_column"]) if has_answer else None
                for row in reader:
                    if not row or row == [""]:
                        continue
                    line = reader.line_num
                    if len(row) != len(header):
                        raise BadInput(f"{path}: line {line} has {len(row)} fields, the header has {len(header)}")
                    qid = row[col[opts["id_column"]]].strip()
                    image = row[col[opts["image_column"]]].strip()
                    if not qid or not image:
                        raise BadInput(
                            f"{path}: line {line}: empty {opts['id_column'] if not qid else opts['image_column']}"
                        )
                    if qid in seen:
                        raise BadInput(
                            f"{path}: line {line}: duplicate {opts['id_column']} {qid!r} (first in {seen[qid]})"
                        )
                    seen[qid] = f"{path.name} line {line}"
                    question = row[col[opts["question_column"]]]
                    if not question.strip():
                        raise BadInput(f"{path}: line {line}: empty {opts['question_column']} ({question!r})")
                    answers = [row[a_col]] if has_answer else []
                    rows["question_id"].append(qid)
                    rows["image_id"].append(f"{split}/{image}")
                    rows["image_path"].append(
                        inside(
                            f"{image}{opts['image_ext']}",
                            f"{path} line {line} ({opts['image_column']} {short(image)!r})",
                            f"{opts['image_dir']}/{split}",
                        )
                    )
                    rows["question"].append(question)
                    rows["answers"].append(answers)
                    rows["answer_type"].append(answer_type(answers[0]) if answers else "")
                    rows["question_type"].append(question_type(question))
                    rows["split"].append(split)
        except UnicodeDecodeError as e:
            raise BadInput(f"{path}: not UTF-8 text (byte {e.start})") from None
        except csv.Error as e:
            raise BadInput(f"{path}: malformed CSV: {e}") from None
        if len(rows["question_id"]) == before:
            raise BadInput(f"{path}: a header row and no questions (expected at least one)")
    return make_table(rows)


SAMPLE_SUBMISSION = "sample_submission.csv"  # DACON's: the IDs in the order a submission lists them


def submission_order(base: Path, dataset: DatasetSettings) -> tuple[list[str], list[str], str]:
    """The DACON submission of the test split: (its IDs in order, its header [ID column, answer column], the
    file they come from): DIR/sample_submission.csv when it is there (its first column, its header), else
    test.csv's ID column, in file order."""
    opts = options(dataset)
    sample = base / SAMPLE_SUBMISSION
    path = sample if sample.is_file() else base / opts["test_file"]
    if not path.is_file():
        raise BadInput(f"{base}: no {opts['test_file']} or {SAMPLE_SUBMISSION}: nothing to submit")
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            reader = csv.reader(f)
            header = [h.strip() for h in next(reader, None) or []]
            if path == sample:
                if not header:
                    raise BadInput(f"{path}: empty file, expected a header row (ID, answer)")
                column, names = 0, [header[0], header[1] if len(header) > 1 else opts["answer_column"]]
            else:
                if opts["id_column"] not in header:
                    raise BadInput(f"{path}: no column {opts['id_column']!r} (has: {', '.join(header)})")
                column, names = header.index(opts["id_column"]), [opts["id_column"], opts["answer_column"]]
            ids = [row[column].strip() for row in reader if row and row != [""]]
    except UnicodeDecodeError as e:
        raise BadInput(f"{path}: not UTF-8 text (byte {e.start})") from None
    except (csv.Error, IndexError) as e:
        raise BadInput(f"{path}: malformed CSV: {e}") from None
    return ids, names, path.name
