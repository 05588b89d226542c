"""Records of one list in a large JSON file, read one at a time (VQA v2's annotation files are hundreds of
MB: json.load would build the whole tree, several times the file's size, before the first record is used).

stream_records(path, key) yields the items of the top-level object's `key` list in file order; every other
top-level value is decoded and dropped. Each item is decoded by the json module's own C decoder
(JSONDecoder.raw_decode), so the values are exactly json.load's, at its speed; memory holds one buffer of
the file (about CHUNK characters) and the item at hand. Errors are BadInput naming the file, the line and
the column, as files.read_json's."""

from __future__ import annotations

import json
import re
from pathlib import Path

from ..errors import BadInput

CHUNK = 1 << 20
_DECODER = json.JSONDecoder()
_SPACE = re.compile(r"[ \t\n\r]*").match
_SCAN = _DECODER.scan_once  # type: ignore[attr-defined]  # the C scanner raw_decode calls (StopIteration: no value there)


class _Reader:
    """A text buffer over the file with the line/column of its start, refilled as it is consumed."""

    def __init__(self, f, path: Path):
        self.f, self.path, self.buf, self.pos, self.eof = f, path, "", 0, False
        self.line, self.col = 1, 1  # of buf[0]

    def more(self) -> bool:
        """Read another chunk (dropping what was consumed); False at the end of the file."""
        if self.eof:
            return False
        consumed = self.buf[: self.pos]
        newlines = consumed.count("\n")
        self.line += newlines
        self.col = len(consumed) - consumed.rfind("\n") if newlines else self.col + len(consumed)
        chunk = self.f.read(CHUNK + len(self.buf))  # (grows for values longer than a chunk)
        self.eof = not chunk
        self.buf, self.pos = self.buf[self.pos :] + chunk, 0
        return not self.eof

    def peek(self) -> str:
        """The next non-space character (not consumed), or "" at the end."""
        while True:
            self.pos = _SPACE(self.buf, self.pos).end()
            if self.pos < len(self.buf) or not self.more():
                return self.buf[self.pos : self.pos + 1]

    def expect(self, chars: str) -> str:
        c = self.peek()
        if not c or c not in chars:
            self.fail(self.pos, f"Expecting {' or '.join(repr(x) for x in chars)}")
        self.pos += 1
        return c

    def value(self):
        """The next JSON value, decoded whole."""
        self.peek()
        while True:
            try:
                try:
                    value, end = _SCAN(self.buf, self.pos)
                except StopIteration as stop:
                    raise json.JSONDecodeError("Expecting value", self.buf, stop.value) from None
            except json.JSONDecodeError as e:
                # a value cut by the buffer's end: read more and try again; else a real error
                if (e.pos >= len(self.buf) - 64 or e.msg.startswith("Unterminated")) and self.more():
                    continue
                self.fail(e.pos, e.msg)
            except RecursionError:
                raise BadInput(
                    f"{self.path}: JSON nested too deeply to read (arrays or objects thousands of levels deep)"
                ) from None
            if end == len(self.buf) and not self.eof and self.more():  # a number may go on in the next chunk
                continue
            self.pos = end
            return value

    def fail(self, pos: int, msg: str):
        before = self.buf[:pos]
        line = self.line + before.count("\n")
        col = pos - before.rfind("\n") if "\n" in before else self.col + pos
        raise BadInput(f"{self.path}: malformed JSON at line {line} column {col}: {msg}")


def stream_records(path: Path, key: str):
    """The items of data[key] of the JSON object in `path`, one at a time (see the module docstring)."""
    try:
        with open(path, encoding="utf-8") as f:
            r = _Reader(f, path)
            if r.peek() != "{":
                r.value()  # (malformed or too deep: that error; else it is not an object)
                raise BadInput(f"{path}: expected an object with a '{key}' list")
            r.expect("{")
            found = False
            while r.peek() != "}":
                name = r.value()
                if not isinstance(name, str):
                    r.fail(r.pos, "Expecting property name enclosed in double quotes")
                r.expect(":")
                if name != key:
                    r.value()
                elif r.peek() != "[":
                    raise BadInput(f"{path}: expected a list of records under {key!r}")
                else:
                    found = True
                    r.expect("[")
                    if r.peek() == "]":
                        r.pos += 1
                    else:
                        while True:
                            yield r.value()
                            if r.expect(",]") == "]":
                                break
                if r.expect(",}") == "}":
                    break
            if not found:
                raise BadInput(f"{path}: expected an object with a '{key}' list")
    except FileNotFoundError:
        raise BadInput(f"{path}: no such file") from None
    except IsADirectoryError:
        raise BadInput(f"{path}: is a directory, expected a JSON file") from None
    except UnicodeDecodeError as e:
        raise BadInput(f"{path}: not UTF-8 text (byte {e.start})") from None
