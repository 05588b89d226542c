"""`vqa-cache report RUN`: one self-contained HTML file that parses, embeds its images (plots and gallery),
escapes the data's text (a question with <script> in it), and agrees with the run's own predictions."""

from __future__ import annotations

import base64
import io
import json
import shutil
from html.parser import HTMLParser

import pytest
from conftest import FAST, run_cli
from fixtures_hf import dataset_dict, easyvqa_splits, features

SCRIPT = "what <script>alert(1)</script> shape is in the image?"
VOID = {"meta", "img", "br", "hr", "link", "input", "col", "source", "area", "base", "wbr"}


class Page(HTMLParser):
    """Checks that every element is closed in order (a well-formed document) and collects tags and images."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.stack, self.tags, self.images, self.errors, self.text = [], [], [], [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        attrs = dict(attrs)
        if tag == "img":
            self.images.append(attrs.get("src", ""))
        for name in ("src", "href"):
            if name in attrs and not attrs[name].startswith("data:"):
                self.errors.append(f"external {name} {attrs[name][:40]}")
        if tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
        else:
            self.stack.pop()

    def handle_data(self, data):
        self.text.append(data)


def parse(text: str) -> Page:
    page = Page()
    page.feed(text)
    page.close()
    assert not page.errors and not page.stack, (page.errors, page.stack)
    return page


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A 2-epoch run on an hf dataset of easy-VQA images whose first validation question holds a <script>."""
    work = tmp_path_factory.mktemp("report")
    splits = easyvqa_splits({"train": 12, "validation": 6})
    splits["validation"]["question"][0] = SCRIPT
    dataset_dict(splits, features()).save_to_disk(str(work / "ds"))
    cache = work / "cache"
    ds = ["--dataset", f"hf:{work / 'ds'}"]
    run_cli("--cache-dir", cache, "extract", *ds, *FAST, "--workers", 0)
    run_cli("--cache-dir", cache, "train", *ds, *FAST, "--epochs", 2, "--out", work / "run")
    return work / "run", cache, splits


def test_report_is_self_contained_html_with_embedded_images(cli, run):
    from PIL import Image

    run_dir, cache, splits = run
    r = cli("--cache-dir", cache, "report", run_dir)
    assert r.code == 0, r
    path = run_dir / "report.html"
    text = path.read_text(encoding="utf-8")
    page = parse(text)
    assert page.tags.count("html") == page.tags.count("head") == page.tags.count("body") == 1
    assert "script" not in page.tags and "<script" not in text.lower()
    questions = len(splits["validation"]["question"])  # 18: all of them shown
    kinds = [src.split(";")[0] for src in page.images]
    assert kinds.count("data:image/png") == 3 and kinds.count("data:image/jpeg") == questions, kinds
    for src in page.images:
        head, data = src.split(",", 1)
        assert head.endswith(";base64")
        with Image.open(io.BytesIO(base64.b64decode(data))) as im:
            im.load()
            assert max(im.size) > 0
    assert f"in {path} ({path.stat().st_size / 1024:.0f} KiB)" in r.out


def test_question_text_is_escaped(run, cli):
    run_dir, cache, _ = run
    r = cli("--cache-dir", cache, "report", run_dir, "--out", run_dir.parent / "elsewhere.html")
    assert r.code == 0, r
    text = (run_dir.parent / "elsewhere.html").read_text(encoding="utf-8")
    assert "<script>alert(1)</script>" not in text
    assert "what &lt;script&gt;alert(1)&lt;/script&gt; shape is in the image?" in text
    assert SCRIPT in "".join(parse(text).text)  # a browser shows the question as it is


def test_report_agrees_with_the_run(run, cli):
    """Its accuracy is the best epoch's validation accuracy; its right/wrong split is the predictions'."""
    run_dir, cache, splits = run
    r = cli("--cache-dir", cache, "report", run_dir)
    assert r.code == 0, r
    best = json.loads((run_dir / "metrics.json").read_text())["best"]["val_accuracy"]
    assert f"accuracy {best:.4f}" in r.out
    preds = {p["question_id"]: p["answer"] for p in json.loads((run_dir / "predictions.json").read_text())}
    truth = {q: a[0]["answer"] for q, a in zip(splits["validation"]["question_id"], splits["validation"]["answers"])}
    right = sum(preds[q] == truth[q] for q in truth)  # one answer each: right = exact match
    assert f"{len(truth) - right} wrong and {right} right shown" in r.out
    text = (run_dir / "report.html").read_text(encoding="utf-8")
    assert text.count('class="card wrong"') == len(truth) - right and text.count('class="card right"') == right


def test_not_a_train_run_is_one_line_exit_2(cli, run, tmp_path):
    run_dir, cache, _ = run
    r = cli("--cache-dir", cache, "report", tmp_path)
    assert r.code == 2 and "not a run directory (no config.json)" in r.err and len(r.err.strip().splitlines()) == 1
    ft = tmp_path / "ft"
    shutil.copytree(run_dir, ft)
    (ft / "report.html").unlink(missing_ok=True)
    config = json.loads((ft / "config.json").read_text())
    (ft / "config.json").write_text(json.dumps({**config, "mode": "finetune"}))
    r = cli("--cache-dir", cache, "report", ft)
    # a finetune run's report encodes its split live through its trained encoders: a checkpoint without them
    # is bad input (tests/test_models.py reports a real finetune run)
    assert r.code == 2 and "without its encoders' weights" in r.err and len(r.err.strip().splitlines()) == 1, r
    assert not (ft / "report.html").exists()
