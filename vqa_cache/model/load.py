"""`vqa_cache.load(DIR)`: a Model from a train run, a finetune run, or a model directory `vqa-cache export`
wrote (export.py says what it holds). A model directory is checked before anything is built from it: its
config.json, its files there, no pickle anywhere, every tensor of the shape its config gives."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import torch

from .. import heads
from ..answers import Vocabulary
from ..device import pick_device
from ..encoders.base import Preprocess
from ..encoders.families import split_name
from ..encoders.image import ImageEncoder
from ..encoders.text import load_text_encoder
from ..encoders.weights import Choice, check_model_dir
from ..errors import BadInput
from .core import Model
from .export import FORMAT, LIBRARY
from .runs import from_run

PICKLES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".joblib", ".npy", ".npz")
NEEDED = ("head", "vocab", "image", "text", "features_dtype")


def is_model_dir(path: Path) -> bool:
    """Whether `path` is an exported model directory (its config.json says library_name vqa-cache)."""
    try:
        return json.loads((Path(path) / "config.json").read_text()).get("library_name") == LIBRARY
    except (OSError, ValueError, AttributeError):
        return False


def load(path, root: Path, device: str = "auto") -> Model:
    """The Model of a train run, a finetune run (`root`: the cache a train run's specs may be read from) or
    an exported model directory (on `device`: auto, cpu or cuda)."""
    path = Path(path)
    if not path.is_dir():
        raise BadInput(f"{path}: not a run directory, nor a model directory (no such directory)")
    if is_model_dir(path):
        return from_dir(path, device)
    return from_run(path, root, device)


def read_config(path: Path) -> dict:
    pickled = sorted(str(f.relative_to(path)) for f in path.rglob("*") if f.suffix.lower() in PICKLES)
    if pickled:
        raise BadInput(
            f"{path}: holds {pickled[0]}, a pickle-format file; a model directory holds safetensors "
            f"only (loading a pickle can run code)"
        )
    config = json.loads((path / "config.json").read_text())
    missing = [k for k in NEEDED if k not in config]
    if missing or config.get("format") != FORMAT:
        raise BadInput(
            f"{path / 'config.json'}: not a vqa-cache model config of format {FORMAT} "
            f"({'no ' + ', '.join(missing) if missing else 'format ' + repr(config.get('format'))})"
        )
    malformed = (
        [k for k in ("head", "vocab", "image", "text") if not isinstance(config[k], dict)]
        + [
            f"text.{k}"
            for k in ("kind", "weights", "input")
            if isinstance(config["text"], dict) and not isinstance(config["text"].get(k), str)
        ]
        + ([] if config["features_dtype"] in ("float16", "float32") else ["features_dtype"])
    )
    if malformed:
        raise BadInput(f"{path / 'config.json'}: malformed {', '.join(malformed)}")
    return config


def tensors(file: Path) -> dict:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not file.is_file():
        raise BadInput(f"{file}: missing (the model directory is incomplete)")
    try:
        return load_file(str(file))
    except (SafetensorError, OSError, ValueError) as e:
        raise BadInput(f"{file}: not a readable safetensors file ({' '.join(str(e).split())[:200]})") from None


def fill(module: torch.nn.Module, state: dict, file: Path, what: str) -> None:
    """Load `state` into `module`, every tensor present and of its shape (BadInput naming the file)."""
    try:
        module.load_state_dict(state)
    except RuntimeError as e:
        detail = " ".join(str(e).split())
        raise BadInput(f"{file}: does not fit the {what} config.json describes: {detail[:300]}") from None


def image_encoder(path: Path, record: dict) -> ImageEncoder:
    """The image encoder's architecture (by name, or image_encoder/config.json for hf), its saved weights."""
    try:
        prep = Preprocess(
            **{
                **record["preprocess"],
                "mean": tuple(record["preprocess"]["mean"]),
                "std": tuple(record["preprocess"]["std"]),
            }
        )
        name, output = record["encoder"], record["output"]
    except (KeyError, TypeError) as e:
        raise BadInput(f"{path / 'config.json'}: malformed image record ({type(e).__name__}: {e})") from None
    file = path / "image_encoder" / "model.safetensors"
    state = tensors(file)
    fam, model_name = (None, None) if name.startswith("hf:") else split_name(name)
    with torch.random.fork_rng():  # a random init, overwritten at once
        if fam is None:
            choice = Choice(
                "random", record["weights"], None, encoder="hf:" + str(path / "image_encoder"), preprocess=prep
            )
        else:
            choice = replace(fam.random(model_name, prep.size), preprocess=prep)
        encoder = ImageEncoder(choice, (output,))
    if "hf_pooler" in record:
        encoder.body.use_pooler = bool(record["hf_pooler"])
    fill(encoder, state, file, f"image encoder {name}")
    return encoder


def text_encoder(path: Path, record: dict, device: torch.device):
    if record.get("kind") == "bow":
        choice = Choice("bow", record["weights"], encoder="bow")
    else:
        where = path / "text_encoder"
        if not where.is_dir():
            raise BadInput(f"{where}: missing (the model directory is incomplete)")
        check_model_dir(where, f"{where}")
        choice = Choice("hf", record["weights"], where, encoder=record["encoder"])
    return load_text_encoder(
        choice,
        record.get("pooling"),
        record.get("max_length", 32),
        bool(record.get("tokens")),
        str(device),
        bool(record.get("ids")),
        record.get("words"),
    )


def from_dir(path: Path, device: str = "auto") -> Model:
    """The Model of an exported model directory."""
    config = read_config(path)
    try:
        head = heads.from_config(config["head"])
    except BadInput:
        raise
    except (TypeError, ValueError, KeyError) as e:
        raise BadInput(f"{path / 'config.json'}: malformed head {config['head']} ({type(e).__name__})") from None
    file = path / "model.safetensors"
    state = tensors(file)
    if not all(k.startswith("head.") for k in state):
        raise BadInput(f"{file}: expected the head's tensors (head.*)")
    fill(head, {k[len("head.") :]: v for k, v in state.items()}, file, f"head {config['head'].get('name')}")
    vocab = Vocabulary.from_dict(config["vocab"])
    if len(vocab) != config["head"].get("num_answers"):
        raise BadInput(
            f"{path / 'config.json'}: {len(vocab)} answers for a head of {config['head'].get('num_answers')}"
        )
    dev = pick_device(device)
    model = Model(
        head, vocab, image_encoder(path, config["image"]), text_encoder(path, config["text"], dev), config, dev
    )
    model.sources = {"image": path / "image_encoder", "text": path / "text_encoder"}
    return model
