"""Progress output: bars on a terminal or in a notebook, a few plain lines in a log.

`progress(...)` takes tqdm's arguments. Where the output is a terminal (its `file`, stderr by default, is a
tty) or a Jupyter notebook it returns a `tqdm.auto` bar (a widget in a notebook). Elsewhere (a file, a pipe,
CI) it returns a bar that prints one plain line when at least LINE_SHARE of the total (10%) AND at least
LINE_SECONDS (a minute) have passed since the last one, whichever is rarer, plus a last line when a bar that
stays (`leave`, the default) ends: a 20-epoch training log gets no line per batch, a two-hour extraction one
line per 10%.

Either way, when an exception leaves the bar (out of its `with` block, out of the iterable it wraps, or out
of a loop over it), its line is cleared (a log gets no last line), so the error that follows is one clean
line. A loop left early (`break`) clears it too.

Inside `silenced()` (the Python API's `verbose=False`) every bar is disabled.
"""

from __future__ import annotations

import sys
from contextlib import contextmanager

from tqdm import std
from tqdm.auto import tqdm as auto_tqdm

LINE_SHARE = 0.1  # a log line per 10% of the total ...
LINE_SECONDS = 60.0  # ... and at most one a minute (both must have passed)
NOTEBOOK = any(c.__module__ == "tqdm.notebook" for c in auto_tqdm.__mro__)  # tqdm.auto chose widgets
LINE_FORMAT = "{desc}: {percentage:3.0f}% {n_fmt}/{total_fmt} [{elapsed}<{remaining}, {rate_fmt}{postfix}]"
_silenced = [0]  # how many silenced() blocks are open (in any thread: bars are process-wide output)


class _Clearing:
    """Mixin for a tqdm class: the bar is not left behind when an exception or a `break` leaves it."""

    def __init__(self, iterable=None, *args, **kwargs):
        self.finished = iterable is None  # with an iterable: set once it is exhausted
        if iterable is not None:
            if kwargs.get("total") is None and hasattr(iterable, "__len__"):
                kwargs["total"] = len(iterable)
            iterable = self._watch(iterable)
        super().__init__(iterable, *args, **kwargs)

    def _watch(self, iterable):
        yield from iterable
        self.finished = True

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            self.leave = False
        return super().__exit__(exc_type, exc, tb)

    def close(self):
        if not self.finished:  # the loop over the bar did not reach the end
            self.leave = False
        super().close()


class _Bar(_Clearing, auto_tqdm):
    """A tqdm.auto bar (a terminal bar, or a notebook widget)."""


class _Lines(_Clearing, std.tqdm):
    """A bar for logs: plain lines, at most one per LINE_SHARE of the total and per LINE_SECONDS (without
    a total: one per LINE_SECONDS), and a last one when it ends if it stays (`leave`)."""

    monitor_interval = 0  # no monitor thread: nothing is redrawn behind our back

    def __init__(self, *args, **kwargs):
        self._shown = kwargs.get("initial", 0)  # the count at the last line (the start prints nothing)
        kwargs.update(mininterval=0, miniters=1, bar_format=LINE_FORMAT, dynamic_ncols=False)
        super().__init__(*args, **kwargs)
        self._shown_t = getattr(self, "start_t", 0)  # (a disabled bar has no start)

    def display(self, msg=None, pos=None):
        """Called on every update (mininterval 0): a line when enough progress and time have passed.
        msg == "" (clear the bar) has nothing to clear in a log."""
        if msg is None and self.n != self._shown:
            step = self.total * LINE_SHARE if self.total else 0
            if self.n - self._shown >= step and self._time() - self._shown_t >= LINE_SECONDS:
                self._line()
        return False

    def _line(self):
        self.fp.write(self.__str__() + "\n")
        self.fp.flush()
        self._shown, self._shown_t = self.n, self._time()

    def close(self):
        if not self.finished:
            self.leave = False
        if self.leave and not self.disable and self.n != self._shown:
            self._line()  # the last line of a bar that stays
        self.leave = False  # tqdm's close then only "clears": nothing in a log
        super().close()


def interactive(file) -> bool:
    """Is `file` shown live: a terminal, or (whatever the file) a Jupyter notebook, where tqdm.auto
    draws widgets?"""
    if NOTEBOOK:
        return True
    try:
        return bool(file.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed file
        return False


@contextmanager
def silenced():
    """No progress bars inside this block (warnings, printed by their callers, still show)."""
    _silenced[0] += 1
    try:
        yield
    finally:
        _silenced[0] -= 1


def progress(iterable=None, *args, **kwargs) -> std.tqdm:
    """A tqdm bar on a terminal or in a notebook, plain log lines elsewhere (see above); its line is
    cleared when an exception leaves it. Disabled inside silenced()."""
    if _silenced[0]:
        kwargs["disable"] = True
    file = kwargs.get("file") or sys.stderr
    cls = _Bar if interactive(file) else _Lines
    return cls(iterable, *args, **kwargs)
