"""Small Hugging Face datasets made by the tests from easy-VQA's images and questions: written with
`save_to_disk`, or put into a Hugging Face cache folder exactly where `load_dataset("OWNER/NAME")` finds a
Hub dataset it downloaded before (so that it loads offline)."""

from __future__ import annotations

import shutil
from pathlib import Path


def easyvqa_splits(images: dict | None = None, questions_per_image: int = 3, answers: str = "records") -> dict:
    """{split: columns} of a VQA dataset on easy-VQA: `images` {split: number of images} ("train" from
    easy-VQA's train images, "validation" from its test images), the first questions of each image.
    Columns: image (the PNG file's bytes, as datasets.Image stores them), question, answers (a list of
    {"answer": ...} records, or of strings), question_id, image_id (integers)."""
    import easy_vqa

    images = images or {"train": 12, "validation": 4}
    source = {
        "train": (easy_vqa.get_train_questions(), easy_vqa.get_train_image_paths()),
        "validation": (easy_vqa.get_test_questions(), easy_vqa.get_test_image_paths()),
    }
    out, qid = {}, 1000
    for split, n in images.items():
        (qs, ans, ids), paths = source[split]
        cols = {"image": [], "question": [], "answers": [], "question_id": [], "image_id": []}
        per_image: dict = {}
        for q, a, i in zip(qs, ans, ids):
            if i >= n or per_image.get(i, 0) >= questions_per_image:
                continue
            per_image[i] = per_image.get(i, 0) + 1
            cols["image"].append({"bytes": Path(paths[i]).read_bytes(), "path": f"{i}.png"})
            cols["question"].append(q)
            cols["answers"].append([{"answer": a, "answer_confidence": "yes"}] if answers == "records" else [a])
            cols["question_id"].append(qid)
            cols["image_id"].append(i)
            qid += 1
        out[split] = cols
    return out


def features(answers: str = "records"):
    from datasets import Features, Image, List, Value

    answer = (
        {"answer": Value("string"), "answer_confidence": Value("string")} if answers == "records" else Value("string")
    )
    return Features(
        {
            "image": Image(),
            "question": Value("string"),
            "answers": List(answer),
            "question_id": Value("int64"),
            "image_id": Value("int64"),
        }
    )


def dataset_dict(splits: dict, feats=None):
    from datasets import Dataset, DatasetDict

    return DatasetDict({s: Dataset.from_dict(cols, features=feats) for s, cols in splits.items()})


def save_easyvqa(path: Path, answers: str = "records", **kwargs) -> Path:
    """An easy-VQA dataset written with save_to_disk at `path`."""
    dataset_dict(easyvqa_splits(answers=answers, **kwargs), features(answers)).save_to_disk(str(path))
    return path


def put_in_hub_cache(cache_dir: Path, repo: str, splits: dict, feats, work: Path) -> None:
    """Make `load_dataset(repo)` find `splits` in the Hugging Face cache `cache_dir` offline, as it finds a
    dataset it downloaded from the Hub: Parquet files prepared by the Parquet builder into
    CACHE/OWNER___NAME/default/0.0.0/<hash>/NAME-SPLIT.arrow with their dataset_info.json."""
    from datasets.packaged_modules.parquet.parquet import Parquet

    owner, name = repo.split("/")
    files = {}
    for split, ds in dataset_dict(splits, feats).items():
        files[split] = str(work / f"{split}.parquet")
        ds.to_parquet(files[split])
    builder = Parquet(
        cache_dir=str(work / "build"), dataset_name=name, config_id="default", hash="0123abcd", data_files=files
    )
    builder.download_and_prepare()
    target = Path(cache_dir) / f"{owner}___{name}"
    target.mkdir(parents=True, exist_ok=True)
    shutil.move(str(work / "build" / name / "default"), str(target / "default"))
