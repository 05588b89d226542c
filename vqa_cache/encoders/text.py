"""Frozen text encoders: any Hugging Face text model (pooled, optionally token states and token ids) or
bag-of-words (optionally word ids of a vocabulary built from the training questions).

Hugging Face models: BERT-style encoders, decoder-only models (GPT-2, Llama, ...: a tokenizer without a pad
token pads with its end-of-text token; they pool at the last real token), and the text tower of a CLIP or
SigLIP checkpoint (the same `hf:` id or directory as its image tower).
"""

from __future__ import annotations

import json
import re
import warnings
import zlib
from collections import Counter
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from ..device import autocast
from ..errors import BadInput, Unencodable
from .shapes import load_failure
from .weights import Choice

BOW_DIM = 1024
POOLINGS = ("mean", "cls", "last")
_WORD = re.compile(r"[a-z0-9']+")


def words_of(text: str) -> list[str]:
    """The words bag-of-words and its word ids see: lower-case runs of letters, digits and apostrophes."""
    return _WORD.findall(text.lower())


def word_vocabulary(texts: list[str]) -> list[str]:
    """The words of `texts` (the training questions), most frequent first (ties alphabetical)."""
    counts = Counter(w for t in texts for w in words_of(t))
    return sorted(counts, key=lambda w: (-counts[w], w))


class BagOfWords:
    """Hashed unigram + bigram counts, L2-normalized, [B, 1024]. Needs no weights at all. With `words` (a word
    vocabulary) also ids [B, max_length] int32 (0 = unknown word, word i -> i + 1, zero after the end) and
    length [B] int32."""

    dim = BOW_DIM

    def __init__(self, words: list[str] | None = None, max_length: int = 32):
        self.index = None if words is None else {w: i + 1 for i, w in enumerate(words)}
        self.max_length = max_length

    def encode(self, texts: list[str]) -> dict[str, np.ndarray]:
        out = np.zeros((len(texts), BOW_DIM), dtype=np.float32)
        for row, text in enumerate(texts):
            words = words_of(text)
            for tok in words + [a + " " + b for a, b in zip(words, words[1:])]:
                out[row, zlib.crc32(tok.encode()) % BOW_DIM] += 1.0
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        result = {"pooled": out / np.maximum(norms, 1e-6)}
        if self.index is not None:
            ids = np.zeros((len(texts), self.max_length), dtype=np.int32)
            length = np.zeros(len(texts), dtype=np.int32)
            for row, text in enumerate(texts):
                seq = [self.index.get(w, 0) for w in words_of(text)][: self.max_length]
                ids[row, : len(seq)], length[row] = seq, len(seq)
            result.update(ids=ids, length=length)
        return result


@contextmanager
def quiet_loading(report: bool = True):
    """transformers' "Loading weights" progress bar kept out of the logs while a model loads; with
    report=False, its load report (missing / unexpected keys: the caller judges them) too."""
    from transformers.utils import logging  # (lazy: a heavy import, for a Hugging Face model only)

    verbosity, bars = logging.get_verbosity(), logging.is_progress_bar_enabled()
    logging.disable_progress_bar()
    if not report:
        logging.set_verbosity_error()
    try:
        yield
    finally:
        logging.set_verbosity(verbosity)
        if bars:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # HF_HUB_DISABLE_PROGRESS_BARS=1 keeps the hub's off, and says so
                logging.enable_progress_bar()


def default_pooling(source: Path) -> str:
    """The pooling a model gets when the recipe says `auto`: `last` (the last real token) for decoder-only
    models (a causal-LM type that is not also a masked-LM type: GPT-2, Llama, Qwen, ...) and for CLIP-like
    text towers (their pooled output is the end-of-text token's state), `mean` for every other model."""
    from transformers.models.auto.modeling_auto import (  # (lazy: heavy)
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_MASKED_LM_MAPPING_NAMES,
    )

    try:
        config = json.loads((Path(source) / "config.json").read_text())
    except (OSError, ValueError) as e:
        raise BadInput(f"--text-encoder {source}: config.json is not readable JSON ({e})") from None
    kind = str(config.get("model_type", ""))
    if "text_config" in config or kind.endswith("_text_model"):
        return "last"
    decoder = kind in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and kind not in MODEL_FOR_MASKED_LM_MAPPING_NAMES
    return "last" if decoder else "mean"


def load_tokenizer(source):
    """The model's tokenizer, padding on the right; one without a pad token (GPT-2) pads with its end-of-text
    token (else its unknown or first token): padded positions are masked, so which token it is never shows."""
    from transformers import AutoTokenizer  # (lazy: a heavy import)

    tokenizer = AutoTokenizer.from_pretrained(str(source), trust_remote_code=False)
    if tokenizer.pad_token is None:
        spare = tokenizer.eos_token or tokenizer.unk_token or tokenizer.bos_token
        if spare is None:
            raise BadInput(
                f"--text-encoder {source}: its tokenizer has no pad, end-of-text, unknown or "
                f"beginning token to pad with"
            )
        tokenizer.pad_token = spare
    tokenizer.padding_side = "right"
    return tokenizer


def text_tower(model):
    """The text model inside a model: a CLIP / SigLIP checkpoint's text tower, else the model itself."""
    if hasattr(model.config, "text_config") and hasattr(model, "text_model"):
        return model.text_model
    return model


def load_text_model(source, what: str = "--text-encoder"):
    """(tokenizer, text model or tower in eval mode, its width) of a Hugging Face model directory."""
    from transformers import AutoModel  # (lazy: a heavy import)

    # safetensors whenever the directory has them (a local --text-encoder directory must: check_model_dir)
    safe = True if any(Path(source).glob("*.safetensors")) else None
    try:
        tokenizer = load_tokenizer(source)
        with quiet_loading():
            model = AutoModel.from_pretrained(str(source), trust_remote_code=False, use_safetensors=safe)
    except (OSError, ValueError, KeyError, TypeError, RuntimeError) as e:  # missing or malformed files,
        raise BadInput(
            f"{what} {source}: cannot load the model "  # unknown type, mis-shaped tensors
            f"({load_failure(e, source)})"
        ) from None
    tower = text_tower(model).eval()
    config = getattr(tower, "config", None) or model.config.text_config
    return tokenizer, tower, config.hidden_size


def input_embeddings(choice: Choice) -> torch.Tensor:
    """The text model's input embedding matrix [V, D] (token id t -> row t), float32 on the CPU."""
    if choice.kind == "bow":
        raise BadInput(
            "head.init_embeddings: bag-of-words has no embedding matrix; extract the question ids "
            "with a Hugging Face --text-encoder to start the embeddings from its input embeddings"
        )
    _, tower, _ = load_text_model(choice.source)
    try:
        layer = tower.get_input_embeddings()
    except (AttributeError, NotImplementedError):
        layer = getattr(tower.embeddings, "token_embedding", None)  # CLIP / SigLIP text transformers
    if layer is None:
        raise BadInput(f"head.init_embeddings: cannot find the input embeddings of {type(tower).__name__}")
    return layer.weight.detach().float().cpu()


def last_token(mask: torch.Tensor) -> torch.Tensor:
    """mask [B, L] (1 = real token) -> the position of each row's last real token [B]."""
    positions = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)
    return (positions * mask).argmax(1)


def pool(states: torch.Tensor, mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """states [B, L, D], mask [B, L] -> [B, D]: the mean of the real tokens, the first token, or the last real one."""
    if pooling == "cls":
        return states[:, 0]
    if pooling == "last":
        return states[torch.arange(len(states), device=states.device), last_token(mask)]
    weights = mask.unsqueeze(-1).to(states.dtype)
    return (states * weights).sum(1) / weights.sum(1).clamp(min=1)


class HFEncoder:
    """A Hugging Face text model: texts -> {"pooled": [B, D]}, with `tokens` also "tokens": [B, L, D] and
    "mask": [B, L], with `ids` also "ids": [B, L] int32 (the tokenizer's) and "length": [B] int32."""

    def __init__(
        self,
        choice: Choice,
        pooling: str = "mean",
        max_length: int = 32,
        tokens: bool = False,
        device: str = "cpu",
        ids: bool = False,
    ):
        self.tokenizer, model, self.dim = load_text_model(choice.source)
        self.source = choice.source
        self.model = model.to(device)
        self.pooling, self.max_length, self.tokens, self.ids, self.device = pooling, max_length, tokens, ids, device

    @torch.inference_mode()
    def encode(self, texts: list[str]) -> dict[str, np.ndarray]:
        fixed = self.tokens or self.ids  # stored columns have one width: max_length
        batch = self.tokenizer(
            texts,
            padding="max_length" if fixed else True,
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
        ).to(self.device)
        empty = (
            (batch["attention_mask"].sum(1) == 0).nonzero().flatten().tolist()
            if batch["attention_mask"].numel()
            else list(range(len(texts)))
        )
        if empty:
            raise Unencodable(
                f"text encoder {self.source}: its tokenizer gives no tokens for "
                f"{texts[empty[0]][:60]!r} (an empty vocabulary? A GPT-2 style tokenizer made from "
                f"vocab_file + merges_file is empty under transformers 5: save it with tokenizer.json)"
            )
        with autocast(self.device):
            states = self.model(
                input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
            ).last_hidden_state.float()
        mask = batch["attention_mask"]
        out = {"pooled": pool(states, mask, self.pooling).float().cpu().numpy()}
        if self.tokens:
            out["tokens"] = states.float().cpu().numpy()
            out["mask"] = mask.cpu().numpy().astype(np.uint8)
        if self.ids:
            out["ids"] = batch["input_ids"].cpu().numpy().astype(np.int32)
            out["length"] = mask.sum(1).cpu().numpy().astype(np.int32)
        return out


def load_text_encoder(
    choice: Choice,
    pooling: str,
    max_length: int,
    tokens: bool,
    device: str,
    ids: bool = False,
    words: list[str] | None = None,
):
    """The text encoder of a question entry: bag-of-words (word ids from `words`) or a Hugging Face model."""
    if choice.kind == "bow":
        return BagOfWords(words if ids else None, max_length)
    return HFEncoder(choice, pooling, max_length, tokens, device, ids)
