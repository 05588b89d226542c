import pytest

from vqa_cache import recipes
from vqa_cache.errors import BadInput


def test_shipped_recipes_parse():
    e = recipes.build(recipes.ExtractRecipe, recipes.load_extract_dict("extract/easyvqa.toml"))
    assert e.dataset.name == "easyvqa" and e.image.encoder == "resnet50" and e.text.encoder == "tinybert"
    t = recipes.build(recipes.TrainRecipe, recipes.load_train_dict("train/easyvqa-concat.toml"))
    assert t.features == e and t.head.name == "concat" and t.name == "easyvqa-concat"


def test_overrides_are_typed_and_nested():
    d = recipes.apply_overrides(
        recipes.load_train_dict("train/easyvqa-concat.toml"),
        [
            "optim.lr=3e-4",
            "features.image.size=128",
            "head.name=hadamard",
            'features.dataset.splits=["train"]',
            "features.skip_bad=true",
        ],
    )
    t = recipes.build(recipes.TrainRecipe, d)
    assert t.optim.lr == 3e-4 and t.features.image.size == 128 and t.head.name == "hadamard"
    assert t.features.dataset.splits == ("train",) and t.features.skip_bad is True


@pytest.mark.parametrize(
    "override, message",
    [
        ("optim.lrr=1", "unknown recipe key 'optim.lrr'"),
        ("optim.epochs=1.5", "must be int"),
        ("novalue", "KEY=VALUE"),
        ("head=3", "must be a section"),
        ("optim.epochs=0", "'optim.epochs' must be >= 1"),
        ("optim.lr=-1", r"'optim.lr' must be in \(0, 10\], got -1.0"),
        ("optim.lr=1e308", r"'optim.lr' must be in \(0, 10\]"),
        ("optim.lr=nan", "'optim.lr' must be a finite number, got nan"),
        ("optim.min_lr=inf", "'optim.min_lr' must be a finite number, got inf"),
        ("optim.min_lr=-1e-5", "'optim.min_lr' must be >= 0"),
        ("optim.min_lr=0.01", r"'optim.min_lr' must be <= optim.lr \(0.001\), got 0.01"),
        ("optim.weight_decay=inf", "'optim.weight_decay' must be a finite number"),
        ("optim.weight_decay=-0.1", "'optim.weight_decay' must be >= 0"),
        ("optim.eps=0", r"'optim.eps' must be in \(0, 1\)"),
        ("optim.eps=1.5", r"'optim.eps' must be in \(0, 1\)"),
        ("optim.warmup_epochs=inf", "'optim.warmup_epochs' must be a finite number"),
        ("optim.warmup_epochs=-1", "'optim.warmup_epochs' must be >= 0"),
        ("optim.grad_clip=inf", "'optim.grad_clip' must be a finite number"),
        ("optim.grad_clip=-1", "'optim.grad_clip' must be >= 0"),
        ("head.dropout=1.5", r"'head.dropout' must be in \[0, 1\)"),
        ("optim.betas=[0.9, 1.2]", r"'optim.betas' must be two numbers in \[0, 1\)"),
        ("optim.betas=[0.9]", "'optim.betas' must be two numbers"),
        ("optim.betas=[0.9, 0.99, 0.999]", "'optim.betas' must be two numbers"),
        ('optim.betas="x"', "'optim.betas' must be two numbers"),
        ('optim.betas=[0.9, "x"]', "'optim.betas' must be two numbers"),
        ("optim.betas=[0.9, nan]", "'optim.betas' must be two numbers"),
        ("finetune.encoder_lr=0", r"'finetune.encoder_lr' must be in \(0, 10\]"),
        ("finetune.encoder_lr=11", r"'finetune.encoder_lr' must be in \(0, 10\]"),
        ("features.image.size=4", "'features.image.size' must be >= 16"),
        ("optim.warmup_epochs=1e308", "'optim.warmup_epochs' must be <= 1000000, got 1e"),
        ("optim.epochs=9000000000000000000", "'optim.epochs' must be <= 1000000"),
        ("finetune.lora_r=-1", "'finetune.lora_r' must be >= 0, got -1"),
        ("finetune.lora_dropout=1", r"'finetune.lora_dropout' must be in \[0, 1\)"),
        ("finetune.augment.hflip=2", r"'finetune.augment.hflip' must be in \[0, 1\]"),
        ("seed=-1", "'seed' must be >= 0"),
        ("finetune.preload_gb=1e308", "'finetune.preload_gb' must be <= "),
    ],
)
def test_bad_overrides(override, message):
    with pytest.raises(BadInput, match=message):
        recipes.build(recipes.FinetuneRecipe, recipes.apply_overrides({}, [override]))


def numeric_fields(cls, where=""):
    import dataclasses

    for f in dataclasses.fields(cls):
        default = getattr(cls(), f.name)
        if dataclasses.is_dataclass(default):
            yield from numeric_fields(type(default), f"{where}{f.name}.")
        elif isinstance(default, (int, float)) and not isinstance(default, bool):
            yield f"{where}{f.name}", default


@pytest.mark.parametrize("cls", [recipes.FinetuneRecipe, recipes.SweepSettings])
def test_every_numeric_key_has_an_upper_bound(cls):
    """No number is unbounded (issue 23.5: optim.warmup_epochs = 1e308 overflowed): each key, set huge, is
    one BadInput naming it, for the keys of today and any added later."""
    for key, default in numeric_fields(cls):
        huge = 1e308 if isinstance(default, float) else 2**62
        with pytest.raises(BadInput, match=f"recipe key '{key}' must be"):
            recipes.build(cls, recipes.apply_overrides({}, [f"{key}={huge!r}"]))


def test_lora_r_below_zero_is_refused_on_the_command_line(cli, tmp_path):
    r = cli("--cache-dir", tmp_path, "finetune", "--lora-r", -1, "--epochs", 1)
    assert r.code == 2 and "'finetune.lora_r' must be >= 0, got -1" in r.err, r
    assert len(r.err.strip().splitlines()) == 1 and not list(tmp_path.iterdir())


def test_edges_of_the_optimizer_ranges_are_accepted():
    o = recipes.build(
        recipes.OptimSettings,
        {
            "lr": 10,
            "min_lr": 10,
            "betas": [0, 0.999],
            "eps": 1e-12,
            "weight_decay": 0,
            "warmup_epochs": 0,
            "grad_clip": 0,
        },
    )
    assert o.lr == o.min_lr == 10.0 and o.betas == (0, 0.999)


@pytest.mark.parametrize("value", ['"x"', "[0.9]", "inf"])
def test_bad_betas_on_the_command_line_exit_2_with_one_line(cli, value):
    r = cli("train", "--set", f"optim.betas={value}")
    assert r.code == 2 and r.err.startswith("vqa-cache: error: recipe key 'optim.betas' must be two numbers"), r
    assert len(r.err.strip().splitlines()) == 1


def test_bad_toml(tmp_path):
    p = tmp_path / "bad.toml"
    p.write_text("[head\nname = 1")
    with pytest.raises(BadInput, match="not valid TOML"):
        recipes.read_toml(p)


def test_set_values_outside_the_bmp_and_plain_strings():
    """Values are TOML when they parse as TOML, else the text as typed; never a re-escaped copy."""
    d = recipes.apply_overrides(
        {},
        [
            "dataset.name=csv:/x/🐍/ds",
            'text.encoder="/m/🐍 bert"',
            "image.weights=/w/🐍.pt",
            "dataset.options.image_ext=.png",
            "dataset.options.train_file=2024-01-01.csv",
            "dataset.options.test_file=2024-01-01",
        ],
    )
    e = recipes.build(recipes.ExtractRecipe, d)
    assert (e.dataset.name, e.text.encoder, e.image.weights) == ("csv:/x/🐍/ds", "/m/🐍 bert", "/w/🐍.pt")
    assert e.dataset.options == {"image_ext": ".png", "train_file": "2024-01-01.csv", "test_file": "2024-01-01"}


def test_typed_overrides_are_set_as_they_are():
    """(key, value) pairs come from typed options: a path with quotes, '=' or TOML syntax stays itself."""
    weird = '/x/"🐍" = [1, 2]'
    d = recipes.apply_overrides(
        {"text": {"weights": "random"}},
        [
            ("dataset.name", f"csv:{weird}"),
            ("dataset.splits", ["train"]),
            ("image.size", 32),
            ("text.weights", lambda old: f"was {old}"),
        ],
    )
    assert d == {
        "dataset": {"name": f"csv:{weird}", "splits": ["train"]},
        "image": {"size": 32},
        "text": {"weights": "was random"},
    }


def test_a_set_value_nested_too_deeply_is_bad_input():
    with pytest.raises(BadInput, match="nested too deeply"):
        recipes.apply_overrides({}, ["dataset.splits=" + "[" * 100_000 + "]" * 100_000])
