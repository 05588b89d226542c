"""predictions.json (the best model's validation predictions, written at the end of a run) and
`vqa-cache predict`'s files: the official VQA results format, [{"question_id", "answer"}]."""

from __future__ import annotations

from pathlib import Path

from .files import write_json


def write_predictions(path: Path, question_ids: list[str], answers: list[str]) -> None:
    """Official results format: [{"question_id", "answer"}], integer ids where the dataset's are; written
    whole or not at all."""
    rows = [{"question_id": int(q) if q.isdigit() else q, "answer": a} for q, a in zip(question_ids, answers)]
    write_json(Path(path), rows, indent=None)
