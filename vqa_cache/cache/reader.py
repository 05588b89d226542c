"""Read a complete cache entry back (stage two): into memory, or chunk by chunk from disk (ImageStream).

What is read is checked cheaply on the way (no checksums; `cache verify` reads every byte): every
shard is there with its recorded size, the row totals match the manifest, the ids are the dataset's
(their fingerprint is in the spec) and the features are finite. A damaged entry is BadInput naming it.
"""

from __future__ import annotations

import itertools
import os

import h5py
import numpy as np
import torch

from ..errors import BadInput
from ..threads import usable_cpus
from .shards import (
    CSR,
    IMAGE_DATASETS,
    QUESTION_COLUMNS,
    head_ids,
    read_image_shard,
    read_question_embedding,
    read_question_shard,
    read_shard_ids,
)
from .store import Entry, first_damage, ids_mismatch


def damaged(entry: Entry, problem: str, repairable: bool = False) -> BadInput:
    """The error for a damaged entry. `repairable`: a shard missing or of the wrong size, which a re-run
    of extract finds and encodes again; anything else needs the entry removed and extracted again."""
    fix = (
        "run the same `vqa-cache extract` again to repair it"
        if repairable
        else f"check it with `vqa-cache cache verify {entry.key}`, then `vqa-cache cache rm {entry.key}` "
        f"and extract again"
    )
    return BadInput(f"{entry.kind} features {entry.key} in {entry.root} are damaged: {problem}; {fix}")


def check_complete(entry: Entry, make_it: str) -> dict:
    """The manifest of a complete entry whose shards are all there with their recorded sizes, or a
    BadInput that says which command makes (or checks) it."""
    if not entry.exists():
        raise BadInput(
            f"no {entry.kind} features for this recipe in {entry.root} (entry {entry.key}); make them with: {make_it}"
        )
    manifest = entry.manifest()
    if not manifest.get("complete"):
        raise BadInput(
            f"{entry.kind} features {entry.key} in {entry.root} are incomplete (an extract was "
            f"interrupted); finish them with: {make_it}"
        )
    damage = first_damage(entry, manifest)
    if damage is not None:
        raise damaged(entry, damage[1], repairable=True)
    return manifest


def check_ids(entry: Entry, manifest: dict, ids: list[str]) -> None:
    """The ids read from the shards (image ids or question texts, in row order) against the manifest:
    as many as its rows less the skipped images, and exactly the dataset's (the spec's fingerprint)."""
    skipped = list(manifest.get("skipped", []))
    expected = manifest.get("rows", 0) - len(skipped)
    if len(ids) != expected:
        raise damaged(entry, f"its shards hold {len(ids)} rows, the manifest says {expected}")
    mismatch = ids_mismatch(entry.kind, manifest.get("spec", {}), ids, skipped)
    if mismatch:
        raise damaged(entry, f"the {mismatch[0]} in its shards are not the dataset's ({mismatch[1]})")


def check_features_finite(entry: Entry, name: str, arr: np.ndarray | CSR) -> None:
    if isinstance(arr, CSR):
        arr = arr.values
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise damaged(entry, f"{name} holds non-finite values (NaN or inf)")


def read_features(entry: Entry, manifest: dict, output: str, dtype=np.float32) -> tuple[list[str], np.ndarray]:
    """All ids (image ids or question texts, in row order) and the features of one output: images pooled
    [N, D] or grid [N, h*w, D]; questions pooled [M, D] or token states [M, L, D] with the padding positions
    zeroed (the mask), as `dtype` (float32, or float16 as stored: half the memory, the same values); or
    question token ids [M, L] int64, each id + 1 and 0 after its length."""
    if entry.kind == "image":
        ids, arr = load_rows(entry, manifest, IMAGE_DATASETS[output])
    elif output == "ids":
        ids, arr = load_rows(entry, manifest, "ids")
        _, length = load_rows(entry, manifest, "length")
        return ids, head_ids(arr, length)
    elif output == "tokens":
        ids, arr = load_rows(entry, manifest, "tokens")
        _, mask = load_rows(entry, manifest, "mask")
        arr = arr.reshape(len(ids), mask.shape[1], -1)
        return ids, (arr.astype(dtype, copy=False) * mask[:, :, None].astype(dtype)).astype(dtype, copy=False)
    else:
        ids, arr = load_rows(entry, manifest, QUESTION_COLUMNS[output])
    return ids, arr.astype(dtype, copy=False)


def read_pooled_questions(entry: Entry, manifest: dict) -> tuple[list[str], np.ndarray | SparseRows]:
    """The texts and pooled question features [M, D] float16: as SparseRows when the first shard is stored
    sparse or fewer than a quarter of its values are non-zero (bag-of-words vectors: a question has a few
    words of the vocabulary), each shard taken as it is read, so that the dense whole is never in memory;
    else dense (load_rows)."""
    shards = shard_arrays(entry, manifest, QUESTION_COLUMNS["pooled"], sparse=True)
    ids, first = next(shards, ([], None))
    if isinstance(first, np.ndarray) and first.dtype == np.float16:  # (a cache written before shards were sparse)
        made = CSR.of(first)
        first = first if made is None else made
    if not isinstance(first, CSR):
        read = [] if first is None else [(ids, first)]
        return load_rows(entry, manifest, QUESTION_COLUMNS["pooled"], itertools.chain(read, shards))  # dense
    parts = [first]
    for shard_ids, arr in shards:
        ids += shard_ids
        parts.append(arr if isinstance(arr, CSR) else CSR.of(arr, always=True))
    check_ids(entry, manifest, ids)
    ends = np.cumsum([0] + [int(p.indptr[-1]) for p in parts[:-1]])
    indptr = np.concatenate([[0]] + [p.indptr[1:] + end for p, end in zip(parts, ends)])
    return ids, SparseRows(
        indptr, np.concatenate([p.cols for p in parts]), np.concatenate([p.values for p in parts]), first.width
    )


class SparseRows:
    """Float16 rows [M, D] held as compressed sparse rows (indptr [M+1], column of each value, values), in
    place of the dense tensor: rows[idx] is the dense float32 batch [len(idx), D], exactly the values of the
    dense rows. On the device the rows are moved to (.to), like a tensor."""

    def __init__(self, indptr, cols, values, width: int):
        self.indptr, self.cols, self.values = (
            torch.as_tensor(indptr).long(),
            torch.as_tensor(cols),
            torch.as_tensor(values),
        )
        self.shape = (len(self.indptr) - 1, int(width))

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def dtype(self) -> torch.dtype:
        return self.values.dtype  # (float16, as the cache holds the values)

    @property
    def device(self) -> torch.device:
        return self.values.device

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.indptr, self.cols, self.values))

    def to(self, device) -> SparseRows:
        return SparseRows(self.indptr.to(device), self.cols.to(device), self.values.to(device), self.shape[1])

    def __getitem__(self, idx: torch.Tensor) -> torch.Tensor:
        idx = torch.as_tensor(idx, device=self.indptr.device).long()
        start, count = self.indptr[idx], self.indptr[idx + 1] - self.indptr[idx]
        owner = torch.repeat_interleave(torch.arange(len(idx), device=idx.device), count)
        first = torch.repeat_interleave(start - (torch.cumsum(count, 0) - count), count)
        at = first + torch.arange(len(owner), device=idx.device)  # each value's place in cols/values
        out = torch.zeros(len(idx), self.shape[1], device=idx.device)
        out[owner, self.cols[at].long()] = self.values[at].float()
        return out


def load_rows(entry: Entry, manifest: dict, what: str, shards=None) -> tuple[list[str], np.ndarray]:
    """All ids (image ids or question texts) and one HDF5 dataset or Parquet column (`what`), shards
    in order, each copied into one array as it is read (at most one shard's table alive besides it: reading
    them all first, then concatenating, held three copies of the features at the peak). `shards`: the
    shard_arrays of `what` when the caller has begun reading them."""
    ids: list[str] = []
    out, filled = None, 0
    total = sum(int(shard["rows"]) for shard in manifest["shards"])
    for shard_ids, arr in shard_arrays(entry, manifest, what) if shards is None else shards:
        ids += shard_ids
        arr = arr.dense() if isinstance(arr, CSR) else arr
        if out is None:
            out = np.empty((total, *arr.shape[1:]), arr.dtype)
        out[filled : filled + len(arr)] = arr
        filled += len(arr)
        del arr  # (its table's memory goes back before the next shard is read)
    check_ids(entry, manifest, ids)
    return ids, out if out is not None else np.zeros((0, manifest.get("dim", 0)), np.float16)


def shard_arrays(entry: Entry, manifest: dict, what: str, sparse: bool = False):
    """(ids, array of `what`) of each shard in order, checked: there with its recorded size, readable, its
    rows as the manifest says, its features finite. `sparse`: a question shard's embedding stored sparse
    comes as CSR."""
    for shard in manifest["shards"]:
        path = entry.path / shard["file"]
        if not path.is_file():
            raise damaged(entry, f"{shard['file']}: shard missing", repairable=True)
        if shard.get("bytes") is not None and path.stat().st_size != shard["bytes"]:
            raise damaged(
                entry,
                f"{shard['file']}: {path.stat().st_size} bytes, the manifest says "
                f"{shard['bytes']} (truncated or overwritten shard)",
                repairable=True,
            )
        try:
            if entry.kind == "image":
                shard_ids, arr = read_image_shard(path, what)
            else:
                embedding = sparse and what == QUESTION_COLUMNS["pooled"]
                shard_ids, arr = read_question_embedding(path) if embedding else read_question_shard(path, what)
        except (OSError, KeyError, ValueError) as e:
            raise damaged(entry, f"{shard['file']}: unreadable shard ({type(e).__name__}: {e})") from None
        if len(shard_ids) != shard["rows"] or len(arr) != len(shard_ids):
            raise damaged(
                entry, f"{shard['file']}: {len(shard_ids)} ids and {len(arr)} rows, the manifest says {shard['rows']}"
            )
        check_features_finite(entry, shard["file"], arr)
        yield shard_ids, arr


# ---------------------------------------------------------------- streaming (caches larger than memory)


class ImageStream:
    """Image features left on disk: shards are read in row chunks (of about `chunk_mib` MiB) by
    `workers` DataLoader processes, each with its own h5py handles. Peak memory is bounded by
    (group + prefetch) chunks, whatever the size of the cache: a reader takes `group` chunks at a time
    (train/batches.py, stream_batches).

    ids: image ids in row order; shape: (N, *row shape) like the in-memory tensor it replaces.
    The ids are checked when it opens (check_ids), each chunk's features as it is read (finite).
    """

    def __init__(
        self,
        entry: Entry,
        manifest: dict,
        dataset: str,
        chunk_mib: float = 16,
        workers: int | None = None,
        group: int = 4,
    ):
        self.entry, self.files = entry, [entry.path / s["file"] for s in manifest["shards"]]
        self.dataset, self.ids, self.chunks, self.group = dataset, [], [], group
        self.workers = min(2, usable_cpus()) if workers is None else workers
        row_shape = None
        for f, path in enumerate(self.files):
            try:
                with h5py.File(path, "r") as h:
                    rows, row_shape = h[dataset].shape[0], h[dataset].shape[1:]
            except (OSError, KeyError) as e:
                raise damaged(entry, f"{path.name}: unreadable shard ({type(e).__name__}: {e})") from None
            self.ids += read_shard_ids(path)
            step = max(1, int(chunk_mib * 2**20) // (2 * int(np.prod(row_shape or (1,))) or 1))
            self.chunks += [(f, s, min(s + step, rows)) for s in range(0, rows, step)]
        check_ids(entry, manifest, self.ids)
        self.starts = np.cumsum([0] + [c[2] - c[1] for c in self.chunks])  # global first row of each chunk
        self.shape = (len(self.ids), *(row_shape or (manifest.get("dim", 0),)))

    def __len__(self):
        return self.shape[0]

    def nbytes(self, itemsize: int = 4) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * itemsize

    def chunk_of(self, rows: torch.Tensor) -> np.ndarray:
        """The chunk that holds each of `rows` (global row numbers)."""
        return np.searchsorted(self.starts, rows.cpu().numpy(), side="right") - 1

    def read(self, order):
        """(chunk, global start row, float16 rows) for the chunks in `order`, read ahead by the workers."""
        loader = torch.utils.data.DataLoader(
            _Chunks(self.files, self.dataset, self.chunks),
            batch_size=None,
            sampler=list(order),
            num_workers=self.workers,
            prefetch_factor=2 if self.workers else None,
        )
        for c, rows in loader:
            if not torch.isfinite(rows).all():
                raise damaged(
                    self.entry,
                    f"{self.files[self.chunks[c][0]].name} holds non-finite values "
                    f"(NaN or inf) in rows {self.chunks[c][1]}..{self.chunks[c][2]}",
                )
            yield int(c), int(self.starts[c]), rows


class _Chunks(torch.utils.data.Dataset):
    """Item c = (c, float16 rows of chunk c); one h5py handle per file per worker process."""

    def __init__(self, files, dataset, chunks):
        self.files, self.dataset, self.chunks = files, dataset, chunks
        self._handles = {}

    def __len__(self):
        return len(self.chunks)

    def __getitem__(self, c):
        f, start, stop = self.chunks[c]
        pid = os.getpid()
        if self._handles.get("pid") != pid:  # a fresh process (DataLoader worker): own handles
            self._handles = {"pid": pid}
        h = self._handles.get(f)
        if h is None:
            h = self._handles[f] = h5py.File(self.files[f], "r")
        return c, torch.from_numpy(h[self.dataset][start:stop])

    def __getstate__(self):
        return {**self.__dict__, "_handles": {}}
