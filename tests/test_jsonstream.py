"""data/jsonstream.py: the records of one list of a large JSON file, one at a time, equal to json.load's,
across buffer boundaries; malformed JSON named by file, line and column as json reports them."""

from __future__ import annotations

import json
import random

import pytest

from vqa_cache.data import jsonstream
from vqa_cache.errors import BadInput


def records(n: int, seed: int = 0) -> list:
    rng = random.Random(seed)
    texts = ["yes", "no é", 'a"b', "x\\ny", "😀 two", "", "   "]
    return [
        {
            "question_id": i,
            "answers": [{"answer": rng.choice(texts), "answer_id": k} for k in range(rng.randint(0, 4))],
            "score": rng.random() * 10 ** rng.randint(-3, 6),
            "ok": rng.random() < 0.5,
            "none": None,
        }
        for i in range(n)
    ]


@pytest.mark.parametrize("chunk", [3, 64, 1 << 20])
@pytest.mark.parametrize("indent", [None, 1])
def test_records_equal_json_load(tmp_path, monkeypatch, chunk, indent):
    monkeypatch.setattr(jsonstream, "CHUNK", chunk)
    recs = records(60)
    path = tmp_path / "a.json"
    path.write_text(
        json.dumps({"info": {"x": [1, {"y": "z"}]}, "annotations": recs, "license": 1.5e3}, indent=indent),
        encoding="utf-8",
    )
    assert list(jsonstream.stream_records(path, "annotations")) == recs
    path.write_text(json.dumps({"annotations": []}))
    assert list(jsonstream.stream_records(path, "annotations")) == []


@pytest.mark.parametrize("chunk", [5, 1 << 20])
def test_malformed_json_names_the_line_and_column_json_would(tmp_path, monkeypatch, chunk):
    monkeypatch.setattr(jsonstream, "CHUNK", chunk)
    lines = json.dumps({"annotations": records(5)}, indent=1).splitlines()
    bad = next(i for i in range(9, len(lines)) if lines[i].endswith(","))
    lines[bad] = lines[bad].rstrip(",")  # a missing comma
    path = tmp_path / "bad.json"
    path.write_text("\n".join(lines))
    with pytest.raises(json.JSONDecodeError) as expected:
        json.loads(path.read_text())
    with pytest.raises(BadInput) as got:
        list(jsonstream.stream_records(path, "annotations"))
    assert f"line {expected.value.lineno} column {expected.value.colno}" in str(got.value)
    assert str(got.value).startswith(f"{path}: malformed JSON")


@pytest.mark.parametrize(
    "text, message",
    [
        ("[1, 2]", "expected an object with a 'annotations' list"),
        ('{"other": []}', "expected an object with a 'annotations' list"),
        ('{"annotations": {"a": 1}}', "expected a list of records under 'annotations'"),
        ('{"annotations": [1, 2', "malformed JSON at line 1"),
    ],
)
def test_wrong_shapes_are_bad_input(tmp_path, text, message):
    path = tmp_path / "x.json"
    path.write_text(text)
    with pytest.raises(BadInput, match=message):
        list(jsonstream.stream_records(path, "annotations"))
