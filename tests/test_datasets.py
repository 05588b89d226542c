"""Real dataset layouts (VQA v2, VizWiz records and column-wise, DACON CSV) on tiny fixtures made here:
extract + train + eval through the CLI, the dataset entry in the cache, subsets, soft scores vs the
metric, and every kind of bad input (one line, exit 2, nothing half-written)."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest
from conftest import FAST
from fixtures_data import make_csv, make_vizwiz, make_vqa2

from vqa_cache.data import load_samples
from vqa_cache.recipes import DatasetSettings

TRAIN = ["--head", "concat", "--epochs", 2]


def written(root):
    """Every file under the cache root (lock files aside)."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and not p.name.endswith(".lock"))


def run_json(path):
    return json.loads(path.read_text())


# ---------------------------------------------------------------- end to end, per layout


@pytest.mark.slow  # a long training (make test-fast leaves it out)
def test_vqa2_extract_train_eval(cli, tmp_path):
    d = tmp_path / "vqa"
    files = make_vqa2(d)
    cache, run = tmp_path / "cache", tmp_path / "run"
    ds = ["--dataset", f"vqa2:{d}"]
    r = cli("--cache-dir", cache, "extract", *ds, *FAST)
    assert r.code == 0, r
    assert "36 questions" in r.out and "12 images" in r.out  # train + val + test

    # the parsed samples table is a dataset entry, readable with plain pyarrow
    [manifest] = [json.loads(p.read_text()) for p in (cache / "dataset").glob("*/manifest.json")]
    assert manifest["complete"] and manifest["kind"] == "dataset" and manifest["rows"] == 36
    table = pq.read_table(cache / "dataset" / manifest["key"] / "samples.parquet")
    assert table.num_rows == 36 and set(table.column("split").to_pylist()) == {"train", "val", "test"}

    r = cli("--cache-dir", cache, "train", *ds, *FAST, *TRAIN, "--out", run)
    assert r.code == 0, r
    assert "coverage" in r.out
    config = run_json(run / "config.json")
    assert config["splits"] == ["train", "val"] and 0 < config["vocabulary"]["coverage"] <= 1

    preds = run_json(run / "predictions.json")
    assert sorted(p["question_id"] for p in preds) == sorted(files["val"]["qids"])
    assert all(isinstance(p["answer"], str) for p in preds)

    r = cli(
        "eval",
        "--questions",
        files["val"]["questions"],
        "--annotations",
        files["val"]["annotations"],
        "--predictions",
        run / "predictions.json",
        "--json",
    )
    assert r.code == 0, r
    result = json.loads(r.out)
    # training's validation accuracy (soft scores) is the official metric of the same predictions
    best = run_json(run / "metrics.json")["best"]["val_accuracy"]
    assert result["overall"] == pytest.approx(100 * best, abs=0.006)
    assert set(result["perAnswerType"]) == {"yes/no", "number", "other"}

    # `predict` gives the same val predictions, and test predictions (no answers) for every test question
    r = cli("--cache-dir", cache, "predict", "--run", run, "--split", "val", "--out", tmp_path / "val.json")
    assert r.code == 0, r
    assert run_json(tmp_path / "val.json") == preds
    r = cli("--cache-dir", cache, "predict", "--run", run, "--split", "test", "--out", tmp_path / "test.json")
    assert r.code == 0, r
    assert sorted(p["question_id"] for p in run_json(tmp_path / "test.json")) == sorted(files["test"]["qids"])


def test_vqa2_trains_with_soft_score_bce(tmp_path):
    """10 human answers -> the multi-answer (soft-score BCE) targets; 1 answer (csv) -> cross-entropy."""
    from vqa_cache.answers import build_vocabulary
    from vqa_cache.training.splits import Split

    make_vqa2(tmp_path / "v")
    make_csv(tmp_path / "c")
    for name, multi in ((f"vqa2:{tmp_path / 'v'}", True), (f"csv:{tmp_path / 'c'}", False)):
        t = load_samples(DatasetSettings(name=name, splits=("train",)))
        vocab = build_vocabulary(t.column("answers").to_pylist(), top_k=1000)
        s = Split(t, list(range(t.num_rows)), list(range(t.num_rows)), vocab)
        assert s.multi is multi
        if multi:  # targets are soft scores: some strictly between 0 and 1
            v = s.target_val[s.target_val > 0]
            assert ((v > 0) & (v < 1)).any() and (v <= 1).all()


@pytest.mark.parametrize("form", ["records", "columns"])
def test_vizwiz_extract_train(cli, tmp_path, form):
    d = tmp_path / "vizwiz"
    recs = make_vizwiz(d, form)
    cache, run = tmp_path / "cache", tmp_path / "run"
    ds = ["--dataset", f"vizwiz:{d}"]
    r = cli("--cache-dir", cache, "extract", *ds, *FAST)
    assert r.code == 0, r
    r = cli("--cache-dir", cache, "train", *ds, *FAST, *TRAIN, "--out", run)
    assert r.code == 0, r
    preds = run_json(run / "predictions.json")
    assert sorted(p["question_id"] for p in preds) == sorted(x["image"] for x in recs["val"])
    assert all(isinstance(p["answer"], str) for p in preds)


def test_vizwiz_forms_give_the_same_table(tmp_path):
    make_vizwiz(tmp_path / "a", "records", sizes=(("train", 6), ("val", 3)))
    make_vizwiz(tmp_path / "b", "columns", sizes=(("train", 6), ("val", 3)))
    a = load_samples(DatasetSettings(name=f"vizwiz:{tmp_path / 'a'}")).drop(["image_path"])
    b = load_samples(DatasetSettings(name=f"vizwiz:{tmp_path / 'b'}")).drop(["image_path"])
    assert a.equals(b)


def test_csv_extract_train_with_held_out_val(cli, tmp_path):
    d = tmp_path / "dacon"
    make_csv(d, train_images=10)
    cache, run = tmp_path / "cache", tmp_path / "run"
    ds = ["--dataset", f"csv:{d}", "--val-fraction", 0.2, "--data-seed", 3]
    r = cli("--cache-dir", cache, "extract", *ds, *FAST)
    assert r.code == 0, r
    r = cli("--cache-dir", cache, "train", *ds, *FAST, *TRAIN, "--out", run)
    assert r.code == 0, r
    t = load_samples(DatasetSettings(name=f"csv:{d}", val_fraction=0.2, seed=3))
    val = t.filter(t["split"].to_numpy(zero_copy_only=False) == "val")
    train = t.filter(t["split"].to_numpy(zero_copy_only=False) == "train")
    assert len(set(val.column("image_id").to_pylist())) == 2
    assert not set(val.column("image_id").to_pylist()) & set(train.column("image_id").to_pylist())
    preds = run_json(run / "predictions.json")
    assert sorted(p["question_id"] for p in preds) == sorted(val.column("question_id").to_pylist())
    assert run_json(run / "config.json")["splits"] == ["train", "val"]


def test_csv_column_and_folder_renames(cli, tmp_path):
    d = tmp_path / "renamed"
    make_csv(d, columns={"question": "Question", "answer": "Answer", "image_id": "img"}, image_dir="pics")
    name = f"csv:{d}"
    r = cli("--cache-dir", tmp_path / "cache", "extract", "--dataset", name, *FAST, "--dry-run")
    assert r.code == 2 and "missing column(s) 'image_id', 'question', 'answer'" in r.err, r
    opts = {"question_column": "Question", "answer_column": "Answer", "image_column": "img", "image_dir": "pics"}
    t = load_samples(DatasetSettings(name=name, options=opts))
    assert t.num_rows == 30 and all("/pics/" in p for p in t.column("image_path").to_pylist())
    sets = [x for k, v in opts.items() for x in ("--set", f"dataset.options.{k}={v}")]
    r = cli("--cache-dir", tmp_path / "cache", "extract", "--dataset", name, *FAST, *sets)
    assert r.code == 0, r


# ---------------------------------------------------------------- the dataset entry


def test_dataset_entry_parsed_once_and_rekeyed_on_change(tmp_path, monkeypatch, capsys):
    from vqa_cache.cache.samples import load_samples
    from vqa_cache.data import vqa2

    d, root = tmp_path / "vqa", tmp_path / "cache"
    files = make_vqa2(d)
    spec = DatasetSettings(name=f"vqa2:{d}")
    first = load_samples(spec, root=root)
    assert "parsed 36 questions" in capsys.readouterr().out
    monkeypatch.setattr(vqa2, "load", lambda *a: pytest.fail("parsed again"))
    again = load_samples(spec, root=root)
    assert again.equals(first)
    assert len(list((root / "dataset").iterdir())) == 1
    monkeypatch.undo()
    # the same content moved elsewhere is still the same entry... but new content is a new one
    ann = files["train"]["annotations"]
    data = json.loads(ann.read_text())
    data["annotations"][0]["answers"][0]["answer"] = "maybe"
    ann.write_text(json.dumps(data))
    changed = load_samples(spec, root=root)
    assert len(list((root / "dataset").iterdir())) == 2
    assert "maybe" in changed.column("answers")[0].as_py()
    assert not (root / ".tmp").exists()


def test_dataset_entry_verifies_and_a_flipped_byte_is_named(cli, tmp_path):
    from vqa_cache.cache.samples import load_samples

    d, root = tmp_path / "vqa", tmp_path / "cache"
    make_vqa2(d)
    load_samples(DatasetSettings(name=f"vqa2:{d}"), root=root)
    (entry,) = (root / "dataset").iterdir()
    r = cli("--cache-dir", root, "cache", "verify", entry.name)
    assert r.code == 0, r
    samples = entry / "samples.parquet"
    data = bytearray(samples.read_bytes())
    data[len(data) // 2] ^= 0xFF
    samples.write_bytes(bytes(data))
    r = cli("--cache-dir", root, "cache", "verify", entry.name)
    assert r.code == 1 and "samples.parquet" in r.out + r.err, r


# ---------------------------------------------------------------- subsets


def test_subsets(tmp_path):
    d = tmp_path / "vqa"
    make_vqa2(d, images=(("train2014", 12), ("val2014", 6)))
    name = f"vqa2:{d}"
    yn = load_samples(DatasetSettings(name=name, answer_types=("yes/no",)))
    assert set(yn.column("answer_type").to_pylist()) == {"yes/no"} and yn.num_rows == 18

    def frac(seed):
        return load_samples(DatasetSettings(name=name, image_fraction=0.5, seed=seed))

    a, b = frac(1), frac(1)
    assert a.equals(b)
    kept = set(a.column("image_id").to_pylist())
    assert len(kept) == 9 and a.num_rows == 27  # every question of each kept image
    assert kept != set(frac(2).column("image_id").to_pylist())

    lim = load_samples(DatasetSettings(name=name, limit=5))
    assert {s: lim.column("split").to_pylist().count(s) for s in ("train", "val")} == {"train": 5, "val": 5}
    only = load_samples(DatasetSettings(name=name, splits=("val",)))
    assert set(only.column("split").to_pylist()) == {"val"}


def test_held_out_val_is_by_image_and_seeded(tmp_path):
    d = tmp_path / "c"
    make_csv(d, train_images=20, test_images=0)
    name = f"csv:{d}"

    def val_images(fraction, seed):
        t = load_samples(DatasetSettings(name=name, val_fraction=fraction, seed=seed))
        split = t.column("split").to_pylist()
        ids = t.column("image_id").to_pylist()
        val = {i for i, s in zip(ids, split) if s == "val"}
        assert not val & {i for i, s in zip(ids, split) if s == "train"}
        return val

    assert len(val_images(0.25, 0)) == 5
    assert val_images(0.25, 0) == val_images(0.25, 0) != val_images(0.25, 1)


def test_cli_subset_options_reach_the_recipe():
    from vqa_cache import recipes
    from vqa_cache.options import feature_argv, feature_overrides

    feature = dict(
        dataset="csv:/x",
        answer_types=("yes/no,number",),
        image_fraction=0.25,
        val_fraction=0.2,
        data_seed=7,
        skip_missing=True,
    )
    data = recipes.apply_overrides({}, feature_overrides("", **feature))
    ds = recipes.build(recipes.ExtractRecipe, data).dataset
    assert (ds.answer_types, ds.image_fraction, ds.val_fraction, ds.seed, ds.skip_missing) == (
        ("yes/no", "number"),
        0.25,
        0.2,
        7,
        True,
    )
    argv = feature_argv(feature)
    assert "--skip-missing" in argv and argv[argv.index("--data-seed") + 1] == "7"


# ---------------------------------------------------------------- soft scores and the metric


def test_soft_scores_agree_with_the_metric(tmp_path):
    from vqa_cache.answers import best_answer, ground_truth, soft_scores
    from vqa_cache.metrics import vqa_accuracy

    make_vqa2(tmp_path / "v")
    t = load_samples(DatasetSettings(name=f"vqa2:{tmp_path / 'v'}", splits=("train", "val")))
    cases = t.column("answers").to_pylist() + [
        ["2"] * 3 + ["3"] * 7,
        ["yes"] * 10,
        ["red", "blue"] * 5,
        ["big dog"] * 2 + ["dog"] * 8,
        ["white", "white", "gray", "grey", "silver", "white", "gray", "white", "light gray", "gray"],
    ]
    for answers in cases:
        scores = soft_scores(ground_truth(answers))
        best = best_answer(ground_truth(answers))
        # the predicted best answer's soft score is its VQA accuracy; so is every other candidate's
        assert scores[best] == vqa_accuracy(best, answers)
        for cand, s in scores.items():
            assert s == pytest.approx(vqa_accuracy(cand, answers), abs=1e-12)
        assert vqa_accuracy("zebra", answers) == 0.0


# ---------------------------------------------------------------- bad input


def _vqa2(tmp_path):
    d = tmp_path / "vqa"
    files = make_vqa2(d, images=(("train2014", 4), ("val2014", 2)))
    return d, files


def _edit_json(path, fn):
    data = json.loads(path.read_text())
    fn(data)
    path.write_text(json.dumps(data))


def bad_missing_dir(tmp_path):
    return f"vqa2:{tmp_path / 'nowhere'}", [], "no such directory"


def bad_missing_file(tmp_path):
    d, files = _vqa2(tmp_path)
    files["val"]["annotations"].unlink()
    return f"vqa2:{d}", [], "v2_mscoco_val2014_annotations.json: no such file"


def bad_no_files(tmp_path):
    (tmp_path / "empty").mkdir()
    return f"vizwiz:{tmp_path / 'empty'}", [], "no annotation files"


def bad_malformed_json(tmp_path):
    d, files = _vqa2(tmp_path)
    lines = json.dumps(json.loads(files["train"]["annotations"].read_text()), indent=1).splitlines()
    lines[6] = lines[6].rstrip(",")  # a missing comma on line 7
    files["train"]["annotations"].write_text("\n".join(lines))
    return f"vqa2:{d}", [], "v2_mscoco_train2014_annotations.json: malformed JSON at line 8 column"


def bad_missing_key(tmp_path):
    d, files = _vqa2(tmp_path)
    _edit_json(files["train"]["questions"], lambda x: x["questions"][3].pop("question"))
    return f"vqa2:{d}", [], "question 3 has no 'question'"


def bad_missing_column(tmp_path):
    make_csv(tmp_path / "c", columns={"answer": "label"})
    return f"csv:{tmp_path / 'c'}", [], "train.csv: missing column(s) 'answer'"


def bad_duplicate_qid(tmp_path):
    d, files = _vqa2(tmp_path)

    def dup(x):
        x["questions"][1]["question_id"] = x["questions"][0]["question_id"]

    _edit_json(files["train"]["questions"], dup)
    return f"vqa2:{d}", [], "duplicate question_id 9000"


def bad_duplicate_csv_id(tmp_path):
    make_csv(tmp_path / "c")
    path = tmp_path / "c" / "test.csv"
    path.write_text(path.read_text().replace("TEST_000024", "TRAIN_000000"))
    return f"csv:{tmp_path / 'c'}", [], "duplicate ID 'TRAIN_000000'"


def bad_missing_images(tmp_path):
    d = tmp_path / "vqa"
    make_vqa2(d, images=(("train2014", 14), ("val2014", 2)))
    gone = sorted((d / "train2014").iterdir())[:12]
    for p in gone:
        p.unlink()
    return f"vqa2:{d}", [], "12 image file(s) referenced but missing: " + gone[0].relative_to(d).as_posix()


def bad_empty_split(tmp_path):
    d, _ = _vqa2(tmp_path)
    return f"vqa2:{d}", ["--image-fraction", 0.2], "is empty after filtering"


def bad_answer_type(tmp_path):
    d, _ = _vqa2(tmp_path)
    return f"vqa2:{d}", ["--answer-types", "color"], "no question has answer type 'color'"


def bad_path_escape(tmp_path):
    d = tmp_path / "vizwiz"
    make_vizwiz(d, sizes=(("train", 3), ("val", 3)))
    (tmp_path / "secret.jpg").write_bytes(b"x")
    _edit_json(d / "Annotations" / "train.json", lambda x: x[1].update(image="../../secret.jpg"))
    return f"vizwiz:{d}", [], "record 1: image path '../../secret.jpg' escapes the dataset directory"


def bad_csv_option(tmp_path):
    make_csv(tmp_path / "c")
    return f"csv:{tmp_path / 'c'}", ["--set", "dataset.options.colour=1"], "csv dataset option 'colour' is unknown"


def bad_fraction(tmp_path):
    d, _ = _vqa2(tmp_path)
    return f"vqa2:{d}", ["--image-fraction", 0], "--image-fraction 0.0: expected a share in (0, 1]"


def bad_header_only_csv(tmp_path):
    make_csv(tmp_path / "c")
    path = tmp_path / "c" / "train.csv"
    path.write_text(path.read_text().splitlines()[0] + "\n\n")
    return f"csv:{tmp_path / 'c'}", [], "train.csv: a header row and no questions"


def bad_no_questions_vqa2(tmp_path):
    d, files = _vqa2(tmp_path)
    _edit_json(files["val"]["questions"], lambda x: x.update(questions=[]))
    _edit_json(files["val"]["annotations"], lambda x: x.update(annotations=[]))
    return f"vqa2:{d}", [], "v2_OpenEnded_mscoco_val2014_questions.json: no questions in the file"


def bad_no_records_vizwiz(tmp_path):
    d = tmp_path / "vizwiz"
    make_vizwiz(d, sizes=(("train", 3), ("val", 3)))
    (d / "Annotations" / "val.json").write_text("[]")
    return f"vizwiz:{d}", [], "val.json: no records in the file"


def bad_image_id_too_long(tmp_path):
    make_csv(tmp_path / "c")
    path = tmp_path / "c" / "train.csv"
    path.write_text(path.read_text().replace("train_00001", "x" * 300, 1))
    return (
        f"csv:{tmp_path / 'c'}",
        [],
        ("train.csv line 5 (image_id 'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx...'): image file name 'xxxxx"),
    )


def bad_path_too_long(tmp_path):
    make_csv(tmp_path / "c")
    deep = "/".join(["d" * 200] * 25)  # every name fits, the whole path (5,000 bytes) does not
    return f"csv:{tmp_path / 'c'}", ["--set", f"dataset.options.image_dir={deep}"], "File name too long"


def bad_image_path_too_long(tmp_path):
    make_csv(tmp_path / "c")
    # the image folder's path (4,090 bytes) can be looked up, its files' paths (4,106) cannot
    room = 4090 - len(str(tmp_path / "c")) - len("/train") - 1
    deep = ("d" * 200 + "/") * ((room - 1) // 201) + "d" * (room - 201 * ((room - 1) // 201))
    assert len(f"{tmp_path / 'c'}/{deep}/train") == 4090
    return f"csv:{tmp_path / 'c'}", ["--set", f"dataset.options.image_dir={deep}"], "File name too long"


def bad_deep_json(tmp_path):
    d, files = _vqa2(tmp_path)
    files["train"]["questions"].write_text("[" * 100_000 + "]" * 100_000)
    return f"vqa2:{d}", [], "v2_OpenEnded_mscoco_train2014_questions.json: JSON nested too deeply"


def bad_empty_question_vqa2(tmp_path):
    d, files = _vqa2(tmp_path)
    _edit_json(files["train"]["questions"], lambda x: x["questions"][2].update(question=" \t "))
    return f"vqa2:{d}", [], "v2_OpenEnded_mscoco_train2014_questions.json: question 2 has an empty 'question'"


def bad_empty_question_vizwiz(tmp_path):
    d = tmp_path / "vizwiz"
    make_vizwiz(d, sizes=(("train", 3), ("val", 3)))
    _edit_json(d / "Annotations" / "val.json", lambda x: x[1].update(question=""))
    return f"vizwiz:{d}", [], "val.json: record 1 has an empty 'question'"


def bad_empty_question_csv(tmp_path):
    rows = make_csv(tmp_path / "c")
    path = tmp_path / "c" / "test.csv"
    path.write_text(path.read_text().replace(rows["test"][1]["question"], "  ", 1))
    return f"csv:{tmp_path / 'c'}", [], "test.csv: line 3: empty question"


BAD = [
    bad_missing_dir,
    bad_missing_file,
    bad_no_files,
    bad_malformed_json,
    bad_missing_key,
    bad_missing_column,
    bad_duplicate_qid,
    bad_duplicate_csv_id,
    bad_missing_images,
    bad_empty_split,
    bad_answer_type,
    bad_path_escape,
    bad_csv_option,
    bad_fraction,
    bad_header_only_csv,
    bad_no_questions_vqa2,
    bad_no_records_vizwiz,
    bad_image_id_too_long,
    bad_path_too_long,
    bad_image_path_too_long,
    bad_deep_json,
    bad_empty_question_vqa2,
    bad_empty_question_vizwiz,
    bad_empty_question_csv,
]


@pytest.mark.parametrize("make", BAD, ids=[f.__name__[4:] for f in BAD])
@pytest.mark.parametrize("command", ["extract", "train"])
def test_bad_input_one_line_exit_2_nothing_written(cli, tmp_path, make, command):
    name, extra, expected = make(tmp_path)
    if command == "train":
        extra = [f"features.{x}" if str(x).startswith("dataset.") else x for x in extra]
    cache = tmp_path / "cache"
    r = cli("--cache-dir", cache, command, "--dataset", name, *extra, *FAST)
    assert r.code == 2, r
    lines = r.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vqa-cache: error: "), r
    assert expected in lines[0], r
    # nothing half-written: at most the complete dataset entry of files that did parse, no features
    for f in written(cache) if cache.exists() else []:
        kind, key, file = f.split("/")
        assert kind == "dataset" and file in ("manifest.json", "samples.parquet"), f
        assert json.loads((cache / kind / key / "manifest.json").read_text())["complete"]


def test_missing_images_named_up_to_ten_and_skip_missing(cli, tmp_path):
    name, _, _ = bad_missing_images(tmp_path)
    r = cli("--cache-dir", tmp_path / "cache", "extract", "--dataset", name, *FAST)
    assert (
        r.code == 2
        and r.err.count("COCO_train2014_") == 10
        and r.err.rstrip().endswith("(--skip-missing drops their questions; --split picks splits)")
    ), r
    r = cli("--cache-dir", tmp_path / "cache", "extract", "--dataset", name, "--skip-missing", *FAST)
    assert r.code == 0, r
    assert "--skip-missing: dropped 36 question(s) whose 12 image file(s) are missing" in r.out
    assert "12 questions, 4 images" in r.out


def test_eval_predictions_nested_too_deeply_is_bad_input(cli, tmp_path):
    files = make_vqa2(tmp_path / "v", images=(("val2014", 2),))
    predictions = tmp_path / "p.json"
    predictions.write_text("[" * 100_000 + "]" * 100_000)
    r = cli(
        "eval",
        "--questions",
        files["val"]["questions"],
        "--annotations",
        files["val"]["annotations"],
        "--predictions",
        predictions,
    )
    assert r.code == 2, r
    lines = r.err.strip().splitlines()
    assert len(lines) == 1 and f"{predictions}: JSON nested too deeply" in lines[0], r


@pytest.mark.parametrize(
    "layout, options, message",
    [
        ("csv", {"image_dir": 3}, "csv dataset option 'image_dir' must be a non-empty string, got 3"),
        ("csv", {"train_file": ""}, "csv dataset option 'train_file' must be a non-empty string, got ''"),
        ("hf", {"question_column": ""}, "hf dataset option 'question_column' must be a non-empty string, got ''"),
        ("hf", {"config": 1}, "hf dataset option 'config' must be a string, got 1"),
    ],
)
def test_layout_options_are_strings_empty_only_where_allowed(layout, options, message):
    from vqa_cache.data import csvdata, hf
    from vqa_cache.errors import BadInput
    from vqa_cache.recipes import DatasetSettings

    module = {"csv": csvdata, "hf": hf}[layout]
    with pytest.raises(BadInput) as e:
        module.options(DatasetSettings(name=f"{layout}:x", options=options))
    assert str(e.value) == message
    assert module.options(
        DatasetSettings(name=f"{layout}:x", options={"image_ext": ""} if layout == "csv" else {"config": ""})
    )


def test_image_paths_are_checked_against_the_listing_and_a_changed_folder_is_looked_at_again(tmp_path):
    import os

    from vqa_cache.data.files import listed_files, listing_fingerprint
    from pathlib import Path

    import pyarrow as pa

    from vqa_cache.data.subsets import missing_images
    from vqa_cache.recipes import DatasetSettings

    folder = tmp_path / "train2014"
    folder.mkdir()
    for name in ("a.jpg", "b.jpg"):
        (folder / name).write_bytes(b"x")
    (folder / "dir.jpg").mkdir()  # a folder is not an image file
    before = listing_fingerprint(folder)
    assert listed_files(folder) == {"a.jpg", "b.jpg"}
    ds = DatasetSettings(name="csv:x")
    paths = pa.array([f"train2014/{n}" for n in ("a.jpg", "b.jpg", "c.jpg", "dir.jpg")] + [str(folder / "a.jpg")])
    stats = []
    real = Path.is_file
    with pytest.MonkeyPatch.context() as mp:  # (the listing answers: no file is looked at)
        mp.setattr(Path, "is_file", lambda self: stats.append(self) or real(self))
        assert missing_images(paths, tmp_path, ds) == ["train2014/c.jpg", "train2014/dir.jpg"]
    assert stats == []
    (folder / "b.jpg").unlink()
    os.utime(folder, ns=(0, folder.stat().st_mtime_ns + 1))  # (the removal changed it; made sure on coarse clocks)
    assert listed_files(folder) is None  # the listing is stale: each path is looked at again
    assert missing_images(pa.array(["train2014/a.jpg", "train2014/b.jpg"]), tmp_path, ds) == ["train2014/b.jpg"]
    assert listing_fingerprint(folder) != before
