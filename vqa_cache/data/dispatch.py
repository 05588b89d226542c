"""The dataset kinds, and the samples table of a dataset settings section.

`--dataset KIND[:DIR]` names an adapter module (one per kind: easyvqa.py, vqa2.py, vizwiz.py, csvdata.py,
hf.py), which has `identity(where, dataset) -> dict` (what goes into cache keys) and `load(where, dataset)`
(the samples table, schema.py). A new dataset kind is one new adapter module and one line in ADAPTERS.

A dataset that stores its images (hf:, EXPORT_KINDS) has `load(where, dataset, export)`: it hands each
image's bytes to `export(path, data)` once, and the rows' image_path is that relative path. The caller
decides where those files go (an Exports folder): cache/samples.py into the dataset entry, next to the
parsed rows; load_samples here, without a cache, into a temporary folder.
"""

from __future__ import annotations

import atexit
import errno
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import pyarrow as pa

from ..digest import NoSpace, free_space
from ..errors import BadInput
from ..recipes import DatasetSettings
from . import csvdata, easyvqa, hf, vizwiz, vqa2
from .subsets import check_images, check_settings, select

ADAPTERS = {"easyvqa": easyvqa, "vqa2": vqa2, "vizwiz": vizwiz, "csv": csvdata, "hf": hf}
FILE_KINDS = ("vqa2", "vizwiz", "csv")  # adapters that read a directory (DIR in KIND:DIR)
EXPORT_KINDS = ("hf",)  # adapters whose load exports the image bytes a dataset stores


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

    @property
    def exports(self) -> bool:
        """A dataset that stores its images: its parse hands them to an `export` (see above)."""
        return self.kind in EXPORT_KINDS

    def identity(self, dataset: DatasetSettings) -> dict:
        return self.adapter.identity(self.where, dataset)

    def parse(self, dataset: DatasetSettings, export: Exports | None = None) -> pa.Table:
        """The adapter's samples table; an exporting kind's files go to `export`."""
        if self.exports:
            return self.adapter.load(self.where, dataset, export)
        return self.adapter.load(self.where, dataset)


class Exports:
    """An `export` for Source.parse: each exported file written as it is to FOLDER/PATH, and counted. A
    full disk is NoSpace, naming the file (FOLDER is temporary or staged: nothing half-written stays)."""

    def __init__(self, folder: Path):
        self.folder, self.files, self.bytes = Path(folder), 0, 0

    def __call__(self, path: str, data: bytes) -> None:
        target = self.folder / path
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            target.write_bytes(data)
        except OSError as e:
            target.unlink(missing_ok=True)
            if e.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
                raise NoSpace(target, len(data), *free_space(target.parent)) from None
            raise
        self.files += 1
        self.bytes += len(data)


def parse_name(name: str) -> tuple[str, str]:
    """'vqa2:/data/vqa' -> ('vqa2', '/data/vqa'); 'easyvqa' -> ('easyvqa', '')."""
    kind, _, path = name.partition(":")
    return kind.strip().lower(), path


def source(dataset: DatasetSettings) -> Source:
    """The Source of `dataset.name`; BadInput for an unknown kind or a missing directory."""
    kind, path = parse_name(dataset.name)
    if kind not in ADAPTERS:
        raise BadInput(f"unknown dataset kind {kind!r} (known: easyvqa, vqa2:DIR, vizwiz:DIR, csv:DIR, hf:NAME_OR_DIR)")
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
    The files an exporting kind exports go to a temporary folder, removed when the process ends.
    (cache/samples.py does the same with the parse, and the exported files, kept in the cache.)"""
    check_settings(dataset)
    src = source(dataset)
    if not src.exports:
        return samples_from(src.parse(dataset), dataset, src)
    folder = Path(tempfile.mkdtemp(prefix="vqa-cache-exported-"))
    atexit.register(shutil.rmtree, folder, True)
    return samples_from(src.parse(dataset, Exports(folder)), dataset, src, folder)


def samples_from(table: pa.Table, dataset: DatasetSettings, src: Source, exported: Path | None = None) -> pa.Table:
    """A parsed samples table with the settings' subsets applied; then the image files of a file dataset
    (relative to its directory) or of an exporting one (relative to `exported`, the folder its files were
    exported to; or absolute) are checked and made absolute paths, so only the images a run uses need to
    be there."""
    table = select(table, dataset)
    if src.exports:
        return check_images(table, exported, dataset)
    return check_images(table, src.where, dataset) if src.files else table
