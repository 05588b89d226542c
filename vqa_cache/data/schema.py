"""The samples table every dataset adapter produces: a pyarrow Table with one row per question.

    question_id: string     image_id: string      image_path: string    question: string
    answers: list<string>   answer_type: string   question_type: string split: string

`answers` holds the raw human answers (10 for VQA v2/VizWiz, 1 for easy-VQA and CSV, [] for test).
"""
from __future__ import annotations

import pyarrow as pa

SCHEMA = pa.schema([
    ("question_id", pa.string()), ("image_id", pa.string()), ("image_path", pa.string()),
    ("question", pa.string()), ("answers", pa.list_(pa.string())), ("answer_type", pa.string()),
    ("question_type", pa.string()), ("split", pa.string()),
])


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
