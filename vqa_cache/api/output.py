"""What the API gives besides its return values: the library's printed progress (quiet with verbose=False),
and tables (pandas DataFrames where pandas is installed)."""
from __future__ import annotations

import contextlib
import os

from ..progress import silenced


@contextlib.contextmanager
def printing(verbose: bool):
    """verbose=True: the library prints its progress as the CLI does (lines on stdout, bars on stderr).
    verbose=False: nothing on stdout and no bars; warnings (lines on stderr, e.g. a fallback to random
    weights) still show."""
    if verbose:
        yield
        return
    with open(os.devnull, "w") as null, contextlib.redirect_stdout(null), silenced():
        yield


def table(rows: list[dict]):
    """`rows` as a pandas DataFrame, nested dicts flattened into dotted columns
    (`val_accuracy_per_type.yes/no`), when pandas is installed; else the list of dicts itself."""
    try:
        import pandas as pd     # (optional: not a dependency of vqa-cache)
    except ImportError:
        return rows
    return pd.json_normalize(rows) if rows else pd.DataFrame()


def csv_table(path):
    """A CSV file as a pandas DataFrame (typed columns) when pandas is installed; else a list of dicts of
    strings."""
    try:
        import pandas as pd     # (optional, as above)
    except ImportError:
        import csv
        with open(path, newline="") as f:
            return list(csv.DictReader(f))
    return pd.read_csv(path)
