"""What a dataset settings section selects from the samples table: the splits, answer types, a share of the
images and a per-split limit (select), a validation split held out of train where there is none
(hold_out_val, applied after the split selection), and the image files that must be there (check_images)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .. import messages
from ..errors import BadInput
from ..recipes import DatasetSettings
from .files import listed_files, short


def check_settings(dataset: DatasetSettings) -> None:
    """The shares and the limit are in range (BadInput naming the option)."""
    if not 0.0 < dataset.image_fraction <= 1.0:
        raise BadInput(f"--image-fraction {dataset.image_fraction}: expected a share in (0, 1]")
    if not 0.0 <= dataset.val_fraction < 1.0:
        raise BadInput(f"--val-fraction {dataset.val_fraction}: expected a share in [0, 1)")
    if dataset.limit < 0:
        raise BadInput(f"--limit {dataset.limit}: expected 0 (all) or a positive number")


def hold_out_val(table: pa.Table, dataset: DatasetSettings) -> pa.Table:
    """A dataset with no 'val' split and no answered split besides 'train' gets a 'val' split
    held out of 'train' by image id (val_fraction of the images, sampled with dataset.seed), so no
    image is in both."""
    splits = unique(table, "split")
    if "train" not in splits or "val" in splits or dataset.val_fraction <= 0:
        return table
    if any(answered(table, name) for name in splits if name != "train"):
        return table  # an answered split (easy-VQA's test) is the validation split
    is_train = pc.equal(table["split"], "train")
    images = sorted(set(table.filter(is_train).column("image_id").to_pylist()))
    if len(images) < 2:
        raise BadInput(
            f"dataset {dataset.name}: cannot hold out a validation split from {len(images)} training image(s)"
        )
    n = min(len(images) - 1, max(1, round(len(images) * dataset.val_fraction)))
    rng = np.random.default_rng(dataset.seed)
    chosen = pa.array([images[i] for i in sorted(rng.choice(len(images), size=n, replace=False))])
    to_val = pc.and_(is_train, pc.is_in(table["image_id"], chosen))
    split = pc.if_else(to_val, pa.scalar("val"), table["split"])
    return table.set_column(table.schema.get_field_index("split"), "split", split)


def check_images(table: pa.Table, base: Path | str, dataset: DatasetSettings) -> pa.Table:
    """Image paths made absolute (relative ones under `base`); missing files are bad input (count, up to 10
    named), or with skip_missing their questions are dropped and counted."""
    paths = table["image_path"]
    absolute = absolute_paths(paths, base)
    missing = missing_images(pc.unique(paths), base, dataset)
    if missing:
        if not dataset.skip_missing:
            raise BadInput(
                f"{dataset.name}: {len(missing)} image file(s) referenced but missing: "
                f"{', '.join(missing[:10])}{', ...' if len(missing) > 10 else ''} "
                f"(--skip-missing drops their questions; --split picks splits)"
            )
        keep = pc.invert(pc.is_in(paths, pa.array(missing)))
        before = table.num_rows
        table, absolute = table.filter(keep), absolute.filter(keep)
        messages.info(
            f"dataset {dataset.name}: --skip-missing: dropped {before - table.num_rows} question(s) "
            f"whose {len(missing)} image file(s) are missing"
        )
        check_nonempty(table, dataset, dataset.splits or unique(table, "split"))
    return table.set_column(table.schema.get_field_index("image_path"), "image_path", absolute)


def absolute_paths(paths, base: Path | str):
    """Image paths as they are where absolute, else under `base` (BASE/PATH)."""
    return pc.if_else(pc.starts_with(paths, "/"), paths, pc.binary_join_element_wise(pa.scalar(str(base)), paths, "/"))


def missing_images(paths: pa.Array, base: Path | str, dataset: DatasetSettings) -> list[str]:
    """The distinct relative (or absolute) image paths that are not files, in their order. A folder the
    dataset's identity listed (files.listed_files) is checked by looking its files' paths up in the
    listings, all folders' at once, as arrays (60,000 paths one at a time took 0.5 s); the paths of any
    other folder by image_file."""
    full = absolute_paths(paths, base)
    folders = pc.extract_regex(full, r"^(?P<folder>.*)/[^/]*$").field("folder")  # (null where there is no "/")
    listed, entries = [], []
    for folder in pc.unique(folders.drop_null()).to_pylist():
        listing = listed_files(Path(folder or "/"))
        if listing is not None:
            listed.append(folder)
            entries.extend(f"{folder}/{name}" for name in listing)
    found = pc.is_in(full, value_set=pa.array(entries, pa.string())).to_numpy(zero_copy_only=False)
    here = pc.is_in(folders, value_set=pa.array(listed, pa.string()))
    unlisted = ~pc.fill_null(here, False).to_numpy(zero_copy_only=False)
    relative = paths.to_pylist()
    for i in np.flatnonzero(unlisted):
        found[i] = image_file(base, relative[i], dataset)
    return [relative[i] for i in np.flatnonzero(~found)]


def image_file(base: Path | str, rel: str, dataset: DatasetSettings) -> bool:
    """Is BASE/REL a file? BadInput naming the path when the system cannot even look (a path too long)."""
    try:
        return (Path(base) / rel).is_file()
    except OSError as e:
        raise BadInput(f"{dataset.name}: image path {short(rel, 60)!r}: {e.strerror}") from None


def select(table: pa.Table, dataset: DatasetSettings) -> pa.Table:
    """Apply splits, the validation hold-out (hold_out_val: after --split, so `--split train` of a dataset
    with a val split holds val out of train), answer types, image fraction and per-split limit, in that
    order."""
    if dataset.splits:
        known = set(table.column("split").to_pylist())
        for s in dataset.splits:
            if s not in known:
                raise BadInput(f"dataset {dataset.name}: no split {s!r} (has: {', '.join(sorted(known))})")
        table = table.filter(pc.is_in(table["split"], pa.array(list(dataset.splits))))
    held = "val" not in unique(table, "split")
    table = hold_out_val(table, dataset)
    held = held and "val" in unique(table, "split")
    # the splits that must not end up empty: those asked for (and a held-out val), else every one
    must_keep = list(dataset.splits) + (["val"] if held else []) if dataset.splits else unique(table, "split")
    if dataset.answer_types:
        table = answer_type_subset(table, dataset)
    if dataset.image_fraction < 1.0:
        images = sorted(set(table.column("image_id").to_pylist()))
        rng = np.random.default_rng(dataset.seed)
        keep = rng.choice(len(images), size=max(1, round(len(images) * dataset.image_fraction)), replace=False)
        table = table.filter(pc.is_in(table["image_id"], pa.array([images[i] for i in sorted(keep)])))
    if dataset.limit:
        parts = []
        for s in unique(table, "split"):
            part = table.filter(pc.equal(table["split"], s))
            parts.append(part.slice(0, dataset.limit))
        table = pa.concat_tables(parts) if parts else table
    check_nonempty(table, dataset, must_keep)
    return table


def answer_type_subset(table: pa.Table, dataset: DatasetSettings) -> pa.Table:
    """The questions of the answered splits with one of dataset.answer_types; an unanswered split (a test
    split: no answers, so no answer types) is kept whole for prediction, and a line says so."""
    present = sorted(set(table.column("answer_type").to_pylist()) - {""})
    types = pa.array(list(dataset.answer_types))
    unanswered = [s for s in unique(table, "split") if not answered(table, s)]
    typed = pc.is_in(table["answer_type"], types)
    keep = pc.or_(typed, pc.is_in(table["split"], pa.array(unanswered))) if unanswered else typed
    if not pc.any(typed).as_py():  # (None when there are no rows)
        raise BadInput(
            f"dataset {dataset.name}: no question has answer type "
            f"{', '.join(map(repr, dataset.answer_types))} (types here: {', '.join(present)})"
        )
    if unanswered:
        sizes = split_counts(table)
        counts = ", ".join(f"{s!r} ({sizes[s]} questions)" for s in unanswered)
        messages.info(
            f"dataset {dataset.name}: --answer-types {','.join(dataset.answer_types)} filters the answered "
            f"splits; {counts} has no answers, so no answer types: kept whole for prediction"
        )
    return table.filter(keep)


def check_nonempty(table: pa.Table, dataset: DatasetSettings, splits) -> None:
    counts = split_counts(table)
    for s in splits:
        if counts.get(s, 0) == 0:
            raise BadInput(f"dataset {dataset.name}: split {s!r} is empty after filtering")
    if table.num_rows == 0:
        raise BadInput(f"dataset {dataset.name}: no questions left after filtering")


def answered(table: pa.Table, split: str) -> bool:
    """Does some question of `split` have answers (a test split has none)?"""
    has = pc.and_(pc.equal(table["split"], split), pc.greater(pc.list_value_length(table["answers"]), 0))
    return bool(pc.any(has).as_py())


def split_counts(table: pa.Table) -> dict:
    """split name -> its number of questions (counted, not filtered out: the rows' lists stay unread)."""
    return {row["values"]: row["counts"] for row in pc.value_counts(table["split"]).to_pylist()}


def unique(table: pa.Table, column: str) -> list:
    """Distinct values of a column, in first-seen order (counted by Arrow: the column as Python strings
    took 0.15 s at 325,000 questions)."""
    col = table.column(column)
    values = pc.unique(col)
    which = pc.index_in(col, value_set=values).to_numpy(zero_copy_only=False)  # each row's value, numbered
    first = np.unique(which, return_index=True)[1]  # the first row of each
    return values.take(pa.array(np.argsort(first, kind="stable"))).to_pylist()


def train_val_splits(table: pa.Table) -> tuple[str, str]:
    """The split to train on and the one to validate on: 'val' if there is one, else an
    answered 'test' (easy-VQA's test split is its validation split)."""
    splits = unique(table, "split")
    if "train" not in splits:
        raise BadInput(f"the dataset has no 'train' split (has: {', '.join(splits)})")
    for name in ("val", "test"):
        if name in splits and answered(table, name):
            return "train", name
    raise BadInput("the dataset has no answered validation split ('val' or 'test')")
