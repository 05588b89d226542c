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


def close_matches(name: str, known, what: str) -> str:
    """The tail of an unknown-name message: the known names closest to `name` (difflib), or how many there are."""
    import difflib

    known = list(known)
    near = difflib.get_close_matches(name, known, n=5, cutoff=0.6)
    return f"close matches: {', '.join(near)}" if near else f"no close match among {len(known)} {what}"
