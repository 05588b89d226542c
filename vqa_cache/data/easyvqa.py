"""easy-VQA, the embedded default dataset (the `easy-vqa` package from PyPI).

5,000 generated 64x64 images of one coloured shape (4,000 train, 1,000 test), 48,248 templated
questions, 13 answers, one answer per question. The test split is the validation split.
Train and test image ids both start at 0, so image ids here are "train/12", "test/12".
"""

from __future__ import annotations

from importlib.metadata import version

from ..recipes import DatasetSettings
from .schema import make_table, new_rows, question_type


def identity(path: str, dataset: DatasetSettings) -> dict:
    """The package's version: its images and questions are those of that release."""
    return {"name": "easyvqa", "version": version("easy-vqa")}


def load(path: str, dataset: DatasetSettings):
    import easy_vqa  # (lazy: it reads its question files when imported)

    rows = new_rows()
    qid = 0
    for split, questions, paths in (
        ("train", easy_vqa.get_train_questions(), easy_vqa.get_train_image_paths()),
        ("test", easy_vqa.get_test_questions(), easy_vqa.get_test_image_paths()),
    ):
        for q, a, img in zip(*questions):
            rows["question_id"].append(str(qid))
            rows["image_id"].append(f"{split}/{img}")
            rows["image_path"].append(paths[img])
            rows["question"].append(q)
            rows["answers"].append([a])
            rows["answer_type"].append("yes/no" if a in ("yes", "no") else "other")
            rows["question_type"].append(question_type(q))
            rows["split"].append(split)
            qid += 1
    return make_table(rows)
