"""Stage one for questions: the unique texts (sorted by length: little padding) through the frozen text
encoder, in batches, into Parquet shards."""
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
    with writing(entry, plan.question_spec, len(plan.texts), recipe.shard_size, wait, "questions",
                 encoder=plan.text_choice.record()) as job:
        if job.complete:
            messages.info(f"questions: cached ({entry.key}, {job.manifest['rows']} texts)")
            return entry
        encoder = encoder or build_text_encoder(plan, device)
        job.manifest["dim"] = encoder.dim
        with shard_writing(job, write_question_shard, "questions", "q") as (writer, bar):
            for number, s0, s1 in job.shards:
                parts = []
                for b0 in range(s0, s1, recipe.text.batch_size):
                    chunk = plan.texts[b0:min(b0 + recipe.text.batch_size, s1)]
                    parts.append(encoder.encode(chunk))
                    bar.update(len(chunk))
                writer.submit(s0, s1, plan.texts[s0:s1], question_arrays(parts), number=number)
    return entry


def build_text_encoder(plan: Plan, device: torch.device):
    text = plan.recipe.text
    return load_text_encoder(plan.text_choice, plan.question_spec.get("pooling"), text.max_length, text.tokens,
                             str(device), text.ids, plan.words)


DTYPES = {"mask": np.uint8, "ids": np.int32, "length": np.int32}     # the rest: float16 features


def question_arrays(parts: list[dict]) -> dict[str, np.ndarray]:
    """The encoder's batches -> one shard's arrays: float16 features, a uint8 mask, int32 ids and lengths."""
    out = {k: np.concatenate([p[k] for p in parts]).astype(DTYPES.get(k, np.float16)) for k in parts[0]}
    for k, v in out.items():
        if v.dtype == np.float16 and not np.isfinite(v).all():
            raise Unencodable(f"{k} question features overflow float16 (values past 65504: are the text "
                              f"model's weights scaled?)")
    return out
