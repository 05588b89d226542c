"""The columns of a Hugging Face dataset (`hf:NAME_OR_DIR`, hf.py): which column plays which role and how
it is stored, from a split's Arrow schema alone (no row read), and one row's answers as a list of strings."""

from __future__ import annotations

from collections import Counter

import pyarrow as pa

from ..errors import BadInput
from .csvdata import answer_type as of_answer


def _is_text(t) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t)


def _is_list(t) -> bool:
    return pa.types.is_list(t) or pa.types.is_large_list(t)


def _struct_field(t, name: str):
    return t.field(name).type if pa.types.is_struct(t) and t.get_field_index(name) >= 0 else None


def column_kinds(ds, opts: dict, where: str, split: str) -> dict:
    """{role: (column, kind)} for the columns this split has, from its Arrow schema (no row is read);
    BadInput naming the column and what it holds when one is missing or of the wrong type."""
    schema = ds.features.arrow_schema
    have = schema.names

    def find(role: str, required: bool):
        col = opts[f"{role}_column"]
        if col not in have:
            if required:
                raise BadInput(
                    f"{where}: split {split!r} has no column {col!r} (has: {', '.join(have)}); "
                    f"name it with --set dataset.options.{role}_column=NAME"
                )
            return None
        return col, schema.field(col).type

    def wrong(role, col, t, expected):
        raise BadInput(f"{where}: split {split!r} column {col!r} ({role}) holds {t}, expected {expected}")

    out = {}
    col, t = find("image", True)
    if _struct_field(t, "bytes") is not None and _struct_field(t, "path") is not None:
        out["image"] = (col, "image")  # datasets.Image: {bytes, path}, decoded only on access
    elif pa.types.is_binary(t) or pa.types.is_large_binary(t):
        out["image"] = (col, "bytes")
    elif _is_text(t):
        out["image"] = (col, "path")
    else:
        wrong("image", col, t, "images (datasets.Image), bytes or file paths")
    col, t = find("question", True)
    if not _is_text(t):
        wrong("question", col, t, "text")
    out["question"] = (col, "text")
    found = find("answers", split != "test")
    if found:
        col, t = found
        item = t.value_type if _is_list(t) else None
        if _is_text(t):
            kind = "one"
        elif item is not None and _is_text(item):
            kind = "strings"
        elif item is not None and _struct_field(item, "answer") is not None and _is_text(_struct_field(item, "answer")):
            kind = "records"
        elif (
            _struct_field(t, "answer") is not None
            and _is_list(_struct_field(t, "answer"))
            and _is_text(_struct_field(t, "answer").value_type)
        ):
            kind = "columns"  # Sequence({"answer": ...}) of older datasets
        elif pa.types.is_null(t) or (item is not None and pa.types.is_null(item)):
            kind = "none"  # no answers at all (an unanswered split)
        else:
            wrong("answers", col, t, "a list of strings or of {answer: ...} records")
        out["answers"] = (col, kind)
    for role in ("question_id", "image_id"):
        found = find(role, False)
        if found:
            col, t = found
            if not (_is_text(t) or pa.types.is_integer(t)):
                wrong(role, col, t, "integers or text")
            out[role] = (col, "id")
    for role in ("answer_type", "question_type"):
        found = find(role, False)
        if found:
            if not _is_text(found[1]):
                wrong(role, found[0], found[1], "text")
            out[role] = (found[0], "text")
    return out


def answer_list(value, kind: str) -> list[str]:
    """One row's answers (as to_pylist gives them) -> a list of strings; None -> []."""
    if value is None or kind == "none":
        return []
    if kind == "one":
        return [value]
    if kind == "columns":
        value = value.get("answer") or []
    elif kind == "records":
        value = [a.get("answer") if a is not None else None for a in value]
    return [a for a in value if a is not None]


def answer_type(answers: list[str]) -> str:
    """yes/no, number or other, from the most frequent answer ("" without answers)."""
    return of_answer(Counter(answers).most_common(1)[0][0]) if answers else ""
