"""Shard files. Plain h5py and pyarrow read them with no vqa-cache code:

image-NNNNN.h5          dataset `ids` [N] utf-8 strings, `features` float16 [N, D] (pooled)
                        and/or `grid` float16 [N, H*W, D], row-chunked (about 1 MiB per chunk)
question-NNNNN.parquet  columns question: string, embedding: fixed_size_list<float16>[D],
                        and with token states: tokens: fixed_size_list<float16>[L*D], mask: fixed_size_list<uint8>[L]
"""
from __future__ import annotations

import io
from pathlib import Path

import h5py
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..digest import write_file


def write_image_shard(path: Path, ids: list[str], arrays: dict[str, np.ndarray]) -> str:
    """Write an HDF5 shard; return its sha256. The file is built in memory and written by write_file:
    HDF5 itself never meets a full disk (its failed writes crash the process), and the shard lands
    whole under its name or not at all."""
    image = io.BytesIO()
    with h5py.File(image, "w") as f:
        f.create_dataset("ids", data=np.array(ids, dtype=object), dtype=h5py.string_dtype())
        for name, arr in arrays.items():
            dataset = "features" if name == "pooled" else name
            row_bytes = 2 * int(np.prod(arr.shape[1:], dtype=np.int64)) or 1
            chunk = (max(1, min(len(arr), (1 << 20) // row_bytes)),) + arr.shape[1:] if len(arr) else None
            f.create_dataset(dataset, data=arr.astype(np.float16, copy=False), chunks=chunk)
    return write_file(path, image.getbuffer())


def write_table(path: Path, table: pa.Table) -> str:
    """Write a Parquet file (built in memory, then write_file); return its sha256."""
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return write_file(path, sink.getvalue())


def image_datasets(outputs) -> list[str]:
    """HDF5 dataset names for the spec's outputs: pooled -> `features`, grid -> `grid`."""
    return ["features" if o == "pooled" else o for o in outputs]


def check_image_shard(path: Path, outputs) -> list[str]:
    """Open a shard with h5py and check every feature dataset (dtype, rows, finite); return its ids."""
    with h5py.File(path, "r") as f:
        ids = [s.decode() if isinstance(s, bytes) else s for s in f["ids"][:]]
        for name in image_datasets(outputs):
            d = f[name]
            if d.dtype != np.float16 or d.shape[0] != len(ids):
                raise ValueError(f"dataset {name!r} is {d.dtype} {d.shape}, expected float16 with {len(ids)} rows")
            step = d.chunks[0] if d.chunks else max(1, len(ids))
            for r0 in range(0, len(ids), step):
                if not np.isfinite(d[r0:r0 + step]).all():
                    raise ValueError(f"dataset {name!r} holds non-finite values near row {r0}")
    return ids


def check_question_shard(path: Path, tokens: bool) -> list[str]:
    """Open a shard with pyarrow and check its columns (types, finite); return its texts."""
    table = pq.read_table(path)
    need = ["question", "embedding"] + (["tokens", "mask"] if tokens else [])
    for name in need:
        if name not in table.column_names:
            raise ValueError(f"no column {name!r}")
    for name in need[1:]:
        col = table.column(name).combine_chunks()
        values = col.values.to_numpy(zero_copy_only=False)
        if name != "mask" and (values.dtype != np.float16 or not np.isfinite(values).all()):
            raise ValueError(f"column {name!r} is not finite float16")
    return table.column("question").to_pylist()


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
    return write_table(path, pa.table(columns))


def read_question_shard(path: Path, column: str = "embedding") -> tuple[list[str], np.ndarray]:
    table = pq.read_table(path, columns=["question", column])
    col = table.column(column).combine_chunks()
    values = col.values.to_numpy(zero_copy_only=False).reshape(len(col), -1)
    return table.column("question").to_pylist(), values
