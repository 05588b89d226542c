"""Text from data (answer types, answers, question types, search parameters) as a matplotlib label.

matplotlib parses a label holding an even number of `$` as mathtext, and a malformed one (`$x^$`) fails
when the figure is drawn. `plain` escapes every `$`, so the text is shown exactly as written; a label that
begins with `_` (which a legend would leave out) gets a zero-width space in front."""

from __future__ import annotations


def plain(text) -> str:
    text = str(text).replace("$", r"\$")
    return "\u200b" + text if text.startswith("_") else text
