"""Read a complete cache entry back into memory (stage two)."""
from __future__ import annotations

import numpy as np

from ..errors import BadInput
from .shards import read_image_shard, read_question_shard
from .store import Entry


def check_complete(entry: Entry, make_it: str) -> dict:
    """The manifest of a complete entry, or a BadInput that says which command makes it."""
    if not entry.exists():
        raise BadInput(f"no {entry.kind} features for this recipe in {entry.root} (entry {entry.key}); "
                       f"make them with: {make_it}")
    manifest = entry.manifest()
    if not manifest.get("complete"):
        raise BadInput(f"{entry.kind} features {entry.key} in {entry.root} are incomplete (an extract was "
                       f"interrupted); finish them with: {make_it}")
    return manifest


def load_rows(entry: Entry, manifest: dict, what: str) -> tuple[list[str], np.ndarray]:
    """All ids (image ids or question texts) and one feature array, shards concatenated in order."""
    ids, parts = [], []
    for shard in manifest["shards"]:
        path = entry.path / shard["file"]
        if not path.is_file():
            raise BadInput(f"{path}: shard missing; check the entry with `vqa-cache cache verify {entry.key}`")
        if shard.get("bytes") is not None and path.stat().st_size != shard["bytes"]:
            raise BadInput(f"{path}: {path.stat().st_size} bytes, the manifest says {shard['bytes']} (truncated "
                           f"or overwritten shard); check it with `vqa-cache cache verify {entry.key}`")
        try:
            if entry.kind == "image":
                shard_ids, arr = read_image_shard(path, what)
            else:
                shard_ids, arr = read_question_shard(path, what)
        except (OSError, KeyError, ValueError) as e:
            raise BadInput(f"{path}: unreadable shard ({type(e).__name__}: {e}); check it with "
                           f"`vqa-cache cache verify {entry.key}`") from None
        if len(shard_ids) != shard["rows"]:
            raise BadInput(f"{path}: {len(shard_ids)} rows, the manifest says {shard['rows']}")
        ids += shard_ids
        parts.append(arr)
    return ids, np.concatenate(parts) if parts else np.zeros((0, manifest.get("dim", 0)), np.float16)
