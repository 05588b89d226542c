"""Where weights come from, and what they really were (the identity goes into cache keys).

Policy: `pretrained` must find them (installed, in a library cache, or a download); `random` is a
seeded random init (bag-of-words for text); `PATH` is a state-dict file; `auto` is `pretrained` when the
weights can be had and otherwise falls back (`fall_back`, one policy for both kinds), loudly, to a packaged
pretrained model and then to a random init or bag-of-words (images: encoders/families.py; text:
encoders/text_family.py). Finding out that a download is impossible takes seconds: one short TCP probe, no retries.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import socket
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

from .. import messages
from ..digest import sha256_file
from ..errors import BadInput

if TYPE_CHECKING:
    from .base import Preprocess

RANDOM_SEED = 0
WEIGHTS_DIR_ENV = "VQA_CACHE_WEIGHTS"  # a directory of official weight files, looked in by name


@dataclass(frozen=True)
class Choice:
    """What an encoder will really run with, and what of it goes into its entry's cache key (`key`)."""

    kind: str  # pretrained | random | file | hf | bow
    identity: str  # torchvision enum name, random:SEED, sha256:..., hf:repo@rev, dir:sha256..., package:..., bow:v1
    source: Path | None = None  # the weights file or model directory (None: random init, bag-of-words)
    encoder: str = ""  # the encoder as keyed: resnet50, timm:NAME, hf:ID_OR_DIR, tinybert, DIR, minilm
    preprocess: Preprocess | None = None  # images: the encoders.image.Preprocess its features are made with
    note: str = ""  # why this one (printed by extract, kept in the manifest)
    settings: tuple = ()  # text: the key fields its settings add, as (name, value) pairs (text_family.with_settings)

    def key(self) -> dict:
        """The encoder's part of its entry's spec: name, weights identity, then an image encoder's
        preprocessing or a text encoder's settings."""
        fields = {"encoder": self.encoder, "weights": self.identity}
        if self.preprocess is not None:
            fields.update(self.preprocess.spec())
        return {**fields, **dict(self.settings)}

    def record(self) -> dict:
        """What the manifest keeps of it."""
        return {
            "encoder": self.encoder,
            "weights": self.identity,
            "source": None if self.source is None else str(self.source),
            "why": self.note,
        }


def fall_back(
    name: str,
    missing: str,
    fallbacks: Iterable[str],
    find: Callable[[str], Choice | None],
    last: Callable[[], Choice],
    *,
    loud: bool,
    instead: Callable[[str, Choice], str],
    at_last: str,
) -> Choice:
    """`auto` when `name`'s weights cannot be had (`missing` says why): the first of `fallbacks` that
    `find` has installed (it never downloads; None for the named model itself), else `last()` (a random
    init, bag-of-words). `loud` (stage one deciding) warns: `instead(other, found)` or `at_last`; stage two
    re-resolving lands on the same Choice quietly. The note says FALLBACK and why."""
    for other in fallbacks:
        alt = find(other)
        if alt is not None:
            if loud:
                warn(instead(other, alt))
            return replace(alt, note=f"FALLBACK for {name}: {missing}; {alt.note}")
    chosen = last()
    if loud:
        warn(at_last)
    return replace(chosen, note=f"FALLBACK for {name}: {missing}: {chosen.note}")


def warn(message: str) -> None:
    messages.warning(f"\n{'!' * 78}\nWARNING: {message}\n{'!' * 78}\n")


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
            warnings.simplefilter("ignore")  # torch's notes on pickle protocols
            if str(path).endswith(".safetensors"):
                from safetensors.torch import load_file

                state = load_file(str(path))
            else:
                state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:  # torch's message goes on to advise weights_only=False: not passed on
        why = re.search(r"WeightsUnpickler error: (.*?)(?:\s+Check the documentation|$)", " ".join(str(e).split()))
        raise BadInput(
            f"--weights {path}: not a PyTorch state dict (unpickling refused{': ' + why.group(1)[:120] if why else ''})"
        ) from None
    except Exception as e:  # not a zip or pickle at all, truncated, unreadable
        first = " ".join(str(e).split())[:200]
        raise BadInput(
            f"--weights {path}: not a PyTorch state dict ({type(e).__name__}{': ' + first if first else ''})"
        ) from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if (
        not isinstance(state, dict)
        or not state
        or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items())
    ):
        raise BadInput(
            f"--weights {path}: not a PyTorch state dict (expected a mapping of names to tensors, "
            f"found {type(state).__name__})"
        )
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


@functools.cache
def package_files() -> dict[str, tuple[Path, ...]]:
    """Weight files (*.pth, *.pt) that installed distributions ship, by file name (from their RECORDs)."""
    from importlib.metadata import distributions

    found: dict[str, list[Path]] = {}
    for dist in distributions():
        for f in dist.files or ():
            if f.name.endswith((".pth", ".pt")):
                found.setdefault(f.name, []).append(Path(str(dist.locate_file(f))))
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


# ---------------------------------------------------------------- model directories (Hugging Face)


def directory_identity(path: Path) -> str:
    """sha256 over the names and bytes of a model directory's files."""
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith(".")):
        h.update(str(f.relative_to(path)).encode())
        h.update(sha256_file(f).encode())
    return f"dir:{h.hexdigest()}"


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
            raise BadInput(
                f"{what}: {file} has an auto_map, so the model needs its own code "
                f"(trust_remote_code); vqa-cache never runs code from a model directory"
            )
    if not any(path.glob("*.safetensors")):
        pickled = sorted(p.name for p in path.glob("*.bin"))
        if pickled:
            raise BadInput(
                f"{what}: only pickled weights ({pickled[0]}) and no *.safetensors; "
                f"loading a pickle can run code, so vqa-cache loads safetensors only (convert with "
                f"model.save_pretrained(DIR, safe_serialization=True))"
            )
        raise BadInput(f"{what}: no model weights (*.safetensors) in that directory")


def hub_snapshot(repo: str, *, local_only: bool) -> Path | None:
    """The local snapshot directory of a hub model, or None."""
    try:
        from huggingface_hub import snapshot_download

        path = Path(
            snapshot_download(
                repo,
                local_files_only=local_only,
                allow_patterns=["*.json", "*.txt", "*.safetensors", "*.bin", "*.model"],
            )
        )
    except Exception:
        return None
    return path if (path / "config.json").is_file() else None
