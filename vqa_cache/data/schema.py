"""The samples table every dataset adapter produces: a pyarrow Table with one row per question.

    question_id: string     image_id: string      image_path: string    question: string
    answers: list<string>   answer_type: string   question_type: string split: string

`answers` holds the raw human answers (10 for VQA v2/VizWiz, 1 for easy-VQA and CSV, [] for test).
Also here: what the adapters share in reading it (their `dataset.options`, question types).
"""

from __future__ import annotations

from collections.abc import Callable

import pyarrow as pa

from ..errors import BadInput

SCHEMA = pa.schema(
    [
        ("question_id", pa.string()),
        ("image_id", pa.string()),
        ("image_path", pa.string()),
        ("question", pa.string()),
        ("answers", pa.list_(pa.string())),
        ("answer_type", pa.string()),
        ("question_type", pa.string()),
        ("split", pa.string()),
    ]
)


def new_rows() -> dict[str, list]:
    """Empty columns for an adapter to fill: {column name: []} in SCHEMA's order."""
    return {name: [] for name in SCHEMA.names}


def make_table(rows: dict[str, list]) -> pa.Table:
    """Columns (dict of lists, the names of SCHEMA) -> a samples table."""
    return pa.table({f.name: pa.array(rows[f.name], f.type) for f in SCHEMA}, schema=SCHEMA)


def question_type(question: str) -> str:
    """The question's first words, as VQA's question types are ('what color', 'is there', ...), for the
    datasets that have none of their own."""
    words = question.lower().rstrip("?").split()
    return " ".join(words[:3] if words[:1] == ["does"] else words[:2])


def layout_options(layout: str, options: dict, defaults: dict, may_be_empty: Callable[[str], bool]) -> dict:
    """A layout's `dataset.options` over its defaults: every key known and every value a string, empty only
    where may_be_empty(key); else BadInput naming the first that is not."""
    unknown = sorted(set(options) - set(defaults))
    if unknown:
        raise BadInput(f"{layout} dataset option {unknown[0]!r} is unknown (known: {', '.join(defaults)})")
    opts = {**defaults, **options}
    for k, v in opts.items():
        if not isinstance(v, str) or (not v and not may_be_empty(k)):
            raise BadInput(
                f"{layout} dataset option {k!r} must be a{'' if may_be_empty(k) else ' non-empty'} string, got {v!r}"
            )
    return opts
