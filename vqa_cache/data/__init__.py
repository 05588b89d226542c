"""Datasets: one adapter per kind, each producing the samples table of DESIGN.md.

The samples table is a pyarrow Table with one row per question:
    question_id: string     image_id: string      image_path: string    question: string
    answers: list<string>   answer_type: string   question_type: string split: string
`answers` holds the raw human answers (10 for VQA v2/VizWiz, 1 for easy-VQA and CSV, [] for test).
"""
from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..errors import BadInput
from ..recipes import DatasetSettings
from .files import short

SCHEMA = pa.schema([
    ("question_id", pa.string()), ("image_id", pa.string()), ("image_path", pa.string()),
    ("question", pa.string()), ("answers", pa.list_(pa.string())), ("answer_type", pa.string()),
    ("question_type", pa.string()), ("split", pa.string()),
])


def make_table(rows: dict[str, list]) -> pa.Table:
    """Columns (dict of lists, the names of SCHEMA) -> a samples table."""
    return pa.table({f.name: pa.array(rows[f.name], f.type) for f in SCHEMA}, schema=SCHEMA)


FILE_KINDS = ("vqa2", "vizwiz", "csv")   # adapters that read a directory (DIR in KIND:DIR)
SAMPLES_FILE = "samples.parquet"


def _adapter(kind: str):
    if kind == "easyvqa":
        from . import easyvqa
        return easyvqa
    if kind == "vqa2":
        from . import vqa2
        return vqa2
    if kind == "vizwiz":
        from . import vizwiz
        return vizwiz
    if kind == "csv":
        from . import csvdata
        return csvdata
    raise BadInput(f"unknown dataset kind {kind!r} (known: easyvqa, vqa2:DIR, vizwiz:DIR, csv:DIR)")


def parse_name(name: str) -> tuple[str, str]:
    """'vqa2:/data/vqa' -> ('vqa2', '/data/vqa'); 'easyvqa' -> ('easyvqa', '')."""
    kind, _, path = name.partition(":")
    return kind.strip().lower(), path


def dataset_dir(kind: str, path: str) -> Path:
    """The dataset directory of KIND:DIR; BadInput when it is not given or not there."""
    if not path.strip():
        raise BadInput(f"dataset {kind} needs its directory: --dataset {kind}:DIR")
    base = Path(path).expanduser()
    if not base.exists():
        raise BadInput(f"{kind}:{path}: no such directory")
    if not base.is_dir():
        raise BadInput(f"{kind}:{path}: not a directory")
    return Path(os.path.abspath(base))


def identity(spec: DatasetSettings) -> dict:
    """What identifies the dataset's content (goes into cache keys)."""
    kind, path = parse_name(spec.name)
    adapter = _adapter(kind)
    if kind in FILE_KINDS:
        return adapter.identity(dataset_dir(kind, path), spec)
    return adapter.identity(path, spec)


def check_spec(spec: DatasetSettings) -> None:
    if not 0.0 < spec.image_fraction <= 1.0:
        raise BadInput(f"--image-fraction {spec.image_fraction}: expected a share in (0, 1]")
    if not 0.0 <= spec.val_fraction < 1.0:
        raise BadInput(f"--val-fraction {spec.val_fraction}: expected a share in [0, 1)")
    if spec.limit < 0:
        raise BadInput(f"--limit {spec.limit}: expected 0 (all) or a positive number")


def image_identity(spec: DatasetSettings) -> dict:
    """The part of the identity that shapes image features: not the annotation files, so fixing an
    answer does not re-encode every image (the image list fingerprint goes into the key separately)."""
    return {k: v for k, v in identity(spec).items() if k != "files"}


def load_samples(spec: DatasetSettings, root: Path | None = None) -> pa.Table:
    """The samples table for a dataset spec, with the spec's subsets applied.

    With a cache `root`, a file dataset is parsed once into a dataset entry (ROOT/dataset/<key>/
    samples.parquet, keyed by the files' fingerprints and the adapter version) and read from there
    afterwards. Image files are checked (and made absolute paths) after the subsets are applied,
    so only the images a run uses need to be there.
    """
    check_spec(spec)
    kind, path = parse_name(spec.name)
    adapter = _adapter(kind)
    if kind not in FILE_KINDS:
        return select(hold_out_val(adapter.load(path, spec), spec), spec)
    base = dataset_dir(kind, path)
    table = parse_cached(adapter, base, spec, Path(root)) if root is not None else adapter.load(base, spec)
    table = select(hold_out_val(table, spec), spec)
    return check_images(table, base, spec)


def parse_cached(adapter, base: Path, spec: DatasetSettings, root: Path) -> pa.Table:
    """adapter.load, through a dataset entry of the cache (parsed once, then read back).

    The entry is only a cache of the annotation files: one that fails read_entry's checks (a changed,
    truncated or unreadable samples.parquet) is parsed again from them and replaced, with a note."""
    import sys

    from ..cache.shards import write_table
    from ..cache.store import Entry, entry_key

    dataset_spec = {"identity": adapter.identity(base, spec)}
    entry = Entry(root, entry_key("dataset", dataset_spec))
    table = read_entry(entry)
    if table is not None:
        return table
    if entry.path.exists():
        print(f"dataset {spec.name}: cache entry {entry.key} is damaged (samples.parquet changed since it was "
              f"written, or unreadable); parsing the annotation files again", file=sys.stderr)
    t0 = time.time()
    table = adapter.load(base, spec)       # bad input fails here, before anything is written
    seconds = time.time() - t0
    with entry.lock():
        if read_entry(entry) is None:
            # write into a private folder, then rename it into place: never a half-written entry
            for stale in (root / ".tmp").glob(f"{entry.key}.*"):   # a killed writer's (we hold the lock)
                shutil.rmtree(stale, ignore_errors=True)
            tmp = root / ".tmp" / f"{entry.key}.{os.getpid()}"
            tmp.mkdir(parents=True)
            try:
                digest = write_table(tmp / SAMPLES_FILE, table)
                staged = Entry(root, entry.key)
                staged.path = tmp
                manifest = staged.new_manifest(dataset_spec, table.num_rows)
                manifest.update(complete=True, timings={"seconds": round(seconds, 2)}, shards=[
                    {"file": SAMPLES_FILE, "rows": table.num_rows, "start": 0, "stop": table.num_rows,
                     "bytes": (tmp / SAMPLES_FILE).stat().st_size, "sha256": digest}])
                staged.save_manifest(manifest)
                if entry.path.exists():
                    shutil.rmtree(entry.path)      # an unreadable or stale entry, under our lock
                entry.path.parent.mkdir(parents=True, exist_ok=True)
                os.replace(tmp, entry.path)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
                try:
                    tmp.parent.rmdir()
                except OSError:
                    pass        # another writer's folder is still there
    print(f"dataset {spec.name}: parsed {table.num_rows} questions in {seconds:.1f}s "
          f"(cached as {entry.key})")
    return table


def read_entry(entry) -> pa.Table | None:
    """The samples table of a complete dataset entry whose samples.parquet has the size and sha256 its
    manifest recorded (the file is small: checked on every read), or None (missing, incomplete,
    changed, unreadable)."""
    from ..digest import sha256_file

    try:
        if not entry.complete():
            return None
        manifest = entry.manifest()
        record = next((s for s in manifest.get("shards", []) if s.get("file") == SAMPLES_FILE), {})
        path = entry.path / SAMPLES_FILE
        if path.stat().st_size != record.get("bytes") or sha256_file(path, memo=False) != record.get("sha256"):
            return None
        table = pq.read_table(path)
        if table.schema != SCHEMA or table.num_rows != manifest.get("rows"):
            return None
        return table
    except (BadInput, OSError, pa.ArrowException):
        return None


def hold_out_val(table: pa.Table, spec: DatasetSettings) -> pa.Table:
    """A dataset with no 'val' split and no answered split besides 'train' gets a 'val' split
    held out of 'train' by image id (val_fraction of the images, sampled with spec.seed), so no
    image is in both."""
    splits = unique(table, "split")
    if "train" not in splits or "val" in splits or spec.val_fraction <= 0:
        return table
    for name in splits:
        if name != "train":
            part = table.filter(pc.equal(table["split"], name)).column("answers")
            if pc.sum(pc.list_value_length(part)).as_py():
                return table      # an answered split (easy-VQA's test) is the validation split
    is_train = pc.equal(table["split"], "train")
    images = sorted(set(table.filter(is_train).column("image_id").to_pylist()))
    if len(images) < 2:
        raise BadInput(f"dataset {spec.name}: cannot hold out a validation split from "
                       f"{len(images)} training image(s)")
    n = min(len(images) - 1, max(1, int(round(len(images) * spec.val_fraction))))
    rng = np.random.default_rng(spec.seed)
    chosen = pa.array([images[i] for i in sorted(rng.choice(len(images), size=n, replace=False))])
    to_val = pc.and_(is_train, pc.is_in(table["image_id"], chosen))
    split = pc.if_else(to_val, pa.scalar("val"), table["split"])
    return table.set_column(table.schema.get_field_index("split"), "split", split)


def check_images(table: pa.Table, base: Path, spec: DatasetSettings) -> pa.Table:
    """Image paths made absolute; missing files are bad input (count, up to 10 named), or with
    skip_missing their questions are dropped and counted."""
    missing = [p for p in unique(table, "image_path") if not image_file(base, p, spec)]
    if missing:
        if not spec.skip_missing:
            raise BadInput(f"{spec.name}: {len(missing)} image file(s) referenced but missing: "
                           f"{', '.join(missing[:10])}{', ...' if len(missing) > 10 else ''} "
                           f"(--skip-missing drops their questions; --split picks splits)")
        gone = pc.is_in(table["image_path"], pa.array(missing))
        before = table.num_rows
        table = table.filter(pc.invert(gone))
        print(f"dataset {spec.name}: --skip-missing: dropped {before - table.num_rows} question(s) "
              f"whose {len(missing)} image file(s) are missing")
        check_nonempty(table, spec, spec.splits or unique(table, "split"))
    absolute = pc.binary_join_element_wise(pa.scalar(str(base)), table["image_path"], "/")
    return table.set_column(table.schema.get_field_index("image_path"), "image_path", absolute)


def image_file(base: Path, rel: str, spec: DatasetSettings) -> bool:
    """Is BASE/REL a file? BadInput naming the path when the system cannot even look (a path too long)."""
    try:
        return (base / rel).is_file()
    except OSError as e:
        raise BadInput(f"{spec.name}: image path {short(rel, 60)!r}: {e.strerror}") from None


def select(table: pa.Table, spec: DatasetSettings) -> pa.Table:
    """Apply splits, answer types, image fraction and per-split limit, in that order."""
    if spec.splits:
        known = set(table.column("split").to_pylist())
        for s in spec.splits:
            if s not in known:
                raise BadInput(f"dataset {spec.name}: no split {s!r} (has: {', '.join(sorted(known))})")
        table = table.filter(pc.is_in(table["split"], pa.array(list(spec.splits))))
    # the splits that must not end up empty: those asked for, else every answered one
    # (an unanswered test split has no answer types, so --answer-types empties it on purpose)
    must_keep = list(spec.splits) or [s for s in unique(table, "split") if not spec.answer_types or
                                      pc.sum(pc.list_value_length(table.filter(pc.equal(
                                          table["split"], s)).column("answers"))).as_py()]
    if spec.answer_types:
        present = sorted(set(table.column("answer_type").to_pylist()) - {""})
        table = table.filter(pc.is_in(table["answer_type"], pa.array(list(spec.answer_types))))
        if table.num_rows == 0:
            raise BadInput(f"dataset {spec.name}: no question has answer type "
                           f"{', '.join(map(repr, spec.answer_types))} (types here: {', '.join(present)})")
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
    check_nonempty(table, spec, must_keep)
    return table


def check_nonempty(table: pa.Table, spec: DatasetSettings, splits) -> None:
    for s in splits:
        if table.filter(pc.equal(table["split"], s)).num_rows == 0:
            raise BadInput(f"dataset {spec.name}: split {s!r} is empty after filtering")
    if table.num_rows == 0:
        raise BadInput(f"dataset {spec.name}: no questions left after filtering")


def unique(table: pa.Table, column: str) -> list:
    """Distinct values of a column, in first-seen order."""
    return list(dict.fromkeys(table.column(column).to_pylist()))


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
