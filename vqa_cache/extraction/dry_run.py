"""`extract --dry-run`: rows, bytes on disk and an estimated time per entry, before any work."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from ..cache import Entry
from ..cache.plan import Plan, make_plan
from ..cache.shards import write_image_shard, write_question_shard
from ..cache.store import first_damage
from ..device import pick_device
from ..encoders.image import ImageFiles, collate
from ..errors import BadInput
from ..recipes import ExtractRecipe
from .images import build_image_encoder, encode_images
from .questions import build_text_encoder, question_arrays


def dry_run(recipe: ExtractRecipe, root: Path, timed_batches: int = 2) -> dict:
    """A couple of real batches are decoded, encoded and written to a temporary shard (not in the cache)
    and timed. Nothing is written under the cache root (a file dataset is parsed without caching the parse).
    Returns {"device", "entries": [{kind, key, rows, rows_to_encode, bytes, seconds, timed_rows, status}],
    "plan"}."""
    plan = make_plan(recipe)
    device = pick_device(recipe.device)
    out: dict = {"device": str(device), "entries": []}
    with tempfile.TemporaryDirectory() as tmp:
        for kind, key, rows, timer in (
            ("image", plan.image_key, len(plan.image_ids), _time_images),
            ("question", plan.question_key, len(plan.texts), _time_texts),
        ):
            done = rows_done(Entry(root, key), rows)
            timed_rows, seconds, nbytes = timer(plan, device, timed_batches, Path(tmp))
            per_row_s, per_row_b = seconds / max(1, timed_rows), nbytes / max(1, timed_rows)
            out["entries"].append(
                {
                    "kind": kind,
                    "key": key,
                    "rows": rows,
                    "rows_to_encode": rows - done,
                    "bytes": int(per_row_b * rows),
                    "seconds": round(per_row_s * (rows - done), 1),
                    "timed_rows": timed_rows,
                    "status": "complete" if done == rows else ("partial" if done else "new"),
                }
            )
    out["plan"] = plan
    return out


def rows_done(entry: Entry, rows: int) -> int:
    """Rows an extract would keep of the entry: all of a complete, whole one, else those of its shards
    before the first damage."""
    if not entry.exists():
        return 0
    manifest = entry.manifest()
    damage = first_damage(entry, manifest)
    if manifest.get("complete") and damage is None:
        return rows
    shards = manifest["shards"] if damage is None else manifest["shards"][: damage[0]]
    return shards[-1]["stop"] if shards else 0


def _spread(n: int, k: int) -> list[int]:
    """k positions spread over range(n) (the texts are length-sorted: time short and long ones)."""
    return sorted({int(i) for i in np.linspace(0, n - 1, num=min(n, k))})


def _time_images(plan: Plan, device: torch.device, batches: int, tmp: Path) -> tuple[int, float, int]:
    """(rows timed, seconds, bytes of their shard) for `batches` image batches (after a warm-up one)."""
    recipe = plan.recipe
    encoder = build_image_encoder(plan, device)
    files = ImageFiles(plan.image_paths, plan.image_choice.preprocess, recipe.image.max_pixels)
    size = min(recipe.image.batch_size, len(files))
    picks = [list(range(s, min(s + size, len(files)))) for s in _spread(max(1, len(files) - size + 1), batches + 1)]

    def one(index):
        _, batch, bad = collate([files[i] for i in index])
        if bad and not recipe.skip_bad:
            raise BadInput(
                f"{plan.image_paths[bad[0][0]]}: cannot read image ({bad[0][1]}); --skip-bad skips unreadable images"
            )
        feats = encode_images(encoder, batch, device) if len(batch) else {}
        if device.type == "cuda":
            torch.cuda.synchronize()
        return {k: v.cpu().numpy() for k, v in feats.items()}, [plan.image_ids[i] for i in index]

    one(picks[0])  # warm-up, not timed
    rows, t, arrays, ids = 0, time.perf_counter(), {}, []
    for index in picks[1:] or picks:
        feats, batch_ids = one(index)
        rows += len(index)
        ids += batch_ids
        for k, v in feats.items():
            arrays.setdefault(k, []).append(v)
    seconds = time.perf_counter() - t
    path = tmp / "image-sample.h5"
    write_image_shard(path, ids, {k: np.concatenate(v) for k, v in arrays.items()})
    return rows, seconds, path.stat().st_size


def _time_texts(plan: Plan, device: torch.device, batches: int, tmp: Path) -> tuple[int, float, int]:
    """(rows timed, seconds, bytes of their shard) for `batches` text batches (after a warm-up one)."""
    encoder = build_text_encoder(plan, device)
    size = min(plan.recipe.text.batch_size, len(plan.texts))
    starts = _spread(max(1, len(plan.texts) - size + 1), batches + 1)
    encoder.encode(plan.texts[starts[0] : starts[0] + size])  # warm-up
    rows, parts, texts, t = 0, [], [], time.perf_counter()
    for s in starts[1:] or starts:
        chunk = plan.texts[s : s + size]
        parts.append(encoder.encode(chunk))
        texts += chunk
        rows += len(chunk)
    seconds = time.perf_counter() - t
    path = tmp / "question-sample.parquet"
    write_question_shard(path, texts, question_arrays(parts))
    return rows, seconds, path.stat().st_size
