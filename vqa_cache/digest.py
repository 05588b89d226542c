"""Content digests and atomic writes: the file sha256 (one memoized copy), the fingerprint of a list of
strings, and the atomic writes: atomic_file and write_file land a file whole or not at all (checking the
free space first), and a write that fails for want of space or permission is one line naming the file."""

from __future__ import annotations

import errno
import hashlib
import os
import re
import resource
import secrets
from contextlib import contextmanager
from pathlib import Path

from .errors import BadInput

_SHA_MEMO: dict = {}  # (path, size, mtime_ns) -> sha256


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
    """sha256 of a list of strings, each followed by a NUL byte (order matters: sort first where it should
    not). Hashed in one piece: an update per string took 0.25 s for 140,000 strings."""
    values = list(values)
    return hashlib.sha256(("\0".join(values) + "\0").encode() if values else b"").hexdigest()


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


class WriteError(BadInput):
    """A file could not be written (no space, read-only, a symlink in the way); what was there is whole."""


class NoSpace(WriteError):
    """A full disk or the file-size limit: nothing was half-written; free space and re-run."""

    def __init__(self, path: Path, need: int | None, have: int, where: str):
        needed = (
            f"need {need / 2**20:.1f} MiB for {path.name} (in {path.parent}), "
            if need is not None
            else f"writing {path.name} (in {path.parent}): "
        )
        super().__init__(
            f"no space left {where}: {needed}have {have / 2**20:.1f} MiB; nothing was half-written "
            f"(a file that was there is kept whole): free some space and run the command again "
            f"(an extract resumes after its last finished shard; a train or finetune run continues "
            f"with --resume)"
        )


class ReadOnly(WriteError):
    """A read-only file system (EROFS) or a folder this process may not write (EACCES)."""

    def __init__(self, path: Path, e: OSError):
        super().__init__(
            f"cannot write {path}: {e.strerror.lower() if e.strerror else e}; nothing was written "
            f"(a file that was there is kept whole)"
        )


FULL = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)
DENIED = (errno.EROFS, errno.EACCES, errno.EPERM)


def write_error(path: Path, e: OSError, need: int | None = None) -> OSError | WriteError:
    """The one-line BadInput of a failed write of `path` (a full disk, the file-size limit, a read-only
    file system), or `e` itself when it is something else."""
    if e.errno in FULL:
        return NoSpace(path, need, *free_space(existing_parent(path)))
    if e.errno in DENIED:
        return ReadOnly(path, e)
    if e.errno == errno.ELOOP:
        return WriteError(f"{path} is a symbolic link: not writing through it (remove it and run again)")
    return e


def existing_parent(path: Path) -> Path:
    path = Path(os.path.abspath(path)).parent
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def temporary_name(path: Path) -> Path:
    """The name atomic_file writes `path` under until it is whole: NAME.tmpPID.HEX (is_partial_write)."""
    return path.with_name(f"{path.name}.tmp{os.getpid()}.{secrets.token_hex(3)}")


def is_partial_write(name: str) -> bool:
    """Is `name` one of temporary_name's (what a killed writer leaves behind), never a finished file's?"""
    return re.fullmatch(r".+\.tmp\d+\.[0-9a-f]{6}", name) is not None


@contextmanager
def atomic_file(path: Path, need: int | None = None):
    """A new temporary file beside `path`, open for binary writing; when the block ends, fsync'd and
    renamed onto `path`, so that `path` is whole (the new bytes, or the old ones) whatever happens. The
    temporary file is created exclusively (O_EXCL: never through a symlink planted under its name) and the
    rename replaces a symlink at `path` itself, never the file it points to. On any error it is removed;
    a full disk or the file-size limit (ENOSPC, EFBIG, EDQUOT) is NoSpace, a read-only file system ReadOnly:
    one line naming the file and the free space."""
    path = Path(path)
    tmp = temporary_name(path)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0), 0o666)
    except OSError as e:
        raise write_error(path, e, need) from None
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise write_error(path, e, need) from None
        raise


def write_file(path: Path, data) -> str:
    """Write `data` (bytes or any buffer) to `path` through a temporary file, fsync'd, renamed into place
    (atomic_file); return its sha256. The free space is checked first, and a full disk or the file-size
    limit while writing is caught too (NoSpace), so `path` is either whole or untouched."""
    view = memoryview(data)
    have, where = free_space(existing_parent(path))
    if view.nbytes > have:
        raise NoSpace(path, view.nbytes, have, where)
    with atomic_file(path, view.nbytes) as f:
        f.write(view)
    return hashlib.sha256(view).hexdigest()


def write_text(path: Path, text: str) -> None:
    """A text file (UTF-8), written whole or not at all (write_file)."""
    write_file(path, text.encode("utf-8"))
