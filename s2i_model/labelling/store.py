"""The label store of the informativity study: the pool's images (POOL/pool.csv) and the labels
people give them (POOL/labels.csv).

Labels are append-only (``id,label,time``; the last line for an id wins), so a relabel is one more
line and a crash can at worst tear the line being written (a torn or foreign line is skipped and
reported, never fatal). Every append is fsynced before it is acknowledged.

Pools travel between labs: pool.csv and pool.json are checked against their schema when read
(`untrusted.pool_rows`, `untrusted.pool_meta`: ids, classes and keys plain names, every file
``images/<class>/<name>.png``), a file that breaks it is refused with one line naming file and
line, and appends never follow a link left in a journal's place (`storage.open_append`).

Each picture names the run that drew it (issue 27): its id is ``<run>.<key>-s<seed>-<k>`` and its
row has ``run`` and ``model`` columns (pool.json's ``runs`` gives each run's model and folder), so
judges trained on the pool can say which models' pictures they learnt from. An older pool (ids
without a run, no such columns) stays readable, labellable and trainable: its pictures count as
of an unknown model, and `sample` refuses to grow it.
"""

from __future__ import annotations

import csv
import io
import os
import threading
from datetime import datetime, timezone
from pathlib import Path

from s2i_data import storage, untrusted

LABELS = ("informative", "not")
HEADER = "id,label,time\n"
DEFAULT_TARGET = 500
POOL_CSV = "pool.csv"
POOL_FIELDS = ("id", "file", "class", "key", "sample", "run", "model")  # an older pool's: the first five

# One server, many handler threads: appends must not interleave.
_write_lock = threading.Lock()


def _text(path: Path) -> str:
    """A pool file's text, size-capped; bytes that are not UTF-8 are refused in one line."""
    try:
        return untrusted.capped_read(path, untrusted.MAX_POOL_BYTES).decode()
    except UnicodeDecodeError:
        raise untrusted.Untrusted(f"{path}: not UTF-8 text") from None


def read_pool(pool: Path) -> list[dict]:
    """POOL/pool.csv's rows, each checked (`untrusted.pool_rows`)."""
    path = Path(pool) / POOL_CSV
    try:
        rows = list(csv.DictReader(io.StringIO(_text(path), newline="")))
    except csv.Error as e:
        raise untrusted.Untrusted(f"{path}: not a CSV table ({e})") from None
    return untrusted.pool_rows(rows, str(path))


def pool_fields(pool: Path) -> list[str]:
    """The columns pool.csv's header names (empty for an empty file): `POOL_FIELDS`, or for an
    older pool, whose ids name no run, the first five of them."""
    try:
        return next(csv.reader(io.StringIO(_text(Path(pool) / POOL_CSV), newline="")), [])
    except csv.Error as e:
        raise untrusted.Untrusted(f"{Path(pool) / POOL_CSV}: not a CSV table ({e})") from None


def pool_meta(pool: Path) -> dict:
    """POOL/pool.json, checked (`untrusted.pool_meta`); empty when there is none."""
    path = Path(pool) / "pool.json"
    if not path.is_file():
        return {}
    return untrusted.pool_meta(untrusted.json_value(_text(path).encode(), str(path)), str(path))


def read_image(pool: Path, file: str) -> bytes | None:
    """A pool picture's bytes (``file`` from a checked row), or None when it is missing or, now,
    not a regular file inside the pool, or not a PNG or JPEG by content whatever its name."""
    pool = Path(pool).resolve()
    try:
        path = (pool / file).resolve()
        if not path.is_relative_to(pool):
            return None
        # not through a link (the file cannot turn into one between resolve and open), not a FIFO
        f = storage.open_regular(path)
    except (OSError, RuntimeError):  # RuntimeError: a symlink loop
        return None
    with f:
        # A folder above it may have been swapped between resolve and open: ask where the file is.
        where = _fd_path(f.fileno())
        if where is not None and not Path(where).is_relative_to(pool):
            return None
        data = f.read(untrusted.MAX_POOL_BYTES + 1)
    return data if len(data) <= untrusted.MAX_POOL_BYTES and untrusted.image_type(data) else None


def _fd_path(fd: int) -> str | None:
    """Where an open file really is, where the system says (Linux); None elsewhere."""
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return None


def _label_row(line: bytes) -> tuple[list[str], str | None]:
    """One line of labels.csv as its fields, and what is wrong with it (None: nothing)."""
    try:
        # Line by line: a stray quote or a bad byte then spoils its own line, not the rest of the file.
        row = next(csv.reader([line.decode().removesuffix("\r")]), [])
    except (UnicodeDecodeError, csv.Error):
        return [], "not UTF-8 CSV"
    if len(row) != 3:
        return row, f"{len(row)} fields, expected 3: {HEADER.strip()}"
    if row[1] not in LABELS:  # the header's "label" too
        return row, f"unknown label {row[1]!r}"
    try:
        untrusted.name(row[0], "id")
    except untrusted.Untrusted as e:
        return row, str(e)
    return row, None


def read_labels(pool: Path, problems: list[str] | None = None) -> dict[str, str]:
    """Each id's label (its last line wins). A malformed line raises ValueError; given ``problems``,
    it is skipped instead and described there in one line. A bad header always raises."""
    path = Path(pool) / "labels.csv"
    if not path.is_file():
        return {}
    data = untrusted.capped_read(path, untrusted.MAX_POOL_BYTES)
    # A crash mid-write leaves a final line without its newline; that click was never confirmed.
    lines = data[: data.rfind(b"\n") + 1].split(b"\n")[:-1]
    labels: dict[str, str] = {}
    for n, line in enumerate(lines, 1):
        row, wrong = _label_row(line)
        if n == 1:
            if row != HEADER.strip().split(","):
                raise ValueError(f"{path}: header is {row}, expected {HEADER.strip()}")
        elif not wrong:
            labels[row[0]] = row[1]
        elif not line.strip():
            continue  # a blank line holds no label to lose
        elif problems is None:
            raise ValueError(f"{path} line {n}: malformed ({wrong})")
        else:
            problems.append(f"{path} line {n}: malformed ({wrong}), skipped")
    return labels


def append_label(pool: Path, id: str, label: str, ids: set[str] | None = None) -> None:
    """Append one label and fsync it. ``ids``: the pool's ids, when the caller already has them."""
    if label not in LABELS:
        raise ValueError(f"unknown label {label!r}: use one of {', '.join(LABELS)}")
    if id not in (ids if ids is not None else {r["id"] for r in read_pool(pool)}):
        raise ValueError(f"unknown id {id!r}: not in {pool}/pool.csv")
    line = io.StringIO()
    csv.writer(line, lineterminator="\n").writerow([id, label, datetime.now(timezone.utc).isoformat(timespec="seconds")])
    path = Path(pool) / "labels.csv"
    with _write_lock, storage.open_append(path, text=False) as f:
        end = _cut_torn_line(f, path)
        f.write(((HEADER if end == 0 else "") + line.getvalue()).encode())
        f.flush()
        os.fsync(f.fileno())


def _cut_torn_line(f, path: Path) -> int:
    """The journal's length once a torn last line is cut (a crash mid-write), or the next line
    would be glued onto it. ``f`` is the append handle (it cannot read): the tail is read through
    a second handle, checked to be the very same file."""
    st = os.fstat(f.fileno())
    if st.st_size == 0:
        return 0
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    try:
        if (os.fstat(fd).st_dev, os.fstat(fd).st_ino) != (st.st_dev, st.st_ino):
            raise OSError(f"{path} was replaced while a label was being saved")
        os.lseek(fd, max(0, st.st_size - 65536), os.SEEK_SET)
        tail = os.read(fd, 65536)
    finally:
        os.close(fd)
    end = st.st_size
    if tail and not tail.endswith(b"\n"):
        end = end - len(tail) + tail.rfind(b"\n") + 1
        os.ftruncate(f.fileno(), end)
    return end


def count_progress(rows: list[dict], labels: dict[str, str], classes: list[str], target: int) -> dict:
    out = {c: {"informative": 0, "not": 0, "unlabelled": 0, "target": target} for c in classes}
    for r in rows:
        counts = out.setdefault(r["class"], {"informative": 0, "not": 0, "unlabelled": 0, "target": target})
        counts[labels.get(r["id"], "unlabelled")] += 1
    return out


def progress(pool: Path) -> dict[str, dict[str, int]]:
    meta = pool_meta(pool)
    return count_progress(read_pool(pool), read_labels(pool), meta.get("classes", []), int(meta.get("target", DEFAULT_TARGET)))


def append_pool_rows(pool: Path, rows: list[dict]) -> None:
    """Add images to POOL/pool.csv (created with its header), fsynced."""
    with storage.open_append(Path(pool) / POOL_CSV) as f:
        w = csv.DictWriter(f, POOL_FIELDS)
        if os.fstat(f.fileno()).st_size == 0:
            w.writeheader()
        w.writerows(rows)
        f.flush()
        os.fsync(f.fileno())
