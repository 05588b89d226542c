"""What a stage-two run does besides its epochs (issue 22): it plans its cache without importing the image
encoders' libraries, and writes predictions.json from the best epoch's own evaluation."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import FAST, run_cli

LIMIT = ["--limit", 300]
TRAIN = ["train", *LIMIT, *FAST, "--set", "head.hidden=64"]
ENCODER_LIBRARIES = ("torchvision", "timm", "transformers")


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    root = tmp_path_factory.mktemp("cache")
    run_cli("--cache-dir", root, "extract", *LIMIT, *FAST, "--workers", 0)
    return root


def block_imports(monkeypatch, names=ENCODER_LIBRARIES) -> None:
    """`import NAME` (and of its submodules) raises ImportError from here on, also where it was imported before."""
    for name in names:
        for loaded in [m for m in sys.modules if m == name or m.startswith(name + ".")]:
            monkeypatch.setitem(sys.modules, loaded, None)
        monkeypatch.setitem(sys.modules, name, None)


def recipe(encoder: str = "resnet18", weights: str = "random"):
    from vqa_cache import options

    return options.train_recipe(None, {"limit": 300, "image_encoder": encoder, "image_size": 32, "weights": weights})[
        0
    ].features


# ---------------------------------------------------------------- the plan of stage two


def test_fixed_size_by_name_is_torchvision_s_own_answer():
    """torchvision_models.fixed_size tells ViT and MaxViT by name (no torchvision import): for every model
    torchvision has, it says what the model's builder module says."""
    from vqa_cache.encoders import torchvision_models as tv

    names = tv.names()
    assert len(names) > 50
    wrong = [n for n in names if tv.fixed_size(n) != (tv.architecture(n) in tv.FIXED_SIZE)]
    assert wrong == []
    assert tv.fixed_size("vit_b_16") and tv.fixed_size("maxvit_t") and not tv.fixed_size("swin_t")


@pytest.mark.parametrize("name", ["resnet18", "torchvision:resnet50", "vit_b_16", "maxvit_t", "convnext_tiny"])
def test_known_image_is_the_choice_resolve_image_makes(name):
    from vqa_cache.encoders.families import known_image, resolve_image

    assert known_image(name, "random", 48) == resolve_image(name, "random", 48, allow_download=False)


def test_known_image_of_a_weights_file(resnet18_file):
    from vqa_cache.encoders.families import known_image, resolve_image

    known = known_image("resnet18", str(resnet18_file), 32)
    assert known == resolve_image("resnet18", str(resnet18_file), 32, allow_download=False)
    assert known.identity.startswith("sha256:")


@pytest.mark.parametrize(
    "name, policy", [("resnet18", "auto"), ("resnet18", "pretrained"), ("timm:resnet18", "random"), ("hf:x", "random")]
)
def test_known_image_leaves_what_depends_on_the_installation_to_resolve_image(name, policy):
    from vqa_cache.encoders.families import known_image

    assert known_image(name, policy, 32) is None


def test_stage_two_plans_and_trains_without_the_encoder_libraries(cache, tmp_path, monkeypatch):
    """The keys stage two finds are stage one's; finding them, training and predicting import none of
    torchvision, timm and transformers (each blocked here: an import would fail the run)."""
    import vqa_cache
    from vqa_cache.cache.plan import make_plan

    keys = make_plan(recipe(), root=cache).cache_keys  # stage one's plan (torchvision checks the name)
    block_imports(monkeypatch)
    assert make_plan(recipe(), allow_download=False, root=cache).cache_keys == keys
    features = dict(limit=300, image_encoder="resnet18", image_size=32, weights="random")
    run = vqa_cache.train(cache_dir=cache, **features, epochs=1, out=tmp_path / "run", verbose=False)
    assert json.loads((tmp_path / "run" / "config.json").read_text())["cache_keys"] == keys
    predicted = run.predict(out=tmp_path / "p.json", cache_dir=cache, verbose=False)
    assert predicted["accuracy"] == run.best["val_accuracy"]


def test_stage_two_resolves_a_name_it_has_no_entry_for(cache, monkeypatch):
    """An image encoder with no entry in the cache is resolved as stage one would: an unknown name is bad
    input, a known one gets stage one's key (and the missing entry names the extract command later)."""
    from vqa_cache.cache.plan import make_plan
    from vqa_cache.errors import BadInput

    with pytest.raises(BadInput, match="unknown image encoder 'resnet1888'"):
        make_plan(recipe("resnet1888"), allow_download=False, root=cache)
    stage_one = make_plan(recipe("resnet34"), root=cache).image_key
    calls = []
    import vqa_cache.cache.plan as plan_module

    real = plan_module.resolve_image
    monkeypatch.setattr(plan_module, "resolve_image", lambda *a, **k: calls.append(a) or real(*a, **k))
    assert make_plan(recipe("resnet34"), allow_download=False, root=cache).image_key == stage_one
    assert calls, "no entry under the known key: resolve_image decides"


@pytest.mark.slow
def test_train_process_never_imports_the_encoder_libraries(cache, tmp_path):
    """`vqa-cache train` and `predict` in a fresh process: at exit, none of torchvision, timm, transformers
    is in sys.modules, nor torch._dynamo (which torch.optim's classes import: training/optimizer.py)."""
    hook = (
        "import atexit, runpy, sys\n"
        "atexit.register(lambda: print('LOADED', sorted(m for m in sys.modules if (m.split('.')[0] in "
        f"{ENCODER_LIBRARIES!r} or m.startswith('torch._dynamo')) and sys.modules[m] is not None)))\n"
        "sys.argv = ['vqa-cache', *sys.argv[1:]]\n"
        "runpy.run_module('vqa_cache', run_name='__main__')\n"
    )
    run = tmp_path / "run"
    for args in (
        ["--cache-dir", cache, *TRAIN, "--epochs", 1, "--out", run],
        ["--cache-dir", cache, "predict", "--run", run, "--out", tmp_path / "p.json"],
    ):
        r = subprocess.run(
            [sys.executable, "-c", hook, *map(str, args)],
            capture_output=True,
            text=True,
            cwd=Path(__file__).parent.parent,
        )
        assert r.returncode == 0, r.stderr[-2000:]
        assert "LOADED []" in r.stdout, r.stdout[-2000:]


# ---------------------------------------------------------------- predictions.json


def count_evaluations(monkeypatch) -> list:
    import vqa_cache.training.loop as loop

    calls: list = []
    real = loop.evaluate
    monkeypatch.setattr(loop, "evaluate", lambda *a, **k: calls.append(1) or real(*a, **k))
    return calls


def predicted(cli, cache, run, out) -> dict:
    r = cli("--cache-dir", cache, "predict", "--run", run, "--out", out)
    assert r.code == 0, r
    return json.loads(Path(out).read_text())


def test_predictions_are_the_best_epoch_s_own(cli, cache, tmp_path, monkeypatch):
    """One evaluation per epoch and none after: predictions.json is the best epoch's, the same as `predict`
    of best.pt."""
    calls = count_evaluations(monkeypatch)
    run = tmp_path / "run"
    r = cli("--cache-dir", cache, *TRAIN, "--epochs", 3, "--out", run)
    assert r.code == 0, r
    assert len(calls) == 3
    assert json.loads((run / "predictions.json").read_text()) == predicted(cli, cache, run, tmp_path / "p.json")


def test_a_resumed_run_whose_best_epoch_came_before_evaluates_best_pt(cli, cache, tmp_path, monkeypatch):
    """Resumed, with no better epoch after the resume (its accuracy made 0 here): predictions.json is best.pt's,
    from one more evaluation at the end."""
    from vqa_cache.training.steps import History

    run = tmp_path / "run"
    assert cli("--cache-dir", cache, *TRAIN, "--epochs", 2, "--out", run).code == 0
    best = json.loads((run / "metrics.json").read_text())["best"]
    real = History.record
    monkeypatch.setattr(History, "record", lambda self, e, t, v, *a: real(self, e, t, (v[0], 0.0, v[2]), *a))
    calls = count_evaluations(monkeypatch)
    r = cli("--cache-dir", cache, *TRAIN, "--epochs", 3, "--resume", "--out", run)
    assert r.code == 0, r
    assert json.loads((run / "metrics.json").read_text())["best"] == best
    assert len(calls) == 2  # epoch 3, then best.pt
    assert json.loads((run / "predictions.json").read_text()) == predicted(cli, cache, run, tmp_path / "p.json")
