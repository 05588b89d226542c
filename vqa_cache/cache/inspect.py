"""`cache info`, `cache verify` and `cache rm`: an entry's record, a check that reads every byte, and
removal under the entry's lock."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pyarrow.parquet as pq

from ..data import SCHEMA
from ..digest import WriteError, sha256_file
from ..errors import BadInput
from .shards import check_image_shard, check_question_shard, index_columns
from .store import Entry, ids_mismatch


def info(entry: Entry) -> dict:
    """What `cache info` shows: spec, rows, size, timings, shards."""
    manifest = entry.manifest()
    return {
        "key": entry.key,
        "kind": entry.kind,
        "path": str(entry.path),
        "complete": bool(manifest.get("complete")),
        "rows": manifest.get("rows", 0),
        "dim": manifest.get("dim"),
        "bytes": entry.size_bytes(),
        "spec": manifest.get("spec", {}),
        "created": manifest.get("created"),
        "tool_version": manifest.get("tool_version"),
        "format": manifest.get("format"),
        "timings": manifest.get("timings", {}),
        "skipped": manifest.get("skipped", []),
        "shards": [
            {k: s.get(k) for k in ("file", "rows", "start", "stop", "bytes", "sha256")}
            for s in manifest.get("shards", [])
        ],
    }


def verify(entry: Entry) -> tuple[list[str], dict]:
    """Check an entry: every shard's size, sha256, readability, dtype, row count and finiteness, shard
    contiguity, and that the ids (image ids or question texts, plus skipped ones) are exactly the
    dataset's (their fingerprint is in the spec). Returns (problems, summary); the first problem names
    the first bad shard. A manifest of another format version raises BadInput."""
    manifest = entry.manifest()
    ids, skipped, position = [], [], 0
    for record in manifest.get("shards", []):
        shard_ids, problem = check_shard(entry, record, manifest.get("spec", {}), position)
        if problem:
            return [f"{record['file']}: {problem}"], {}
        position = record["stop"]
        ids += shard_ids
        skipped += record.get("skipped", [])
    problems = []
    if not manifest.get("complete"):
        problems.append(
            f"incomplete: {position} of {manifest.get('rows')} rows written (an extract was "
            f"interrupted; re-run it to resume)"
        )
    elif position != manifest.get("rows"):
        problems.append(f"the shards hold {position} rows, the manifest says {manifest.get('rows')}")
    else:
        if len(set(ids)) != len(ids):
            problems.append("an id occurs in more than one row")
        # (a dataset entry's key is its annotation files' fingerprint: nothing more to compare)
        mismatch = ids_mismatch(entry.kind, manifest.get("spec", {}), ids, skipped)
        if mismatch:
            problems.append(f"the {mismatch[0]} in the shards are not the dataset's ({mismatch[1]})")
        if entry.kind == "image":
            problems += check_index(entry, manifest)
    return problems, {
        "shards": len(manifest.get("shards", [])),
        "rows": len(ids),
        "skipped": len(skipped),
        "bytes": entry.size_bytes(),
    }


def check_shard(entry: Entry, record: dict, spec: dict, position: int) -> tuple[list[str], str | None]:
    """(the shard's ids, None), or ([], what is wrong with it): missing, size, sha256, unreadable (or of
    the wrong dtype, or not finite), row count, or not following the previous shard (at `position`)."""
    path = entry.path / record["file"]
    if not path.is_file():
        return [], "missing"
    size = path.stat().st_size
    if record.get("bytes") is not None and size != record["bytes"]:
        return [], f"{size} bytes, the manifest says {record['bytes']} (truncated or overwritten)"
    if sha256_file(path, memo=False) != record.get("sha256"):
        return [], "sha256 mismatch (the file changed after it was written)"
    try:
        if entry.kind == "dataset":  # one samples.parquet: rows and the schema of the samples table
            table = pq.read_table(path)
            if not table.schema.equals(SCHEMA):
                return [], f"columns {table.schema.names}, expected {SCHEMA.names}"
            ids = table.column("question_id").to_pylist()
        elif entry.kind == "answers":  # targets.parquet: one row per question (targets.py)
            ids = [str(i) for i in range(pq.read_table(path).num_rows)]
        elif entry.kind == "image":
            ids = check_image_shard(path, spec.get("outputs", ["pooled"]))
        else:
            ids = check_question_shard(path, bool(spec.get("tokens")), bool(spec.get("ids")), spec.get("vocab_size"))
    except (OSError, KeyError, ValueError) as e:
        return [], f"unreadable ({type(e).__name__}: {' '.join(str(e).split())})"
    if len(ids) != record["rows"]:
        return [], f"{len(ids)} rows, the manifest says {record['rows']}"
    if (
        record.get("start") != position
        or record["rows"] + len(record.get("skipped", [])) != record.get("stop", -1) - position
    ):
        return [], (
            f"rows {record.get('start')}..{record.get('stop')} do not follow the previous shard "
            f"(expected start {position})"
        )
    return ids, None


def check_index(entry: Entry, manifest: dict) -> list[str]:
    """index.parquet says where each image id of the shards is."""
    try:
        index = pq.read_table(entry.path / "index.parquet").to_pydict()
    except (OSError, ValueError) as e:
        return [f"index.parquet: unreadable ({type(e).__name__}: {e})"]
    expected = index_columns(entry.path, manifest["shards"])
    if {k: index.get(k) for k in expected} != expected:
        return ["index.parquet: does not match the shards"]
    return []


def read_only(path: Path) -> bool:
    """Is the file system holding `path` mounted read-only (statvfs ST_RDONLY)?"""
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except (OSError, AttributeError):
        return False


def remove(entry: Entry) -> int:
    """Delete an entry (refused while a writer holds its lock); returns the bytes freed."""
    if not entry.path.is_dir():
        raise BadInput(f"cache entry {entry.key} does not exist in {entry.root}")
    size = entry.size_bytes()
    if not os.access(entry.path.parent, os.W_OK) or read_only(entry.root):
        raise BadInput(f"cache entry {entry.key} not removed: the cache {entry.root} is read-only")
    try:
        with entry.lock(wait=False):
            shutil.rmtree(entry.path)
    except WriteError as e:  # the lock file could not be made (read-only, full disk)
        raise BadInput(f"cache entry {entry.key} not removed: {e}") from None
    except BadInput:
        raise BadInput(
            f"cache entry {entry.key} is being written by another process "
            f"(host, pid: {entry.lock().holder()}); not removed"
        ) from None
    return size
