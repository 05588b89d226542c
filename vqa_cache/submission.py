"""Competition submissions as CSV (`predict --format csv`): `ID,answer` rows. For a csv: dataset's test
split, the DACON way: in sample_submission.csv's order when the dataset has that file, else in test.csv's,
every ID of it present (a missing one is bad input: one line, nothing written). Otherwise the split's
questions in their order, headed `question_id,answer`."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from . import data
from .data import csvdata
from .digest import write_file
from .errors import BadInput
from .recipes import DatasetSettings, build


def write_submission(out: Path, dataset: dict, split: str, ids: list[str], answers: list[str]) -> int:
    """Write the CSV submission of one split's predictions (question ids and answers) to `out` (through a
    temporary file: an existing `out` stays whole on failure); the number of rows."""
    settings = build(DatasetSettings, dataset)
    src = data.source(settings)
    if src.kind == "csv" and split == "test":
        order, header, name = csvdata.submission_order(Path(src.where), settings)
        by_id = dict(zip(map(str, ids), answers))
        missing = [i for i in order if i not in by_id]
        if missing:
            raise BadInput(
                f"--format csv: {len(missing)} of the {len(order)} IDs of {name} have no prediction "
                f"(first: {missing[0]!r}); extract and predict the whole test split (no --limit or "
                f"--image-fraction subsets it)"
            )
        rows = [(i, by_id[i]) for i in order]
    else:
        header, rows = ["question_id", "answer"], list(zip(map(str, ids), answers))
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    write_file(Path(out), text.getvalue().encode("utf-8"))
    return len(rows)
