"""Shard files. Plain h5py and pyarrow read them with no vqa-cache code:

image-NNNNN.h5          dataset `ids` [N] utf-8 strings, `features` float16 [N, D] (pooled)
                        and/or `grid` float16 [N, H*W, D], row-chunked
question-NNNNN.parquet  columns question: string, embedding: fixed_size_list<float16>[D],
                        and with token states: tokens: fixed_size_list<float16>[L*D], mask: fixed_size_list<uint8>[L]
"""
from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .store import sha256_of


def write_image_shard(path: Path, ids: list[str], arrays: dict[str, np.ndarray]) -> str:
    """Write an HDF5 shard under a temporary name, rename it into place; return its sha256."""
    tmp = path.with_name(path.name + ".tmp")
    with h5py.File(tmp, "w") as f:
        f.create_dataset("ids", data=np.array(ids, dtype=object), dtype=h5py.string_dtype())
        for name, arr in arrays.items():
            dataset = "features" if name == "pooled" else name
            chunk = (min(len(arr), 256),) + arr.shape[1:] if len(arr) else None
            f.create_dataset(dataset, data=arr.astype(np.float16), chunks=chunk)
    os.replace(tmp, path)
    return sha256_of(path)


def read_shard_ids(path: Path) -> list[str]:
    with h5py.File(path, "r") as f:
        return [s.decode() if isinstance(s, bytes) else s for s in f["ids"][:]]


def read_image_shard(path: Path, dataset: str = "features") -> tuple[list[str], np.ndarray]:
    with h5py.File(path, "r") as f:
        return [s.decode() if isinstance(s, bytes) else s for s in f["ids"][:]], f[dataset][:]


def fixed_list(arr: np.ndarray, dtype) -> pa.Array:
    flat = arr.reshape(len(arr), -1)
    return pa.FixedSizeListArray.from_arrays(pa.array(flat.ravel().astype(dtype)), flat.shape[1])


def write_question_shard(path: Path, texts: list[str], arrays: dict[str, np.ndarray]) -> str:
    columns = {"question": pa.array(texts, pa.string()),
               "embedding": fixed_list(arrays["pooled"], np.float16)}
    if "tokens" in arrays:
        columns["tokens"] = fixed_list(arrays["tokens"], np.float16)
        columns["mask"] = fixed_list(arrays["mask"], np.uint8)
    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(pa.table(columns), tmp)
    os.replace(tmp, path)
    return sha256_of(path)


def read_question_shard(path: Path, column: str = "embedding") -> tuple[list[str], np.ndarray]:
    table = pq.read_table(path, columns=["question", column])
    col = table.column(column).combine_chunks()
    values = col.values.to_numpy(zero_copy_only=False).reshape(len(col), -1)
    return table.column("question").to_pylist(), values
