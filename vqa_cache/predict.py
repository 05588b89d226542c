"""Use a `train` run on its cache: its best model and any split of the cache's features (`prepare`), and
official-format predictions of them (`write_predictions_of`). A finetune run's split is encoded live, and
one new image and question too, through vqa_cache/model/ (the Model), which builds on this module."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from . import heads, messages, recipes
from .answers import Vocabulary
from .cache import Entry
from .cache.samples import submission_ids
from .device import amp, pick_device
from .digest import check_out_path
from .errors import BadInput
from .rundir import (
    CONFIG,
    cache_keys_of,
    load_checkpoint,
    model_checkpoint,
    predictions_of,
    read_run_config,
    write_predictions,
)
from .submission import write_submission
from .training.batches import batches
from .training.features import load_features
from .training.splits import Split, make_split, with_features
from .training.steps import evaluate


def is_finetune(config: dict) -> bool:
    """Whether a run's config.json is a finetune run's."""
    return config.get("mode") == "finetune" or "finetune" in config["recipe"]


def load_run(run_dir) -> tuple:
    """(recipe, config, checkpoint, head on the CPU in eval mode, vocabulary) of a `train` or `finetune` run
    (a FinetuneRecipe for a finetune run: its checkpoint also holds the trained encoder weights)."""
    run_dir = Path(run_dir)
    config = read_run_config(run_dir)
    try:
        recipe = recipes.build(recipes.FinetuneRecipe if is_finetune(config) else recipes.TrainRecipe, config["recipe"])
    except BadInput as e:
        raise BadInput(f"{run_dir / CONFIG}: {e}") from None
    path = model_checkpoint(run_dir)
    ckpt = load_checkpoint(path)
    h = ckpt["head"]
    if not isinstance(cache_keys_of(ckpt), dict) or not all(k in h for k in heads.registry.KEYS):
        raise BadInput(f"{path}: not a checkpoint of a vqa-cache run (no cache keys or head settings)")
    try:
        model = heads.from_config(h)
        model.load_state_dict(ckpt["model"])
    except BadInput:  # (a ValueError too) an unknown head: its own message
        raise
    except (TypeError, ValueError, RuntimeError) as e:
        raise BadInput(f"{path}: its weights do not fit its head {h} ({type(e).__name__})") from None
    model.eval()
    return recipe, config, ckpt, model, Vocabulary.from_dict(ckpt["vocab"])


def cache_root_for(root: Path, config: dict, keys: dict) -> Path:
    """`root` when it holds the run's entries, else the cache the run was trained on."""
    if all(Entry(root, k).exists() for k in keys.values()):
        return Path(root)
    return Path(config.get("cache_dir", root))


def predict(
    run_dir,
    root: Path,
    split: str | None = None,
    out=None,
    stream: bool | None = None,
    fmt: str = "json",
    prepared_by=None,
) -> dict:
    """Predictions of the run's best model for one split (default: its validation split), written in the
    official results format (fmt "json"), or as a CSV submission (fmt "csv": submission.py); accuracy too
    where the split has answers. `prepared_by(run_dir, root, split, stream)` makes the Prepared: by default
    `prepare` (a train run's cache); vqa_cache.model passes its own, which also encodes a finetune run's
    split live."""
    if fmt not in ("json", "csv"):
        raise BadInput(f"--format {fmt!r}: expected json or csv")
    if out:
        check_out_path(out, "predict --out", directory=False)
    p = (prepared_by or prepare)(run_dir, root, split, stream)
    check_submission(p, root)
    ctx, _ = amp(p.device)
    _, acc, preds, per_type = evaluate(p.model, p.data, p.image, p.question, 1024, len(p.vocab), ctx)
    answered = any(len(a) for a in p.table.column("answers").to_pylist())
    out = Path(out) if out else Path(run_dir) / predictions_of(p.split, fmt)
    out.parent.mkdir(parents=True, exist_ok=True)
    ids, answers = p.table.column("question_id").to_pylist(), [p.vocab.answers[int(i)] for i in preds]
    if fmt == "csv":
        write_submission(out, p.config["recipe"]["features"]["dataset"], p.split, ids, answers)
    else:
        write_predictions(out, ids, answers)
    return {
        "split": p.split,
        "questions": len(p.data),
        "out": str(out),
        "accuracy": round(acc, 6) if answered else None,
        "accuracy_per_type": per_type if answered else None,
    }


def check_submission(p: Prepared, root: Path) -> None:
    """A leaderboard's test split (VQA v2 test2015, VizWiz test) must get a prediction for every question
    of the dataset's split: BadInput naming how many would be missing, before anything is written."""
    cls = recipes.FinetuneRecipe if is_finetune(p.config) else recipes.TrainRecipe
    dataset = recipes.build(cls, p.config["recipe"]).features.dataset
    expected = submission_ids(dataset, p.split, cache_root_for(root, p.config, cache_keys_of(p.config) or {}))
    if expected is None:
        return
    ids, board = expected
    have = set(p.table.column("question_id").to_pylist())
    missing = [q for q in ids if q not in have]
    if missing:
        shown = ", ".join(missing[:3]) + (", ..." if len(missing) > 3 else "")
        raise BadInput(
            f"--split {p.split}: {len(missing)} of the {len(ids)} questions of {dataset.name} split "
            f"{p.split} would have no prediction (e.g. {shown}), and {board} needs them all: they were "
            f"left out of the run's cache (--limit, --image-fraction, --answer-types, --skip-missing) "
            f"or their images were unreadable at extraction; extract and train on a cache with the "
            f"whole split"
        )


class Prepared(NamedTuple):
    """A run's best model and one split of its cache, on the run's device."""

    config: dict  # the run's config.json
    split: str
    table: pa.Table  # the split's samples, those with image features
    data: Split  # their rows into `image` / `question` and answer targets
    image: object  # image features [N, ...] (or an ImageStream)
    question: torch.Tensor  # question features [M, ...]
    model: torch.nn.Module
    vocab: Vocabulary
    device: torch.device


def prepare(run_dir, root: Path, split: str | None = None, stream: bool | None = None) -> Prepared:
    """The `train` run's best model and the features of one split of its cache (default: its validation split)."""
    recipe, config, ckpt, model, vocab = load_run(run_dir)
    if is_finetune(config):
        raise BadInput(f"{run_dir}: a finetune run has no cache to read (vqa_cache.model.prepare encodes it live)")
    root = cache_root_for(root, config, ckpt["cache_keys"])
    plan, tensors, keys = load_features(
        recipe, root, f"vqa-cache extract with the features recorded in {Path(run_dir) / CONFIG}", stream
    )
    if keys != ckpt["cache_keys"]:
        raise BadInput(
            f"{run_dir} was trained on cache {ckpt['cache_keys']}, but its recipe now reads "
            f"{keys} (the dataset or encoders changed): refusing to mix caches"
        )
    split = split or config["splits"][1]
    table = plan.samples
    names = sorted(set(table.column("split").to_pylist()))
    if split not in names:
        raise BadInput(
            f"--split {split!r}: not in this run's cache (it has {', '.join(names)}); "
            f"extract the split together with the training data"
        )
    table, dropped = with_features(table.filter(pc.equal(table["split"], split)), tensors["image"][0])
    if dropped:
        messages.info(
            f"{dropped} questions of {split} have no image features (unreadable at extraction): they get no prediction"
        )
    questions = make_split(table, tensors, vocab)
    device = pick_device(recipe.device)
    image, question = tensors["image"][1], tensors["question"][1].to(device)
    if isinstance(image, torch.Tensor):
        image = image.to(device)
    questions.to(device)
    model.to(device)
    return Prepared(config, split, table, questions, image, question, model, vocab, device)


@torch.no_grad()
def top_answers(p: Prepared, k: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """(scores [N, k] float32, answer ids [N, k] int64): each question's k most probable answers, best first;
    scores are the softmax over the run's answers, as `ask` gives them."""
    ctx, _ = amp(p.device)
    k = min(k, len(p.vocab))
    scores, ids = np.zeros((len(p.data), k), np.float32), np.zeros((len(p.data), k), np.int64)
    p.model.eval()
    for idx, img, q in batches(p.data, p.image, p.question, torch.arange(len(p.data), device=p.device), 1024):
        with ctx:
            logits = p.model(img, q)
        top = logits.float().softmax(-1).topk(k)
        scores[idx.cpu().numpy()], ids[idx.cpu().numpy()] = top.values.cpu().numpy(), top.indices.cpu().numpy()
    return scores, ids
