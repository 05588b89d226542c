"""Where weights come from, and what they really were (the identity goes into cache keys).

Policy (DESIGN.md): `pretrained` must find them (library cache or a download); `random` is a seeded
random init (bag-of-words for text); `PATH` is a state-dict file; `auto` is `pretrained` when the
weights can be had and otherwise falls back, with one loud warning, to `random`.
Finding out that a download is impossible takes seconds: one short TCP probe, no retries.
"""
from __future__ import annotations

import hashlib
import os
import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from ..cache.store import sha256_of as sha256_file
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


def resolve_image(name: str, policy: str, *, allow_download: bool = True) -> Choice:
    """Decide which weights the image encoder runs with (downloading them if asked and possible)."""
    if policy == "random":
        torchvision_weights(name)  # validates the name
        return Choice("random", f"random:{RANDOM_SEED}")
    if policy not in ("auto", "pretrained"):
        path = Path(policy)
        if not path.is_file():
            raise BadInput(f"--weights {policy}: no such file (expected auto, pretrained, random or a state-dict file)")
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
        if not (local_dir / "config.json").is_file():
            raise BadInput(f"--text-encoder {name}: no config.json in that directory")
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
