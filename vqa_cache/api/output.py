"""What the API gives besides its return values: the library's messages and progress (quiet with
verbose=False: messages.level, progress.silenced), and tables (pandas DataFrames where pandas is installed)."""

from __future__ import annotations

import contextlib
import os

from .. import messages
from ..errors import BadInput
from ..progress import silenced


def path_arg(call: str, name: str, value, optional: bool = False):
    """An API argument that names a file or directory: a str or path-like (None when `optional`), as a str;
    anything else is BadInput naming the call and argument (not a TypeError from deep inside)."""
    if value is None and optional:
        return None
    if isinstance(value, (str, os.PathLike)):
        return os.fspath(value)
    raise BadInput(
        f"{call}: {name} = {value!r}: expected a path (str or os.PathLike)"
        f"{' or None' if optional else ''}, got {type(value).__name__}"
    )


def count_arg(call: str, name: str, value, least: int = 1) -> int:
    """An API argument that is a whole number >= `least` (not a bool, not a str)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadInput(f"{call}: {name} = {value!r}: expected an integer, got {type(value).__name__}")
    if value < least:
        raise BadInput(f"{call}: {name} = {value!r}: expected at least {least}")
    return value


def text_arg(call: str, name: str, value) -> str:
    if not isinstance(value, str):
        raise BadInput(f"{call}: {name} = {value!r}: expected a str, got {type(value).__name__}")
    return value


@contextlib.contextmanager
def printing(verbose: bool):
    """verbose=True: the library reports as the CLI does (the `vqa_cache` logger's lines on stdout, bars on
    stderr). verbose=False: the logger at level WARNING and no bars; warnings (e.g. a fallback to random
    weights) still show, and nothing else is redirected (a notebook's own print() shows)."""
    if verbose:
        yield
        return
    with messages.level(False), silenced():
        yield


def table(rows: list[dict]):
    """`rows` as a pandas DataFrame, nested dicts flattened into dotted columns
    (`val_accuracy_per_type.yes/no`), when pandas is installed; else the list of dicts itself."""
    try:
        import pandas as pd  # (optional: not a dependency of vqa-cache)
    except ImportError:
        return rows
    return pd.json_normalize(rows) if rows else pd.DataFrame()


def csv_table(path):
    """A CSV file as a pandas DataFrame (typed columns) when pandas is installed; else a list of dicts of
    strings."""
    try:
        import pandas as pd  # (optional, as above)
    except ImportError:
        import csv

        with open(path, newline="") as f:
            return list(csv.DictReader(f))
    return pd.read_csv(path)
