"""`vqa-cache cache ls | info | verify | rm` as functions: the cache's entries (docs/api.md). A KEY may be a
unique prefix. The library is imported inside each function (h5py and pyarrow load slowly)."""

from __future__ import annotations

from ..cache import cache_root
from ..errors import BadInput


def cache_ls(*, cache_dir=None) -> list[dict]:
    """Every entry of the cache: [{"key", "kind", "spec", "rows", "bytes", "complete"}] (an entry whose
    manifest cannot be read is listed incomplete, with "error")."""
    from ..cache import list_entries

    rows = []
    for entry in list_entries(cache_root(cache_dir)):
        try:
            manifest = entry.manifest()
        except BadInput as err:
            manifest = {"spec": {}, "rows": 0, "complete": False, "error": str(err)}
        rows.append(
            {
                "key": entry.key,
                "kind": entry.kind,
                "spec": manifest.get("spec", {}),
                "rows": manifest.get("rows", 0),
                "bytes": entry.size_bytes(),
                "complete": bool(manifest.get("complete")),
                **({"error": manifest["error"]} if "error" in manifest else {}),
            }
        )
    return rows


def cache_info(key: str, *, cache_dir=None) -> dict:
    """One entry's record: key, kind, path, spec, rows, dim, skipped, bytes, created, tool_version, format,
    timings, shards, complete."""
    from ..cache.inspect import info
    from ..cache.store import find_entry

    return info(find_entry(cache_root(cache_dir), key))


def cache_verify(key: str, *, cache_dir=None) -> dict:
    """Every byte of one entry read and checked (checksums, row counts, ids against the spec):
    {"key", "ok", "problems": [one line each], "shards", "rows", "skipped", "bytes"}."""
    from ..cache.inspect import verify
    from ..cache.store import find_entry

    entry = find_entry(cache_root(cache_dir), key)
    problems, summary = verify(entry)
    return {"key": entry.key, "ok": not problems, "problems": problems, **summary}


def cache_rm(key: str, *, cache_dir=None) -> dict:
    """Delete one entry: {"key", "bytes" freed}."""
    from ..cache.inspect import remove
    from ..cache.store import find_entry

    entry = find_entry(cache_root(cache_dir), key)
    return {"key": entry.key, "bytes": remove(entry)}
