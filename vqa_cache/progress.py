"""Progress bars that get out of the way of an error.

`progress(...)` takes tqdm's arguments and returns a tqdm bar. When an exception leaves the bar (out of
its `with` block, out of the iterable it wraps, or out of a loop over it), its line is cleared instead of
left behind, so the error that follows is one clean line. A loop left early (`break`) clears it too.

Inside `silenced()` (the Python API's `verbose=False`) every bar is disabled.
"""
from __future__ import annotations

from contextlib import contextmanager

from tqdm import tqdm

_silenced = [0]         # how many silenced() blocks are open (in any thread: bars are process-wide output)


class _Bar(tqdm):
    def __init__(self, iterable=None, *args, **kwargs):
        self.finished = iterable is None        # with an iterable: set once it is exhausted
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
        if not self.finished:                   # the loop over the bar did not reach the end
            self.leave = False
        super().close()


@contextmanager
def silenced():
    """No progress bars inside this block (warnings, printed by their callers, still show)."""
    _silenced[0] += 1
    try:
        yield
    finally:
        _silenced[0] -= 1


def progress(iterable=None, *args, **kwargs) -> tqdm:
    """tqdm(iterable, *args, **kwargs) whose line is cleared when an exception leaves it (see above);
    disabled inside silenced()."""
    if _silenced[0]:
        kwargs["disable"] = True
    return _Bar(iterable, *args, **kwargs)
