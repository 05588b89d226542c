"""The answers entry: a samples table's AnswerTable (answers/table.py: ground truth, soft scores, best
answers, computed once), kept beside the dataset entry so that every later run and sweep trial on the same
questions reads it instead of normalizing and scoring every answer again.

    ROOT/answers/<key>/manifest.json, targets.parquet (one row per question), answers.parquet (the strings)

The key is the digest of the answers column's content (answers.table.column_digest), the normalizer's
version and the table's version: the same questions and answers give the same key, whatever dataset,
subset or split selection they came from. Like the dataset entry it is only a cache: an entry that fails
its checks (a file changed, missing or unreadable) is computed again and replaced."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pyarrow as pa

from .. import messages
from ..answers.normalize import NORMALIZER_VERSION
from ..answers.table import TABLE_VERSION, AnswerTable, answer_table, column_digest
from ..digest import sha256_file
from ..errors import BadInput
from .samples import staged
from .shards import read_parquet, write_table
from .store import Entry, entry_key

TARGETS, STRINGS = "targets.parquet", "answers.parquet"


_MEMO: dict = {}  # key -> AnswerTable, the last few of this process (sweep trials on subsets)


def cached_answer_table(root: Path, column, write: bool = True) -> AnswerTable:
    """The AnswerTable of an answers column: read from its entry under `root` (or this process's memo), or
    computed, and stored when `write` (stage one writes it; stage two only reads the cache)."""
    spec = {"answers": column_digest(column), "normalizer": NORMALIZER_VERSION, "version": TABLE_VERSION}
    entry = Entry(Path(root), entry_key("answers", spec))
    table = _MEMO.get(entry.key)
    stored = read_answer_table(entry) if table is None or write else None
    table, t0 = table or stored, time.time()
    if table is None:
        if entry.path.exists():
            messages.warning(f"answers entry {entry.key} is damaged or unreadable; computing it again")
        table = answer_table(column)
    if write and stored is None:
        save(entry, spec, table, time.time() - t0)
    if len(_MEMO) >= 4:
        _MEMO.pop(next(iter(_MEMO)))
    _MEMO[entry.key] = table
    return table


def save(entry: Entry, spec: dict, table: AnswerTable, seconds: float) -> None:
    """The entry written whole under its lock (or a note when the cache cannot be written)."""
    try:
        with entry.lock():
            if read_answer_table(entry) is None:
                with staged(entry) as folder:
                    save_answer_table(folder, entry, spec, table, seconds)
    except (OSError, BadInput) as e:  # a read-only cache: the table is still good for this run
        messages.warning(f"answers entry {entry.key} not written ({type(e).__name__}: {e})")


def save_answer_table(folder: Path, entry: Entry, spec: dict, table: AnswerTable, seconds: float) -> None:
    q, w = table.candidates.shape
    per_question = pa.table(
        {
            "n": pa.array(table.n.astype(np.int32)),
            "distinct": pa.array(table.distinct.astype(np.int16)),
            "best": pa.array(table.best.astype(np.int32)),
            "candidates": fixed(table.candidates.astype(np.int32), w),
            "scores": fixed(table.scores.astype(np.float32), w),
            "counts": fixed(table.counts.astype(np.int16), w),
        }
    )
    records = []
    for name, t in ((TARGETS, per_question), (STRINGS, pa.table({"answer": pa.array(table.strings, pa.string())}))):
        digest = write_table(folder / name, t)
        records.append({"file": name, "rows": t.num_rows, "bytes": (folder / name).stat().st_size, "sha256": digest})
    records[0].update(start=0, stop=q)
    staged_entry = Entry(entry.root, entry.key)
    staged_entry.path = folder
    manifest = staged_entry.new_manifest(spec, q, width=w, strings=records[1])
    manifest.update(complete=True, timings={"seconds": round(seconds, 2)}, shards=records[:1])
    staged_entry.save_manifest(manifest)


def fixed(arr: np.ndarray, width: int) -> pa.Array:
    return pa.FixedSizeListArray.from_arrays(pa.array(arr.reshape(-1)), width)


def read_answer_table(entry: Entry) -> AnswerTable | None:
    """The AnswerTable of a complete answers entry whose two files have the sizes and sha256 its manifest
    recorded, or None (missing, incomplete, changed, unreadable)."""
    try:
        if not entry.complete():
            return None
        manifest = entry.manifest()
        records = manifest.get("shards", [])[:1] + [manifest.get("strings", {})]
        for record in records:
            path = entry.path / str(record.get("file"))
            if path.stat().st_size != record.get("bytes") or sha256_file(path, memo=False) != record.get("sha256"):
                return None
        per_question, strings = read_parquet(entry.path / TARGETS), read_parquet(entry.path / STRINGS)
        q, w = per_question.num_rows, manifest.get("width")
        if q != manifest.get("rows") or not isinstance(w, int):
            return None

        def matrix(name):
            flat = per_question.column(name).combine_chunks().flatten().to_numpy(zero_copy_only=False)
            return flat.reshape(q, w)

        column = {name: per_question.column(name).to_numpy() for name in ("n", "distinct", "best")}
        return AnswerTable(
            strings.column("answer").to_pylist(),
            column["n"].astype(np.int64),
            column["distinct"],
            column["best"].astype(np.int64),
            matrix("candidates").astype(np.int64),
            matrix("scores"),
            matrix("counts"),
        )
    except (BadInput, OSError, KeyError, ValueError, pa.ArrowException):
        return None
