"""Content digests and atomic writes: the file sha256 (one memoized copy), the fingerprint of a list of
strings, and write_file, which lands a file whole or not at all (checking the free space first)."""
from __future__ import annotations

import errno
import hashlib
import os
import resource
from pathlib import Path

from .errors import BadInput

_SHA_MEMO: dict = {}       # (path, size, mtime_ns) -> sha256


def sha256_file(path: Path, memo: bool = True) -> str:
    """sha256 (hex) of a file's bytes, read in 1 MiB blocks. Memoized per process on (path, size, mtime):
    annotation files and weights are hashed once however often they are named. memo=False reads every
    byte again: `cache verify` and the dataset entry's check exist to catch a file that changed."""
    path = Path(path)
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if memo and key in _SHA_MEMO:
        return _SHA_MEMO[key]
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    _SHA_MEMO[key] = h.hexdigest()
    return _SHA_MEMO[key]


def check_out_path(path, what: str, directory: bool) -> Path:
    """An output path (`directory`: a run or sweep directory, else a file) that can be made: its nearest
    existing ancestor must be a directory (an existing file may be replaced, not an existing directory by a
    file). `--out FILE/run` under a regular file is BadInput at once, not an OSError after the work."""
    path = Path(path)
    for p in [path, *path.parents]:
        if os.path.lexists(p):
            if p.is_dir() == (p != path or directory) or (p == path and not directory and p.is_file()):
                return path
            kind = "a directory" if p.is_dir() else "not a directory"
            raise BadInput(f"{what} {path}: {p} is {kind}" + (", expected a file" if p.is_dir() else ""))
    return path


def fingerprint(values) -> str:
    """sha256 of a list of strings (order matters: sort first where it should not)."""
    h = hashlib.sha256()
    for v in values:
        h.update(v.encode())
        h.update(b"\0")
    return h.hexdigest()


def free_space(directory: Path) -> tuple[int, str]:
    """Bytes one new file in `directory` may take, and what limits it ("on the device of ...", for
    messages): the free space of its file system, or the file-size limit (ulimit -f) where that is lower."""
    st = os.statvfs(directory)
    have, where = st.f_bavail * st.f_frsize, f"on the device of {directory} (mounted at {mount_point(directory)})"
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    if limit != resource.RLIM_INFINITY and limit < have:
        return limit, "under the file-size limit of this process (ulimit -f)"
    return have, where


def mount_point(path: Path) -> Path:
    path = Path(os.path.abspath(path))
    while not os.path.ismount(path) and path != path.parent:
        path = path.parent
    return path


class NoSpace(BadInput):
    """A full disk or the file-size limit: nothing was half-written; free space and re-run."""

    def __init__(self, path: Path, need: int, have: int, where: str):
        super().__init__(f"no space left {where}: need {need / 2**20:.1f} MiB for {path.name}, have "
                         f"{have / 2**20:.1f} MiB; nothing was half-written: free some space and run the "
                         f"command again (an extract resumes after its last finished shard)")


def write_file(path: Path, data) -> str:
    """Write `data` (bytes or any buffer) to `path` through a temporary file, fsync'd, renamed into place;
    return its sha256. The free space is checked first, and a full disk or the file-size limit while
    writing (ENOSPC, EFBIG, EDQUOT) is caught too: the temporary file is removed and NoSpace is raised,
    so `path` is either whole or untouched."""
    view = memoryview(data)
    have, where = free_space(path.parent)
    if view.nbytes > have:
        raise NoSpace(path, view.nbytes, have, where)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(view)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        if e.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
            raise NoSpace(path, view.nbytes, free_space(path.parent)[0], where) from None
        raise
    return hashlib.sha256(view).hexdigest()
