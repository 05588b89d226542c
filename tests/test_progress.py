"""Progress output in logs: bars only on a terminal (or in a notebook); written to a file, a few plain lines
(one per 10% or per minute, whichever is rarer), none left by an error, and no bar debris."""

from __future__ import annotations

import io

import pytest

from vqa_cache import progress as P


class Clock:
    """tqdm's clock, advanced by hand (seconds)."""

    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


@pytest.fixture
def clock(monkeypatch):
    c = Clock()
    monkeypatch.setattr("tqdm.std.time", c)
    return c


def lines(path):
    text = path.read_text()
    assert "\r" not in text and "\x1b" not in text, repr(text)  # no bar drawing in a log
    return text.splitlines()


def test_a_log_file_gets_a_line_per_ten_percent_when_that_is_rarer_than_a_minute(tmp_path, clock):
    path = tmp_path / "log.txt"
    with open(path, "w") as f:
        for _ in P.progress(range(1000), desc="images", unit="img", file=f):
            clock.now += 1.0  # 1000 s in all: 10% = 100 s, rarer than a minute
    out = lines(path)
    assert [line.split("%")[0] for line in out] == [f"images: {p:3d}" for p in range(10, 101, 10)], out
    assert out[-1].startswith("images: 100% 1000/1000 [16:40<00:00")


def test_a_log_file_gets_a_line_per_minute_when_that_is_rarer_than_ten_percent(tmp_path, clock):
    path = tmp_path / "log.txt"
    with open(path, "w") as f, P.progress(total=100, desc="questions", file=f) as bar:
        for _ in range(100):
            clock.now += 3.0  # 300 s in all: 10% = 30 s, a minute is rarer
            bar.update(1)
    out = lines(path)
    # a line at 20, 40, 60, 80 and 100 (every 60 s), nothing more
    assert [line.split("%")[0] for line in out] == [f"questions: {p:3d}" for p in (20, 40, 60, 80, 100)], out


def test_without_a_total_a_log_line_per_minute(tmp_path, clock):
    path = tmp_path / "log.txt"
    with open(path, "w") as f:
        bar = P.progress(desc="decoding", file=f)
        for _ in range(250):
            clock.now += 1.0
            bar.update(1)
        bar.close()
    assert len(lines(path)) == 5  # at 60, 120, 180, 240 s and the last line (250)


def test_a_short_bar_leaves_one_line_and_a_temporary_one_none(tmp_path, clock):
    path = tmp_path / "log.txt"
    with open(path, "w") as f:
        for _ in P.progress(range(5000), desc="images", file=f):
            clock.now += 0.01  # 50 s: under a minute
        for epoch in range(20):  # epoch bars: leave=False, 20 s each
            for _ in P.progress(range(150), desc=f"epoch {epoch}", leave=False, file=f):
                clock.now += 0.13
    assert lines(path) == [lines(path)[0]] and lines(path)[0].startswith("images: 100% 5000/5000")


def test_an_error_leaves_no_line_in_a_log(tmp_path, clock):
    path = tmp_path / "log.txt"
    with open(path, "w") as f:
        with pytest.raises(ValueError), P.progress(total=10, desc="images", file=f) as bar:
            bar.update(4)
            raise ValueError("unreadable image")
        f.write("error: unreadable image\n")
    assert lines(path) == ["error: unreadable image"]


def test_bars_on_a_terminal_lines_elsewhere():
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    assert isinstance(P.progress(total=3, file=Terminal()), P._Bar)
    assert isinstance(P.progress(total=3, file=io.StringIO()), P._Lines)
    assert issubclass(P._Bar, P.auto_tqdm)  # tqdm.auto: a widget in a notebook
    out = Terminal()
    for _ in P.progress(range(3), desc="bar", file=out, mininterval=0):
        pass
    assert "\r" in out.getvalue()  # drawn and redrawn in place
