"""Hugging Face datasets: `--dataset hf:NAME_OR_DIR`.

NAME_OR_DIR is a directory written by `save_to_disk` (a Dataset or a DatasetDict), another local directory
`datasets.load_dataset` reads (Parquet, CSV, JSON ... files), or a Hub dataset name, read through
`datasets.load_dataset` with the Hugging Face cache and offline mode (HF_DATASETS_OFFLINE=1, HF_HUB_OFFLINE=1)
as `datasets` handles them: offline, a Hub name is found in the local cache or not at all.

Columns (options, `--set dataset.options.KEY=VALUE`; defaults fit VQAv2, OK-VQA, TextVQA and VizWiz on the Hub):
    image_column ("image")          an Image feature (stored bytes, or a path), raw bytes, or a file path
    question_column ("question")    text
    answers_column ("answers")      a list of strings, a list of {"answer": ...} records, the column-wise
                                    {"answer": [...]} form of older `datasets`, or one string; optional in a
                                    split named "test" (no answers)
    question_id_column ("question_id"), image_id_column ("image_id"), answer_type_column ("answer_type"),
    question_type_column ("question_type")   used when the dataset has them: else question ids are
                                    "SPLIT/ROW", image ids the sha256 of the image's bytes (or its path),
                                    answer types derived from the most frequent answer (yes/no, number,
                                    other), question types the question's first words
    config (""), revision ("")      for load_dataset(NAME, config, revision=...)
    image_dir ("")                  where relative image paths are (default: the dataset's directory)
    image_paths ("inside")          image paths (where there are no stored bytes) must be relative and stay
                                    inside that folder, as a CSV dataset's must; "anywhere" also takes
                                    absolute and ../ paths (for datasets that really reference files elsewhere)
Split "validation" is called "val"; a lone Dataset is the split "train" (a val split is then held out).
Image ids are "SPLIT/ID", like the other adapters'.

Identity (the cache keys): HF's own fingerprint and row count of every split, the options and this
adapter's version; the image features' key does not depend on where the dataset lies, the parsed rows do.

Images are not decoded here. The stored bytes of each image id are handed over once, as they are (no
re-encoding), to the `export` the caller gives `load` (dispatch.Source.parse), as the file "images/NAME";
that relative path is the rows' image_path. cache/samples.py writes them into the dataset entry of the cache
(ROOT/dataset/<key>/images/, next to samples.parquet); without a cache (`extract --dry-run`, `finetune`)
data.load_samples writes them into a temporary folder removed when the process ends. Either way the image
paths are then absolute, so stage one's DataLoader workers, `finetune`, the report and `ask --image` read
ordinary files and decode each image once, like any other dataset's. Images given as paths are used where
they are (made absolute here).
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

import pyarrow as pa

from ..errors import BadInput
from ..progress import progress
from ..recipes import DatasetSettings
from .files import short
from .hf_columns import answer_list, answer_type, column_kinds
from .schema import layout_options, make_table, new_rows, question_type

VERSION = 1
DEFAULTS = {
    "image_column": "image",
    "question_column": "question",
    "answers_column": "answers",
    "question_id_column": "question_id",
    "image_id_column": "image_id",
    "answer_type_column": "answer_type",
    "question_type_column": "question_type",
    "config": "",
    "revision": "",
    "image_dir": "",
    "image_paths": "inside",
}
PATH_RULES = ("inside", "anywhere")  # image_paths: relative paths inside the folder only, or any path
SPLIT_NAMES = {"validation": "val"}
IMAGES = "images"  # the folder of the exported images (in the dataset entry)
BATCH = 256  # rows read at a time (image bytes included)

_OPENED: dict = {}  # (NAME_OR_DIR, config, revision, stamp) -> (source, {split: Dataset})


def options(dataset: DatasetSettings) -> dict:
    opts = layout_options("hf", dataset.options, DEFAULTS, lambda k: not k.endswith("_column"))
    if opts["image_paths"] not in PATH_RULES:
        raise BadInput(f"dataset.options.image_paths {opts['image_paths']!r}: expected one of {', '.join(PATH_RULES)}")
    return opts


def _datasets():
    """The `datasets` package, or the one line that says how to install it."""
    try:
        import datasets
    except ImportError:
        raise BadInput(
            "hf: datasets need the Hugging Face `datasets` package: pip install 'vqa-cache[hf]' "
            "(or pip install datasets)"
        ) from None
    return datasets


def open_dataset(name: str, opts: dict) -> tuple[str, dict]:
    """(source, {split: Dataset}) of hf:NAME_OR_DIR; source is the absolute directory or the Hub name.
    Memoized per process, for a directory as long as its entries keep their mtimes (save_to_disk again
    into it, and it is loaded again)."""
    if not name.strip():
        raise BadInput("dataset hf needs a Hub name or a save_to_disk directory: --dataset hf:NAME_OR_DIR")
    local = Path(name).expanduser()
    stamp = tuple(sorted((e.name, e.stat().st_mtime_ns) for e in os.scandir(local))) if local.is_dir() else ()
    memo = (name, opts["config"], opts["revision"], stamp)
    if memo not in _OPENED:
        datasets = _datasets()
        source = os.path.abspath(local) if local.is_dir() else name
        bars, verbosity = datasets.is_progress_bar_enabled(), datasets.logging.get_verbosity()
        datasets.disable_progress_bars()  # its bars and cache notes would bury ours
        datasets.logging.set_verbosity_error()
        try:
            if local.is_dir() and ((local / "state.json").is_file() or (local / "dataset_dict.json").is_file()):
                check_saved(local, name)
                loaded = datasets.load_from_disk(source)
            else:
                if local.is_dir():
                    check_no_script(local, name)
                loaded = datasets.load_dataset(source, opts["config"] or None, revision=opts["revision"] or None)
        except (
            OSError,
            ValueError,
            IndexError,
            KeyError,
            TypeError,
            RuntimeError,
            datasets.exceptions.DatasetsError,
        ) as e:  # (BadInput is a ValueError: re-raised below)
            if isinstance(e, BadInput):
                raise
            offline = (
                " (offline: only datasets in the local Hugging Face cache can be read)"
                if datasets.config.HF_HUB_OFFLINE
                else ""
            )
            raise BadInput(
                f"hf:{name}: cannot load the dataset{offline}: {type(e).__name__}: "
                f"{short(' '.join(str(e).split()), 300)}"
            ) from None
        finally:
            datasets.logging.set_verbosity(verbosity)
            if bars:
                datasets.enable_progress_bars()
        if isinstance(loaded, datasets.Dataset):
            splits = {str(loaded.split) if loaded.split is not None else "train": loaded}
        elif isinstance(loaded, datasets.DatasetDict):
            splits = dict(loaded)
        else:
            raise BadInput(
                f"hf:{name}: a {type(loaded).__name__}; expected a Dataset or a DatasetDict "
                f"(an IterableDataset cannot be read twice)"
            )
        named = {}
        for split, ds in splits.items():
            if ds.num_rows == 0:
                raise BadInput(f"hf:{name}: split {split!r} has no rows; remove it from the dataset or give it rows")
            ours = SPLIT_NAMES.get(split, split)
            if ours in named:
                raise BadInput(f"hf:{name}: splits {split!r} and {ours!r} would both be {ours!r}")
            named[ours] = ds
        if not named:
            raise BadInput(f"hf:{name}: no splits")
        _OPENED[memo] = (source, named)
    return _OPENED[memo]


def check_saved(local: Path, name: str) -> None:
    """A save_to_disk directory whose split has no data files (a 0-row split: `datasets` cannot load it back,
    an IndexError) is BadInput naming the split."""
    import json

    if (local / "dataset_dict.json").is_file():
        try:
            split_names = json.loads((local / "dataset_dict.json").read_text())["splits"]
        except (OSError, ValueError, KeyError, TypeError):
            raise BadInput(f"hf:{name}: dataset_dict.json is not a save_to_disk split list") from None
        parts = [(str(s), local / str(s)) for s in split_names if isinstance(s, str)]
    else:
        parts = [("train", local)]
    for split, folder in parts:
        try:
            files = json.loads((folder / "state.json").read_text()).get("_data_files")
        except (OSError, ValueError, AttributeError):
            continue  # load_from_disk says what is wrong
        if files == []:
            raise BadInput(
                f"hf:{name}: split {split!r} has no rows (no data files in {folder}); remove it from "
                f"the dataset or give it rows"
            )


def check_no_script(local: Path, name: str) -> None:
    """A directory holding a dataset loading script (NAME.py): `datasets` no longer runs them, and vqa-cache
    never runs code from a dataset."""
    scripts = sorted(p.name for p in local.glob("*.py"))
    if scripts:
        raise BadInput(
            f"hf:{name}: the directory holds a loading script ({scripts[0]}); dataset scripts are "
            f"not run (no code from a dataset is): save the data with save_to_disk or as Parquet, "
            f"CSV or JSON files"
        )


def identity(where: str, dataset: DatasetSettings) -> dict:
    """What the cache keys hang on: HF's own fingerprint of each split (it changes with the data, and with
    every transform that made it), its rows, the options. `files` (where the dataset was read from) shapes
    the parsed rows and the exported images' places, not the image features (image_identity leaves it out)."""
    opts = options(dataset)
    source, splits = open_dataset(where, opts)
    return {
        "kind": "hf",
        "version": VERSION,
        "options": {k: opts[k] for k in sorted(opts)},
        "splits": {s: {"fingerprint": ds._fingerprint, "rows": ds.num_rows} for s, ds in sorted(splits.items())},
        "files": {"source": source},
    }


# ---------------------------------------------------------------- reading


def load(where: str, dataset: DatasetSettings, export) -> pa.Table:
    """The samples table of hf:WHERE. `export(path, data)` gets the stored bytes of each image id once, as
    the file `path` ("images/NAME", the image_path of its rows, relative to where the caller keeps it)."""
    opts = options(dataset)
    source, splits = open_dataset(where, opts)
    return make_table(parse(source, splits, opts, f"hf:{where}", export))


def parse(source: str, splits: dict, opts: dict, where: str, export) -> dict[str, list]:
    """The samples table's columns of every split; image bytes go to `export` (see load), image paths are
    made absolute."""
    rows = new_rows()
    folder = opts["image_dir"] or (source if os.path.isdir(source) else "")
    base = Path(folder).expanduser() if folder else None  # where relative image paths are
    exported: dict[str, str] = {}  # image id -> image_path
    seen: dict[str, str] = {}  # question id -> where first seen
    total = sum(ds.num_rows for ds in splits.values())
    with progress(total=total, desc="reading", unit="q", leave=False, file=sys.stderr) as bar:
        for split, ds in splits.items():
            kinds = column_kinds(ds, opts, where, split)
            columns = list(dict.fromkeys(col for col, _ in kinds.values()))
            row = 0
            for batch in ds.select_columns(columns).with_format("arrow").iter(batch_size=BATCH):
                n = batch.num_rows
                get = {role: batch.column(col) for role, (col, _) in kinds.items()}
                questions = get["question"].to_pylist()
                answers = get["answers"].to_pylist() if "answers" in get else [None] * n
                qids = get["question_id"].to_pylist() if "question_id" in get else [None] * n
                ids, paths, todo = image_ids(
                    get["image"],
                    kinds["image"][1],
                    get.get("image_id"),
                    split,
                    row,
                    where,
                    base,
                    exported,
                    opts["image_paths"] == "anywhere",
                )
                if todo:
                    export_images(get["image"], kinds["image"][1], todo, ids, exported, export)
                for role in ("answer_type", "question_type"):
                    get[role] = get[role].to_pylist() if role in get else [None] * n
                for i in range(n):
                    r = row + i
                    q = questions[i]
                    if q is None or not q.strip():
                        raise BadInput(f"{where}: split {split!r} row {r} has an empty question ({q!r})")
                    qid = f"{split}/{r}" if qids[i] is None else str(qids[i])
                    if qid in seen:
                        raise BadInput(
                            f"{where}: split {split!r} row {r}: duplicate question id {qid!r} (first in {seen[qid]})"
                        )
                    seen[qid] = f"split {split!r} row {r}"
                    a = answer_list(answers[i], kinds.get("answers", (None, "none"))[1])
                    rows["question_id"].append(qid)
                    rows["image_id"].append(ids[i])
                    rows["image_path"].append(paths[i] if paths[i] is not None else exported[ids[i]])
                    rows["question"].append(q)
                    rows["answers"].append(a)
                    rows["answer_type"].append(
                        get["answer_type"][i] if get["answer_type"][i] is not None else answer_type(a)
                    )
                    rows["question_type"].append(
                        get["question_type"][i] if get["question_type"][i] is not None else question_type(q)
                    )
                    rows["split"].append(split)
                row += n
                bar.update(n)
        if not rows["question_id"]:
            raise BadInput(f"{where}: no questions (every split is empty)")
    return rows


def image_ids(
    images: pa.ChunkedArray,
    kind: str,
    id_column,
    split: str,
    row: int,
    where: str,
    base: Path | None,
    exported: dict,
    anywhere: bool = False,
) -> tuple[list[str], list, list[int]]:
    """(image id per row, absolute path per row or None where the image is stored bytes, rows whose bytes
    are the first seen of their image id: to export). Only the bytes of rows without an id column are
    read here (to hash them)."""
    n = len(images)
    given = id_column.to_pylist() if id_column is not None else None
    if kind == "image":
        paths = images.combine_chunks().field("path").to_pylist()
        stored = images.combine_chunks().field("bytes").is_valid().to_pylist()
        nulls = images.is_null().to_pylist()
    else:
        paths = images.to_pylist() if kind == "path" else [None] * n
        stored = [kind == "bytes" and not null for null in images.is_null().to_pylist()]
        nulls = images.is_null().to_pylist()
    ids, out, todo = [], [], []
    for i in range(n):
        if nulls[i] or not (stored[i] or paths[i]):
            raise BadInput(f"{where}: split {split!r} row {row + i} has no image (null)")
        if given is not None:
            if given[i] is None:
                raise BadInput(f"{where}: split {split!r} row {row + i} has no image id (null)")
            ident = str(given[i])
        elif stored[i]:
            ident = hashlib.sha256(_bytes_of(images, kind, i)).hexdigest()[:16]
        else:
            ident = paths[i]
        ident = f"{split}/{ident}"
        ids.append(ident)
        if stored[i]:
            out.append(None)
            if ident not in exported:
                exported[ident] = ""  # claimed; export_images gives it its file name
                todo.append(i)
        else:
            p = Path(paths[i]).expanduser() if anywhere else Path(paths[i])
            norm = os.path.normpath(paths[i])
            if not anywhere and (p.is_absolute() or norm == ".." or norm.startswith(".." + os.sep)):
                raise BadInput(
                    f"{where}: split {split!r} row {row + i}: image path {short(paths[i], 80)!r} is "
                    f"outside the dataset directory (absolute or ../; a CSV dataset's may not be "
                    f"either); if the dataset really references files there, allow it with "
                    f"--set dataset.options.image_paths=anywhere"
                )
            if not p.is_absolute():
                if base is None:
                    raise BadInput(
                        f"{where}: split {split!r} row {row + i}: image path {short(paths[i])!r} is "
                        f"relative and there are no image bytes; give the folder it is relative to "
                        f"with --set dataset.options.image_dir=DIR"
                    )
                p = base / p
            out.append(os.path.abspath(p))
    return ids, out, todo


def _bytes_of(images: pa.ChunkedArray, kind: str, i: int) -> bytes:
    value = images[i].as_py()
    return value["bytes"] if kind == "image" else value


def export_images(images: pa.ChunkedArray, kind: str, todo: list[int], ids: list[str], exported: dict, export) -> None:
    """Hand the stored bytes of rows `todo` as they are to `export`, as images/<sha1 of the image id>[.ext]
    (the extension of the image's original path, when it has one)."""
    for i in todo:
        value = images[i].as_py()
        data = value["bytes"] if kind == "image" else value
        ext = os.path.splitext(value.get("path") or "")[1].lower() if kind == "image" else ""
        name = hashlib.sha1(ids[i].encode()).hexdigest()[:20] + (
            ext if 2 <= len(ext) <= 6 and ext[1:].isalnum() else ""
        )
        export(f"{IMAGES}/{name}", data)
        exported[ids[i]] = f"{IMAGES}/{name}"
