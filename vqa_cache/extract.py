"""Stage one: every unique image and question text through the frozen encoders, once, into the cache.

reader (DataLoader workers decode images) -> mapper (encoder forward, inference mode)
-> writer (a background thread writes shards and updates the manifest after each one).
A re-run after a crash or kill resumes after the last finished shard.
"""
from __future__ import annotations

import sys
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from . import data
from .cache import Entry, entry_key
from .cache.shards import write_image_shard, write_question_shard
from .encoders.image import IMAGENET_MEAN, IMAGENET_STD, ImageEncoder, ImageFiles, collate
from .encoders.text import load_text_encoder
from .encoders.weights import Choice, resolve_image, resolve_text
from .errors import BadInput
from .recipes import ExtractRecipe

OUTPUTS = {"pooled": ("pooled",), "grid": ("grid",), "pooled+grid": ("pooled", "grid")}


@dataclass
class Plan:
    """What stage one will compute, and the cache keys it goes under. Stage two rebuilds the same plan
    (without downloading anything) to find the entries it reads."""
    recipe: ExtractRecipe
    samples: object                 # pyarrow samples table
    image_ids: list[str]            # unique, sorted
    image_paths: list[str]
    texts: list[str]                # unique question texts, sorted by length (less padding)
    image_choice: Choice
    text_choice: Choice
    image_spec: dict
    question_spec: dict

    @property
    def image_key(self) -> str:
        return entry_key("image", self.image_spec)

    @property
    def question_key(self) -> str:
        return entry_key("question", self.question_spec)


def make_plan(recipe: ExtractRecipe, samples=None, allow_download: bool = True) -> Plan:
    if recipe.image.features not in OUTPUTS:
        raise BadInput(f"--features {recipe.image.features!r}: expected pooled, grid or pooled+grid")
    if recipe.text.pooling not in ("mean", "cls"):
        raise BadInput(f"text pooling {recipe.text.pooling!r}: expected mean or cls")
    if samples is None:
        samples = data.load_samples(recipe.dataset)
    paths = dict(zip(samples.column("image_id").to_pylist(), samples.column("image_path").to_pylist()))
    image_ids = sorted(paths)
    texts = sorted(set(samples.column("question").to_pylist()), key=lambda t: (len(t), t))
    image_choice = resolve_image(recipe.image.encoder, recipe.image.weights, allow_download=allow_download)
    text_choice = resolve_text(recipe.text.encoder, recipe.text.weights, allow_download=allow_download)
    image_spec = {
        "dataset": data.identity(recipe.dataset), "images": data.fingerprint(image_ids),
        "encoder": recipe.image.encoder, "weights": image_choice.identity, "size": recipe.image.size,
        "resize": "bilinear-square", "mean": IMAGENET_MEAN, "std": IMAGENET_STD,
        "outputs": list(OUTPUTS[recipe.image.features]), "dtype": "float16",
    }
    question_spec = {"questions": data.fingerprint(texts), "weights": text_choice.identity, "dtype": "float16"}
    if text_choice.kind != "bow":
        question_spec.update(encoder=recipe.text.encoder, pooling=recipe.text.pooling,
                             max_length=recipe.text.max_length, tokens=recipe.text.tokens)
    else:
        question_spec.update(encoder="bow")
    return Plan(recipe, samples, image_ids, [paths[i] for i in image_ids], texts,
                image_choice, text_choice, image_spec, question_spec)


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise BadInput("--device cuda: no CUDA device is available here")
    if name not in ("cpu", "cuda"):
        raise BadInput(f"--device {name!r}: expected auto, cpu or cuda")
    return torch.device(name)


def autocast(device: torch.device):
    """bfloat16 autocast on GPUs that have it, float16 on older ones, nothing on the CPU."""
    if device.type != "cuda":
        return nullcontext()
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast("cuda", dtype=dtype)


class ShardWriter:
    """Writes shards in a background thread, then records each in the manifest (in order)."""

    def __init__(self, entry: Entry, manifest: dict, write_fn):
        self.entry, self.manifest, self.write_fn = entry, manifest, write_fn
        self.pool = ThreadPoolExecutor(max_workers=1)
        self.pending = []

    def submit(self, number: int, start: int, stop: int, ids: list[str], arrays: dict):
        for f in [f for f in self.pending if f.done()]:
            f.result()  # surface errors early
            self.pending.remove(f)
        self.pending.append(self.pool.submit(self._write, number, start, stop, ids, arrays))

    def _write(self, number, start, stop, ids, arrays):
        ext = "h5" if self.entry.kind == "image" else "parquet"
        name = f"{self.entry.kind}-{number:05d}.{ext}"
        digest = self.write_fn(self.entry.path / name, ids, arrays)
        self.manifest["shards"].append({"file": name, "rows": len(ids), "start": start, "stop": stop,
                                        "sha256": digest})
        self.entry.save_manifest(self.manifest)

    def close(self):
        try:
            for f in self.pending:
                f.result()
        finally:
            self.pool.shutdown(wait=True)


def open_entry(entry: Entry, spec: dict, rows: int, **extra) -> dict:
    """The entry's manifest to continue from (a resumed run), or a new one."""
    entry.path.mkdir(parents=True, exist_ok=True)
    if entry.exists():
        manifest = entry.manifest()
        if manifest.get("spec") == spec and manifest.get("rows") == rows:
            # keep only shards whose files are really there, in order
            good = []
            for s in manifest["shards"]:
                if not (entry.path / s["file"]).is_file():
                    break
                good.append(s)
            manifest["shards"] = good
            return manifest
    for stale in entry.path.glob("*.tmp*"):
        stale.unlink()
    manifest = entry.new_manifest(spec, rows, **extra)
    entry.save_manifest(manifest)
    return manifest


def shard_batches(start: int, total: int, shard_size: int, batch_size: int):
    """Index batches that never cross a shard boundary, from position `start` on."""
    for s0 in range(start, total, shard_size):
        s1 = min(s0 + shard_size, total)
        for b0 in range(s0, s1, batch_size):
            yield list(range(b0, min(b0 + batch_size, s1)))


def extract_images(plan: Plan, root: Path, device: torch.device, wait: bool = True) -> Entry:
    r = plan.recipe
    entry = Entry(root, plan.image_key)
    with entry.lock(wait):
        manifest = open_entry(entry, plan.image_spec, len(plan.image_ids), skipped=[])
        if manifest["complete"]:
            print(f"images: cached ({entry.key}, {manifest['rows']} images)")
            return entry
        start = manifest["shards"][-1]["stop"] if manifest["shards"] else 0
        if start:
            print(f"images: resuming {entry.key} at image {start} of {len(plan.image_ids)}")
        t0 = time.time()
        encoder = ImageEncoder(r.image.encoder, plan.image_choice, OUTPUTS[r.image.features]).to(device)
        if device.type == "cuda":
            encoder = encoder.to(memory_format=torch.channels_last)
        manifest["dim"] = encoder.dim
        cuda = device.type == "cuda"
        loader = torch.utils.data.DataLoader(
            ImageFiles(plan.image_paths, r.image.size), collate_fn=collate, num_workers=r.image.workers,
            batch_sampler=list(shard_batches(start, len(plan.image_ids), r.shard_size, r.image.batch_size)),
            pin_memory=cuda, prefetch_factor=4 if r.image.workers else None,
            persistent_workers=False)
        writer = ShardWriter(entry, manifest, write_image_shard)
        skipped = set(manifest.get("skipped", []))
        buf_ids, buf = [], {k: [] for k in OUTPUTS[r.image.features]}
        shard_start = start
        try:
            with tqdm(total=len(plan.image_ids), initial=start, desc="images", unit="img", file=sys.stderr) as bar:
                for idx, batch, bad in loader:
                    for i, err in bad:
                        if not r.skip_bad:
                            raise BadInput(f"{plan.image_paths[i]}: cannot read image ({err}); finished shards "
                                           f"are kept; --skip-bad skips unreadable images")
                        skipped.add(plan.image_ids[i])
                    if len(idx):
                        with torch.inference_mode(), autocast(device):
                            x = batch.to(device, non_blocking=True)
                            if cuda:
                                x = x.contiguous(memory_format=torch.channels_last)
                            out = encoder(x)
                        for k, v in out.items():
                            v16 = v.to(torch.float16)
                            if not torch.isfinite(v16).all():
                                raise RuntimeError(f"{k} features overflow float16 for images near "
                                                   f"{plan.image_paths[int(idx[0])]}")
                            buf[k].append(v16.cpu().numpy())
                        buf_ids += [plan.image_ids[int(i)] for i in idx]
                    last = max([int(i) for i in idx] + [i for i, _ in bad]) + 1
                    bar.update(len(idx) + len(bad))
                    if last % r.shard_size == 0 or last == len(plan.image_ids):
                        number = shard_start // r.shard_size
                        arrays = {k: np.concatenate(v) if v else np.zeros((0, encoder.dim), np.float16)
                                  for k, v in buf.items()}
                        manifest["skipped"] = sorted(skipped)
                        writer.submit(number, shard_start, last, buf_ids, arrays)
                        buf_ids, buf = [], {k: [] for k in buf}
                        shard_start = last
        finally:
            writer.close()
        manifest["skipped"] = sorted(skipped)
        finish(entry, manifest, t0)
        if skipped:
            print(f"images: skipped {len(skipped)} unreadable images (listed in the manifest)")
        return entry


def extract_questions(plan: Plan, root: Path, device: torch.device, wait: bool = True) -> Entry:
    r = plan.recipe
    entry = Entry(root, plan.question_key)
    with entry.lock(wait):
        manifest = open_entry(entry, plan.question_spec, len(plan.texts))
        if manifest["complete"]:
            print(f"questions: cached ({entry.key}, {manifest['rows']} texts)")
            return entry
        start = manifest["shards"][-1]["stop"] if manifest["shards"] else 0
        t0 = time.time()
        encoder = load_text_encoder(plan.text_choice, r.text.pooling, r.text.max_length, r.text.tokens, str(device))
        manifest["dim"] = encoder.dim
        writer = ShardWriter(entry, manifest, write_question_shard)
        try:
            with tqdm(total=len(plan.texts), initial=start, desc="questions", unit="q", file=sys.stderr) as bar:
                for s0 in range(start, len(plan.texts), r.shard_size):
                    s1 = min(s0 + r.shard_size, len(plan.texts))
                    parts = []
                    for b0 in range(s0, s1, r.text.batch_size):
                        chunk = plan.texts[b0:min(b0 + r.text.batch_size, s1)]
                        parts.append(encoder.encode(chunk))
                        bar.update(len(chunk))
                    arrays = {k: np.concatenate([p[k] for p in parts]).astype(np.float16 if k != "mask" else np.uint8)
                              for k in parts[0]}
                    writer.submit(s0 // r.shard_size, s0, s1, plan.texts[s0:s1], arrays)
        finally:
            writer.close()
        finish(entry, manifest, t0)
        return entry


def finish(entry: Entry, manifest: dict, t0: float) -> None:
    """Write index.parquet (images), mark the entry complete."""
    if entry.kind == "image":
        import pyarrow as pa
        import pyarrow.parquet as pq
        from .cache.shards import read_shard_ids
        ids, shard, row = [], [], []
        for s in manifest["shards"]:
            shard_ids = read_shard_ids(entry.path / s["file"])
            ids += shard_ids
            shard += [s["file"]] * len(shard_ids)
            row += list(range(len(shard_ids)))
        tmp = entry.path / "index.parquet.tmp"
        pq.write_table(pa.table({"image_id": ids, "shard": shard, "row": pa.array(row, pa.int32())}), tmp)
        tmp.replace(entry.path / "index.parquet")
    manifest["timings"]["seconds"] = round(manifest["timings"].get("seconds", 0) + time.time() - t0, 2)
    manifest["complete"] = True
    entry.save_manifest(manifest)


def extract(recipe: ExtractRecipe, root: Path, wait: bool = True) -> Plan:
    """Run stage one for a recipe; returns the plan (keys, counts)."""
    plan = make_plan(recipe)
    device = pick_device(recipe.device)
    print(f"dataset {recipe.dataset.name}: {plan.samples.num_rows} questions, {len(plan.image_ids)} images, "
          f"{len(plan.texts)} unique question texts")
    print(f"image encoder {recipe.image.encoder} ({plan.image_choice.identity}), "
          f"text encoder {plan.text_choice.identity}, device {device}")
    root.mkdir(parents=True, exist_ok=True)
    extract_images(plan, root, device, wait)
    extract_questions(plan, root, device, wait)
    return plan
