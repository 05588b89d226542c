"""Hugging Face datasets (`--dataset hf:NAME_OR_DIR`) built here from easy-VQA's images: a save_to_disk
directory extracts, trains and predicts; a Hub name is read offline from the local HF cache; image bytes are
exported once as they are and decoded only by stage one; the fingerprint keys the cache; malformed datasets
are one line, exit 2, nothing written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import FAST
from fixtures_hf import dataset_dict, easyvqa_splits, features, put_in_hub_cache, save_easyvqa

from vqa_cache.cache.samples import load_samples as load_cached
from vqa_cache.data import load_samples
from vqa_cache.recipes import DatasetSettings

ROOT = Path(__file__).resolve().parents[1]


def written(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and not p.name.endswith(".lock"))


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """12 train + 4 validation easy-VQA images, 3 questions each, saved with save_to_disk."""
    return save_easyvqa(tmp_path_factory.mktemp("hf") / "easyvqa")


@pytest.mark.slow  # a subprocess: not in `make test-fast`
def test_save_to_disk_extracts_trains_and_predicts(cli, tmp_path, saved):
    cache, run = tmp_path / "cache", tmp_path / "run"
    ds = ["--dataset", f"hf:{saved}"]
    r = cli("--cache-dir", cache, "extract", *ds, *FAST, "--workers", 0)
    assert r.code == 0, r
    assert "48 questions, 16 images" in r.out

    # the dataset entry holds the parsed rows and the images, byte for byte as the dataset stored them
    [manifest] = [json.loads(p.read_text()) for p in (cache / "dataset").glob("*/manifest.json")]
    entry = cache / "dataset" / manifest["key"]
    table = pq.read_table(entry / "samples.parquet").to_pydict()
    assert manifest["complete"] and manifest["rows"] == 48 and manifest["exported"]["files"] == 16
    assert set(table["split"]) == {"train", "val"}  # "validation" is "val"
    assert table["answers"][0] and all(len(a) == 1 for a in table["answers"])
    source = easyvqa_splits()
    stored = {
        f"{s}/{i}": img["bytes"]
        for s, name in (("train", "train"), ("val", "validation"))
        for img, i in zip(source[name]["image"], source[name]["image_id"])
    }
    for image_id, path in zip(table["image_id"], table["image_path"]):
        assert (entry / path).read_bytes() == stored[image_id]

    r = cli("--cache-dir", cache, "train", *ds, *FAST, "--epochs", 2, "--out", run)
    assert r.code == 0, r
    assert "36 train / 12 val questions" in r.out
    r = cli("--cache-dir", cache, "predict", "--run", run, "--out", tmp_path / "p.json")
    assert r.code == 0, r
    assert "12 predictions for split val" in r.out and "accuracy" in r.out
    preds = json.loads((tmp_path / "p.json").read_text())
    assert sorted(p["question_id"] for p in preds) == sorted(source["validation"]["question_id"])


def test_images_are_decoded_once_by_stage_one_only(cli, tmp_path, saved, monkeypatch):
    from PIL import Image

    real_open, opened = Image.open, []

    def refuse(*args, **kwargs):
        raise AssertionError("an image was decoded while the dataset was read")

    monkeypatch.setattr(Image, "open", refuse)
    table = load_cached(DatasetSettings(name=f"hf:{saved}"), root=tmp_path / "cache")  # no decoding here
    assert table.num_rows == 48 and all(os.path.isfile(p) for p in table.column("image_path").to_pylist())

    def counting(path, *args, **kwargs):
        opened.append(str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(Image, "open", counting)
    r = cli("--cache-dir", tmp_path / "cache", "extract", "--dataset", f"hf:{saved}", *FAST, "--workers", 0)
    assert r.code == 0, r
    assert len(opened) == 16 and len(set(opened)) == 16  # each of the 16 images decoded once


def test_an_exported_image_gone_makes_the_entry_again(tmp_path, saved, capsys):
    """The dataset entry holds the exported images (its size counts them); one deleted, the entry fails its
    check and is made again, with a note."""
    from vqa_cache.cache.store import Entry

    root = tmp_path / "cache"
    first = load_cached(DatasetSettings(name=f"hf:{saved}"), root=root)
    [folder] = [p for p in (root / "dataset").iterdir() if p.is_dir()]
    assert Entry(root, folder.name).size_bytes() == sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    gone = Path(first.column("image_path")[0].as_py())
    assert gone.parent == folder / "images"
    size = gone.stat().st_size
    gone.unlink()
    capsys.readouterr()
    again = load_cached(DatasetSettings(name=f"hf:{saved}"), root=root)
    assert f"cache entry {folder.name} is damaged" in capsys.readouterr().err
    assert again.equals(first) and gone.stat().st_size == size


def test_fingerprint_keys_the_cache(tmp_path, saved):
    """Another save of changed data has another HF fingerprint, so other cache keys (also when it is saved
    into the same directory within one process); the same data elsewhere keeps its image features' key."""
    from vqa_cache.cache.plan import make_plan
    from vqa_cache.recipes import ExtractRecipe, ImageSettings, TextSettings

    def plan(path):
        return make_plan(
            ExtractRecipe(
                DatasetSettings(name=f"hf:{path}"),
                ImageSettings(encoder="resnet18", size=32, weights="random"),
                TextSettings(weights="random"),
            ),
            root=tmp_path / "cache",
        )

    splits = easyvqa_splits()
    same = tmp_path / "same"
    dataset_dict(splits, features()).save_to_disk(str(same))
    splits["train"]["answers"][0] = [{"answer": "teal", "answer_confidence": "yes"}]  # one answer changed
    changed = tmp_path / "changed"
    dataset_dict(splits, features()).save_to_disk(str(changed))
    base = plan(saved)
    assert plan(same).image_key == base.image_key  # same content, another directory
    assert plan(changed).image_key != base.image_key
    assert plan(changed).samples.column("answers")[0].as_py() == ["teal"]
    dataset_dict(splits, features()).save_to_disk(str(same))  # saved again into the same directory
    again = plan(same)
    assert again.image_key == plan(changed).image_key and again.samples.column("answers")[0].as_py() == ["teal"]


@pytest.mark.slow  # a subprocess: not in `make test-fast`
def test_hub_name_read_offline_from_the_hf_cache(tmp_path):
    """`hf:OWNER/NAME` with HF_DATASETS_OFFLINE=1 reads the dataset the test put in the HF cache; a name
    that is not there is one line, exit 2."""
    hf_cache = tmp_path / "hf"
    put_in_hub_cache(hf_cache, "tester/easyvqa-mini", easyvqa_splits(answers="strings"), features("strings"), tmp_path)
    env = dict(
        os.environ,
        PYTHONPATH=str(ROOT),
        OMP_NUM_THREADS="1",
        HF_DATASETS_OFFLINE="1",
        HF_HUB_OFFLINE="1",
        HF_DATASETS_CACHE=str(hf_cache),
    )
    cache = tmp_path / "cache"

    def run(name):
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "vqa_cache",
                "--cache-dir",
                str(cache),
                "extract",
                "--dataset",
                f"hf:{name}",
                *map(str, FAST),
                "--workers",
                "0",
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )

    r = run("tester/easyvqa-mini")
    assert r.returncode == 0, r.stderr
    assert "48 questions, 16 images" in r.stdout
    [manifest] = [json.loads(p.read_text()) for p in (cache / "dataset").glob("*/manifest.json")]
    assert manifest["spec"]["identity"]["files"]["source"] == "tester/easyvqa-mini"
    r = run("tester/not-in-the-cache")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "tester/not-in-the-cache" in r.stderr and "offline" in r.stderr


@pytest.mark.parametrize("form", ["one", "columns"])
def test_other_answer_forms(tmp_path, form):
    """A single answer string, and the column-wise {"answer": [...]} of older `datasets`."""
    from datasets import Features, Image, List, Value

    splits = easyvqa_splits({"train": 3}, answers="strings")
    cols = splits["train"]
    if form == "one":
        cols["answers"] = [a[0] for a in cols["answers"]]
        answers = Value("string")
    else:
        cols["answers"] = [{"answer": a} for a in cols["answers"]]
        answers = {"answer": List(Value("string"))}
    feats = Features(
        {
            "image": Image(),
            "question": Value("string"),
            "answers": answers,
            "question_id": Value("int64"),
            "image_id": Value("int64"),
        }
    )
    dataset_dict(splits, feats).save_to_disk(str(tmp_path / "d"))
    t = load_samples(DatasetSettings(name=f"hf:{tmp_path / 'd'}", val_fraction=0.4))
    expected = [[a] if isinstance(a, str) else a["answer"] for a in cols["answers"]]
    by_qid = dict(zip(t.column("question_id").to_pylist(), t.column("answers").to_pylist()))
    assert [by_qid[str(q)] for q in cols["question_id"]] == expected
    assert set(t.column("split").to_pylist()) == {"train", "val"}  # held out of train by image


def test_paths_and_derived_columns(tmp_path):
    """An image column of paths (relative to the dataset directory) and no id or type columns: question ids
    are SPLIT/ROW, image ids the paths, answer and question types derived."""
    from datasets import Dataset

    from vqa_cache.data.hf_columns import answer_type
    from vqa_cache.data.schema import question_type

    splits = easyvqa_splits({"train": 4})
    d = tmp_path / "d"
    (d / "img").mkdir(parents=True)
    names = []
    for img, i in zip(splits["train"]["image"], splits["train"]["image_id"]):
        (d / "img" / f"{i}.png").write_bytes(img["bytes"])
        names.append(f"img/{i}.png")
    Dataset.from_dict(
        {
            "image": names,
            "question": splits["train"]["question"],
            "answers": [[x["answer"] for x in a] for a in splits["train"]["answers"]],
        }
    ).save_to_disk(str(d))
    t = load_samples(DatasetSettings(name=f"hf:{d}", val_fraction=0.25)).to_pydict()
    assert sorted(t["question_id"]) == sorted(f"train/{r}" for r in range(len(names)))
    assert t["image_path"] == [str(d / p) for p in names]
    assert t["image_id"] == [f"train/{p}" for p in names]
    assert t["answer_type"] == [answer_type(a) for a in t["answers"]]
    assert {"yes/no", "other"} <= set(t["answer_type"])
    assert t["question_type"] == [question_type(q) for q in t["question"]]


def test_finetune_reads_the_images_without_a_cache(cli, tmp_path, saved):
    """finetune keeps nothing in the cache: the images go to a temporary folder for the process."""
    r = cli(
        "finetune",
        "--dataset",
        f"hf:{saved}",
        *FAST,
        "--epochs",
        1,
        "--set",
        "finetune.workers=0",
        "--set",
        "head.hidden=32",
        "--out",
        tmp_path / "ft",
    )
    assert r.code == 0, r
    assert "36 train / 12 val questions" in r.out and (tmp_path / "ft" / "best.pt").is_file()


def test_missing_image_files_named_or_skipped(cli, tmp_path):
    from datasets import Dataset

    d = tmp_path / "d"
    (d / "img").mkdir(parents=True)
    splits = easyvqa_splits({"train": 4})
    for img, i in zip(splits["train"]["image"], splits["train"]["image_id"]):
        (d / "img" / f"{i}.png").write_bytes(img["bytes"])
    Dataset.from_dict(
        {
            "image": [f"img/{i}.png" for i in splits["train"]["image_id"]],
            "question": splits["train"]["question"],
            "answers": [["yes"]] * len(splits["train"]["question"]),
        }
    ).save_to_disk(str(d))
    (d / "img" / "2.png").unlink()
    args = ["--cache-dir", tmp_path / "cache", "extract", "--dataset", f"hf:{d}", *FAST, "--workers", 0]
    r = cli(*args)
    assert r.code == 2 and len(r.err.strip().splitlines()) == 1, r
    assert f"1 image file(s) referenced but missing: {d / 'img' / '2.png'}" in r.err
    r = cli(*args, "--skip-missing")
    assert r.code == 0, r
    assert "dropped 3 question(s) whose 1 image file(s) are missing" in r.out and "9 questions, 3 images" in r.out


# ---------------------------------------------------------------- malformed: one line, exit 2, nothing written


def _missing_question(splits):
    for cols in splits.values():
        cols["text"] = cols.pop("question")
    return None


def _answers_of_ints(splits):
    from datasets import Features, Image, List, Value

    for cols in splits.values():
        cols["answers"] = [[3] for _ in cols["answers"]]
    return Features(
        {
            "image": Image(),
            "question": Value("string"),
            "answers": List(Value("int64")),
            "question_id": Value("int64"),
            "image_id": Value("int64"),
        }
    )


def _image_of_numbers(splits):
    for cols in splits.values():
        cols["image"] = [7] * len(cols["image"])
    return None


def _empty_question(splits):
    splits["train"]["question"][5] = "  "
    return features()


def _duplicate_question_id(splits):
    splits["validation"]["question_id"][2] = splits["train"]["question_id"][0]
    return features()


@pytest.mark.parametrize(
    "break_it, says",
    [
        (_missing_question, "has no column 'question' (has: image, answers, question_id, image_id, text)"),
        (_answers_of_ints, "column 'answers' (answers) holds list<item: int64>, expected a list of strings"),
        (
            _image_of_numbers,
            "column 'image' (image) holds int64, expected images (datasets.Image), bytes or file paths",
        ),
        (_empty_question, "split 'train' row 5 has an empty question"),
        (_duplicate_question_id, "split 'val' row 2: duplicate question id '1000' (first in split 'train' row 0)"),
    ],
)
def test_malformed_dataset_is_one_line_exit_2(cli, tmp_path, break_it, says):
    splits = easyvqa_splits({"train": 4, "validation": 2})
    feats = break_it(splits)
    d = tmp_path / "bad"
    dataset_dict(splits, feats).save_to_disk(str(d))
    cache = tmp_path / "cache"
    r = cli("--cache-dir", cache, "extract", "--dataset", f"hf:{d}", *FAST, "--workers", 0)
    assert r.code == 2 and len(r.err.strip().splitlines()) == 1, r
    assert says in r.err, r.err
    assert written(cache) == []


def test_column_option_renames(cli, tmp_path):
    splits = easyvqa_splits({"train": 4, "validation": 2})
    _missing_question(splits)
    dataset_dict(splits).save_to_disk(str(tmp_path / "d"))
    r = cli(
        "--cache-dir",
        tmp_path / "cache",
        "extract",
        "--dataset",
        f"hf:{tmp_path / 'd'}",
        *FAST,
        "--workers",
        0,
        "--set",
        "dataset.options.question_column=text",
    )
    assert r.code == 0, r
    r = cli(
        "--cache-dir",
        tmp_path / "cache",
        "extract",
        "--dataset",
        f"hf:{tmp_path / 'd'}",
        *FAST,
        "--set",
        "dataset.options.question_colum=text",
    )
    assert r.code == 2 and "hf dataset option 'question_colum' is unknown" in r.err, r


def test_missing_datasets_package_names_the_pip_command(cli, tmp_path, monkeypatch, saved):
    import vqa_cache.data.hf as hf

    monkeypatch.setitem(sys.modules, "datasets", None)  # `import datasets` fails
    monkeypatch.setattr(hf, "_OPENED", {})
    r = cli("--cache-dir", tmp_path / "cache", "extract", "--dataset", f"hf:{saved}", *FAST)
    assert r.code == 2 and len(r.err.strip().splitlines()) == 1, r
    assert "pip install 'vqa-cache[hf]'" in r.err


def test_not_a_dataset_is_one_line(cli, tmp_path):
    (tmp_path / "empty").mkdir()
    for name in (tmp_path / "empty", ""):
        r = cli("--cache-dir", tmp_path / "cache", "extract", "--dataset", f"hf:{name}", *FAST)
        assert r.code == 2 and len(r.err.strip().splitlines()) == 1, r
        assert "hf" in r.err
