"""Shard files and the index. Plain h5py and pyarrow read them with no vqa-cache code:

image-NNNNN.h5          dataset `ids` [N] utf-8 strings, `features` float16 [N, D] (pooled)
                        and/or `grid` float16 [N, H*W, D], row-chunked (about 1 MiB per chunk)
question-NNNNN.parquet  columns question: string, embedding: fixed_size_list<float16>[D],
                        and with token states: tokens: fixed_size_list<float16>[L*D], mask: fixed_size_list<uint8>[L],
                        and with token ids: ids: fixed_size_list<int32>[L] (zero after the end), length: int32
index.parquet           (image entries) columns image_id: string, shard: string, row: int32
"""

from __future__ import annotations

import io
from pathlib import Path

import h5py
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..digest import write_file

IMAGE_DATASETS = {"pooled": "features", "grid": "grid"}  # image output -> HDF5 dataset
QUESTION_COLUMNS = {"pooled": "embedding", "tokens": "tokens", "ids": "ids"}  # question output -> column
# (tokens: + mask; ids: + length)


def shard_file(kind: str, number: int) -> str:
    """The name of an entry's shard number `number`: image-00000.h5, question-00000.parquet."""
    return f"{kind}-{number:05d}.{'h5' if kind == 'image' else 'parquet'}"


def write_image_shard(path: Path, ids: list[str], arrays: dict[str, np.ndarray]) -> str:
    """Write an HDF5 shard of {output: features}; return its sha256. The file is built in memory and written
    by write_file: HDF5 itself never meets a full disk (its failed writes crash the process), and the shard
    lands whole under its name or not at all."""
    image = io.BytesIO()
    with h5py.File(image, "w") as f:
        f.create_dataset("ids", data=np.array(ids, dtype=object), dtype=h5py.string_dtype())
        for output, arr in arrays.items():
            row_bytes = 2 * int(np.prod(arr.shape[1:], dtype=np.int64)) or 1
            chunk = (max(1, min(len(arr), (1 << 20) // row_bytes)),) + arr.shape[1:] if len(arr) else None
            f.create_dataset(IMAGE_DATASETS[output], data=arr.astype(np.float16, copy=False), chunks=chunk)
    return write_file(path, image.getbuffer())


def write_question_shard(path: Path, texts: list[str], arrays: dict[str, np.ndarray]) -> str:
    """Write a Parquet shard of the texts and their {"pooled"; "tokens", "mask"; "ids", "length"} arrays;
    return its sha256."""
    columns = {
        "question": pa.array(texts, pa.string()),
        QUESTION_COLUMNS["pooled"]: fixed_list(arrays["pooled"], np.float16),
    }
    if "tokens" in arrays:
        columns["tokens"] = fixed_list(arrays["tokens"], np.float16)
        columns["mask"] = fixed_list(arrays["mask"], np.uint8)
    if "ids" in arrays:
        columns["ids"] = fixed_list(arrays["ids"], np.int32)
        columns["length"] = pa.array(arrays["length"].astype(np.int32), pa.int32())
    return write_table(path, pa.table(columns))


def real_positions(ids: np.ndarray, length: np.ndarray) -> np.ndarray:
    """Token ids [M, L] and lengths [M] -> bool [M, L], True at each row's first `length` positions."""
    return np.arange(ids.shape[1])[None, :] < length[:, None]


def head_ids(ids: np.ndarray, length: np.ndarray) -> np.ndarray:
    """Stored token ids [M, L] and lengths [M] -> what a head reads: int64 [M, L], each id + 1, 0 after the
    length (so that 0 is the padding row of its embedding table)."""
    return np.where(real_positions(ids, length), ids.astype(np.int64) + 1, 0)


def fixed_list(arr: np.ndarray, dtype) -> pa.Array:
    flat = arr.reshape(len(arr), -1)
    return pa.FixedSizeListArray.from_arrays(pa.array(flat.ravel().astype(dtype)), flat.shape[1])


def write_table(path: Path, table: pa.Table) -> str:
    """Write a Parquet file (built in memory, then write_file); return its sha256. zstd; dictionary encoding
    for the columns that are not lists (strings repeat; feature values do not, and a dictionary-encoded
    float16 column decodes at a third of the speed of a plain one: 0.75 s against 0.33 s for 100 MiB)."""
    sink = pa.BufferOutputStream()
    plain = [f.name for f in table.schema if not pa.types.is_fixed_size_list(f.type)]
    pq.write_table(table, sink, compression="zstd", use_dictionary=plain)
    return write_file(path, sink.getvalue())


def read_parquet(path: Path, columns: list[str] | None = None) -> pa.Table:
    """A whole Parquet file (or `columns`), read without pq.read_table's dataset layer (pyarrow.dataset: 0.25 s
    and 38 MiB to import, for nothing a single file needs)."""
    return pq.ParquetFile(path).read(columns=columns)


def read_shard_ids(path: Path) -> list[str]:
    with h5py.File(path, "r") as f:
        return _ids(f)


def _ids(f: h5py.File) -> list[str]:
    return [s.decode() if isinstance(s, bytes) else s for s in f["ids"][:]]


def read_image_shard(path: Path, dataset: str = "features") -> tuple[list[str], np.ndarray]:
    with h5py.File(path, "r") as f:
        return _ids(f), f[dataset][:]


def read_question_shard(path: Path, column: str = "embedding") -> tuple[list[str], np.ndarray]:
    """The texts and one column: a list column as [rows, width], `length` as [rows]."""
    table = read_parquet(path, ["question", column])
    col = table.column(column)
    if not pa.types.is_fixed_size_list(col.type):
        return table.column("question").to_pylist(), col.to_numpy()
    width = col.type.list_size
    values = [chunk.flatten().to_numpy(zero_copy_only=False) for chunk in col.chunks] or [np.zeros(0, np.float16)]
    flat = values[0] if len(values) == 1 else np.concatenate(values)
    return table.column("question").to_pylist(), flat.reshape(len(col), width)


def check_image_shard(path: Path, outputs) -> list[str]:
    """Open a shard with h5py and check every feature dataset (dtype, rows, finite); return its ids."""
    with h5py.File(path, "r") as f:
        ids = _ids(f)
        for name in (IMAGE_DATASETS[o] for o in outputs):
            d = f[name]
            if d.dtype != np.float16 or d.shape[0] != len(ids):
                raise ValueError(f"dataset {name!r} is {d.dtype} {d.shape}, expected float16 with {len(ids)} rows")
            step = d.chunks[0] if d.chunks else max(1, len(ids))
            for r0 in range(0, len(ids), step):
                if not np.isfinite(d[r0 : r0 + step]).all():
                    raise ValueError(f"dataset {name!r} holds non-finite values near row {r0}")
    return ids


def check_question_shard(path: Path, tokens: bool, ids: bool = False, vocab_size: int | None = None) -> list[str]:
    """Open a shard with pyarrow and check its columns (types, finite; ids within the vocabulary and zero
    after each length); return its texts."""
    table = read_parquet(path)
    need = ["question", "embedding"] + (["tokens", "mask"] if tokens else []) + (["ids", "length"] if ids else [])
    for name in need:
        if name not in table.column_names:
            raise ValueError(f"no column {name!r}")
    for name in need[1:]:
        if name in ("mask", "ids", "length"):  # integers: ids are checked below
            continue
        values = table.column(name).combine_chunks().values.to_numpy(zero_copy_only=False)
        if values.dtype != np.float16 or not np.isfinite(values).all():
            raise ValueError(f"column {name!r} is not finite float16")
    if ids:
        _, tokens_ids = read_question_shard(path, "ids")
        _, length = read_question_shard(path, "length")
        real = real_positions(tokens_ids, length)
        if (
            (length < 0).any()
            or (length > tokens_ids.shape[1]).any()
            or (tokens_ids[~real] != 0).any()
            or (tokens_ids < 0).any()
            or (vocab_size is not None and (tokens_ids >= vocab_size).any())
        ):
            raise ValueError(f"columns ids / length are not token ids below {vocab_size} with zeros after each length")
    return table.column("question").to_pylist()


def index_columns(directory: Path, shards: list[dict]) -> dict[str, list]:
    """index.parquet's columns for an image entry's shard records: each image id's shard file and row."""
    columns = {"image_id": [], "shard": [], "row": []}
    for record in shards:
        ids = read_shard_ids(directory / record["file"])
        columns["image_id"] += ids
        columns["shard"] += [record["file"]] * len(ids)
        columns["row"] += list(range(len(ids)))
    return columns


def write_index(directory: Path, shards: list[dict]) -> None:
    columns = index_columns(directory, shards)
    write_table(
        directory / "index.parquet",
        pa.table(
            {
                "image_id": pa.array(columns["image_id"], pa.string()),
                "shard": pa.array(columns["shard"], pa.string()),
                "row": pa.array(columns["row"], pa.int32()),
            }
        ),
    )
