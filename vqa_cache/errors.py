"""The two kinds of failure the CLI tells apart (DESIGN.md, Errors).

`BadInput` is the user's to fix: a missing file, a malformed record, an unknown name.
The CLI prints its message on one line and exits 2. Anything else is our bug: exit 1.
"""


class BadInput(Exception):
    """Bad input or usage: one line naming the file, field or value and what was expected."""
