"""Where weights come from, and what they really were (the identity goes into cache keys).

Policy: `pretrained` must find them (library cache or a download); `random` is a seeded
random init (bag-of-words for text); `PATH` is a state-dict file; `auto` is `pretrained` when the
weights can be had and otherwise falls back, with one loud warning, to `random`.
Finding out that a download is impossible takes seconds: one short TCP probe, no retries.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from ..digest import sha256_file
from ..errors import BadInput

RANDOM_SEED = 0
TEXT_ALIASES = {"tinybert": "huawei-noah/TinyBERT_General_4L_312D"}
BOW_IDENTITY = "bow:v1"


@dataclass(frozen=True)
class Choice:
    """What an encoder will really run with."""
    kind: str          # pretrained | random | file | hf | bow
    identity: str      # torchvision enum name, random:SEED, sha256:..., hf:repo@rev, dir:sha256..., bow:v1
    source: object = None   # the torchvision weights enum, a file path or a model directory


def warn(message: str) -> None:
    print(f"\n{'!' * 78}\nWARNING: {message}\n{'!' * 78}\n", file=sys.stderr)


def online(url: str, timeout: float = 3.0) -> bool:
    """Can we reach the host of `url`? Offline answers come in seconds, not minutes of retries."""
    if os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("VQA_CACHE_OFFLINE") == "1":
        return False
    host = urlparse(url).hostname
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


# ---------------------------------------------------------------- images (torchvision)

def torchvision_weights(name: str):
    import torchvision
    try:
        return torchvision.models.get_model_weights(name).DEFAULT
    except (ValueError, KeyError):
        known = ", ".join(sorted(torchvision.models.list_models(torchvision.models)))
        raise BadInput(f"unknown image encoder {name!r} (torchvision models: {known})") from None


def cached_weights_file(weights) -> Path:
    import torch
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(weights.url).path)


def read_state_dict(path: Path) -> dict:
    """A state-dict file's {name: tensor}, read with torch.load(weights_only=True) (nothing in the file is
    ever run); a checkpoint's "state_dict" is taken. BadInput (one line) for anything else, and for
    tensors holding NaN or inf."""
    import pickle

    import torch

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")     # torch's notes on pickle protocols
            state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:  # torch's message goes on to advise weights_only=False: not passed on
        why = re.search(r"WeightsUnpickler error: (.*?)(?:\s+Check the documentation|$)", " ".join(str(e).split()))
        raise BadInput(f"--weights {path}: not a PyTorch state dict (unpickling refused"
                       f"{': ' + why.group(1)[:120] if why else ''})") from None
    except Exception as e:  # not a zip or pickle at all, truncated, unreadable
        first = " ".join(str(e).split())[:200]
        raise BadInput(f"--weights {path}: not a PyTorch state dict ({type(e).__name__}"
                       f"{': ' + first if first else ''})") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not state or \
            not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise BadInput(f"--weights {path}: not a PyTorch state dict (expected a mapping of names to tensors, "
                       f"found {type(state).__name__})")
    for k, v in state.items():
        if v.is_floating_point() and not torch.isfinite(v).all():
            raise BadInput(f"--weights {path}: tensor {k!r} holds NaN or inf")
    return state


def resolve_image(name: str, policy: str, *, allow_download: bool = True) -> Choice:
    """Decide which weights the image encoder runs with (downloading them if asked and possible).
    A weights file is read and checked here (read_state_dict), before any other work."""
    if policy == "random":
        torchvision_weights(name)  # validates the name
        return Choice("random", f"random:{RANDOM_SEED}")
    if policy not in ("auto", "pretrained"):
        path = Path(policy)
        if not path.is_file():
            raise BadInput(f"--weights {policy}: no such file (expected auto, pretrained, random or a state-dict file)")
        torchvision_weights(name)
        read_state_dict(path)
        return Choice("file", f"sha256:{sha256_file(path)}", path)
    weights = torchvision_weights(name)
    enum_name = f"{type(weights).__name__}.{weights.name}"
    local = cached_weights_file(weights)
    if not local.is_file() and allow_download and online(weights.url):
        try:
            weights.get_state_dict(progress=True)
        except Exception as e:  # network, disk, checksum
            print(f"download of {weights.url} failed: {e}", file=sys.stderr)
    if local.is_file():
        return Choice("pretrained", enum_name, weights)
    if policy == "pretrained":
        raise BadInput(f"pretrained weights for {name} are not in {local.parent} and cannot be downloaded "
                       f"(use --weights random, or --weights PATH with a state-dict file)")
    if not allow_download:  # stage two re-resolving what stage one chose: no second warning
        return Choice("random", f"random:{RANDOM_SEED}")
    warn(f"pretrained {name} weights ({enum_name}) cannot be had offline; using a RANDOM-INIT {name} "
         f"(seed {RANDOM_SEED}). Features will be weaker. Put {local.name} in {local.parent} "
         f"or pass --weights PATH to use real weights.")
    return Choice("random", f"random:{RANDOM_SEED}")


# ---------------------------------------------------------------- text (Hugging Face)

def directory_identity(path: Path) -> str:
    """sha256 over the names and bytes of a model directory's files."""
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith(".")):
        h.update(str(f.relative_to(path)).encode())
        h.update(sha256_file(f).encode())
    return f"dir:{h.hexdigest()}"


def resolve_text(name: str, policy: str, *, allow_download: bool = True) -> Choice:
    """Decide which text encoder really runs: a Hugging Face model directory, or bag-of-words."""
    if name == "bow" or policy == "random":
        return Choice("bow", BOW_IDENTITY)
    if policy not in ("auto", "pretrained"):
        raise BadInput(f"text weights {policy!r}: expected auto, pretrained or random "
                       f"(a local model directory goes in --text-encoder)")
    local_dir = Path(name)
    if local_dir.is_dir():
        check_model_dir(local_dir, name)
        return Choice("hf", directory_identity(local_dir), local_dir.resolve())
    repo = TEXT_ALIASES.get(name, name)
    found = hub_snapshot(repo, local_only=True)
    if found is None and allow_download and online("https://huggingface.co"):
        found = hub_snapshot(repo, local_only=False)
    if found is not None:
        return Choice("hf", f"hf:{repo}@{found.name}", found)
    if policy == "pretrained":
        raise BadInput(f"text encoder {repo!r} is not in the Hugging Face cache and cannot be downloaded "
                       f"(use --text-encoder DIR with a local model, or --weights random for bag-of-words)")
    if not allow_download:
        return Choice("bow", BOW_IDENTITY)
    warn(f"text encoder {repo} cannot be had offline; using the built-in BAG-OF-WORDS text encoder. "
         f"Pass --text-encoder DIR with a local Hugging Face model directory to use a real one.")
    return Choice("bow", BOW_IDENTITY)


def check_model_dir(path: Path, name: str) -> None:
    """A local model directory must load without running or unpickling anything from it: no custom code
    (`auto_map`, which needs trust_remote_code) and weights in safetensors (a pickled pytorch_model.bin
    alone is refused)."""
    if not (path / "config.json").is_file():
        raise BadInput(f"--text-encoder {name}: no config.json in that directory")
    for file in ("config.json", "tokenizer_config.json"):
        if not (path / file).is_file():
            continue
        try:
            config = json.loads((path / file).read_text())
        except (OSError, ValueError) as e:
            raise BadInput(f"--text-encoder {name}: {file} is not readable JSON ({e})") from None
        if isinstance(config, dict) and "auto_map" in config:
            raise BadInput(f"--text-encoder {name}: {file} has an auto_map, so the model needs its own code "
                           f"(trust_remote_code); vqa-cache never runs code from a model directory")
    if not any(path.glob("*.safetensors")):
        pickled = sorted(p.name for p in path.glob("*.bin"))
        if pickled:
            raise BadInput(f"--text-encoder {name}: only pickled weights ({pickled[0]}) and no *.safetensors; "
                           f"loading a pickle can run code, so vqa-cache loads safetensors only (convert with "
                           f"model.save_pretrained(DIR, safe_serialization=True))")
        raise BadInput(f"--text-encoder {name}: no model weights (*.safetensors) in that directory")


def hub_snapshot(repo: str, *, local_only: bool) -> Path | None:
    """The local snapshot directory of a hub model, or None."""
    try:
        from huggingface_hub import snapshot_download
        path = snapshot_download(repo, local_files_only=local_only,
                                 allow_patterns=["*.json", "*.txt", "*.safetensors", "*.bin", "*.model"])
    except Exception:
        return None
    path = Path(path)
    return path if (path / "config.json").is_file() else None
