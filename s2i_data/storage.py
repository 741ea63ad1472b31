"""Where builds and corpora live: a local path, or any fsspec URL (s3://, gs://, memory://, ...).

Plain paths and file:// URLs stay on the local-file code paths (atomic renames, fsync). Other
URLs go through fsspec: objects are written whole (a PUT is atomic on object stores), and a
remote file that ffmpeg must read is first fetched to a local temporary file. fsspec's backends
for clouds (s3fs, gcsfs, adlfs) are the user's to install; nothing here assumes one.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterator
from urllib.parse import urlparse
from urllib.request import url2pathname


def is_remote(location: str) -> bool:
    """True for a URL that is not a local file (pipe: commands are not storage)."""
    scheme = urlparse(str(location)).scheme
    return len(scheme) > 1 and scheme != "file"  # one letter: a Windows drive


def local_path(location: str) -> str:
    """A plain path for a local path or file:// URL."""
    loc = str(location)
    return url2pathname(urlparse(loc).path) if loc.startswith("file://") else loc


def join(location: str, *parts: str) -> str:
    loc = str(location)
    if is_remote(loc):
        return "/".join([loc.rstrip("/"), *[p.strip("/") for p in parts]])
    return os.path.join(local_path(loc), *parts)


def fs_of(location: str):
    import fsspec

    try:
        return fsspec.core.url_to_fs(str(location))
    except (ImportError, ValueError) as e:  # an unknown protocol or its backend not installed
        raise ValueError(f"{location}: {e}") from None


def exists(location: str) -> bool:
    if not is_remote(location):
        return os.path.exists(local_path(location))
    fs, path = fs_of(location)
    return fs.exists(path)


def read_bytes(location: str) -> bytes:
    if not is_remote(location):
        with open(local_path(location), "rb") as f:
            return f.read()
    fs, path = fs_of(location)
    try:
        return fs.cat_file(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"{location}: not found") from None


def read_json(location: str) -> dict:
    return json.loads(read_bytes(location))


def read_parquet(location: str, columns: list[str] | None = None):
    import io

    import pandas as pd

    if not is_remote(location):
        return pd.read_parquet(local_path(location), columns=columns)
    return pd.read_parquet(io.BytesIO(read_bytes(location)), columns=columns)


def atomic_write(path, content: "bytes | str | Callable[[str], None]", keep_previous=None) -> None:
    """The one way this project writes a local file: after a crash or a power cut, ``path`` is
    either its old content or the whole new one, never a part.

    ``content`` is bytes, text (UTF-8), or a function that writes the file at the path it is given.
    It goes to ``.NAME.tmp-PID`` in the same folder (same file system, so the rename is atomic;
    hidden, and named so that a leftover of a killed process is recognisable), is fsynced, renamed
    over ``path`` (the old file first moved to ``keep_previous`` when given), and the folder is
    fsynced so that the renames themselves survive a power cut.
    """
    path = os.fspath(path)
    folder = os.path.dirname(path) or "."
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".{os.path.basename(path)}.tmp-{os.getpid()}")
    with contextlib.suppress(FileNotFoundError):  # a leftover, or a link somebody left in its place
        os.unlink(tmp)
    try:
        # O_EXCL | O_NOFOLLOW: the temporary is a new file of ours, never a link planted there
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW, 0o644)
        with os.fdopen(fd, "wb") as f:
            if not callable(content):
                f.write(content.encode() if isinstance(content, str) else content)
        if callable(content):
            content(tmp)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        if keep_previous is not None and os.path.exists(path):
            os.replace(path, keep_previous)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(folder)


_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


def open_append(path, text: bool = True):
    """``path`` opened for appending (created if missing), refusing a symlink in its place: an
    append-only journal in a shared folder (metrics.jsonl, labels.csv) is never a way to write to
    the file a link points at."""
    path = os.fspath(path)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | _NOFOLLOW, 0o644)
    except OSError as e:
        if os.path.islink(path):
            raise OSError(f"cannot append to {path}: it is a symbolic link; refusing to follow it") from None
        raise OSError(f"cannot append to {path}: {e.strerror}") from None
    return os.fdopen(fd, "a" if text else "ab", encoding="utf-8" if text else None, newline="" if text else None)


def open_regular(path):
    """``path`` opened for reading (binary) when it is a regular file of its own: a symbolic link
    left in its place is refused rather than followed, and so is a FIFO or a device (opened
    without blocking, then checked), which would hang or flood a reader. FileNotFoundError when
    there is nothing; OSError naming the path otherwise."""
    path = os.fspath(path)
    try:
        fd = os.open(path, os.O_RDONLY | _NOFOLLOW | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise
    except OSError as e:
        why = "it is a symbolic link; refusing to follow it" if os.path.islink(path) else e.strerror
        raise OSError(f"{path}: {why}") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(f"{path}: not a regular file")
    return os.fdopen(fd, "rb")


def folder_inside(root, *parts) -> str:
    """``root/parts...`` made (as folders) and checked to lie inside ``root`` once links are
    resolved: a subfolder of a shared folder that is a link to elsewhere is refused, so that no
    write below it lands outside ``root``."""
    root = os.fspath(root)
    target = os.path.join(root, *parts)
    os.makedirs(target, exist_ok=True)
    real_root, real = os.path.realpath(root), os.path.realpath(target)
    if os.path.commonpath([real_root, real]) != real_root:
        raise OSError(f"{target} leads outside {root} (a symbolic link); refusing to write there")
    return target


def write_bytes(location: str, data: bytes) -> None:
    """Whole-object write: `atomic_write` locally, a single PUT remotely."""
    if not is_remote(location):
        atomic_write(local_path(location), data)
        return
    fs, path = fs_of(location)
    fs.makedirs(fs._parent(path), exist_ok=True)
    fs.pipe_file(path, data)


def fsync_dir(folder) -> None:
    """Make the renames in a local ``folder`` durable (a power cut after a rename may otherwise
    undo it); where a folder cannot be opened (e.g. Windows) the files themselves were fsynced."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def create_bytes(location: str, data: bytes) -> bool:
    """Write ``data`` only if nothing is at ``location``; False if something is. Atomic locally
    (O_EXCL) and where the backend implements ``pipe_file(mode="create")`` with a conditional
    write; fsspec's generic fallback is exists-then-put, so callers must not rely on more."""
    if not is_remote(location):
        path = local_path(location)
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        return True
    fs, path = fs_of(location)
    fs.makedirs(fs._parent(path), exist_ok=True)
    try:
        fs.pipe_file(path, data, mode="create")
    except FileExistsError:
        return False
    except TypeError:  # a backend whose pipe_file predates mode=
        if fs.exists(path):
            return False
        fs.pipe_file(path, data)
    return True


def remove(location: str) -> None:
    """Delete a file; nothing if it is already gone."""
    if not is_remote(location):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(local_path(location))
        return
    fs, path = fs_of(location)
    with contextlib.suppress(FileNotFoundError):
        fs.rm_file(path)


def parquet_rows(location: str) -> int:
    """Row count from the footer alone (no column is read)."""
    import pyarrow.parquet as pq

    if not is_remote(location):
        return pq.ParquetFile(local_path(location)).metadata.num_rows
    fs, path = fs_of(location)
    with fs.open(path, "rb") as f:
        return pq.ParquetFile(f).metadata.num_rows


def put_file(local: str, location: str) -> None:
    """Upload a finished local file (the caller writes the resume marker only after this)."""
    fs, path = fs_of(location)
    fs.makedirs(fs._parent(path), exist_ok=True)
    fs.put_file(local, path)


def listdir(location: str) -> list[str]:
    """Names directly inside a folder (empty when it does not exist)."""
    if not is_remote(location):
        p = local_path(location)
        return sorted(os.listdir(p)) if os.path.isdir(p) else []
    fs, path = fs_of(location)
    if not fs.exists(path):
        return []
    return sorted(os.path.basename(e.rstrip("/")) for e in fs.ls(path, detail=False))


def find(location: str) -> list[tuple[str, str]]:
    """Every file below a remote folder: (path relative to it, full URL), sorted."""
    import posixpath

    fs, path = fs_of(location)
    root = fs._strip_protocol(path).rstrip("/")
    return sorted((posixpath.relpath(p, root), fs.unstrip_protocol(p)) for p in fs.find(root))


@contextlib.contextmanager
def fetched(location: str, suffix: str = "") -> Iterator[str]:
    """A local path to read ``location`` from: itself when local, else a temporary copy."""
    if not is_remote(location):
        yield local_path(location)
        return
    fs, path = fs_of(location)
    fd, tmp = tempfile.mkstemp(prefix="s2i-", suffix=suffix or os.path.splitext(path)[1])
    os.close(fd)
    try:
        with fs.open(path, "rb") as src, open(tmp, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
        yield tmp
    finally:
        os.unlink(tmp)
