"""Datasets: one adapter per kind, each producing the samples table of DESIGN.md.

The samples table is a pyarrow Table with one row per question:
    question_id: string     image_id: string      image_path: string    question: string
    answers: list<string>   answer_type: string   question_type: string split: string
`answers` holds the raw human answers (10 for VQA v2/VizWiz, 1 for easy-VQA and CSV, [] for test).
"""
from __future__ import annotations

import hashlib

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..errors import BadInput
from ..recipes import DatasetSpec

SCHEMA = pa.schema([
    ("question_id", pa.string()), ("image_id", pa.string()), ("image_path", pa.string()),
    ("question", pa.string()), ("answers", pa.list_(pa.string())), ("answer_type", pa.string()),
    ("question_type", pa.string()), ("split", pa.string()),
])


def make_table(rows: dict[str, list]) -> pa.Table:
    """Columns (dict of lists, the names of SCHEMA) -> a samples table."""
    return pa.table({f.name: pa.array(rows[f.name], f.type) for f in SCHEMA}, schema=SCHEMA)


def _adapter(kind: str):
    if kind == "easyvqa":
        from . import easyvqa
        return easyvqa
    raise BadInput(f"unknown dataset kind {kind!r} (known: easyvqa)")


def parse_name(name: str) -> tuple[str, str]:
    """'vqa2:/data/vqa' -> ('vqa2', '/data/vqa'); 'easyvqa' -> ('easyvqa', '')."""
    kind, _, path = name.partition(":")
    return kind.strip().lower(), path


def identity(spec: DatasetSpec) -> dict:
    """What identifies the dataset's content (goes into cache keys)."""
    kind, path = parse_name(spec.name)
    return _adapter(kind).identity(path, spec)


def load_samples(spec: DatasetSpec) -> pa.Table:
    """The samples table for a dataset spec, with the spec's subsets applied."""
    kind, path = parse_name(spec.name)
    table = _adapter(kind).load(path, spec)
    return select(table, spec)


def select(table: pa.Table, spec: DatasetSpec) -> pa.Table:
    """Apply splits, answer types, image fraction and per-split limit, in that order."""
    if spec.splits:
        known = set(table.column("split").to_pylist())
        for s in spec.splits:
            if s not in known:
                raise BadInput(f"dataset {spec.name}: no split {s!r} (has: {', '.join(sorted(known))})")
        table = table.filter(pc.is_in(table["split"], pa.array(list(spec.splits))))
    if spec.answer_types:
        table = table.filter(pc.is_in(table["answer_type"], pa.array(list(spec.answer_types))))
    if spec.image_fraction < 1.0:
        images = sorted(set(table.column("image_id").to_pylist()))
        rng = np.random.default_rng(spec.seed)
        keep = rng.choice(len(images), size=max(1, int(round(len(images) * spec.image_fraction))), replace=False)
        table = table.filter(pc.is_in(table["image_id"], pa.array([images[i] for i in sorted(keep)])))
    if spec.limit:
        parts = []
        for s in unique(table, "split"):
            part = table.filter(pc.equal(table["split"], s))
            parts.append(part.slice(0, spec.limit))
        table = pa.concat_tables(parts) if parts else table
    for s in (spec.splits or unique(table, "split")):
        if table.filter(pc.equal(table["split"], s)).num_rows == 0:
            raise BadInput(f"dataset {spec.name}: split {s!r} is empty after filtering")
    if table.num_rows == 0:
        raise BadInput(f"dataset {spec.name}: no questions left after filtering")
    return table


def unique(table: pa.Table, column: str) -> list:
    """Distinct values of a column, in first-seen order."""
    return list(dict.fromkeys(table.column(column).to_pylist()))


def fingerprint(values) -> str:
    """sha256 of a list of strings (order matters: sort first where it should not)."""
    h = hashlib.sha256()
    for v in values:
        h.update(v.encode())
        h.update(b"\0")
    return h.hexdigest()


def train_val_splits(table: pa.Table) -> tuple[str, str]:
    """The split to train on and the one to validate on: 'val' if there is one, else an
    answered 'test' (easy-VQA's test split is its validation split)."""
    splits = unique(table, "split")
    if "train" not in splits:
        raise BadInput(f"the dataset has no 'train' split (has: {', '.join(splits)})")
    for name in ("val", "test"):
        if name in splits:
            answered = table.filter(pc.equal(table["split"], name)).column("answers")
            if pc.sum(pc.list_value_length(answered)).as_py():
                return "train", name
    raise BadInput("the dataset has no answered validation split ('val' or 'test')")
