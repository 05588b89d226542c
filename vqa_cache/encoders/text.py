"""Frozen text encoders: a Hugging Face model (pooled, optionally token states) or bag-of-words."""
from __future__ import annotations

import re
import warnings
import zlib
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from ..device import autocast
from ..errors import BadInput
from .weights import Choice

BOW_DIM = 1024
_WORD = re.compile(r"[a-z0-9']+")


class BagOfWords:
    """Hashed unigram + bigram counts, L2-normalized, [B, 1024]. Needs no weights at all."""

    dim = BOW_DIM

    def encode(self, texts: list[str]) -> dict[str, np.ndarray]:
        out = np.zeros((len(texts), BOW_DIM), dtype=np.float32)
        for row, text in enumerate(texts):
            words = _WORD.findall(text.lower())
            for tok in words + [a + " " + b for a, b in zip(words, words[1:])]:
                out[row, zlib.crc32(tok.encode()) % BOW_DIM] += 1.0
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return {"pooled": out / np.maximum(norms, 1e-6)}


@contextmanager
def quiet_loading(report: bool = True):
    """transformers' "Loading weights" progress bar kept out of the logs while a model loads; with
    report=False, its load report (missing / unexpected keys: the caller judges them) too."""
    from transformers.utils import logging     # (lazy: a heavy import, for a Hugging Face model only)

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
                warnings.simplefilter("ignore")     # HF_HUB_DISABLE_PROGRESS_BARS=1 keeps the hub's off, and says so
                logging.enable_progress_bar()


class HFEncoder:
    """A Hugging Face encoder: texts -> {"pooled": [B, D], "tokens": [B, L, D], "mask": [B, L]}."""

    def __init__(self, choice: Choice, pooling: str = "mean", max_length: int = 32,
                 tokens: bool = False, device: str = "cpu"):
        from transformers import AutoModel, AutoTokenizer

        # safetensors whenever the directory has them (a local --text-encoder directory must: check_model_dir)
        safe = True if any(Path(choice.source).glob("*.safetensors")) else None
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(choice.source, trust_remote_code=False)
            with quiet_loading():
                self.model = AutoModel.from_pretrained(choice.source, trust_remote_code=False, use_safetensors=safe)
        except (OSError, ValueError, KeyError, TypeError) as e:  # missing or malformed files, unknown model type
            raise BadInput(f"--text-encoder {choice.source}: cannot load the model "
                           f"({type(e).__name__}: {' '.join(str(e).split())[:200]})") from None
        self.model = self.model.to(device).eval()
        self.dim = self.model.config.hidden_size
        self.pooling, self.max_length, self.tokens, self.device = pooling, max_length, tokens, device

    @torch.inference_mode()
    def encode(self, texts: list[str]) -> dict[str, np.ndarray]:
        batch = self.tokenizer(texts, padding="max_length" if self.tokens else True, truncation=True,
                               max_length=self.max_length, return_tensors="pt").to(self.device)
        with autocast(self.device):
            states = self.model(input_ids=batch["input_ids"],
                                attention_mask=batch["attention_mask"]).last_hidden_state.float()
        mask = batch["attention_mask"].unsqueeze(-1).to(states.dtype)
        if self.pooling == "cls":
            pooled = states[:, 0]
        else:
            pooled = (states * mask).sum(1) / mask.sum(1).clamp(min=1)
        out = {"pooled": pooled.float().cpu().numpy()}
        if self.tokens:
            out["tokens"] = states.float().cpu().numpy()
            out["mask"] = batch["attention_mask"].cpu().numpy().astype(np.uint8)
        return out


def load_text_encoder(choice: Choice, pooling: str, max_length: int, tokens: bool, device: str):
    if choice.kind == "bow":
        return BagOfWords()
    return HFEncoder(choice, pooling, max_length, tokens, device)
