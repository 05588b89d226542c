"""Recipe files: TOML in (read_toml, the `features` and `base` references) and out (to_toml), and the
one setter of a dotted key (`--set optim.lr=3e-4`, a sweep's "optim.betas.1")."""

from __future__ import annotations

import datetime
import json
import math
import sys
from pathlib import Path
from typing import Any

from ..errors import BadInput

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def read_toml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise BadInput(f"recipe not found: {path}")
    try:
        return tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise BadInput(f"{path}: not valid TOML: {e}") from None


def to_toml(data: dict, prefix: str = "") -> str:
    """Nested dicts as TOML tables (scalars first); empty dicts inline. (A sweep writes its best.toml.)"""
    lines, tables = [], []
    for key, value in data.items():
        if isinstance(value, dict) and value:
            tables.append((key, value))
        else:
            lines.append(f"{key} = {_toml_value(value)}")
    out = ("\n".join(lines) + "\n") if lines else ""
    for key, value in tables:
        name = f"{prefix}{key}"
        out += f"\n[{name}]\n{to_toml(value, name + '.')}"
    return out


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        if isinstance(v, float) and not math.isfinite(v):
            return {math.inf: "inf", -math.inf: "-inf"}.get(v, "nan")
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {_toml_value(x)}" for k, x in v.items()) + "}"
    raise TypeError(f"cannot write {v!r} as TOML")


def parse_value(text: str) -> Any:
    """A `--set` value: a TOML value (3e-4, true, [1, 2], "x"); anything else is the text itself
    (`--set dataset.name=csv:/data/x`). A TOML date or time is also the text (no recipe value is one)."""
    try:
        value = tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text
    except RecursionError:
        raise BadInput(f"--set value {text[:40]!r}...: nested too deeply") from None
    return text if isinstance(value, (datetime.date, datetime.time)) else value


def apply_overrides(data: dict, overrides: list | tuple = ()) -> dict:
    """Apply overrides to a nested dict (in place) and return it. An override is a `--set` string
    "key.sub=VALUE" (VALUE parsed by parse_value) or a ("key.sub", value) pair: an option's value as typed,
    set as it is (never re-parsed: a path stays the path); a callable value gets the current value (None
    when there is none) and returns the new one."""
    for item in overrides:
        if isinstance(item, tuple):
            key, value = item
        else:
            key, sep, text = item.partition("=")
            if not sep or not key.strip():
                raise BadInput(f"--set expects KEY=VALUE, got {item!r}")
            value = parse_value(text.strip())
        set_dotted(data, key.strip(), value, f"--set {key.strip()}")
    return data


def set_dotted(data: dict, key: str, value, where: str) -> None:
    """data[a][b][c] = value for the key "a.b.c", making the sections that are missing; a number after a list
    names its element ("optim.betas.1"). A callable value gets the current value (None when there is none)
    and returns the new one. BadInput naming `where` (how the key was given: "--set KEY", "space 'KEY'")
    when a part of the key is not a section, or not an index of the list it follows."""
    *parents, leaf = key.split(".")
    node = data
    for part in parents:
        if isinstance(node, list):
            node = node[_index(node, part, where)]
        else:
            node = node.setdefault(part, {})
        if not isinstance(node, (dict, list)):
            raise BadInput(f"{where}: {part!r} is not a section")
    if isinstance(node, list):
        i = _index(node, leaf, where)
        node[i] = value(node[i]) if callable(value) else value
    else:
        node[leaf] = value(node.get(leaf)) if callable(value) else value


def _index(items: list, part: str, where: str) -> int:
    if not part.isdigit() or int(part) >= len(items):
        raise BadInput(f"{where}: {part!r} is not an index of that list (length {len(items)})")
    return int(part)


def resolve_relative(ref: str, recipe_path: Path, key: str = "features", what: str = "extract recipe") -> Path:
    """A recipe names another by a path relative to the working directory or to itself."""
    p = Path(ref)
    for candidate in (p, recipe_path.parent / p, recipe_path.parent.parent / p):
        if candidate.is_file():
            return candidate
    raise BadInput(f"{recipe_path}: {key} = {ref!r}: no such {what}")


def load_extract_dict(path: str | None) -> dict:
    return read_toml(path) if path else {}


def load_train_dict(path: str | None) -> dict:
    """The train recipe as a dict, with its `features` reference replaced by that recipe's dict."""
    if not path:
        return {}
    data = read_toml(path)
    ref = data.get("features")
    if isinstance(ref, str):
        data["features"] = read_toml(resolve_relative(ref, Path(path)))
    data.setdefault("name", Path(path).stem)
    return data
