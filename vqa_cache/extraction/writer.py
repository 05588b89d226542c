"""Writing an entry: shards land in a background thread and are recorded in order (ShardWriter); one
process, or the ranks of a torchrun, write an entry's shards under its protocol (writing); then the
index and the complete manifest (finish_entry)."""

from __future__ import annotations

import json
import shutil
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass

from .. import distributed as dist
from .. import messages
from ..cache import Entry
from ..cache.shards import shard_file, write_index
from ..digest import write_file
from ..errors import Unencodable
from ..progress import progress
from .resume import PROGRESS_GLOB, complete_as_is, finished_shard, open_entry, progress_records, remaining_shards


class Progress:
    """One torchrun rank's finished shards: ENTRY/progress-rankR.json, rewritten atomically after each."""

    def __init__(self, entry: Entry, rank: int):
        self.path, self.records = entry.path / f"progress-rank{rank}.json", []

    def add(self, record: dict) -> None:
        self.records.append(record)
        write_file(self.path, json.dumps({"shards": self.records}, indent=1).encode())


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


class ShardWriter:
    """Writes shards in a background thread (so the encoder never waits for the disk), then records
    each in the manifest, in order. At most `depth` shards wait in memory. A failed write (a full disk:
    NoSpace) reaches the main thread at its next submit or at close; the shards queued after it are not
    written, so the manifest's shards stay contiguous and a re-run resumes after the last one.

    Under torchrun (`progress` given) each rank records its shards in its own progress file instead;
    rank 0 writes them into the manifest once every rank is done."""

    def __init__(self, entry: Entry, manifest: dict, write_fn, depth: int = 2, progress: Progress | None = None):
        self.entry, self.manifest, self.write_fn, self.depth = entry, manifest, write_fn, depth
        self.progress = progress
        self.pool = ThreadPoolExecutor(max_workers=1)
        self.pending = []
        self.failed = False
        self.number = len(manifest.get("shards", []))  # shards are numbered in order, whatever their size

    def submit(
        self, start: int, stop: int, ids: list[str], arrays: dict, skipped: list[str] = (), number: int | None = None
    ):
        while self.pending and (self.pending[0].done() or len(self.pending) >= self.depth):
            self.pending.pop(0).result()  # surface errors early; bound the memory held
        if number is not None:  # torchrun: the shard's place in the single-process numbering
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
            record = {
                "file": name,
                "rows": len(ids),
                "start": start,
                "stop": stop,
                "bytes": path.stat().st_size,
                "sha256": digest,
            }
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


@contextmanager
def shard_writing(job: Job, write_shard, label: str, unit: str):
    """(ShardWriter, progress bar) for the job's shards: the writer is closed (its last shards waited for)
    on the way out, inside the bar, so that a write error at close clears the bar too."""
    writer = ShardWriter(job.entry, job.manifest, write_shard, progress=job.progress)
    start = job.shards[0][1] if job.shards and job.progress is None else 0
    total = job.manifest["rows"] if job.progress is None else job.rows
    with progress(
        total=total, initial=start, desc=label, unit=unit, file=sys.stderr, disable=not dist.is_main()
    ) as bar:
        try:
            yield writer, bar
        finally:
            writer.close()


def writing(entry: Entry, spec: dict, rows: int, shard_size: int, wait: bool, label: str, **extra):
    """Open an entry for writing and yield this process's Job; on a clean exit, the entry is complete.

    One process: under the entry lock, each shard recorded in the manifest as it lands; a re-run resumes.
    Under torchrun: rank 0 takes the lock and opens the entry (taking over the shards an interrupted run
    finished) while the others wait; the unfinished shards are dealt out round-robin (rank r takes every
    world-th); each rank writes its own shard files and records them in its progress file; after a barrier
    rank 0 writes the index and the complete manifest. Shard boundaries and numbers are the single-process
    ones, so the entry is the same."""
    if dist.enabled():
        return _writing_ranks(entry, spec, rows, shard_size, wait, label, **extra)
    return _writing_alone(entry, spec, rows, shard_size, wait, label, **extra)


@contextmanager
def _writing_alone(entry: Entry, spec: dict, rows: int, shard_size: int, wait: bool, label: str, **extra):
    done = complete_as_is(entry, spec, rows)
    if done is not None:  # nothing to write: no lock (the cache may be read-only)
        yield Job(entry, done, [], complete=True)
        return
    with entry.lock(wait):
        manifest = open_entry(entry, spec, rows, shard_size, **extra)
        if manifest["complete"]:
            yield Job(entry, manifest, [], complete=True)
            return
        shards = remaining_shards(manifest, rows, shard_size)
        if manifest["shards"]:
            messages.info(
                f"{label}: resuming {entry.key} at {manifest['shards'][-1]['stop']} of {rows} "
                f"({len(manifest['shards'])} finished shards kept)"
            )
        job = Job(entry, manifest, shards, t0=time.time())
        try:
            yield job
        except Unencodable as e:  # it would fail the same way every time: no unfinished entry is left
            shutil.rmtree(entry.path, ignore_errors=True)
            raise Unencodable(f"{e} (the unfinished cache entry {entry.key} was removed)") from None
        finish_entry(entry, manifest, job.t0)


@contextmanager
def _writing_ranks(entry: Entry, spec: dict, rows: int, shard_size: int, wait: bool, label: str, **extra):
    main = dist.is_main()
    with entry.lock(wait) if main else nullcontext():  # one lock holder; the others wait at the broadcast
        state, manifest = None, {}
        if main:
            manifest = open_entry(entry, spec, rows, shard_size, keep_progress=True, **extra)
            listed = progress_records(entry)  # progress-kept.json's, after open_entry
            kept = [
                n for n, _, _ in remaining_shards(manifest, rows, shard_size) if shard_file(entry.kind, n) in listed
            ]
            state = {"complete": bool(manifest["complete"]), "manifest": manifest, "kept": kept}
        state = dist.broadcast(state)
        if state["complete"]:
            yield Job(entry, state["manifest"], [], complete=True)
            dist.barrier()
            return
        todo = [s for s in remaining_shards(state["manifest"], rows, shard_size) if s[0] not in set(state["kept"])]
        done = len(state["manifest"]["shards"]) + len(state["kept"])
        if done:
            messages.info(f"{label}: resuming {entry.key}: {done} finished shards kept, {len(todo)} to encode")
        messages.info(f"{label}: {len(todo)} shards over {dist.world()} processes")
        job = Job(
            entry, manifest, todo[dist.rank() :: dist.world()], progress=Progress(entry, dist.rank()), t0=time.time()
        )
        yield job
        dist.barrier()  # every rank's shards have landed
        if main:
            finish_entry_ranks(entry, manifest, rows, shard_size, job.t0)
        dist.barrier()  # every rank returns with the entry complete


def finish_entry_ranks(entry: Entry, manifest: dict, rows: int, shard_size: int, t0: float) -> None:
    """Rank 0, after every rank wrote its shards: their progress records into the manifest, then finish_entry."""
    records = progress_records(entry)
    for shard in remaining_shards(manifest, rows, shard_size):
        record = finished_shard(entry, records, shard)
        if record is None:
            raise RuntimeError(
                f"{entry.path}: shard {shard[0]} (rows {shard[1]}..{shard[2]}) is missing after "
                f"every rank finished; re-run to resume"
            )
        manifest["shards"].append(record)
    finish_entry(entry, manifest, t0)
    for p in entry.path.glob(PROGRESS_GLOB):
        p.unlink()


def finish_entry(entry: Entry, manifest: dict, t0: float) -> None:
    """Write index.parquet (images), mark the entry complete."""
    if entry.kind == "image":
        write_index(entry.path, manifest["shards"])
        manifest["skipped"] = sorted(i for s in manifest["shards"] for i in s.get("skipped", []))
    seconds = manifest["timings"].get("seconds", 0) + time.time() - t0
    manifest["timings"].update(
        seconds=round(seconds, 2),
        runs=manifest["timings"].get("runs", 0) + 1,
        rows_per_s=round(manifest["rows"] / seconds, 1) if seconds else None,
    )
    manifest["complete"] = True
    entry.save_manifest(manifest)
