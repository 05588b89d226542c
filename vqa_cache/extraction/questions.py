"""Stage one for questions: the unique texts through the frozen text encoder, in batches, into Parquet
shards. A Hugging Face model pads each batch to its longest text: a shard's texts are encoded in order of
token length, in batches as large as a batch_size x max_length token budget allows, and written back in
the plan's order."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .. import messages
from ..cache import Entry
from ..cache.plan import Plan
from ..cache.shards import write_question_shard
from ..encoders.text import load_text_encoder
from ..errors import Unencodable
from .writer import shard_writing, writing


def extract_questions(plan: Plan, root: Path, device: torch.device, wait: bool = True, encoder=None) -> Entry:
    """Write (or finish, or find complete) the plan's question entry; returns it."""
    recipe = plan.recipe
    entry = Entry(root, plan.question_key)
    with writing(
        entry,
        plan.question_spec,
        len(plan.texts),
        recipe.shard_size,
        wait,
        "questions",
        encoder=plan.text_choice.record(),
    ) as job:
        if job.complete:
            messages.info(f"questions: cached ({entry.key}, {job.manifest['rows']} texts)")
            return entry
        encoder = encoder or build_text_encoder(plan, device)
        job.manifest["dim"] = encoder.dim
        with shard_writing(job, write_question_shard, "questions", "q") as (writer, bar):
            for number, s0, s1 in job.shards:
                texts = plan.texts[s0:s1]
                order, cuts = length_batches(encoder, texts, recipe.text.batch_size)
                parts = []
                for b0, b1 in zip(cuts, cuts[1:]):
                    parts.append(encoder.encode([texts[i] for i in order[b0:b1]]))
                    bar.update(b1 - b0)
                arrays = question_arrays(parts)
                back = np.empty_like(order)
                back[order] = np.arange(len(order))  # rows in the plan's order again
                writer.submit(s0, s1, texts, {k: v[back] for k, v in arrays.items()}, number=number)
    return entry


def length_batches(encoder, texts: list[str], batch_size: int) -> tuple[np.ndarray, list[int]]:
    """(an order of `texts`, the batch boundaries in it). A Hugging Face model padding each batch to its
    longest text: the texts sorted by token length, and batches of up to batch_size x max_length tokens
    once padded (short texts go in larger batches, never more than 4 x batch_size). Otherwise (fixed-width
    token columns, bag-of-words): the texts as they are, in batches of batch_size."""
    dynamic = getattr(encoder, "tokenizer", None) is not None and not (encoder.tokens or encoder.ids)
    if not dynamic:
        return np.arange(len(texts)), list(range(0, len(texts), batch_size)) + [len(texts)]
    ids = encoder.tokenizer(texts, truncation=True, max_length=encoder.max_length)["input_ids"]
    lengths = np.array([len(x) for x in ids])
    order = np.argsort(lengths, kind="stable")
    budget, cuts, start = batch_size * encoder.max_length, [0], 0
    for k in range(1, len(order) + 1):
        size = k - start
        if k == len(order) or size >= 4 * batch_size or (size + 1) * lengths[order[k]] > budget:
            cuts.append(k)
            start = k
    return order, cuts


def build_text_encoder(plan: Plan, device: torch.device):
    text = plan.recipe.text
    return load_text_encoder(
        plan.text_choice,
        plan.question_spec.get("pooling"),
        text.max_length,
        text.tokens,
        str(device),
        text.ids,
        plan.words,
    )


DTYPES = {"mask": np.uint8, "ids": np.int32, "length": np.int32}  # the rest: float16 features


def question_arrays(parts: list[dict]) -> dict[str, np.ndarray]:
    """The encoder's batches -> one shard's arrays: float16 features, a uint8 mask, int32 ids and lengths."""
    out = {k: np.concatenate([p[k] for p in parts]).astype(DTYPES.get(k, np.float16)) for k in parts[0]}
    for k, v in out.items():
        if v.dtype == np.float16 and not np.isfinite(v).all():
            raise Unencodable(
                f"{k} question features overflow float16 (values past 65504: are the text model's weights scaled?)"
            )
    return out
