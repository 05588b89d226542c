"""Cache entries: the root, keys, manifests, the writer lock, listing, and the cheap checks of an entry."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import time
from pathlib import Path

from .. import messages
from ..digest import fingerprint, write_error, write_file
from ..errors import BadInput
from ..version import __version__

FORMAT_VERSION = 1
KINDS = ("image", "question", "dataset", "answers")  # dataset: a parsed samples table (samples.py);
# answers: a samples table's ground truth and soft scores (targets.py)


def cache_root(option: str | None = None) -> Path:
    """--cache-dir, else $VQA_CACHE_HOME, else ~/.cache/vqa-cache; BadInput when it (or a folder above
    it) is a file."""
    given = "--cache-dir" if option else "$VQA_CACHE_HOME" if os.environ.get("VQA_CACHE_HOME") else "the cache root"
    root = Path(option or os.environ.get("VQA_CACHE_HOME") or Path.home() / ".cache" / "vqa-cache").expanduser()
    for p in (root, *root.parents):
        if p.exists():
            if not p.is_dir():
                raise BadInput(f"{given} {root}: {p} is a file, not a directory (point it at a directory)")
            break
    return root


def entry_key(kind: str, spec: dict) -> str:
    """kind-<16 hex of sha256(canonical JSON of everything that shapes the bytes)>."""
    blob = json.dumps({"format": FORMAT_VERSION, "kind": kind, **spec}, sort_keys=True, separators=(",", ":"))
    return f"{kind}-{hashlib.sha256(blob.encode()).hexdigest()[:16]}"


class Entry:
    """One cache entry directory and its manifest."""

    def __init__(self, root: Path, key: str):
        self.root, self.key = Path(root), key
        self.kind = key.split("-", 1)[0]
        self.path = self.root / self.kind / key

    @property
    def manifest_path(self) -> Path:
        return self.path / "manifest.json"

    def exists(self) -> bool:
        return self.manifest_path.is_file()

    def manifest(self) -> dict:
        try:
            data = json.loads(self.manifest_path.read_text())
        except FileNotFoundError:
            raise BadInput(f"cache entry {self.key} does not exist in {self.root}") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise BadInput(
                f"{self.manifest_path}: corrupt manifest ({e}); remove the entry with "
                f"`vqa-cache cache rm {self.key}` and run extract again"
            ) from None
        if not isinstance(data, dict) or not isinstance(data.get("shards", []), list):
            raise BadInput(f"{self.manifest_path}: not a vqa-cache manifest (expected a JSON object with shards)")
        if data.get("format") != FORMAT_VERSION:
            raise BadInput(
                f"{self.manifest_path}: cache format {data.get('format')!r}, this vqa-cache "
                f"reads format {FORMAT_VERSION} only; not reading it as data. Remove it with "
                f"`vqa-cache cache rm {self.key}` and run extract again"
            )
        return data

    def complete(self) -> bool:
        return self.exists() and bool(self.manifest().get("complete"))

    def save_manifest(self, manifest: dict) -> None:
        manifest.update(format=FORMAT_VERSION, key=self.key, kind=self.kind, tool_version=__version__)
        write_file(self.manifest_path, json.dumps(manifest, indent=1, sort_keys=True).encode())

    def new_manifest(self, spec: dict, rows: int, **extra) -> dict:
        return {
            "spec": spec,
            "rows": rows,
            "shards": [],
            "complete": False,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "timings": {},
            **extra,
        }

    def size_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.path.rglob("*") if p.is_file())  # (a dataset entry may hold images/)

    def lock(self, wait: bool = True) -> Lock:
        return Lock(self.path.parent / f"{self.key}.lock", wait=wait)


_HELD: set = set()  # the Locks this process holds


def _drop_inherited_locks() -> None:
    """In a forked child (a DataLoader worker): close the copies of the parent's lock descriptors.
    An flock belongs to the open file, which a fork shares, so a child that kept the copy would hold
    the lock after a kill -9 of its parent until it exited itself."""
    for lock in _HELD:
        os.close(lock.fd)
        lock.fd = None
    _HELD.clear()


os.register_at_fork(after_in_child=_drop_inherited_locks)


class Lock:
    """One writer per entry: an flock()ed lock file holding host and pid.

    The kernel drops an flock when its process dies (kill -9 included), so the lock of a dead writer
    is taken over at once; the host and pid in the file are only for the waiting message. The file is
    opened close-on-exec, and forked children close their copy (_drop_inherited_locks).
    """

    def __init__(self, path: Path, wait: bool = True, poll: float = 1.0):
        self.path, self.wait, self.poll = path, wait, poll
        self.fd = None

    def holder(self) -> str:
        try:
            return self.path.read_text().strip() or "unknown"
        except OSError:
            return "unknown"

    def _try(self) -> bool:
        import fcntl

        try:  # never through a symlink planted at the lock's name
            fd = os.open(self.path, os.O_CREAT | os.O_RDWR | os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0), 0o644)
        except OSError as e:
            raise write_error(self.path, e) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        try:  # the file we locked may have been unlinked by its previous holder: then try again
            same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
        except FileNotFoundError:
            same = False
        if not same:
            os.close(fd)
            return self._try()
        try:
            os.ftruncate(fd, 0)
            os.write(fd, f"{socket.gethostname()} {os.getpid()}\n".encode())
        except OSError as e:  # a full disk, the file-size limit: no empty lock file is left behind
            self.path.unlink(missing_ok=True)  # (while still holding it; see __exit__)
            os.close(fd)
            raise write_error(self.path, e) from None
        self.fd = fd
        _HELD.add(self)
        return True

    def __enter__(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        told = False
        while not self._try():
            if not self.wait:
                raise BadInput(
                    f"another process (host, pid: {self.holder()}) is writing this cache entry "
                    f"(lock {self.path}); wait for it or drop --no-wait"
                )
            if not told:
                messages.info(
                    f"waiting for another writer of this entry (host, pid: {self.holder()}; lock {self.path}) ..."
                )
                told = True
            time.sleep(self.poll)
        return self

    def __exit__(self, *exc):
        if self.fd is not None:
            self.path.unlink(missing_ok=True)  # while still holding it; see _try
            _HELD.discard(self)
            os.close(self.fd)
            self.fd = None


def clean_stale(root: Path) -> None:
    """Remove what killed writers left behind: lock files nobody holds, and the private folders
    ROOT/.tmp/KEY.PID in which a dataset entry is staged under its lock. An entry whose lock is held
    (a live writer, on any host sharing the root) is left alone."""
    root = Path(root)
    staged: dict[str, list[Path]] = {}
    if (root / ".tmp").is_dir():
        for p in (root / ".tmp").iterdir():
            staged.setdefault(p.name.split(".")[0], []).append(p)
    keys = {p.stem for p in root.glob("*/*.lock") if p.parent.name in KINDS} | set(staged)
    for key in sorted(k for k in keys if k.split("-", 1)[0] in KINDS):
        try:
            with Entry(root, key).lock(wait=False):  # free: its writer is gone (the lock file goes too)
                for p in staged.get(key, []):
                    shutil.rmtree(p, ignore_errors=True)
        except BadInput:
            continue
    try:
        (root / ".tmp").rmdir()
    except OSError:
        pass  # absent, or a live writer's folder is in it


def list_entries(root: Path) -> list[Entry]:
    out = []
    for kind in KINDS:
        d = Path(root) / kind
        if d.is_dir():
            out += [Entry(root, p.name) for p in sorted(d.iterdir()) if p.is_dir()]
    return out


def find_entry(root: Path, key: str) -> Entry:
    """An entry by its key or an unambiguous prefix of it."""
    matches = [e for e in list_entries(root) if e.key == key] or [
        e for e in list_entries(root) if e.key.startswith(key)
    ]
    if not matches:
        raise BadInput(f"no cache entry {key!r} in {root} (see `vqa-cache cache ls`)")
    if len(matches) > 1:
        raise BadInput(f"cache key prefix {key!r} is ambiguous: {', '.join(e.key for e in matches)}")
    return matches[0]


def first_damage(entry: Entry, manifest: dict) -> tuple[int, str] | None:
    """The cheap check of an entry (no shard is read): every recorded shard is there with its recorded
    size and follows the previous one, and a complete entry's shards reach its last row. Returns
    (index of the first bad shard record, what is wrong) or None; `cache verify` reads every byte."""
    position, shards = 0, manifest.get("shards", [])
    for n, s in enumerate(shards):
        path = entry.path / s["file"]
        if s.get("start") != position:
            return n, f"{s['file']}: starts at row {s.get('start')}, the previous shard ends at {position}"
        if not path.is_file():
            return n, f"{s['file']}: missing"
        if s.get("bytes") is not None and path.stat().st_size != s["bytes"]:
            return n, (
                f"{s['file']}: {path.stat().st_size} bytes, the manifest says {s['bytes']} (truncated or overwritten)"
            )
        position = s.get("stop", -1)
    if manifest.get("complete") and position != manifest.get("rows"):
        return len(shards), f"the shards end at row {position}, the manifest says {manifest.get('rows')} rows"
    return None


def ids_mismatch(kind: str, spec: dict, ids: list[str], skipped: list[str]) -> tuple[str, str] | None:
    """The ids read from an entry's shards (image ids, with the skipped ones, or question texts) against
    the fingerprint in its spec: None when they are the dataset's, else (what, how): ("image ids",
    "fingerprint 0123abcd4567, the spec says 89ab..."). A dataset entry has nothing to compare."""
    if kind == "image":
        got, want, what = fingerprint(sorted(ids + skipped)), spec.get("images"), "image ids"
    elif kind == "question":
        got, want, what = fingerprint(ids), spec.get("questions"), "question texts"
    else:
        return None
    return None if got == want else (what, f"fingerprint {got[:12]}, the spec says {str(want)[:12]}")
