"""Shard files and the index. Plain h5py and pyarrow read them with no vqa-cache code:

image-NNNNN.h5          dataset `ids` [N] utf-8 strings, `features` float16 [N, D] (pooled)
                        and/or `grid` float16 [N, H*W, D], row-chunked (about 1 MiB per chunk)
question-NNNNN.parquet  columns question: string, embedding: fixed_size_list<float16>[D] (or, when under a
                        quarter of its values are non-zero, as bag-of-words vectors are: embedding_index:
                        list<int32> and embedding_value: list<float16>, each row's non-zero positions and
                        values, D in the schema metadata `embedding_width`),
                        and with token states: tokens: fixed_size_list<float16>[L*D], mask: fixed_size_list<uint8>[L],
                        and with token ids: ids: fixed_size_list<int32>[L] (zero after the end), length: int32
index.parquet           (image entries) columns image_id: string, shard: string, row: int32
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..digest import write_file

IMAGE_DATASETS = {"pooled": "features", "grid": "grid"}  # image output -> HDF5 dataset
QUESTION_COLUMNS = {"pooled": "embedding", "tokens": "tokens", "ids": "ids"}  # question output -> column
# (tokens: + mask; ids: + length)
SPARSE = ("embedding_index", "embedding_value")  # the embedding column, sparse
WIDTH = b"embedding_width"  # (the schema metadata of a sparse shard)


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
    pooled = np.asarray(arrays["pooled"]).astype(np.float16, copy=False)  # [M, D]
    sparse = CSR.of(pooled)
    columns = {"question": pa.array(texts, pa.string())}
    if sparse is None:
        columns[QUESTION_COLUMNS["pooled"]] = fixed_list(pooled, np.float16)
    else:
        offsets = pa.array(sparse.indptr.astype(np.int32))
        columns[SPARSE[0]] = pa.ListArray.from_arrays(offsets, pa.array(sparse.cols))
        columns[SPARSE[1]] = pa.ListArray.from_arrays(offsets, pa.array(sparse.values))
    if "tokens" in arrays:
        columns["tokens"] = fixed_list(arrays["tokens"], np.float16)
        columns["mask"] = fixed_list(arrays["mask"], np.uint8)
    if "ids" in arrays:
        columns["ids"] = fixed_list(arrays["ids"], np.int32)
        columns["length"] = pa.array(arrays["length"].astype(np.int32), pa.int32())
    table = pa.table(columns)
    if sparse is not None:
        table = table.replace_schema_metadata({WIDTH: str(sparse.width)})
    return write_table(path, table)


@dataclass
class CSR:
    """Float16 rows [M, D] as compressed sparse rows: indptr [M+1] int64, each value's column (int32, ascending
    in a row) and the values (float16). A question shard's embedding column is written so when it is under a
    quarter non-zero (bag-of-words vectors): decoding the dense float16 lists and finding their non-zeros
    again took 1.5 s of a 60,000-image run's setup."""

    indptr: np.ndarray
    cols: np.ndarray
    values: np.ndarray
    width: int

    def __len__(self) -> int:
        return len(self.indptr) - 1

    @staticmethod
    def of(dense: np.ndarray, always: bool = False) -> CSR | None:
        """The non-zero values of float16 rows (a -0.0 counts as 0); unless `always`, None when a quarter of
        them or more are non-zero (or there are none: an empty shard is written dense)."""
        rows, cols = np.nonzero(dense.view(np.uint16) & 0x7FFF)  # (float16 by its bits: 2x faster)
        if not always and (dense.size == 0 or len(rows) * 4 >= dense.size):
            return None
        indptr = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=len(dense)))]).astype(np.int64)
        return CSR(indptr, cols.astype(np.int32), dense[rows, cols], dense.shape[1])

    def dense(self) -> np.ndarray:
        out = np.zeros((len(self), self.width), np.float16)
        out[np.repeat(np.arange(len(self)), np.diff(self.indptr)), self.cols] = self.values
        return out


def read_csr(table: pa.Table) -> CSR:
    """A sparse shard's embedding_index / embedding_value columns as CSR, its width from the schema metadata;
    ValueError if they disagree or point outside the width."""
    width = int((table.schema.metadata or {}).get(WIDTH, b"0"))
    index, value = (table.column(name).combine_chunks() for name in SPARSE)
    offsets = index.offsets.to_numpy()
    if not np.array_equal(offsets - offsets[0], value.offsets.to_numpy() - value.offsets.to_numpy()[0]):
        raise ValueError("columns embedding_index and embedding_value differ in length")
    cols = index.flatten().to_numpy(zero_copy_only=False).astype(np.int32, copy=False)
    values = value.flatten().to_numpy(zero_copy_only=False)
    if values.dtype != np.float16 or (len(cols) and (cols.min() < 0 or cols.max() >= width)):
        raise ValueError(f"columns embedding_index / embedding_value are not float16 values at positions below {width}")
    return CSR((offsets - offsets[0]).astype(np.int64), cols, values, width)


def real_positions(ids: np.ndarray, length: np.ndarray) -> np.ndarray:
    """Token ids [M, L] and lengths [M] -> bool [M, L], True at each row's first `length` positions."""
    return np.arange(ids.shape[1])[None, :] < length[:, None]


def head_ids(ids: np.ndarray, length: np.ndarray) -> np.ndarray:
    """Stored token ids [M, L] and lengths [M] -> what a head reads: int64 [M, L], each id + 1, 0 after the
    length (so that 0 is the padding row of its embedding table)."""
    return np.where(real_positions(ids, length), ids.astype(np.int64) + 1, 0)


def fixed_list(arr: np.ndarray, dtype) -> pa.Array:
    flat = arr.reshape(len(arr), int(np.prod(arr.shape[1:], dtype=np.int64)))  # (also with no rows)
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
    """The texts and one column: a list column as [rows, width] (the embedding dense, however stored),
    `length` as [rows]."""
    if column == QUESTION_COLUMNS["pooled"]:
        texts, rows = read_question_embedding(path)
        return texts, rows.dense() if isinstance(rows, CSR) else rows
    table = read_parquet(path, ["question", column])
    return table.column("question").to_pylist(), list_column(table, column)


def read_question_embedding(path: Path) -> tuple[list[str], np.ndarray | CSR]:
    """The texts and the embedding column: [rows, width] float16, or CSR where the shard stores it sparse."""
    file = pq.ParquetFile(path)
    if SPARSE[0] in file.schema_arrow.names:
        table = file.read(["question", *SPARSE])
        return table.column("question").to_pylist(), read_csr(table)
    table = file.read(["question", QUESTION_COLUMNS["pooled"]])
    return table.column("question").to_pylist(), list_column(table, QUESTION_COLUMNS["pooled"])


def list_column(table: pa.Table, column: str) -> np.ndarray:
    """A fixed-size list column as [rows, width]; another column as [rows]."""
    col = table.column(column)
    if not pa.types.is_fixed_size_list(col.type):
        return col.to_numpy()
    width = col.type.list_size
    values = [chunk.flatten().to_numpy(zero_copy_only=False) for chunk in col.chunks] or [np.zeros(0, np.float16)]
    flat = values[0] if len(values) == 1 else np.concatenate(values)
    return flat.reshape(len(col), width)


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
    pooled = list(SPARSE) if SPARSE[0] in table.column_names else ["embedding"]
    need = ["question", *pooled] + (["tokens", "mask"] if tokens else []) + (["ids", "length"] if ids else [])
    for name in need:
        if name not in table.column_names:
            raise ValueError(f"no column {name!r}")
    if pooled == list(SPARSE) and not np.isfinite(read_csr(table).values).all():
        raise ValueError("column 'embedding_value' is not finite float16")
    for name in need[1:]:
        if name in ("mask", "ids", "length", *SPARSE):  # integers: ids are checked below (sparse: above)
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
