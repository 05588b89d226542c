"""The kinds of failure the CLI tells apart (docs/architecture.md, "Errors").

`BadInput` is the user's to fix: a missing file, a malformed record, an unknown name.
The CLI prints its message on one line and exits 2; the Python API raises it (a ValueError). `Diverged` (a training run whose loss became NaN or
infinite) is one line and exit 1. Anything else is our bug: exit 1 with "unexpected error".
"""


class BadInput(ValueError):
    """Bad input or usage: one line naming the file, field or value and what was expected."""


class Unencodable(BadInput):
    """Input the encoder cannot turn into features, found while encoding: a tokenizer that gives no tokens,
    features that overflow float16. Stage one removes the unfinished cache entry it was writing."""


class Diverged(RuntimeError):
    """A NaN or infinite train loss: the run stopped; its checkpoints keep the last good epoch."""


def worker_origin(e: BaseException) -> tuple[str, str, str] | None:
    """(where, the exception's type name, its message) when `e` is torch's re-raise of an exception in a
    DataLoader worker, whose text is "Caught X in DataLoader worker process N.\nOriginal Traceback ..." (the
    whole traceback: 1.6 KB on one line once flattened); else None. The message is the traceback's last part,
    after the last indented (frame) line."""
    import re

    text = str(e)
    found = re.match(r"Caught (\w+) (in DataLoader worker process \d+)\.\nOriginal Traceback", text)
    if not found:
        return None
    lines = text.rstrip().splitlines()
    frames = [n for n, line in enumerate(lines) if line.startswith(" ")]
    tail = " ".join(lines[frames[-1] + 1 :] if frames else lines[-1:]).strip()
    kind, _, message = tail.partition(": ")
    return found.group(2), found.group(1), (message if kind.split(".")[-1] == found.group(1) else tail)


def one_line(e: BaseException) -> str:
    """An error's message on one line; a DataLoader worker's is its own exception, not the traceback."""
    origin = worker_origin(e)
    text = f"{origin[2]} ({origin[0]})" if origin else str(e)
    return " ".join(text.split())


def error_type(e: BaseException) -> str:
    """The error's type name; for a DataLoader worker's, the worker's exception type."""
    origin = worker_origin(e)
    return origin[1] if origin else type(e).__name__


def close_matches(name: str, known, what: str) -> str:
    """The tail of an unknown-name message: the known names closest to `name` (difflib), or how many there are."""
    import difflib

    known = list(known)
    near = difflib.get_close_matches(name, known, n=5, cutoff=0.6)
    return f"close matches: {', '.join(near)}" if near else f"no close match among {len(known)} {what}"
