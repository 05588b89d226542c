"""The dataset entry: a file dataset's parsed samples table, kept in the cache so that the annotation
files are parsed once (ROOT/dataset/<key>/samples.parquet, keyed by the files' fingerprints and the
adapter version). It is only a cache of those files: an entry that fails its checks is parsed again."""
from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from .. import data
from ..digest import sha256_file
from ..errors import BadInput
from ..recipes import DatasetSettings
from .shards import write_table
from .store import Entry, entry_key

SAMPLES_FILE = "samples.parquet"


def load_samples(dataset: DatasetSettings, root: Path | None = None) -> pa.Table:
    """data.load_samples, where a file dataset is parsed once into a dataset entry under the cache `root`
    (without a root: parsed, as data.load_samples does)."""
    if root is None:
        return data.load_samples(dataset)
    data.check_settings(dataset)
    src = data.source(dataset)
    table = parse_once(src, dataset, Path(root)) if src.files else src.parse(dataset)
    return data.samples_from(table, dataset, src)


def parse_once(src: data.Source, dataset: DatasetSettings, root: Path) -> pa.Table:
    """src.parse, through a dataset entry of the cache (parsed once, then read back). One that fails
    read_samples' checks (a changed, truncated or unreadable samples.parquet) is parsed again from the
    annotation files and replaced, with a note."""
    spec = {"identity": src.identity(dataset)}
    entry = Entry(root, entry_key("dataset", spec))
    table = read_samples(entry)
    if table is not None:
        return table
    if entry.path.exists():
        print(f"dataset {dataset.name}: cache entry {entry.key} is damaged (samples.parquet changed since it "
              f"was written, or unreadable); parsing the annotation files again", file=sys.stderr)
    t0 = time.time()
    table = src.parse(dataset)             # bad input fails here, before anything is written
    seconds = time.time() - t0
    with entry.lock():
        if read_samples(entry) is None:
            write_samples(entry, spec, table, seconds)
    print(f"dataset {dataset.name}: parsed {table.num_rows} questions in {seconds:.1f}s "
          f"(cached as {entry.key})")
    return table


def write_samples(entry: Entry, spec: dict, table: pa.Table, seconds: float) -> None:
    """Write the entry (under its lock) into a private folder, then rename that into place: never a
    half-written entry. The folders of killed writers (ROOT/.tmp/KEY.PID) are removed first."""
    staging = entry.root / ".tmp"
    for stale in staging.glob(f"{entry.key}.*"):         # a killed writer's (we hold the lock)
        shutil.rmtree(stale, ignore_errors=True)
    tmp = staging / f"{entry.key}.{os.getpid()}"
    tmp.mkdir(parents=True)
    try:
        digest = write_table(tmp / SAMPLES_FILE, table)
        staged = Entry(entry.root, entry.key)
        staged.path = tmp
        manifest = staged.new_manifest(spec, table.num_rows)
        manifest.update(complete=True, timings={"seconds": round(seconds, 2)}, shards=[
            {"file": SAMPLES_FILE, "rows": table.num_rows, "start": 0, "stop": table.num_rows,
             "bytes": (tmp / SAMPLES_FILE).stat().st_size, "sha256": digest}])
        staged.save_manifest(manifest)
        if entry.path.exists():
            shutil.rmtree(entry.path)                    # an unreadable or stale entry, under our lock
        entry.path.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, entry.path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            staging.rmdir()
        except OSError:
            pass                                         # another writer's folder is still there


def read_samples(entry: Entry) -> pa.Table | None:
    """The samples table of a complete dataset entry whose samples.parquet has the size and sha256 its
    manifest recorded (the file is small: checked on every read), or None (missing, incomplete,
    changed, unreadable)."""
    try:
        if not entry.complete():
            return None
        manifest = entry.manifest()
        record = next((s for s in manifest.get("shards", []) if s.get("file") == SAMPLES_FILE), {})
        path = entry.path / SAMPLES_FILE
        if path.stat().st_size != record.get("bytes") or sha256_file(path, memo=False) != record.get("sha256"):
            return None
        table = pq.read_table(path)
        if table.schema != data.SCHEMA or table.num_rows != manifest.get("rows"):
            return None
        return table
    except (BadInput, OSError, pa.ArrowException):
        return None
