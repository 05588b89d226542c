"""What a run of stage one continues from: the manifest of an entry (new, resumed, or repaired after
damage), the shards still to write, and the shards that the ranks of an interrupted torchrun run
finished (their progress files)."""

from __future__ import annotations

import json

from .. import messages
from ..cache import Entry
from ..cache.shards import shard_file
from ..cache.store import first_damage
from ..digest import write_file
from ..errors import BadInput

PROGRESS_GLOB, KEPT = "progress-*.json", "progress-kept.json"


def remaining_shards(manifest: dict, rows: int, shard_size: int) -> list[tuple[int, int, int]]:
    """(number, start, stop) of the shards after the manifest's finished ones: fixed ranges of
    `shard_size` positions from where they end, numbered on. A single process writes them in order;
    under torchrun the ranks share them out, so the shards (and their files) are the same either way."""
    start = manifest["shards"][-1]["stop"] if manifest["shards"] else 0
    first = len(manifest["shards"])
    return [(first + k, s0, min(s0 + shard_size, rows)) for k, s0 in enumerate(range(start, rows, shard_size))]


def open_entry(
    entry: Entry, spec: dict, rows: int, shard_size: int | None = None, keep_progress: bool = False, **extra
) -> dict:
    """The entry's manifest to continue from (a resumed run), or a new one. Called under the lock:
    leftovers of a killed writer (temporary files, shards the manifest never recorded) are removed.
    A damaged complete entry (a shard missing or of the wrong size: first_damage) is repaired: it goes
    back to incomplete with the shards before the damage, and the run resumes from there.
    With `shard_size`, shards finished by the ranks of an interrupted torchrun run are taken over
    (take_progress); `keep_progress`: also those that do not continue the manifest's in order."""
    entry.path.mkdir(parents=True, exist_ok=True)
    manifest = None
    if entry.exists():
        manifest = entry.manifest()  # BadInput for another format version: never read as data
        if manifest.get("spec") != json.loads(json.dumps(spec)) or manifest.get("rows") != rows:  # tuples -> lists
            manifest = None
        elif (damage := first_damage(entry, manifest)) is not None:
            n, problem = damage  # keep the finished shards before it, whose files are there and whole
            if manifest.get("complete"):
                messages.warning(
                    f"{entry.kind}s: cache entry {entry.key} is damaged ({problem}); encoding again from "
                    f"row {manifest['shards'][n - 1]['stop'] if n else 0}"
                )
                manifest["complete"] = False
            manifest["shards"] = manifest["shards"][:n]
            entry.save_manifest(manifest)
    if manifest is None:
        manifest = entry.new_manifest(spec, rows, **extra)
        entry.save_manifest(manifest)
    if not manifest.get("complete"):
        kept = take_progress(entry, manifest, rows, shard_size, keep_progress) if shard_size else {}
        listed = {s["file"] for s in manifest["shards"]} | {"manifest.json"}
        listed |= {r["file"] for r in kept.values()} | ({KEPT} if kept else set())
        for p in entry.path.iterdir():
            if p.is_file() and p.name not in listed:
                p.unlink()
    return manifest


def complete_as_is(entry: Entry, spec: dict, rows: int) -> dict | None:
    """The manifest of an entry that is complete, whole and made for this spec and row count, read without
    the lock (a complete entry is only read; a read-only cache has no room for a lock file), else None."""
    try:
        if not entry.complete():
            return None
        manifest = entry.manifest()
    except (OSError, BadInput):
        return None
    if manifest.get("spec") != json.loads(json.dumps(spec)) or manifest.get("rows") != rows:
        return None
    return manifest if first_damage(entry, manifest) is None else None


def ready(entry: Entry) -> bool:
    """Is the entry complete and whole (first_damage), so that extract has nothing to do?"""
    return entry.complete() and first_damage(entry, entry.manifest()) is None


def progress_records(entry: Entry) -> dict[str, dict]:
    """Shard records of every progress file in the entry, by file name."""
    out = {}
    for p in sorted(entry.path.glob(PROGRESS_GLOB)):
        try:
            data = json.loads(p.read_text())
        except (OSError, ValueError):
            continue  # a torn file cannot happen (atomic writes); a foreign one is ignored
        for record in data.get("shards", []) if isinstance(data, dict) else []:
            if isinstance(record, dict) and isinstance(record.get("file"), str):
                out.setdefault(record["file"], record)
    return out


def finished_shard(entry: Entry, records: dict[str, dict], shard: tuple[int, int, int]) -> dict | None:
    """The progress record of shard (number, start, stop) when it was finished: listed with those rows,
    its file there at its recorded size; else None."""
    number, start, stop = shard
    record = records.get(shard_file(entry.kind, number))
    if record is None or record.get("start") != start or record.get("stop") != stop:
        return None
    path = entry.path / record["file"]
    whole = path.is_file() and (record.get("bytes") is None or path.stat().st_size == record["bytes"])
    return record if whole else None


def take_progress(entry: Entry, manifest: dict, rows: int, shard_size: int, keep: bool) -> dict[int, dict]:
    """Fold in the shards that ranks of an interrupted torchrun extraction finished (their progress files):
    those that continue the manifest's shards in order go into it; with `keep` (a torchrun run) the others
    are listed in progress-kept.json and returned by number, else dropped. Under the entry lock."""
    records = progress_records(entry)
    if not records:
        return {}
    finished = {}
    for shard in remaining_shards(manifest, rows, shard_size):
        record = finished_shard(entry, records, shard)
        if record is not None:
            finished[shard[0]] = record
    moved = False
    for number, _, _ in remaining_shards(manifest, rows, shard_size):
        if number not in finished:
            break
        manifest["shards"].append(finished.pop(number))
        moved = True
    if moved:
        entry.save_manifest(manifest)
    if keep and finished:
        write_file(
            entry.path / KEPT, json.dumps({"shards": [finished[n] for n in sorted(finished)]}, indent=1).encode()
        )
    for p in entry.path.glob(PROGRESS_GLOB):
        if p.name != KEPT or not (keep and finished):
            p.unlink()
    return finished if keep else {}
