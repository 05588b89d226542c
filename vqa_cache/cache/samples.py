"""The dataset entry: a file dataset's parsed samples table, kept in the cache so that the annotation
files are parsed once (ROOT/dataset/<key>/samples.parquet, keyed by the files' fingerprints and the
adapter version). It is only a cache of those files: an entry that fails its checks is parsed again.

A dataset that stores its images (hf:, data.EXPORT_KINDS) is parsed under the entry's lock into the staged
entry: the image bytes its parse exports are written next to samples.parquet (images/, counted in the
manifest's `exported`), and its rows' relative image paths point there."""

from __future__ import annotations

import os
import shutil
import time
from contextlib import contextmanager
from pathlib import Path

import pyarrow as pa

from .. import data, messages
from ..digest import sha256_file
from ..errors import BadInput
from ..recipes import DatasetSettings
from .shards import read_parquet, write_table
from .store import Entry, entry_key

SAMPLES_FILE = "samples.parquet"
# datasets whose unanswered test split is scored on a leaderboard that needs a prediction for every question
LEADERBOARDS = {"vqa2": "EvalAI's VQA v2 challenge (test-dev and test-std)", "vizwiz": "EvalAI's VizWiz challenge"}


def load_samples(dataset: DatasetSettings, root: Path | None = None) -> pa.Table:
    """data.load_samples, where a file dataset (or one that exports its images) is parsed once into a
    dataset entry under the cache `root` (without a root: as data.load_samples does)."""
    if root is None:
        return data.load_samples(dataset)
    data.check_settings(dataset)
    src = data.source(dataset)
    if not (src.files or src.exports):
        return data.samples_from(src.parse(dataset), dataset, src)
    table, entry = parse_once(src, dataset, Path(root))
    return data.samples_from(table, dataset, src, exported=entry.path)


def parse_once(src: data.Source, dataset: DatasetSettings, root: Path) -> tuple[pa.Table, Entry]:
    """(src.parse, the dataset entry it is kept in): parsed once, then read back. One that fails
    read_samples' checks (a changed, truncated or unreadable samples.parquet, an exported file gone) is
    parsed again and replaced, with a note."""
    spec = {"identity": src.identity(dataset)}
    entry = Entry(root, entry_key("dataset", spec))
    table = read_samples(entry)
    if table is not None:
        return table, entry
    if entry.path.exists():
        messages.warning(
            f"dataset {dataset.name}: cache entry {entry.key} is damaged (samples.parquet changed since it "
            f"was written, or unreadable, or a file it exported is missing); parsing the dataset again"
        )
    t0, wrote = time.time(), ""
    if src.exports:  # its parse writes what it exports: into the staged entry, under the lock
        with entry.lock():
            table = read_samples(entry)  # (another process may have made it meanwhile)
            if table is None:
                with staged(entry) as folder:
                    export = data.Exports(folder)
                    table = src.parse(dataset, export)  # bad input fails here: the staged folder goes
                    save_samples(
                        folder,
                        entry,
                        spec,
                        table,
                        time.time() - t0,
                        exported={"files": export.files, "bytes": export.bytes},
                    )
                wrote = f", wrote {export.files} images as stored ({export.bytes / 2**20:.1f} MiB)"
    else:
        table = src.parse(dataset)  # bad input fails here, before anything is written
        with entry.lock():
            if read_samples(entry) is None:
                with staged(entry) as folder:
                    save_samples(folder, entry, spec, table, time.time() - t0)
    messages.info(
        f"dataset {dataset.name}: parsed {table.num_rows} questions in {time.time() - t0:.1f}s{wrote} "
        f"(cached as {entry.key})"
    )
    return table, entry


@contextmanager
def staged(entry: Entry):
    """A private folder to write the entry into (under its lock, which the caller holds), renamed into
    place when the block ends without an error and removed if it does not: never a half-written entry.
    The folders of killed writers (ROOT/.tmp/KEY.PID) are removed first."""
    staging = entry.root / ".tmp"
    for stale in staging.glob(f"{entry.key}.*"):  # a killed writer's (we hold the lock)
        shutil.rmtree(stale, ignore_errors=True)
    tmp = staging / f"{entry.key}.{os.getpid()}"
    tmp.mkdir(parents=True)
    try:
        yield tmp
        if entry.path.exists():
            shutil.rmtree(entry.path)  # an unreadable or stale entry, under our lock
        entry.path.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, entry.path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            staging.rmdir()
        except OSError:
            pass  # another writer's folder is still there


def save_samples(folder: Path, entry: Entry, spec: dict, table: pa.Table, seconds: float, **extra) -> None:
    """samples.parquet and a complete manifest (with `extra`) of `entry`, written into `folder`."""
    digest = write_table(folder / SAMPLES_FILE, table)
    staged_entry = Entry(entry.root, entry.key)
    staged_entry.path = folder
    manifest = staged_entry.new_manifest(spec, table.num_rows, **extra)
    manifest.update(
        complete=True,
        timings={"seconds": round(seconds, 2)},
        shards=[
            {
                "file": SAMPLES_FILE,
                "rows": table.num_rows,
                "start": 0,
                "stop": table.num_rows,
                "bytes": (folder / SAMPLES_FILE).stat().st_size,
                "sha256": digest,
            }
        ],
    )
    staged_entry.save_manifest(manifest)


def read_samples(entry: Entry) -> pa.Table | None:
    """The samples table of a complete dataset entry whose samples.parquet has the size and sha256 its
    manifest recorded (the file is small: checked on every read) and whose exported files are all there
    (their relative image paths), or None (missing, incomplete, changed, unreadable)."""
    try:
        if not entry.complete():
            return None
        manifest = entry.manifest()
        record = next((s for s in manifest.get("shards", []) if s.get("file") == SAMPLES_FILE), {})
        path = entry.path / SAMPLES_FILE
        if path.stat().st_size != record.get("bytes") or sha256_file(path, memo=False) != record.get("sha256"):
            return None
        table = read_parquet(path)
        if table.schema != data.SCHEMA or table.num_rows != manifest.get("rows"):
            return None
        if manifest.get("exported") and not all(
            (entry.path / p).is_file() for p in data.unique(table, "image_path") if not os.path.isabs(p)
        ):
            return None
        return table
    except (BadInput, OSError, pa.ArrowException):
        return None


def submission_ids(dataset: DatasetSettings, split: str, root: Path) -> tuple[list[str], str] | None:
    """(every question id of `split` in the dataset's files, before any subset or image check; the
    leaderboard) when `split` is an unanswered split of a dataset in LEADERBOARDS, else None."""
    import pyarrow.compute as pc

    kind = dataset.name.split(":", 1)[0]
    if kind not in LEADERBOARDS:
        return None
    table, _ = parse_once(data.source(dataset), dataset, Path(root))
    part = table.filter(pc.equal(table["split"], split))
    if part.num_rows == 0 or pc.sum(pc.list_value_length(part["answers"])).as_py():
        return None
    return part.column("question_id").to_pylist(), LEADERBOARDS[kind]
