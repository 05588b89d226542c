"""Cache entries: keys, manifests, atomic writes, the writer lock, and listing."""
from __future__ import annotations

import hashlib
import json
import os
import socket
import time
from pathlib import Path

from .. import __version__
from ..errors import BadInput

FORMAT_VERSION = 1
KINDS = ("image", "question")


def cache_root(option: str | None = None) -> Path:
    """--cache-dir, else $VQA_CACHE_HOME, else ~/.cache/vqa-cache."""
    root = option or os.environ.get("VQA_CACHE_HOME") or Path.home() / ".cache" / "vqa-cache"
    return Path(root).expanduser()


def entry_key(kind: str, spec: dict) -> str:
    """kind-<16 hex of sha256(canonical JSON of everything that shapes the bytes)>."""
    blob = json.dumps({"format": FORMAT_VERSION, "kind": kind, **spec}, sort_keys=True, separators=(",", ":"))
    return f"{kind}-{hashlib.sha256(blob.encode()).hexdigest()[:16]}"


def write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


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
        except json.JSONDecodeError as e:
            raise BadInput(f"{self.manifest_path}: corrupt manifest ({e})") from None
        if data.get("format") != FORMAT_VERSION:
            raise BadInput(f"{self.manifest_path}: cache format {data.get('format')!r}, this vqa-cache "
                           f"reads format {FORMAT_VERSION}; re-run extract (or `vqa-cache cache rm {self.key}`)")
        return data

    def complete(self) -> bool:
        return self.exists() and bool(self.manifest().get("complete"))

    def save_manifest(self, manifest: dict) -> None:
        manifest.update(format=FORMAT_VERSION, key=self.key, kind=self.kind, tool_version=__version__)
        write_atomic(self.manifest_path, json.dumps(manifest, indent=1, sort_keys=True).encode())

    def new_manifest(self, spec: dict, rows: int, **extra) -> dict:
        return {"spec": spec, "rows": rows, "shards": [], "complete": False,
                "created": time.strftime("%Y-%m-%dT%H:%M:%S"), "timings": {}, **extra}

    def size_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.path.glob("*") if p.is_file())

    def lock(self, wait: bool = True) -> "Lock":
        return Lock(self.path.parent / f"{self.key}.lock", wait=wait)


class Lock:
    """One writer per entry: an O_EXCL lock file holding host and pid; a dead owner's lock is taken over."""

    def __init__(self, path: Path, wait: bool = True, poll: float = 2.0):
        self.path, self.wait, self.poll = path, wait, poll

    def _owner_alive(self) -> bool:
        try:
            host, pid = self.path.read_text().split()
            if host != socket.gethostname():
                return True  # cannot tell; assume alive
            os.kill(int(pid), 0)
            return True
        except ProcessLookupError:
            return False
        except (OSError, ValueError):
            return True

    def __enter__(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        told = False
        while True:
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
                os.write(fd, f"{socket.gethostname()} {os.getpid()}".encode())
                os.close(fd)
                return self
            except FileExistsError:
                if not self._owner_alive():
                    self.path.unlink(missing_ok=True)   # stale: its writer died
                    continue
                if not self.wait:
                    raise BadInput(f"another process is writing this cache entry ({self.path}); "
                                   f"wait for it or drop --no-wait") from None
                if not told:
                    print(f"waiting for another writer of this entry (lock {self.path}) ...", flush=True)
                    told = True
                time.sleep(self.poll)

    def __exit__(self, *exc):
        self.path.unlink(missing_ok=True)


def list_entries(root: Path) -> list[Entry]:
    out = []
    for kind in KINDS:
        d = Path(root) / kind
        if d.is_dir():
            out += [Entry(root, p.name) for p in sorted(d.iterdir()) if p.is_dir()]
    return out


def find_entry(root: Path, key: str) -> Entry:
    """An entry by its key or an unambiguous prefix of it."""
    matches = [e for e in list_entries(root) if e.key == key] or \
              [e for e in list_entries(root) if e.key.startswith(key)]
    if not matches:
        raise BadInput(f"no cache entry {key!r} in {root} (see `vqa-cache cache ls`)")
    if len(matches) > 1:
        raise BadInput(f"cache key prefix {key!r} is ambiguous: {', '.join(e.key for e in matches)}")
    return matches[0]


def sha256_of(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
