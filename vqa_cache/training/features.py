"""The features a stage-two run reads: the cache plan of its recipe, rebuilt without downloading
anything, and the two complete entries it names, in memory (or the images streamed from disk)."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from .. import heads
from ..cache import Entry
from ..cache.plan import Plan, make_plan
from ..cache.reader import ImageStream, check_complete, read_features, read_pooled_questions
from ..cache.shards import IMAGE_DATASETS
from ..device import pick_device
from ..errors import BadInput
from ..recipes import TrainRecipe


class Features(NamedTuple):
    """A run's cached inputs. tensors[kind] = (ids in row order, features): image features pooled
    [N, Di] or grid [N, h*w, Di] float16 on the CPU (as the cache holds them; a batch is made float32), or an
    ImageStream; question features pooled [M, Dq] (a tensor, or SparseRows when they are mostly zeros) or token
    states [M, L, Dq] with padding positions zeroed, float16, or token ids [M, L] int64 (id + 1, 0 = padding)."""

    plan: Plan
    tensors: dict
    cache_keys: dict


def load_features(recipe: TrainRecipe, root: Path, extract_cmd: str, stream: bool | None = None) -> Features:
    """The features of a train recipe from a complete cache; BadInput naming `extract_cmd` (the command that
    makes them) when they are not there. Images are streamed from the shards when `stream` is true (None:
    when images, question features and answer targets together would take more than memory_budget())."""
    need = heads.needs(recipe.head.name)
    plan = make_plan(recipe.features, allow_download=False, root=root)
    entries = {"image": Entry(root, plan.image_key), "question": Entry(root, plan.question_key)}
    manifests = {kind: check_complete(entry, extract_cmd) for kind, entry in entries.items()}
    check_outputs(recipe.head.name, need, manifests["image"]["spec"], manifests["question"]["spec"])
    images = ImageStream(entries["image"], manifests["image"], IMAGE_DATASETS[need["image"]])
    if need["question"] == "pooled":  # (sparse rows when they are mostly zeros: bag-of-words vectors)
        qids, qarr = read_pooled_questions(entries["question"], manifests["question"])
    else:
        qids, qarr = read_features(entries["question"], manifests["question"], need["question"], np.float16)
    questions = torch.from_numpy(qarr) if isinstance(qarr, np.ndarray) else qarr
    if stream is None:  # (the question features are in memory either way: counted as they are held)
        resident = questions.nbytes + target_bytes(plan)
        stream = images.nbytes(2) + resident > memory_budget(pick_device(recipe.device))
    if stream:
        tensors = {"image": (images.ids, images)}
    else:
        ids, arr = read_features(entries["image"], manifests["image"], need["image"], np.float16)
        tensors = {"image": (ids, torch.from_numpy(arr))}
    tensors["question"] = (qids, questions)
    pa.default_memory_pool().release_unused()  # (what Arrow's allocator kept of the tables read)
    return Features(plan, tensors, plan.cache_keys)


def target_bytes(plan: Plan) -> int:
    """What the answer targets of a run take: per question, class ids (int64) and scores (float32) for each
    distinct answer (ten at most in VQA v2), the answer table and the row indices."""
    widest = max(1, int(pc.max(pc.list_value_length(plan.samples.column("answers"))).as_py() or 1))
    return plan.samples.num_rows * (widest * (8 + 4 + 8 + 4 + 2) + 32)


def input_dims(plan: Plan, tensors: dict, need: dict) -> tuple[int, int]:
    """(image_dim, question_dim) of a head that reads `need` (heads.needs) on these features: the features'
    widths, or for token ids the number of embedding rows (the vocabulary size + 1 for padding)."""
    question_dim = tensors["question"][1].shape[-1]
    if need["question"] == "ids":
        question_dim = plan.question_spec["vocab_size"] + 1
    return tensors["image"][1].shape[-1], question_dim


def check_outputs(head: str, need: dict, image_spec: dict, question_spec: dict) -> None:
    """The cache holds what the head reads (heads.needs); else BadInput saying how to extract it."""
    missing, fix = [], []
    if need["image"] not in image_spec["outputs"]:
        missing.append(f"{need['image']} image features (this cache has {'+'.join(image_spec['outputs'])})")
        fix.append(f"--features {need['image']} (or pooled+grid)")
    bow = question_spec.get("encoder") == "bow"
    if need["question"] == "tokens" and not question_spec.get("tokens"):
        missing.append(
            f"question token states (this cache has pooled {'bag-of-words vectors' if bow else 'vectors only'})"
        )
        fix.append(("a Hugging Face --text-encoder and " if bow else "") + "--set text.tokens=true")
    if need["question"] == "ids" and not question_spec.get("ids"):
        missing.append("question token ids (this cache has no ids)")
        fix.append("--set text.ids=true")
    if missing:
        raise BadInput(f"head {head!r} needs {' and '.join(missing)}: extract with {' and '.join(fix)}")


def memory_budget(device: torch.device | None = None) -> int:
    """Bytes that in-memory features may take: $VQA_CACHE_MEMORY_BUDGET (bytes, or with a K/M/G suffix),
    else half the available RAM (and half the free GPU memory when training on a GPU)."""
    env = os.environ.get("VQA_CACHE_MEMORY_BUDGET", "").strip()
    if env:
        mult = {"K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}.get(env[-1].upper(), 1)
        try:
            value = float(env[:-1] if mult > 1 else env) * mult
        except ValueError:
            value = math.nan
        if not (math.isfinite(value) and value > 0):
            raise BadInput(f"VQA_CACHE_MEMORY_BUDGET={env!r}: expected a positive number of bytes, e.g. 8G or 500M")
        return int(value)
    import psutil  # (lazy: only when no budget is given)

    budget = psutil.virtual_memory().available // 2
    if device is not None and device.type == "cuda":
        budget = min(budget, torch.cuda.mem_get_info(device)[0] // 2)
    return int(budget)
