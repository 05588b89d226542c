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
