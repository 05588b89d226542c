"""The dataset kinds, and the samples table of a dataset settings section.

`--dataset KIND[:DIR]` names an adapter module (one per kind: easyvqa.py, vqa2.py, vizwiz.py, csvdata.py),
which has `identity(where, dataset) -> dict` (what goes into cache keys) and `load(where, dataset)` (the
samples table, schema.py). A new dataset kind is one new adapter module and one line in ADAPTERS.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import pyarrow as pa

from ..errors import BadInput
from ..recipes import DatasetSettings
from . import csvdata, easyvqa, vizwiz, vqa2
from .subsets import check_images, check_settings, hold_out_val, select

ADAPTERS = {"easyvqa": easyvqa, "vqa2": vqa2, "vizwiz": vizwiz, "csv": csvdata}
FILE_KINDS = ("vqa2", "vizwiz", "csv")   # adapters that read a directory (DIR in KIND:DIR)


@dataclass(frozen=True)
class Source:
    """Where a dataset's samples come from: its adapter, and what the adapter reads (the absolute
    directory of a file dataset, KIND:DIR; else the text after the colon, if any)."""
    kind: str
    adapter: ModuleType
    where: Path | str

    @property
    def files(self) -> bool:
        """A dataset of annotation files: its parse can be cached, its image paths are checked."""
        return self.kind in FILE_KINDS

    def identity(self, dataset: DatasetSettings) -> dict:
        return self.adapter.identity(self.where, dataset)

    def parse(self, dataset: DatasetSettings) -> pa.Table:
        return self.adapter.load(self.where, dataset)


def parse_name(name: str) -> tuple[str, str]:
    """'vqa2:/data/vqa' -> ('vqa2', '/data/vqa'); 'easyvqa' -> ('easyvqa', '')."""
    kind, _, path = name.partition(":")
    return kind.strip().lower(), path


def source(dataset: DatasetSettings) -> Source:
    """The Source of `dataset.name`; BadInput for an unknown kind or a missing directory."""
    kind, path = parse_name(dataset.name)
    if kind not in ADAPTERS:
        raise BadInput(f"unknown dataset kind {kind!r} (known: easyvqa, vqa2:DIR, vizwiz:DIR, csv:DIR)")
    return Source(kind, ADAPTERS[kind], dataset_dir(kind, path) if kind in FILE_KINDS else path)


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


def identity(dataset: DatasetSettings) -> dict:
    """What identifies the dataset's content (goes into cache keys)."""
    return source(dataset).identity(dataset)


def image_identity(dataset: DatasetSettings) -> dict:
    """The part of the identity that shapes image features: not the annotation files, so fixing an
    answer does not re-encode every image (the image list fingerprint goes into the key separately)."""
    return {k: v for k, v in identity(dataset).items() if k != "files"}


def load_samples(dataset: DatasetSettings) -> pa.Table:
    """The samples table of a dataset settings section: parsed, then its subsets selected (samples_from).
    (cache/samples.py does the same with a file dataset's parse kept in the cache.)"""
    check_settings(dataset)
    src = source(dataset)
    return samples_from(src.parse(dataset), dataset, src)


def samples_from(table: pa.Table, dataset: DatasetSettings, src: Source) -> pa.Table:
    """A parsed samples table with the settings' subsets applied; a file dataset's image files are checked
    (and made absolute paths) after that, so only the images a run uses need to be there."""
    table = select(hold_out_val(table, dataset), dataset)
    return check_images(table, src.where, dataset) if src.files else table
