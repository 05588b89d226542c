"""`predict --split test` of a leaderboard dataset (VQA v2 test2015, VizWiz test) writes every question of
the split, or refuses with one line (exit 2) before writing anything."""

from __future__ import annotations

import json

import pytest
from conftest import FAST, run_cli
from fixtures_data import make_vqa2


@pytest.fixture(scope="module")
def vqa2(tmp_path_factory):
    d = tmp_path_factory.mktemp("vqa2")
    return d, make_vqa2(d)


def train(tmp_path, vqa2_dir, *subset):
    cache, run = tmp_path / "cache", tmp_path / "run"
    args = ["--dataset", f"vqa2:{vqa2_dir}", *FAST, *subset]
    run_cli("--cache-dir", cache, "extract", *args, "--workers", 0)
    run_cli("--cache-dir", cache, "train", *args, "--epochs", 1, "--set", "head.hidden=16", "--out", run)
    return cache, run


def test_predict_test_writes_every_test2015_question(cli, tmp_path, vqa2):
    d, files = vqa2
    cache, run = train(tmp_path, d)
    out = tmp_path / "test.json"
    r = cli("--cache-dir", cache, "predict", "--run", run, "--split", "test", "--out", out)
    assert r.code == 0, r
    rows = json.loads(out.read_text())
    assert sorted(row["question_id"] for row in rows) == sorted(files["test"]["qids"])
    assert all(isinstance(row["answer"], str) for row in rows)


def test_predict_test_refuses_when_a_question_would_be_missing(cli, tmp_path, vqa2):
    d, files = vqa2
    cache, run = train(tmp_path, d, "--limit", 5)  # 5 of the test split's questions in the cache
    out = tmp_path / "test.json"
    out.write_text("earlier predictions")
    r = cli("--cache-dir", cache, "predict", "--run", run, "--split", "test", "--out", out)
    lines = [line for line in r.err.splitlines() if line.strip()]
    total = len(files["test"]["qids"])
    assert r.code == 2 and len(lines) == 1, r
    assert f"{total - 5} of the {total} questions" in lines[0] and "EvalAI" in lines[0] and "--limit" in lines[0]
    assert out.read_text() == "earlier predictions"  # nothing written
    r = cli("--cache-dir", cache, "predict", "--run", run, "--split", "val", "--out", tmp_path / "val.json")
    assert r.code == 0, r  # an answered split: eval checks it instead
