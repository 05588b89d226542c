"""Bad input that used to exit 1 or raise something other than BadInput (issue 23.5 and its weak spots):
each is one line on stderr and exit 2 (the API raises vqa_cache.BadInput), and every file that existed before
is left whole."""
from __future__ import annotations

import re

import pytest

import vqa_cache
from vqa_cache.errors import BadInput


# ---------------------------------------------------------------- API arguments of the wrong type

@pytest.mark.parametrize("call, message", [
    (lambda: vqa_cache.train(recipe=42), "recipe = 42: expected a path"),
    (lambda: vqa_cache.extract(recipe=["a.toml"]), "expected a path"),
    (lambda: vqa_cache.ask("runs/none", "x.png", "what?", top="3"), "ask: top = '3': expected an integer"),
    (lambda: vqa_cache.ask("runs/none", "x.png", "what?", top=True), "ask: top = True: expected an integer"),
    (lambda: vqa_cache.ask("runs/none", "x.png", "what?", top=0), "ask: top = 0: expected at least 1"),
    (lambda: vqa_cache.ask("runs/none", 7, "what?"), "ask: image = 7: expected a path"),
    (lambda: vqa_cache.ask("runs/none", "x.png", b"what?"), "ask: question = b'what?': expected a str"),
    (lambda: vqa_cache.ask(3.5, "x.png", "what?"), "Run: dir = 3.5: expected a path"),
    (lambda: vqa_cache.Run("runs/none").predict(out=5), "predict: out = 5: expected a path"),
    (lambda: vqa_cache.evaluate({"questions": []}, {"annotations": []}, [], protocol="x"),
     "protocol must be one of current, 2016, got 'x'"),
    (lambda: vqa_cache.evaluate("q.json", "a.json", "p.json", protocol=2016), "protocol must be one of"),
    (lambda: vqa_cache.runs(directory=42), "runs: directory = 42: expected a path"),
])
def test_api_arguments_of_the_wrong_type_are_bad_input(call, message):
    with pytest.raises(BadInput, match=re.escape(message)):
        call()


# ---------------------------------------------------------------- output paths under a regular file

def test_output_paths_under_a_regular_file(cli, tmp_path):
    """`train --out FILE/run`, `sweep --out FILE/s`, `report --out FILE/r.html`, `predict --out FILE/p.json`
    and `report --out DIR` are one line and exit 2 before any work, and FILE is left as it was."""
    from vqa_cache.digest import check_out_path

    blocker = tmp_path / "FILE"
    blocker.write_text("keep me")
    r = cli("--cache-dir", tmp_path / "cache", "train", "--out", blocker / "run", "--epochs", 1,
            "--image-encoder", "resnet18", "--weights", "random", "--text-encoder", "bow")
    assert r.code == 2 and f"--out {blocker / 'run'}: {blocker} is not a directory" in r.err, r
    assert len(r.err.strip().splitlines()) == 1
    r = cli("--cache-dir", tmp_path / "cache", "sweep", "train/easyvqa-sweep.toml", "--out", blocker / "s")
    assert r.code == 2 and f"{blocker} is not a directory" in r.err, r
    for command, run in (("report", [tmp_path]), ("predict", ["--run", tmp_path])):
        r = cli("--cache-dir", tmp_path / "cache", command, *run, "--out", blocker / "r.html")
        assert r.code == 2 and f"{command} --out {blocker / 'r.html'}: {blocker} is not a directory" in r.err, r
    with pytest.raises(BadInput, match="is a directory, expected a file"):
        check_out_path(tmp_path, "report --out", directory=False)
    assert check_out_path(blocker, "report --out", directory=False) == blocker     # a file to replace
    assert check_out_path(tmp_path / "new" / "deeper", "--out", directory=True)
    assert blocker.read_text() == "keep me" and sorted(p.name for p in tmp_path.iterdir()) == ["FILE"]
