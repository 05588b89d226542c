"""Read a complete cache entry back into memory (stage two).

What is read is checked cheaply on the way (no checksums; `cache verify` reads every byte): every
shard is there with its recorded size, the row totals match the manifest, the ids are the dataset's
(their fingerprint is in the spec) and the features are finite. A damaged entry is BadInput naming it.
"""
from __future__ import annotations

import numpy as np

from ..digest import fingerprint
from ..errors import BadInput
from .shards import read_image_shard, read_question_shard
from .store import Entry, first_damage


def damaged(entry: Entry, problem: str, repairable: bool = False) -> BadInput:
    """The error for a damaged entry. `repairable`: a shard missing or of the wrong size, which a re-run
    of extract finds and encodes again; anything else needs the entry removed and extracted again."""
    fix = ("run the same `vqa-cache extract` again to repair it" if repairable else
           f"check it with `vqa-cache cache verify {entry.key}`, then `vqa-cache cache rm {entry.key}` "
           f"and extract again")
    return BadInput(f"{entry.kind} features {entry.key} in {entry.root} are damaged: {problem}; {fix}")


def check_complete(entry: Entry, make_it: str) -> dict:
    """The manifest of a complete entry whose shards are all there with their recorded sizes, or a
    BadInput that says which command makes (or checks) it."""
    if not entry.exists():
        raise BadInput(f"no {entry.kind} features for this recipe in {entry.root} (entry {entry.key}); "
                       f"make them with: {make_it}")
    manifest = entry.manifest()
    if not manifest.get("complete"):
        raise BadInput(f"{entry.kind} features {entry.key} in {entry.root} are incomplete (an extract was "
                       f"interrupted); finish them with: {make_it}")
    damage = first_damage(entry, manifest)
    if damage is not None:
        raise damaged(entry, damage[1], repairable=True)
    return manifest


def check_ids(entry: Entry, manifest: dict, ids: list[str]) -> None:
    """The ids read from the shards (image ids or question texts, in row order) against the manifest:
    as many as its rows less the skipped images, and exactly the dataset's (the spec's fingerprint)."""
    skipped = list(manifest.get("skipped", []))
    expected = manifest.get("rows", 0) - len(skipped)
    if len(ids) != expected:
        raise damaged(entry, f"its shards hold {len(ids)} rows, the manifest says {expected}")
    spec = manifest.get("spec", {})
    if entry.kind == "image":
        got, want, what = fingerprint(sorted(ids + skipped)), spec.get("images"), "image ids"
    else:
        got, want, what = fingerprint(ids), spec.get("questions"), "question texts"
    if got != want:
        raise damaged(entry, f"the {what} in its shards are not the dataset's (fingerprint {got[:12]}, "
                             f"the spec says {str(want)[:12]})")


def check_finite(entry: Entry, name: str, arr: np.ndarray) -> None:
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise damaged(entry, f"{name} holds non-finite values (NaN or inf)")


def load_rows(entry: Entry, manifest: dict, what: str) -> tuple[list[str], np.ndarray]:
    """All ids (image ids or question texts) and one feature array, shards concatenated in order."""
    ids, parts = [], []
    for shard in manifest["shards"]:
        path = entry.path / shard["file"]
        if not path.is_file():
            raise damaged(entry, f"{shard['file']}: shard missing", repairable=True)
        if shard.get("bytes") is not None and path.stat().st_size != shard["bytes"]:
            raise damaged(entry, f"{shard['file']}: {path.stat().st_size} bytes, the manifest says "
                                 f"{shard['bytes']} (truncated or overwritten shard)", repairable=True)
        try:
            if entry.kind == "image":
                shard_ids, arr = read_image_shard(path, what)
            else:
                shard_ids, arr = read_question_shard(path, what)
        except (OSError, KeyError, ValueError) as e:
            raise damaged(entry, f"{shard['file']}: unreadable shard ({type(e).__name__}: {e})") from None
        if len(shard_ids) != shard["rows"]:
            raise damaged(entry, f"{shard['file']}: {len(shard_ids)} rows, the manifest says {shard['rows']}")
        check_finite(entry, shard["file"], arr)
        ids += shard_ids
        parts.append(arr)
    check_ids(entry, manifest, ids)
    return ids, np.concatenate(parts) if parts else np.zeros((0, manifest.get("dim", 0)), np.float16)
