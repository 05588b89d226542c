"""The library's messages: the `vqa_cache` logger. No module outside cli/ calls print(); each says
`messages.info(line)` (what a command reports: the CLI's stdout) or `messages.warning(line)` (what must not go unseen:
stderr), and progress bars go through progress.py.

By default the logger shows them as the command line always did: info lines on the current sys.stdout,
warnings on the current sys.stderr, the message alone (`console`, looked up when a line is written, so
captured and redirected streams get it). A program takes them over with the logging module:
`logging.getLogger("vqa_cache")` (its level, its handlers: remove CONSOLE to keep them off the console).
The API's verbose=False is the level WARNING for the call (`level`), not a redirect of stdout: whatever else
prints (a notebook's own print()) still shows.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager

LOGGER = logging.getLogger("vqa_cache")


class Console(logging.Handler):
    """Info lines to sys.stdout, warnings and errors to sys.stderr (as they are when the line is written)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            stream = sys.stderr if record.levelno >= logging.WARNING else sys.stdout
            stream.write(self.format(record) + "\n")
            stream.flush()
        except Exception:
            self.handleError(record)


CONSOLE = Console()
CONSOLE.setFormatter(logging.Formatter("%(message)s"))
LOGGER.addHandler(CONSOLE)
LOGGER.setLevel(logging.INFO)
LOGGER.propagate = False  # the lines are shown once (a root handler a notebook set up would repeat them)


def info(message: str) -> None:
    """A line of what a command reports (the CLI's stdout)."""
    LOGGER.info(message)


def warning(message: str) -> None:
    """A line that must not go unseen, also with verbose=False (stderr)."""
    LOGGER.warning(message)


@contextmanager
def level(verbose: bool) -> Iterator[None]:
    """The API's verbose: True shows the info lines (the logger's level as it is, INFO by default), False
    only warnings, for the block."""
    before = LOGGER.level
    if not verbose:
        LOGGER.setLevel(max(before, logging.WARNING))
    try:
        yield
    finally:
        LOGGER.setLevel(before)
