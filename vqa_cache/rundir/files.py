"""Reading and writing a run's files: JSON objects read with one clear message when they are not, and
every file written whole or not at all (digest.atomic_file: a temporary file in the same directory,
fsync'd, renamed; never through a symlink; a full disk is one line naming the file and the free space)."""

from __future__ import annotations

import json
from pathlib import Path

from ..digest import atomic_file, write_file
from ..errors import BadInput


def read_json_object(path: Path, missing: str) -> dict:
    """A run's JSON file as an object; BadInput `missing` when it is not there, or naming what is wrong."""
    if not path.is_file():
        raise BadInput(missing)
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
        raise BadInput(f"{path}: not valid JSON ({e})") from None
    except OSError as e:
        raise BadInput(f"{path}: unreadable ({e.strerror or e})") from None
    if not isinstance(data, dict):
        raise BadInput(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def write_json(path: Path, data, indent: int | None = 1) -> None:
    """A JSON file, written whole or not at all."""
    write_file(Path(path), json.dumps(data, indent=indent).encode())


def write_text(path: Path, text: str) -> None:
    """A text file (UTF-8: report.html, trials.csv, best.toml), written whole or not at all."""
    write_file(Path(path), text.encode("utf-8"))


def save_figure(path: Path, fig, **kwargs) -> None:
    """A matplotlib Figure as a PNG, written whole or not at all."""
    with atomic_file(Path(path)) as f:
        fig.savefig(f, format="png", **kwargs)
