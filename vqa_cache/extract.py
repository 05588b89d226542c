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
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from . import data
from . import distributed as dist
from .cache import Entry
from .cache.plan import OUTPUTS, Plan, make_plan
from .cache.store import clean_stale, first_damage
from .device import autocast, pick_device
from .digest import fingerprint, write_file
from .cache.shards import shard_file, write_image_shard, write_index, write_question_shard
from .encoders.image import IMAGENET_MEAN, IMAGENET_STD, ImageEncoder, ImageFiles, collate
from .encoders.text import load_text_encoder
from .encoders.weights import Choice, resolve_image, resolve_text
from .errors import BadInput
from .progress import progress
from .recipes import ExtractRecipe

class ShardWriter:
    """Writes shards in a background thread (so the encoder never waits for the disk), then records
    each in the manifest, in order. At most `depth` shards wait in memory. A failed write (a full disk:
    NoSpace) reaches the main thread at its next submit or at close; the shards queued after it are not
    written, so the manifest's shards stay contiguous and a re-run resumes after the last one.

    Under torchrun (`progress` given) each rank records its shards in its own progress file instead;
    rank 0 writes them into the manifest once every rank is done."""

    def __init__(self, entry: Entry, manifest: dict, write_fn, depth: int = 2, progress: "Progress | None" = None):
        self.entry, self.manifest, self.write_fn, self.depth = entry, manifest, write_fn, depth
        self.progress = progress
        self.pool = ThreadPoolExecutor(max_workers=1)
        self.pending = []
        self.failed = False
        self.number = len(manifest.get("shards", []))   # shards are numbered in order, whatever their size

    def submit(self, start: int, stop: int, ids: list[str], arrays: dict, skipped: list[str] = (),
               number: int | None = None):
        while self.pending and (self.pending[0].done() or len(self.pending) >= self.depth):
            self.pending.pop(0).result()  # surface errors early; bound the memory held
        if number is not None:          # torchrun: the shard's place in the single-process numbering
            self.number = number
        self.pending.append(self.pool.submit(self._write, self.number, start, stop, ids, arrays, list(skipped)))
        self.number += 1

    def _write(self, number, start, stop, ids, arrays, skipped):
        if self.failed:
            return
        try:
            name = shard_file(self.entry.kind, number)
            path = self.entry.path / name
            digest = self.write_fn(path, ids, arrays)
            record = {"file": name, "rows": len(ids), "start": start, "stop": stop,
                      "bytes": path.stat().st_size, "sha256": digest}
            if skipped:
                record["skipped"] = skipped
            if self.progress is not None:
                self.progress.add(record)
                return
            self.manifest["shards"].append(record)
            self.entry.save_manifest(self.manifest)
        except BaseException:
            self.failed = True
            raise

    def close(self):
        try:
            for f in self.pending:
                f.result()
        finally:
            self.pool.shutdown(wait=True)


def remaining_shards(manifest: dict, rows: int, shard_size: int) -> list[tuple[int, int, int]]:
    """(number, start, stop) of the shards after the manifest's finished ones: fixed ranges of
    `shard_size` positions from where they end, numbered on. A single process writes them in order;
    under torchrun the ranks share them out, so the shards (and their files) are the same either way."""
    start = manifest["shards"][-1]["stop"] if manifest["shards"] else 0
    first = len(manifest["shards"])
    return [(first + k, s0, min(s0 + shard_size, rows)) for k, s0 in enumerate(range(start, rows, shard_size))]


PROGRESS_GLOB, KEPT = "progress-*.json", "progress-kept.json"


class Progress:
    """One torchrun rank's finished shards: ENTRY/progress-rankR.json, rewritten atomically after each."""

    def __init__(self, entry: Entry, rank: int):
        self.path, self.records = entry.path / f"progress-rank{rank}.json", []

    def add(self, record: dict) -> None:
        self.records.append(record)
        write_file(self.path, json.dumps({"shards": self.records}, indent=1).encode())


def progress_records(entry: Entry) -> dict[str, dict]:
    """Shard records of every progress file in the entry, by file name."""
    out = {}
    for p in sorted(entry.path.glob(PROGRESS_GLOB)):
        try:
            data = json.loads(p.read_text())
        except (OSError, ValueError):
            continue                     # a torn file cannot happen (atomic writes); a foreign one is ignored
        for r in data.get("shards", []) if isinstance(data, dict) else []:
            if isinstance(r, dict) and isinstance(r.get("file"), str):
                out.setdefault(r["file"], r)
    return out


def _whole(entry: Entry, record: dict) -> bool:
    path = entry.path / record["file"]
    return path.is_file() and (record.get("bytes") is None or path.stat().st_size == record["bytes"])


def take_progress(entry: Entry, manifest: dict, rows: int, shard_size: int, keep: bool) -> dict[int, dict]:
    """Fold in the shards that ranks of an interrupted torchrun extraction finished (their progress files):
    those that continue the manifest's shards in order go into it; with `keep` (a torchrun run) the others
    are listed in progress-kept.json and returned by number, else dropped. Under the entry lock."""
    records = progress_records(entry)
    if not records:
        return {}
    valid = {}
    for n, s0, s1 in remaining_shards(manifest, rows, shard_size):
        r = records.get(shard_file(entry.kind, n))
        if r is not None and r.get("start") == s0 and r.get("stop") == s1 and _whole(entry, r):
            valid[n] = r
    moved = False
    for n, _, _ in remaining_shards(manifest, rows, shard_size):
        if n not in valid:
            break
        manifest["shards"].append(valid.pop(n))
        moved = True
    if moved:
        entry.save_manifest(manifest)
    if keep and valid:
        write_file(entry.path / KEPT, json.dumps({"shards": [valid[n] for n in sorted(valid)]}, indent=1).encode())
    for p in entry.path.glob(PROGRESS_GLOB):
        if p.name != KEPT or not (keep and valid):
            p.unlink()
    return valid if keep else {}


def open_entry(entry: Entry, spec: dict, rows: int, shard_size: int | None = None, keep_progress: bool = False,
               **extra) -> dict:
    """The entry's manifest to continue from (a resumed run), or a new one. Called under the lock:
    leftovers of a killed writer (temporary files, shards the manifest never recorded) are removed.
    A damaged complete entry (a shard missing or of the wrong size: first_damage) is repaired: it goes
    back to incomplete with the shards before the damage, and the run resumes from there.
    With `shard_size`, shards finished by the ranks of an interrupted torchrun run are taken over
    (take_progress); `keep_progress`: also those that do not continue the manifest's in order."""
    entry.path.mkdir(parents=True, exist_ok=True)
    manifest = None
    if entry.exists():
        manifest = entry.manifest()     # BadInput for another format version: never read as data
        if manifest.get("spec") != json.loads(json.dumps(spec)) or manifest.get("rows") != rows:   # tuples -> lists
            manifest = None
        elif (damage := first_damage(entry, manifest)) is not None:
            n, problem = damage         # keep the finished shards before it, whose files are there and whole
            if manifest.get("complete"):
                print(f"{entry.kind}s: cache entry {entry.key} is damaged ({problem}); encoding again from "
                      f"row {manifest['shards'][n - 1]['stop'] if n else 0}", file=sys.stderr)
                manifest["complete"] = False
            manifest["shards"] = manifest["shards"][:n]
            entry.save_manifest(manifest)
    if manifest is None:
        manifest = entry.new_manifest(spec, rows, **extra)
        entry.save_manifest(manifest)
    if not manifest.get("complete"):
        kept = take_progress(entry, manifest, rows, shard_size, keep_progress) if shard_size else {}
        listed = {s["file"] for s in manifest["shards"]} | {"manifest.json"}
        listed |= {r["file"] for r in kept.values()} | ({KEPT} if kept else set())
        for p in entry.path.iterdir():
            if p.is_file() and p.name not in listed:
                p.unlink()
    return manifest


def shard_batches(shards, batch_size: int):
    """Index batches that never cross a shard boundary, over `shards` [(number, start, stop)]."""
    for _, s0, s1 in shards:
        for b0 in range(s0, s1, batch_size):
            yield list(range(b0, min(b0 + batch_size, s1)))


def build_image_encoder(plan: Plan, device: torch.device) -> ImageEncoder:
    r = plan.recipe
    encoder = ImageEncoder(r.image.encoder, plan.image_choice, OUTPUTS[r.image.features]).to(device)
    if device.type == "cuda":
        encoder = encoder.to(memory_format=torch.channels_last)
    return encoder


def encode_images(encoder: ImageEncoder, batch: torch.Tensor, device: torch.device) -> dict[str, torch.Tensor]:
    """uint8 [B, 3, S, S] (pinned on CUDA) -> float16 features, still on the device."""
    with torch.inference_mode(), autocast(device):
        x = batch.to(device, non_blocking=True)
        if device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        out = encoder(x)
        return {k: v.to(torch.float16) for k, v in out.items()}


@dataclass
class Job:
    """This process's part of writing one entry: the shards [(number, start, stop)] it encodes."""
    entry: Entry
    manifest: dict
    shards: list
    complete: bool = False
    progress: Progress | None = None
    t0: float = 0.0

    @property
    def rows(self) -> int:
        return sum(s1 - s0 for _, s0, s1 in self.shards)


@contextmanager
def writing(entry: Entry, spec: dict, rows: int, shard_size: int, wait: bool, label: str, **extra):
    """Open an entry for writing and yield this process's Job; on a clean exit, the entry is complete.

    One process: under the entry lock, each shard recorded in the manifest as it lands; a re-run resumes.
    Under torchrun: rank 0 takes the lock and opens the entry (taking over the shards an interrupted run
    finished) while the others wait; the unfinished shards are dealt out round-robin (rank r takes every
    world-th); each rank writes its own shard files and records them in its progress file; after a barrier
    rank 0 writes the index and the complete manifest. Shard boundaries and numbers are the single-process
    ones, so the entry is the same."""
    if not dist.enabled():
        with entry.lock(wait):
            manifest = open_entry(entry, spec, rows, shard_size, **extra)
            if manifest["complete"]:
                yield Job(entry, manifest, [], complete=True)
                return
            shards = remaining_shards(manifest, rows, shard_size)
            if manifest["shards"]:
                print(f"{label}: resuming {entry.key} at {manifest['shards'][-1]['stop']} of {rows} "
                      f"({len(manifest['shards'])} finished shards kept)")
            job = Job(entry, manifest, shards, t0=time.time())
            yield job
            finish(entry, manifest, job.t0)
        return

    main = dist.is_main()
    with (entry.lock(wait) if main else nullcontext()):     # one lock holder; the others wait at the broadcast
        state, manifest = None, {}
        if main:
            manifest = open_entry(entry, spec, rows, shard_size, keep_progress=True, **extra)
            listed = progress_records(entry)                # progress-kept.json's, after open_entry
            kept = [n for n, _, _ in remaining_shards(manifest, rows, shard_size) if shard_file(entry.kind, n) in listed]
            state = {"complete": bool(manifest["complete"]), "manifest": manifest, "kept": kept}
        state = dist.broadcast(state)
        if state["complete"]:
            yield Job(entry, state["manifest"], [], complete=True)
            dist.barrier()
            return
        todo = [s for s in remaining_shards(state["manifest"], rows, shard_size) if s[0] not in set(state["kept"])]
        done = len(state["manifest"]["shards"]) + len(state["kept"])
        if done:
            print(f"{label}: resuming {entry.key}: {done} finished shards kept, {len(todo)} to encode")
        print(f"{label}: {len(todo)} shards over {dist.world()} processes")
        mine = todo[dist.rank()::dist.world()]
        job = Job(entry, manifest, mine, progress=Progress(entry, dist.rank()), t0=time.time())
        yield job
        dist.barrier()                                      # every rank's shards have landed
        if main:
            records = progress_records(entry)
            for n, s0, s1 in remaining_shards(manifest, rows, shard_size):
                r = records.get(shard_file(entry.kind, n))
                if r is None or r.get("start") != s0 or r.get("stop") != s1 or not _whole(entry, r):
                    raise RuntimeError(f"{entry.path}: shard {n} (rows {s0}..{s1}) is missing after every "
                                       f"rank finished; re-run to resume")
                manifest["shards"].append(r)
            finish(entry, manifest, job.t0)
            for p in entry.path.glob(PROGRESS_GLOB):
                p.unlink()
        dist.barrier()                                      # every rank returns with the entry complete


def ready(entry: Entry) -> bool:
    """Is the entry complete and whole (first_damage), so that extract has nothing to do?"""
    return entry.complete() and first_damage(entry, entry.manifest()) is None


def extract_images(plan: Plan, root: Path, device: torch.device, wait: bool = True,
                   encoder: ImageEncoder | None = None) -> Entry:
    r = plan.recipe
    total = len(plan.image_ids)
    entry = Entry(root, plan.image_key)
    with writing(entry, plan.image_spec, total, r.shard_size, wait, "images", skipped=[]) as job:
        if job.complete:
            print(f"images: cached ({entry.key}, {job.manifest['rows']} images)")
            return entry
        encoder = encoder or build_image_encoder(plan, device)
        job.manifest["dim"] = encoder.dim
        cuda = device.type == "cuda"
        loader = torch.utils.data.DataLoader(
            ImageFiles(plan.image_paths, r.image.size, r.image.max_pixels), collate_fn=collate,
            num_workers=r.image.workers, batch_sampler=list(shard_batches(job.shards, r.image.batch_size)),
            pin_memory=cuda, prefetch_factor=4 if r.image.workers else None)
        writer = ShardWriter(entry, job.manifest, write_image_shard, progress=job.progress)
        outputs = OUTPUTS[r.image.features]
        buf_ids, buf, shard_skipped = [], {k: [] for k in outputs}, []
        shapes = {k: (0, encoder.dim) for k in outputs}
        k_shard = 0
        start = job.shards[0][1] if job.shards and job.progress is None else 0
        total_bar = total if job.progress is None else job.rows

        def launch(idx, batch):
            """Encode a batch and queue the copy of its features back to the CPU, without waiting."""
            out = encode_images(encoder, batch, device)
            if not cuda:
                return [plan.image_ids[int(i)] for i in idx], {k: v.cpu() for k, v in out.items()}, None
            host = {k: torch.empty(v.shape, dtype=v.dtype, pin_memory=True).copy_(v, non_blocking=True)
                    for k, v in out.items()}
            done = torch.cuda.Event()
            done.record()
            return [plan.image_ids[int(i)] for i in idx], host, done

        def collect(launched):
            """Wait for a launched batch's copy; check its features and add them to the shard buffer."""
            ids, host, done = launched
            if done is not None:
                done.synchronize()
            for k, v in host.items():
                v = v.numpy()
                if not np.isfinite(v).all():
                    raise RuntimeError(f"{k} features overflow float16 for images near {ids[0]!r}")
                shapes[k] = (0,) + v.shape[1:]
                buf[k].append(v)
            buf_ids.extend(ids)

        with progress(total=total_bar, initial=start, desc="images", unit="img", file=sys.stderr,
                      disable=not dist.is_main()) as bar:
            try:                    # (a write error at writer.close() clears the bar too)
                previous = None     # collected one batch late: its copy overlaps this batch's forward
                for idx, batch, bad in loader:
                    for i, err in bad:
                        if not r.skip_bad:
                            raise BadInput(f"{plan.image_paths[i]}: cannot read image {plan.image_ids[i]!r} ({err}); "
                                           f"the shards finished before it are kept; "
                                           f"--skip-bad skips unreadable images")
                        shard_skipped.append(plan.image_ids[i])
                    current = launch(idx, batch) if len(idx) else None
                    if previous is not None:
                        collect(previous)
                    previous = current
                    last = max([int(i) for i in idx] + [i for i, _ in bad]) + 1
                    bar.update(len(idx) + len(bad))
                    number, shard_start, shard_end = job.shards[k_shard]
                    if last == shard_end:
                        if previous is not None:
                            collect(previous)
                            previous = None
                        arrays = {k: np.concatenate(v) if v else np.zeros(shapes[k], np.float16)
                                  for k, v in buf.items()}
                        writer.submit(shard_start, shard_end, buf_ids, arrays, shard_skipped, number=number)
                        buf_ids, buf, shard_skipped = [], {k: [] for k in buf}, []
                        k_shard += 1
            finally:
                writer.close()
    if dist.is_main() and job.manifest.get("skipped"):
        print(f"images: skipped {len(job.manifest['skipped'])} unreadable images (listed in the manifest, "
              f"`skipped`); train drops their questions")
    return entry


def extract_questions(plan: Plan, root: Path, device: torch.device, wait: bool = True, encoder=None) -> Entry:
    r = plan.recipe
    total = len(plan.texts)
    entry = Entry(root, plan.question_key)
    with writing(entry, plan.question_spec, total, r.shard_size, wait, "questions") as job:
        if job.complete:
            print(f"questions: cached ({entry.key}, {job.manifest['rows']} texts)")
            return entry
        encoder = encoder or build_text_encoder(plan, device)
        job.manifest["dim"] = encoder.dim
        writer = ShardWriter(entry, job.manifest, write_question_shard, progress=job.progress)
        start = job.shards[0][1] if job.shards and job.progress is None else 0
        with progress(total=total if job.progress is None else job.rows, initial=start, desc="questions",
                      unit="q", file=sys.stderr, disable=not dist.is_main()) as bar:
            try:
                for number, s0, s1 in job.shards:
                    parts = []
                    for b0 in range(s0, s1, r.text.batch_size):   # texts are sorted by length: little padding
                        chunk = plan.texts[b0:min(b0 + r.text.batch_size, s1)]
                        parts.append(encoder.encode(chunk))
                        bar.update(len(chunk))
                    writer.submit(s0, s1, plan.texts[s0:s1], question_arrays(parts), number=number)
            finally:
                writer.close()
    return entry


def build_text_encoder(plan: Plan, device: torch.device):
    r = plan.recipe
    return load_text_encoder(plan.text_choice, r.text.pooling, r.text.max_length, r.text.tokens, str(device))


def question_arrays(parts: list[dict]) -> dict[str, np.ndarray]:
    return {k: np.concatenate([p[k] for p in parts]).astype(np.uint8 if k == "mask" else np.float16)
            for k in parts[0]}


def finish(entry: Entry, manifest: dict, t0: float) -> None:
    """Write index.parquet (images), mark the entry complete."""
    if entry.kind == "image":
        write_index(entry.path, manifest["shards"])
        manifest["skipped"] = sorted(i for s in manifest["shards"] for i in s.get("skipped", []))
    seconds = manifest["timings"].get("seconds", 0) + time.time() - t0
    manifest["timings"].update(seconds=round(seconds, 2), runs=manifest["timings"].get("runs", 0) + 1,
                               rows_per_s=round(manifest["rows"] / seconds, 1) if seconds else None)
    manifest["complete"] = True
    entry.save_manifest(manifest)


# ---------------------------------------------------------------- --dry-run

def dry_run(recipe: ExtractRecipe, root: Path, timed_batches: int = 2) -> dict:
    """Rows, bytes on disk and an estimated time per entry, before any work: a couple of real batches
    are decoded, encoded and written to a temporary shard (not in the cache) and timed. Nothing is
    written under the cache root (a file dataset is parsed without caching the parse)."""
    import tempfile

    plan = make_plan(recipe)
    device = pick_device(recipe.device)
    out = {"device": str(device), "entries": []}
    with tempfile.TemporaryDirectory() as tmp:
        for kind, key, rows in (("image", plan.image_key, len(plan.image_ids)),
                                ("question", plan.question_key, len(plan.texts))):
            entry = Entry(root, key)
            done = 0
            if entry.exists():
                m = entry.manifest()
                damage = first_damage(entry, m)
                shards = m["shards"] if damage is None else m["shards"][:damage[0]]
                done = rows if m.get("complete") and damage is None else (shards[-1]["stop"] if shards else 0)
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
    files = ImageFiles(plan.image_paths, r.image.size, r.image.max_pixels)
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
    if dist.init():
        dist.quiet_others()
    if dist.is_main():
        clean_stale(root)               # lock files and staging folders of killed writers
    with dist.main_first():             # rank 0 downloads weights and parses the dataset; the others read them
        plan = make_plan(recipe, root=root)
    device = dist.device(pick_device(recipe.device).type)
    if dist.enabled():
        keys = dist.all_gather((plan.image_key, plan.question_key))
        if len(set(keys)) > 1:
            raise BadInput(f"the ranks resolved different cache keys {sorted(set(keys))}: give every node the same "
                           f"--cache-dir, dataset and weights (e.g. --weights pretrained once they are downloaded)")
    print(f"dataset {recipe.dataset.name}: {plan.samples.num_rows} questions, {len(plan.image_ids)} images, "
          f"{len(plan.texts)} unique question texts")
    ident = plan.text_choice.identity
    text = "bag-of-words" if plan.text_choice.kind == "bow" else \
        f"{recipe.text.encoder} ({ident[:20] + '...' if ident.startswith('dir:') else ident})"
    print(f"image encoder {recipe.image.encoder} ({plan.image_choice.identity}), text encoder {text}, device {device}")
    # build (and so check) the encoders before any entry is created: bad weights leave nothing behind
    image_encoder = None if ready(Entry(root, plan.image_key)) else build_image_encoder(plan, device)
    text_encoder = None if ready(Entry(root, plan.question_key)) else build_text_encoder(plan, device)
    extract_images(plan, root, device, wait, image_encoder)
    extract_questions(plan, root, device, wait, text_encoder)
    return plan
