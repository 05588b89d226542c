"""Recipes: TOML files -> frozen dataclasses, with `--set key=value` overrides.

An extract recipe (extract/*.toml) says which dataset goes through which encoders.
A train recipe (train/*.toml) names the extract recipe whose cache it reads (`features = "..."`),
the head and the hyperparameters. Every value can be overridden on the command line with a
dotted key: `--set optim.lr=3e-4`, `--set features.image.size=128`.

settings.py holds the dataclasses, build.py makes and checks them, files.py reads and writes TOML.
"""

from .build import build, to_dict  # noqa: F401
from .files import (  # noqa: F401
    apply_overrides,
    load_extract_dict,
    load_train_dict,
    parse_value,
    read_toml,
    resolve_relative,
    set_dotted,
    to_toml,
)
from .settings import (  # noqa: F401
    AnswerSettings,
    AugmentSettings,
    DatasetSettings,
    ExtractRecipe,
    FinetuneRecipe,
    FinetuneSettings,
    HeadSettings,
    ImageSettings,
    OptimSettings,
    SweepSettings,
    TextSettings,
    TrainRecipe,
)
