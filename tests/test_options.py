"""Encoder options (issue 16) and option values as typed (issue 2): an explicit --text-encoder always wins
over the shorthand `--weights random`, a --set that contradicts an option is bad input, `train` resolves the
cache `extract` wrote for the same options, and paths outside the BMP reach the recipe unchanged."""

from __future__ import annotations

import json
import shutil

import pytest
from fixtures_data import make_csv

from vqa_cache import options, recipes
from vqa_cache.cache.plan import make_plan
from vqa_cache.encoders import text_family
from vqa_cache.encoders import weights as weights_module
from vqa_cache.encoders.weights import directory_identity
from vqa_cache.errors import BadInput

SMALL = ["--image-encoder", "resnet18", "--image-size", "32", "--limit", "8"]
FEATURE_DEFAULTS = dict(
    dataset=None,
    split=(),
    limit=None,
    image_encoder=None,
    text_encoder=None,
    weights=None,
    features=None,
    image_size=None,
    answer_types=(),
    image_fraction=None,
    val_fraction=None,
    data_seed=None,
    skip_missing=None,
)


def feature(**given):
    """The feature options as click hands them to a command."""
    return {**FEATURE_DEFAULTS, **given}


def plans(**given):
    """(extract plan, train plan) of the same feature options, through the CLI's own option handling."""
    extract = options.extract_recipe(None, feature(**given))
    train, _ = options.train_recipe(None, feature(**given))
    return make_plan(extract), make_plan(train.features, allow_download=False)


@pytest.fixture
def offline_hubs(tmp_path, monkeypatch, resnet18_file):
    """TinyBERT is in no Hugging Face cache; torchvision's resnet18 weights are in the torch hub cache (a stand-in:
    the enum's URL is made to name it by its own sha256 prefix, as torchvision names its official files)."""
    import torchvision

    monkeypatch.setattr(text_family, "hub_snapshot", lambda repo, local_only: None)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    name = f"resnet18-{weights_module.sha256_file(resnet18_file)[:8]}.pth"
    monkeypatch.setattr(
        torchvision.models.ResNet18_Weights.IMAGENET1K_V1.value, "url", f"https://download.pytorch.org/models/{name}"
    )
    (tmp_path / "torch" / "hub" / "checkpoints").mkdir(parents=True)
    shutil.copy(resnet18_file, tmp_path / "torch" / "hub" / "checkpoints" / name)


@pytest.mark.parametrize("weights", ["auto", "pretrained", "random", "PATH"])
@pytest.mark.parametrize("text", [None, "bow", "DIR"])
def test_weights_and_text_encoder_combinations(offline_hubs, tiny_bert_dir, resnet18_file, weights, text):
    given = dict(
        limit=8,
        image_encoder="resnet18",
        image_size=32,
        weights=str(resnet18_file) if weights == "PATH" else weights,
        text_encoder=str(tiny_bert_dir) if text == "DIR" else text,
    )
    if weights == "pretrained" and text is None:
        # --weights pretrained asks for pretrained text weights too, and TinyBERT is not to be had
        with pytest.raises(BadInput, match=r"TinyBERT_General_4L_312D.*not in the Hugging Face cache"):
            plans(**given)
        return
    extract, train = plans(**given)
    image = {
        "auto": "ResNet18_Weights.IMAGENET1K_V1",
        "pretrained": "ResNet18_Weights.IMAGENET1K_V1",
        "random": "random:0",
        "PATH": f"sha256:{weights_module.sha256_file(resnet18_file)}",
    }[weights]
    assert extract.image_spec["weights"] == image and extract.image_spec["encoder"] == "resnet18"
    if text == "DIR":  # the directory named is the model loaded, whatever --weights says
        assert extract.question_spec["weights"] == directory_identity(tiny_bert_dir)
        assert extract.question_spec["encoder"] == str(tiny_bert_dir)
        assert extract.text_choice.source == tiny_bert_dir.resolve()
    elif text is None and weights != "random":  # TinyBERT (the recipe default) not to be had: the packaged MiniLM
        assert extract.question_spec["encoder"] == "minilm" and extract.question_spec["weights"].startswith("dir:")
    else:  # bow asked for, or weights random
        assert extract.question_spec == {**extract.question_spec, "weights": "bow:v1", "encoder": "bow"}
    # `train` with the same options reads exactly the entries `extract` wrote
    assert (train.image_key, train.question_key) == (extract.image_key, extract.question_key)


def test_explicit_text_encoder_wins_over_random_text_weights_in_a_recipe(tiny_bert_dir):
    """The finetune recipe says text weights "random" (bag-of-words); --text-encoder DIR loads DIR."""
    r, _ = options.train_recipe(
        "train/easyvqa-finetune.toml", feature(text_encoder=str(tiny_bert_dir), limit=4), cls=recipes.FinetuneRecipe
    )
    assert r.features.text.weights == "auto" and r.features.image.weights == "random"
    assert make_plan(r.features, allow_download=False).question_spec["weights"] == directory_identity(tiny_bert_dir)
    # without --text-encoder the recipe keeps its meaning
    r, _ = options.train_recipe("train/easyvqa-finetune.toml", feature(limit=4), cls=recipes.FinetuneRecipe)
    assert make_plan(r.features, allow_download=False).question_spec["weights"] == "bow:v1"


def test_extract_loads_the_text_encoder_dir_with_weights_random_and_train_finds_the_cache(cli, tmp_path, tiny_bert_dir):
    cache = tmp_path / "cache"
    opts = [*SMALL, "--weights", "random", "--text-encoder", tiny_bert_dir]
    r = cli("--cache-dir", cache, "extract", *opts)
    assert r.code == 0, r
    ident = directory_identity(tiny_bert_dir)
    assert f"text encoder {tiny_bert_dir} ({ident[:20]}..., mean pooling)" in r.out, r
    question = json.loads(next((cache / "question").glob("*/manifest.json")).read_text())
    assert question["spec"]["weights"] == ident and question["dim"] == 32  # the tiny BERT's width
    image = json.loads(next((cache / "image").glob("*/manifest.json")).read_text())
    assert image["spec"]["weights"] == "random:0" and image["spec"]["exif"] == "transpose"

    r = cli("--cache-dir", cache, "train", *opts, "--epochs", 1, "--out", tmp_path / "run")
    assert r.code == 0, r
    keys = json.loads((tmp_path / "run" / "config.json").read_text())["cache_keys"]
    assert keys == {"image": image["key"], "question": question["key"]}

    # --weights random alone keeps its documented meaning: bag-of-words text
    r = cli("--cache-dir", cache, "extract", *SMALL, "--weights", "random")
    assert r.code == 0 and "text encoder bag-of-words," in r.out, r


@pytest.mark.parametrize("command", ["extract", "train"])
@pytest.mark.parametrize(
    "options, sets, named",
    [
        (
            ["--text-encoder", "DIR"],
            ["text.weights=random"],
            "--text-encoder DIR conflicts with --set text.weights=random",
        ),
        (
            ["--weights", "random", "--text-encoder", "DIR"],
            ["text.weights=random"],
            "--text-encoder DIR conflicts with --set text.weights=random",
        ),
        (
            ["--text-encoder", "bow"],
            ["text.encoder=tinybert"],
            "--text-encoder bow conflicts with --set text.encoder=tinybert",
        ),
        (["--weights", "random"], ["image.weights=auto"], "--weights random conflicts with --set image.weights=auto"),
        (["--image-size", "32"], ["image.size=64"], "--image-size 32 conflicts with --set image.size=64"),
    ],
)
def test_an_option_and_a_set_that_contradict_it_are_bad_input(
    cli, tmp_path, tiny_bert_dir, command, options, sets, named
):
    prefix = "features." if command == "train" else ""
    options = [str(tiny_bert_dir) if o == "DIR" else o for o in options]
    r = cli("--cache-dir", tmp_path, command, *options, *[x for s in sets for x in ("--set", prefix + s)])
    assert r.code == 2, r
    lines = r.err.strip().splitlines()
    assert len(lines) == 1 and named.replace("DIR", str(tiny_bert_dir)).replace("--set ", "--set " + prefix) in lines[0]
    assert not (tmp_path / "image").exists()


def test_options_that_do_not_conflict(tiny_bert_dir):
    """A --set may refine what an option only implied; the same value twice is no conflict."""
    r = options.extract_recipe(
        None, feature(weights="random", image_size=32, set=["text.weights=auto", "image.size=32"])
    )
    assert (r.image.weights, r.text.weights, r.image.size) == ("random", "auto", 32)
    r = options.extract_recipe(
        None, feature(weights="random", text_encoder=str(tiny_bert_dir), set=["text.weights=pretrained"])
    )
    assert r.text.weights == "pretrained" and r.text.encoder == str(tiny_bert_dir)
    r = options.extract_recipe(None, feature(weights="pretrained", text_encoder="bow"))
    assert (r.image.weights, r.text.encoder) == ("pretrained", "bow")


# ---------------------------------------------------------------- values as typed (issue 2)


def test_paths_outside_the_bmp_reach_the_recipe_unchanged(cli, tmp_path, tiny_bert_dir, resnet18_file):
    """--dataset, --weights, --text-encoder and --out with 🐍 (U+1F40D) in them, extract then train."""
    snake = tmp_path / "data 🐍"
    make_csv(snake / "ds", train_images=4, test_images=0)
    weights = snake / "w 🐍.pt"
    shutil.copy(resnet18_file, weights)
    bert = snake / "bert 🐍"
    shutil.copytree(tiny_bert_dir, bert)
    cache, out = tmp_path / "cache 🐍", snake / "runs" / "run 🐍"
    opts = [
        "--dataset",
        f"csv:{snake / 'ds'}",
        "--image-encoder",
        "resnet18",
        "--image-size",
        "32",
        "--weights",
        weights,
        "--text-encoder",
        bert,
    ]
    r = cli("--cache-dir", cache, "extract", *opts)
    assert r.code == 0, r
    specs = {m["kind"]: m["spec"] for m in (json.loads(p.read_text()) for p in cache.glob("*/*/manifest.json"))}
    assert specs["image"]["weights"] == f"sha256:{weights_module.sha256_file(weights)}"
    assert specs["question"]["encoder"] == str(bert) and specs["question"]["weights"] == directory_identity(bert)
    r = cli("--cache-dir", cache, "train", *opts, "--epochs", 1, "--out", out)
    assert r.code == 0, r
    config = json.loads((out / "config.json").read_text())
    assert config["recipe"]["features"]["dataset"]["name"] == f"csv:{snake / 'ds'}"

    # the same dataset through --set, unquoted and quoted
    for value in (f"csv:{snake / 'ds'}", json.dumps(f"csv:{snake / 'ds'}", ensure_ascii=False)):
        r = cli("--cache-dir", cache, "extract", *opts[2:], "--set", f"dataset.name={value}")
        assert r.code == 0 and "images: cached" in r.out, r


def test_the_extract_command_train_suggests_is_quoted_for_a_shell(cli, tmp_path):
    import shlex

    weird = tmp_path / "it's 🐍"
    make_csv(weird, train_images=4, test_images=0)
    r = cli("--cache-dir", tmp_path / "cache", "train", "--dataset", f"csv:{weird}", *SMALL, "--weights", "random")
    assert r.code == 2, r
    argv = shlex.split(r.err.split("make them with: ", 1)[1])
    assert argv[:2] == ["vqa-cache", "extract"] and argv[argv.index("--dataset") + 1] == f"csv:{weird}", r
