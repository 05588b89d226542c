"""Stage one: every unique image and question text through the frozen encoders, once, into the cache.

reader (DataLoader workers decode images) -> mapper (encoder forward, inference mode)
-> writer (a background thread writes shards and updates the manifest after each one).
A re-run after a crash or kill resumes after the last finished shard.
"""
from __future__ import annotations

import json
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


def make_plan(recipe: ExtractRecipe, samples=None, allow_download: bool = True, root: Path | None = None) -> Plan:
    if recipe.image.features not in OUTPUTS:
        raise BadInput(f"--features {recipe.image.features!r}: expected pooled, grid or pooled+grid")
    if recipe.text.pooling not in ("mean", "cls"):
        raise BadInput(f"text pooling {recipe.text.pooling!r}: expected mean or cls")
    if samples is None:
        samples = data.load_samples(recipe.dataset, root=root)   # root: parse a file dataset once into the cache
    paths = dict(zip(samples.column("image_id").to_pylist(), samples.column("image_path").to_pylist()))
    image_ids = sorted(paths)
    texts = sorted(set(samples.column("question").to_pylist()), key=lambda t: (len(t), t))
    image_choice = resolve_image(recipe.image.encoder, recipe.image.weights, allow_download=allow_download)
    text_choice = resolve_text(recipe.text.encoder, recipe.text.weights, allow_download=allow_download)
    image_spec = {
        "dataset": data.image_identity(recipe.dataset), "images": data.fingerprint(image_ids),
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
    """Writes shards in a background thread (so the encoder never waits for the disk), then records
    each in the manifest, in order. At most `depth` shards wait in memory."""

    def __init__(self, entry: Entry, manifest: dict, write_fn, depth: int = 2):
        self.entry, self.manifest, self.write_fn, self.depth = entry, manifest, write_fn, depth
        self.pool = ThreadPoolExecutor(max_workers=1)
        self.pending = []
        self.number = len(manifest["shards"])   # shards are numbered in order, whatever their size

    def submit(self, start: int, stop: int, ids: list[str], arrays: dict, skipped: list[str] = ()):
        while self.pending and (self.pending[0].done() or len(self.pending) >= self.depth):
            self.pending.pop(0).result()  # surface errors early; bound the memory held
        self.pending.append(self.pool.submit(self._write, self.number, start, stop, ids, arrays, list(skipped)))
        self.number += 1

    def _write(self, number, start, stop, ids, arrays, skipped):
        ext = "h5" if self.entry.kind == "image" else "parquet"
        name = f"{self.entry.kind}-{number:05d}.{ext}"
        path = self.entry.path / name
        digest = self.write_fn(path, ids, arrays)
        record = {"file": name, "rows": len(ids), "start": start, "stop": stop, "bytes": path.stat().st_size,
                  "sha256": digest}
        if skipped:
            record["skipped"] = skipped
        self.manifest["shards"].append(record)
        self.entry.save_manifest(self.manifest)

    def close(self):
        try:
            for f in self.pending:
                f.result()
        finally:
            self.pool.shutdown(wait=True)


def open_entry(entry: Entry, spec: dict, rows: int, **extra) -> dict:
    """The entry's manifest to continue from (a resumed run), or a new one. Called under the lock:
    leftovers of a killed writer (temporary files, shards the manifest never recorded) are removed."""
    entry.path.mkdir(parents=True, exist_ok=True)
    manifest = None
    if entry.exists():
        manifest = entry.manifest()     # BadInput for another format version: never read as data
        if manifest.get("spec") != json.loads(json.dumps(spec)) or manifest.get("rows") != rows:   # tuples -> lists
            manifest = None
        elif not manifest.get("complete"):
            good = []                   # finished shards, in order, whose files are there and whole
            for s in manifest["shards"]:
                path = entry.path / s["file"]
                if not path.is_file() or (s.get("bytes") is not None and path.stat().st_size != s["bytes"]):
                    break
                good.append(s)
            manifest["shards"] = good
    if manifest is None:
        manifest = entry.new_manifest(spec, rows, **extra)
        entry.save_manifest(manifest)
    if not manifest.get("complete"):
        listed = {s["file"] for s in manifest["shards"]} | {"manifest.json"}
        for p in entry.path.iterdir():
            if p.is_file() and p.name not in listed:
                p.unlink()
    return manifest


def shard_batches(start: int, total: int, shard_size: int, batch_size: int):
    """Index batches that never cross a shard boundary, from position `start` on."""
    for s0 in range(start, total, shard_size):
        s1 = min(s0 + shard_size, total)
        for b0 in range(s0, s1, batch_size):
            yield list(range(b0, min(b0 + batch_size, s1)))


def build_image_encoder(plan: Plan, device: torch.device) -> ImageEncoder:
    r = plan.recipe
    encoder = ImageEncoder(r.image.encoder, plan.image_choice, OUTPUTS[r.image.features]).to(device)
    if device.type == "cuda":
        encoder = encoder.to(memory_format=torch.channels_last)
    return encoder


def encode_images(encoder: ImageEncoder, batch: torch.Tensor, device: torch.device) -> dict[str, torch.Tensor]:
    """uint8 [B, 3, S, S] (pinned on CUDA) -> float16 features on the CPU."""
    with torch.inference_mode(), autocast(device):
        x = batch.to(device, non_blocking=True)
        if device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        out = encoder(x)
        return {k: v.to(torch.float16) for k, v in out.items()}


def extract_images(plan: Plan, root: Path, device: torch.device, wait: bool = True) -> Entry:
    r = plan.recipe
    total = len(plan.image_ids)
    entry = Entry(root, plan.image_key)
    with entry.lock(wait):
        manifest = open_entry(entry, plan.image_spec, total, skipped=[])
        if manifest["complete"]:
            print(f"images: cached ({entry.key}, {manifest['rows']} images)")
            return entry
        start = manifest["shards"][-1]["stop"] if manifest["shards"] else 0
        if start:
            print(f"images: resuming {entry.key} at image {start} of {total} "
                  f"({len(manifest['shards'])} finished shards kept)")
        t0 = time.time()
        encoder = build_image_encoder(plan, device)
        manifest["dim"] = encoder.dim
        cuda = device.type == "cuda"
        loader = torch.utils.data.DataLoader(
            ImageFiles(plan.image_paths, r.image.size), collate_fn=collate, num_workers=r.image.workers,
            batch_sampler=list(shard_batches(start, total, r.shard_size, r.image.batch_size)),
            pin_memory=cuda, prefetch_factor=4 if r.image.workers else None)
        writer = ShardWriter(entry, manifest, write_image_shard)
        outputs = OUTPUTS[r.image.features]
        buf_ids, buf, shard_skipped = [], {k: [] for k in outputs}, []
        shapes = {k: (0, encoder.dim) for k in outputs}
        shard_start, shard_end = start, min(start + r.shard_size, total)
        try:
            with tqdm(total=total, initial=start, desc="images", unit="img", file=sys.stderr) as bar:
                for idx, batch, bad in loader:
                    for i, err in bad:
                        if not r.skip_bad:
                            raise BadInput(f"{plan.image_paths[i]}: cannot read image {plan.image_ids[i]!r} ({err}); "
                                           f"the shards finished before it are kept; "
                                           f"--skip-bad skips unreadable images")
                        shard_skipped.append(plan.image_ids[i])
                    if len(idx):
                        for k, v in encode_images(encoder, batch, device).items():
                            if not torch.isfinite(v).all():
                                raise RuntimeError(f"{k} features overflow float16 for images near "
                                                   f"{plan.image_paths[int(idx[0])]}")
                            v = v.cpu().numpy()
                            shapes[k] = (0,) + v.shape[1:]
                            buf[k].append(v)
                        buf_ids += [plan.image_ids[int(i)] for i in idx]
                    last = max([int(i) for i in idx] + [i for i, _ in bad]) + 1
                    bar.update(len(idx) + len(bad))
                    if last == shard_end:
                        arrays = {k: np.concatenate(v) if v else np.zeros(shapes[k], np.float16)
                                  for k, v in buf.items()}
                        writer.submit(shard_start, shard_end, buf_ids, arrays, shard_skipped)
                        buf_ids, buf, shard_skipped = [], {k: [] for k in buf}, []
                        shard_start, shard_end = shard_end, min(shard_end + r.shard_size, total)
        finally:
            writer.close()
        finish(entry, manifest, t0)
        if manifest["skipped"]:
            print(f"images: skipped {len(manifest['skipped'])} unreadable images (listed in the manifest, "
                  f"`skipped`); train drops their questions")
        return entry


def extract_questions(plan: Plan, root: Path, device: torch.device, wait: bool = True) -> Entry:
    r = plan.recipe
    total = len(plan.texts)
    entry = Entry(root, plan.question_key)
    with entry.lock(wait):
        manifest = open_entry(entry, plan.question_spec, total)
        if manifest["complete"]:
            print(f"questions: cached ({entry.key}, {manifest['rows']} texts)")
            return entry
        start = manifest["shards"][-1]["stop"] if manifest["shards"] else 0
        if start:
            print(f"questions: resuming {entry.key} at text {start} of {total}")
        t0 = time.time()
        encoder = load_text_encoder(plan.text_choice, r.text.pooling, r.text.max_length, r.text.tokens, str(device))
        manifest["dim"] = encoder.dim
        writer = ShardWriter(entry, manifest, write_question_shard)
        try:
            with tqdm(total=total, initial=start, desc="questions", unit="q", file=sys.stderr) as bar:
                for s0 in range(start, total, r.shard_size):
                    s1 = min(s0 + r.shard_size, total)
                    parts = []
                    for b0 in range(s0, s1, r.text.batch_size):   # texts are sorted by length: little padding
                        chunk = plan.texts[b0:min(b0 + r.text.batch_size, s1)]
                        parts.append(encoder.encode(chunk))
                        bar.update(len(chunk))
                    writer.submit(s0, s1, plan.texts[s0:s1], question_arrays(parts))
        finally:
            writer.close()
        finish(entry, manifest, t0)
        return entry


def question_arrays(parts: list[dict]) -> dict[str, np.ndarray]:
    return {k: np.concatenate([p[k] for p in parts]).astype(np.uint8 if k == "mask" else np.float16)
            for k in parts[0]}


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
        pq.write_table(pa.table({"image_id": pa.array(ids, pa.string()), "shard": pa.array(shard, pa.string()),
                                 "row": pa.array(row, pa.int32())}), tmp)
        tmp.replace(entry.path / "index.parquet")
        manifest["skipped"] = sorted(i for s in manifest["shards"] for i in s.get("skipped", []))
    seconds = manifest["timings"].get("seconds", 0) + time.time() - t0
    manifest["timings"].update(seconds=round(seconds, 2), runs=manifest["timings"].get("runs", 0) + 1,
                               rows_per_s=round(manifest["rows"] / seconds, 1) if seconds else None)
    manifest["complete"] = True
    entry.save_manifest(manifest)


# ---------------------------------------------------------------- --dry-run

def dry_run(recipe: ExtractRecipe, root: Path, timed_batches: int = 2) -> dict:
    """Rows, bytes on disk and an estimated time per entry, before any work: a couple of real batches
    are decoded, encoded and written to a temporary shard (not in the cache) and timed."""
    import tempfile

    plan = make_plan(recipe, root=root)
    device = pick_device(recipe.device)
    out = {"device": str(device), "entries": []}
    with tempfile.TemporaryDirectory() as tmp:
        for kind, key, rows in (("image", plan.image_key, len(plan.image_ids)),
                                ("question", plan.question_key, len(plan.texts))):
            entry = Entry(root, key)
            done = 0
            if entry.exists():
                m = entry.manifest()
                done = rows if m.get("complete") else (m["shards"][-1]["stop"] if m.get("shards") else 0)
            todo = rows - done
            if kind == "image":
                sample_rows, seconds, nbytes = _time_images(plan, device, timed_batches, Path(tmp))
            else:
                sample_rows, seconds, nbytes = _time_texts(plan, device, timed_batches, Path(tmp))
            per_row_s, per_row_b = seconds / max(1, sample_rows), nbytes / max(1, sample_rows)
            out["entries"].append({"kind": kind, "key": key, "rows": rows, "rows_to_encode": todo,
                                   "bytes": int(per_row_b * rows), "seconds": round(per_row_s * todo, 1),
                                   "timed_rows": sample_rows, "status": "complete" if todo == 0 else
                                   ("partial" if done else "new")})
    out["plan"] = plan
    return out


def _spread(n: int, k: int) -> list[int]:
    """k positions spread over range(n) (the texts are length-sorted: time short and long ones)."""
    return sorted({int(i) for i in np.linspace(0, n - 1, num=min(n, k))})


def _time_images(plan: Plan, device: torch.device, batches: int, tmp: Path) -> tuple[int, float, int]:
    r = plan.recipe
    encoder = build_image_encoder(plan, device)
    files = ImageFiles(plan.image_paths, r.image.size)
    bs = min(r.image.batch_size, len(files))
    picks = [list(range(s, min(s + bs, len(files)))) for s in _spread(max(1, len(files) - bs + 1), batches + 1)]

    def one(index):
        _, batch, bad = collate([files[i] for i in index])
        if bad and not r.skip_bad:
            raise BadInput(f"{plan.image_paths[bad[0][0]]}: cannot read image ({bad[0][1]}); "
                           f"--skip-bad skips unreadable images")
        feats = encode_images(encoder, batch, device) if len(batch) else {}
        if device.type == "cuda":
            torch.cuda.synchronize()
        return {k: v.cpu().numpy() for k, v in feats.items()}, [plan.image_ids[i] for i in index]

    one(picks[0])                                   # warm-up, not timed
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
    r = plan.recipe
    encoder = load_text_encoder(plan.text_choice, r.text.pooling, r.text.max_length, r.text.tokens, str(device))
    bs = min(r.text.batch_size, len(plan.texts))
    starts = _spread(max(1, len(plan.texts) - bs + 1), batches + 1)
    encoder.encode(plan.texts[starts[0]:starts[0] + bs])  # warm-up
    rows, parts, texts, t = 0, [], [], time.perf_counter()
    for s in starts[1:] or starts:
        chunk = plan.texts[s:s + bs]
        parts.append(encoder.encode(chunk))
        texts += chunk
        rows += len(chunk)
    seconds = time.perf_counter() - t
    path = tmp / "question-sample.parquet"
    write_question_shard(path, texts, question_arrays(parts))
    return rows, seconds, path.stat().st_size


def extract(recipe: ExtractRecipe, root: Path, wait: bool = True) -> Plan:
    """Run stage one for a recipe; returns the plan (keys, counts)."""
    plan = make_plan(recipe, root=root)
    device = pick_device(recipe.device)
    print(f"dataset {recipe.dataset.name}: {plan.samples.num_rows} questions, {len(plan.image_ids)} images, "
          f"{len(plan.texts)} unique question texts")
    print(f"image encoder {recipe.image.encoder} ({plan.image_choice.identity}), "
          f"text encoder {plan.text_choice.identity}, device {device}")
    root.mkdir(parents=True, exist_ok=True)
    extract_images(plan, root, device, wait)
    extract_questions(plan, root, device, wait)
    return plan
