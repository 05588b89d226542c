"""Helpers the file-based adapters (vqa2, vizwiz, csv) share: reading JSON with errors that name
the file and position, fingerprints of files and image folders, and keeping paths inside the
dataset directory.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from ..digest import sha256_file
from ..errors import BadInput

NAME_MAX = 255  # bytes in one file name, on the file systems datasets live on
_LISTING_MEMO: dict = {}  # (dir, mtime_ns) -> (fingerprint, the names of its files)


def read_json(path: Path):
    """Parse a JSON file; BadInput naming the file (and line/column for malformed JSON)."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise BadInput(f"{path}: no such file") from None
    except IsADirectoryError:
        raise BadInput(f"{path}: is a directory, expected a JSON file") from None
    except UnicodeDecodeError as e:
        raise BadInput(f"{path}: not UTF-8 text (byte {e.start})") from None
    except json.JSONDecodeError as e:
        raise BadInput(f"{path}: malformed JSON at line {e.lineno} column {e.colno}: {e.msg}") from None
    except RecursionError:
        raise BadInput(f"{path}: JSON nested too deeply to read (arrays or objects thousands of levels deep)") from None


def file_identity(path: Path) -> dict:
    """size, mtime and sha256 of one annotation file."""
    st = path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": sha256_file(path)}


def listing_fingerprint(folder: Path) -> str:
    """sha256 over the (name, size, mtime) of every file in an image folder, sorted by name;
    "missing" when there is no such folder. Memoized per process on the folder's own mtime."""
    try:
        if not folder.is_dir():
            return "missing"
    except OSError as e:  # a path too long to look up, ...
        raise BadInput(f"image folder {short(str(folder), 80)!r}: {e.strerror}") from None
    memo = (str(folder.resolve()), folder.stat().st_mtime_ns)
    if memo not in _LISTING_MEMO:
        items, names = [], []
        with os.scandir(folder) as it:
            for e in it:
                if e.is_file():
                    st = e.stat()
                    items.append(f"{e.name}\t{st.st_size}\t{st.st_mtime_ns}")
                    names.append(e.name)
        text = "".join(line + "\n" for line in sorted(items))  # (hashed in one piece, not a line at a time)
        _LISTING_MEMO[memo] = (f"{len(items)}:{hashlib.sha256(text.encode()).hexdigest()}", frozenset(names))
    return _LISTING_MEMO[memo][0]


def listed_files(folder: Path) -> frozenset | None:
    """The names of the files in `folder` when listing_fingerprint listed it at its current mtime (a file
    added or removed since changes the folder's mtime), else None: checking a dataset's image paths against
    it saves a stat per image (0.15 s at 20,000 images)."""
    try:
        return _LISTING_MEMO.get((str(folder.resolve()), folder.stat().st_mtime_ns), (None, None))[1]
    except OSError:
        return None


def inside(rel: str, where: str, folder: str = "") -> str:
    """FOLDER/REL normalized; BadInput if REL is absolute or climbs out of FOLDER (and so,
    possibly, out of the dataset directory), or has a file name too long for any file system."""
    norm = os.path.normpath(rel)
    if os.path.isabs(rel) or norm == ".." or norm.startswith(".." + os.sep) or "\0" in rel:
        raise BadInput(
            f"{where}: image path {rel!r} escapes the dataset directory"
            f"{f' (expected a file under {folder}/)' if folder else ''}"
        )
    for name in norm.split(os.sep):
        if len(os.fsencode(name)) > NAME_MAX:
            raise BadInput(
                f"{where}: image file name {short(name)!r} is {len(os.fsencode(name))} bytes long, "
                f"more than a file name can be ({NAME_MAX})"
            )
    return (f"{folder}/" if folder else "") + norm.replace(os.sep, "/")


def short(text: str, limit: int = 40) -> str:
    """The first `limit` characters of a long value, for messages."""
    return text if len(text) <= limit else text[:limit] + "..."


def some(items: list, path: Path, what: str = "questions") -> list:
    """`items` (read from `path`); BadInput when there are none: a file a layout reads must hold questions."""
    if not items:
        raise BadInput(f"{path}: no {what} in the file (expected at least one)")
    return items


def records(data, key: str | None, path: Path | str) -> list:
    """data[key] (or data itself) as a list of records."""
    if key is not None:
        if not isinstance(data, dict) or key not in data:
            raise BadInput(f"{path}: expected an object with a '{key}' list")
        data = data[key]
    if not isinstance(data, list):
        raise BadInput(f"{path}: expected a list of records{f' under {key!r}' if key else ''}")
    return data


def field(record, i: int, key: str, path: Path, what: str = "record"):
    if not isinstance(record, dict):
        raise BadInput(f"{path}: {what} {i} is not an object")
    if key not in record:
        raise BadInput(f"{path}: {what} {i} has no '{key}' (has: {', '.join(sorted(map(str, record)))})")
    return record[key]


def text(value, i: int, key: str, path: Path, what: str = "record") -> str:
    if not isinstance(value, str):
        raise BadInput(f"{path}: {what} {i} '{key}' must be a string, got {value!r}")
    return value


def question_text(value, i: int, path: Path, what: str = "record") -> str:
    """A question: a string with more than whitespace in it."""
    value = text(value, i, "question", path, what)
    if not value.strip():
        raise BadInput(f"{path}: {what} {i} has an empty 'question' ({value!r})")
    return value


def identifier(value, i: int, key: str, path: Path, what: str = "record") -> str:
    """An id field (integer or string) as a string."""
    if isinstance(value, bool) or not isinstance(value, (int, str)) or value == "":
        raise BadInput(f"{path}: {what} {i} '{key}' must be an integer or a non-empty string, got {value!r}")
    return str(value)


def answer_list(value, i: int, path: Path, what: str = "record") -> list[str]:
    """Human answers: a list of {"answer": str, ...} objects (or of plain strings)."""
    if not isinstance(value, list):
        raise BadInput(f"{path}: {what} {i} 'answers' must be a list, got {type(value).__name__}")
    out = []
    for a in value:
        if isinstance(a, dict) and isinstance(a.get("answer"), str):
            out.append(a["answer"])
        elif isinstance(a, str):
            out.append(a)
        else:
            raise BadInput(f"{path}: {what} {i} has an answer that is not an object with a string 'answer': {a!r}")
    return out


def few(items: list, limit: int = 3) -> str:
    shown = ", ".join(str(i) for i in items[:limit])
    return shown + (", ..." if len(items) > limit else "")
