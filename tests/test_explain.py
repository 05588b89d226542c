"""Where a run looked: attention maps of the grid heads, Grad-CAM for pooled heads (vqa_cache/explain.py),
`ask --json`, `ask --explain OUT.png`, the report's gallery maps, and their bad input."""

from __future__ import annotations

import json
import types

import numpy as np
import pytest
import torch
from conftest import run_cli
from torch import nn

from vqa_cache import explain, heads

LIMIT = ["--limit", 200]
FEATURES = [
    *LIMIT,
    "--image-encoder",
    "resnet18",
    "--image-size",
    "64",
    "--weights",
    "random",
    "--features",
    "pooled+grid",
]  # ResNet18 at 64 px: a 2 x 2 grid
QUESTION = "What color is the shape?"


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    root = tmp_path_factory.mktemp("cache")
    run_cli("--cache-dir", root, "extract", *FEATURES, "--workers", 0)
    return root


@pytest.fixture(scope="module")
def runs(cache, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    for head in ("attention", "concat"):
        run_cli(
            "--cache-dir",
            cache,
            "train",
            *FEATURES,
            "--head",
            head,
            "--epochs",
            1,
            "--set",
            "head.hidden=32",
            "--out",
            out / head,
        )
    return out


@pytest.fixture
def image_file():
    from vqa_cache.data import load_samples
    from vqa_cache.recipes import DatasetSettings

    return load_samples(DatasetSettings(limit=5)).column("image_path")[0].as_py()


def one_line(r) -> str:
    lines = [line for line in r.err.splitlines() if line.strip()]
    assert r.code == 2 and len(lines) == 1 and lines[0].startswith("vqa-cache:"), r
    return lines[0]


# ---------------------------------------------------------------- the heads keep their maps, same logits


def grid_inputs(name: str, batch: int = 3, cells: int = 9):
    torch.manual_seed(0)
    image = torch.randn(batch, cells, 16)
    if name == "coattention":
        question = torch.randn(batch, 5, 12)
        question[0, 3:] = 0  # padding
    elif name == "butd":
        question = torch.randint(1, 20, (batch, 6))
    else:
        question = torch.randn(batch, 12)
    return image, question


@pytest.mark.parametrize("name", ["attention", "coattention", "butd"])
def test_grid_heads_keep_a_map_over_the_cells_and_the_same_logits(name):
    model = heads.build(name, 16, 21 if name == "butd" else 12, 7, hidden=32).eval()
    image, question = grid_inputs(name)
    assert explain.attends(model)
    with torch.no_grad():
        plain = model(image, question)
        logits, weights = explain.head_attention(model, image, question)
    assert torch.equal(logits, plain)
    assert weights.shape == (3, 9) and (weights >= 0).all()
    assert torch.allclose(weights.sum(-1), torch.ones(3))
    assert weights.std() > 0  # not a uniform placeholder
    assert model.keep_attention is False and model.last_attention is None  # nothing kept afterwards
    assert not any("attention" in k and "last" in k for k in model.state_dict())


def test_the_attention_heads_map_is_its_softmax_averaged_over_glimpses():
    model = heads.build("attention", 16, 12, 7, hidden=32).eval()
    image, question = grid_inputs("attention")
    with torch.no_grad():
        _, weights = explain.head_attention(model, image, question)
        v, q = model.norm_i(image), model.norm_q(question)
        expected = model.att(model.att_v(v) * model.att_q(q).unsqueeze(1)).softmax(1).mean(-1)
    assert torch.allclose(weights, expected, atol=1e-6)


def test_pooled_heads_do_not_attend_and_grid_shapes():
    assert not explain.attends(heads.build("concat", 16, 12, 7, hidden=32))
    assert explain.grid_shape(49) == (7, 7) and explain.grid_shape(6) == (1, 6)
    assert np.isclose(np.sum(explain.as_map(torch.tensor([1.0, 1, 2, 4]))), 1.0)
    assert explain.as_map([0.0, 0.0, 0.0, 0.0]) == [[0.25, 0.25], [0.25, 0.25]]


# ---------------------------------------------------------------- Grad-CAM against a hand computation


def test_grad_cam_of_a_linear_head_is_relu_of_the_weighted_map():
    """pooled = mean of the map, logit = W pooled: d logit / d A_d = W[a, d] / (h w), so the map is
    relu(sum_d W[a, d] A_d) / (h w), normalized."""
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 4, 3, padding=1)
    encoder = types.SimpleNamespace(
        mean=torch.zeros(1, 3, 1, 1), std=torch.ones(1, 3, 1, 1), convolutional=True, body=conv
    )
    linear = nn.Linear(4, 5)

    class Head(nn.Module):
        def forward(self, image, question):
            return linear(image)

    pixels = torch.randint(0, 255, (1, 3, 4, 4), dtype=torch.uint8)
    cam = explain.grad_cam(encoder, pixels, Head(), torch.zeros(1, 3), answer=2)
    with torch.no_grad():
        fmap = conv(pixels.float())[0]
        expected = torch.relu((linear.weight[2][:, None, None] * fmap).sum(0)).numpy()
    assert cam.shape == (4, 4) and np.isclose(cam.sum(), 1.0)
    assert np.allclose(cam, expected / expected.sum(), atol=1e-6)


# ---------------------------------------------------------------- ask --json, ask --explain, the API


def test_ask_json_gives_the_answers_of_ask_and_the_attention_map(cli, cache, runs, image_file):
    from vqa_cache import ask

    r = cli(
        "--cache-dir",
        cache,
        "ask",
        "--run",
        runs / "attention",
        "--image",
        image_file,
        "--question",
        QUESTION,
        "--json",
        "--top",
        3,
    )
    assert r.code == 0, r
    result = json.loads(r.out)
    plain = ask(runs / "attention", image_file, QUESTION, top=3, cache_dir=cache)
    assert [(a["answer"], a["score"]) for a in result["answers"]] == plain
    assert result["method"] == "attention" and result["grid"] == [2, 2]
    assert np.isclose(np.sum(result["attention"]), 1.0) and np.array(result["attention"]).shape == (2, 2)


def test_ask_json_of_a_pooled_head_gives_grad_cam(cli, cache, runs, image_file):
    r = cli(
        "--cache-dir", cache, "ask", "--run", runs / "concat", "--image", image_file, "--question", QUESTION, "--json"
    )
    assert r.code == 0, r
    result = json.loads(r.out)
    assert result["method"] == "grad-cam" and result["grid"] == [2, 2] and len(result["answers"]) == 5
    assert np.isclose(np.sum(result["attention"]), 1.0) and min(min(row) for row in result["attention"]) >= 0


@pytest.mark.parametrize("head", ["attention", "concat"])
def test_ask_explain_draws_the_map_over_the_image(cli, cache, runs, image_file, tmp_path, head):
    from PIL import Image

    out = tmp_path / "map.png"
    r = cli(
        "--cache-dir",
        cache,
        "ask",
        "--run",
        runs / head,
        "--image",
        image_file,
        "--question",
        QUESTION,
        "--explain",
        out,
    )
    assert r.code == 0, r
    assert f"map 2x2 over the image in {out}" in r.out
    with Image.open(out) as im:
        assert im.format == "PNG" and im.size[0] >= 200
    assert not list(tmp_path.glob("*.tmp*"))


def test_run_explain_api(cache, runs, image_file, tmp_path):
    from vqa_cache import Run

    question = "what costs $x^$ here?"  # drawn as written, not as (malformed) mathtext
    result = Run(runs / "attention").explain(image_file, question, top=2, cache_dir=cache, out=tmp_path / "m.png")
    assert set(result) == {"answers", "attention", "method", "grid"} and len(result["answers"]) == 2
    assert (tmp_path / "m.png").stat().st_size > 0


# ---------------------------------------------------------------- bad input: one line, exit 2, nothing lost


def test_ask_explain_bad_input(cli, cache, runs, image_file, tmp_path, monkeypatch):
    old = tmp_path / "old.png"
    old.write_bytes(b"keep me")
    ask = ["--cache-dir", cache, "ask", "--question", QUESTION, "--explain"]
    bad_image = tmp_path / "bad.png"
    bad_image.write_bytes(b"not an image")
    cases = [
        ([old, "--run", tmp_path / "nope", "--image", image_file], "not a run directory"),
        ([old, "--run", runs / "attention", "--image", bad_image], "cannot read image"),
        ([old, "--run", runs / "attention", "--image", tmp_path / "missing.png"], "no such file"),
        ([tmp_path / "no-dir" / "m.png", "--run", runs / "attention", "--image", image_file], "no such directory"),
        ([tmp_path, "--run", runs / "attention", "--image", image_file], "is a directory"),
    ]
    for args, message in cases:
        line = one_line(cli(*ask, *args))
        assert message in line, line
    monkeypatch.setattr(explain, "spatial_forward", lambda encoder, pixels: None)  # an encoder without a map
    line = one_line(cli(*ask, old, "--run", runs / "concat", "--image", image_file))
    assert "gives no map" in line and "head concat" in line
    assert old.read_bytes() == b"keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.png", "old.png"]
    r = cli(
        "--cache-dir", cache, "ask", "--question", QUESTION, "--json", "--run", runs / "concat", "--image", image_file
    )
    assert r.code == 0 and json.loads(r.out)["attention"] is None and json.loads(r.out)["method"] is None


# ---------------------------------------------------------------- the report


def test_report_shows_attention_maps_and_per_answer_scores(cache, runs, tmp_path):
    from vqa_cache import Run

    res = Run(runs / "attention").report(out=tmp_path / "a.html", cache_dir=cache, verbose=False)
    page = (tmp_path / "a.html").read_text()
    assert res["attention_maps"] == res["wrong"] + res["right"] > 0
    assert page.count('alt="attention map"') == res["attention_maps"]
    assert "Precision, recall and F1 per answer" in page and f"macro-F1 {res['macro_f1']:.4f}" in page
    res = Run(runs / "concat").report(out=tmp_path / "c.html", cache_dir=cache, verbose=False)
    assert res["attention_maps"] == 0 and 'alt="attention map"' not in (tmp_path / "c.html").read_text()


def test_the_report_draws_a_finetune_runs_maps_with_its_models_preprocessing(cache, runs, tmp_path):
    """A finetune run's config has no cache specs: the crop the maps are drawn on comes from its Model."""
    import shutil

    from vqa_cache.report import display_spec

    run = tmp_path / "no-specs"
    shutil.copytree(runs / "attention", run)
    config = json.loads((run / "config.json").read_text())
    recorded = config.pop("cache_specs")["image"]
    (run / "config.json").write_text(json.dumps(config))  # as a run from before config.json kept specs
    assert display_spec(runs / "attention", cache, {"cache_specs": {"image": recorded}}) == recorded
    spec = display_spec(run, cache, config)  # through vqa_cache.load (the cache's manifests)
    assert {k: spec[k] for k in ("size", "resize")} == {k: recorded[k] for k in ("size", "resize")}
