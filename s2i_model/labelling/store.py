"""The label store of the informativity study: the pool's images (POOL/pool.csv) and the labels
people give them (POOL/labels.csv).

Labels are append-only (``id,label,time``; the last line for an id wins), so a relabel is one more
line and a crash can at worst tear the line being written (a torn or foreign line is skipped and
reported, never fatal). Every append is fsynced before it is acknowledged.
"""

from __future__ import annotations

import csv
import io
import json
import os
import threading
from datetime import datetime, timezone
from pathlib import Path

LABELS = ("informative", "not")
HEADER = "id,label,time\n"
DEFAULT_TARGET = 500
POOL_CSV = "pool.csv"
POOL_FIELDS = ("id", "file", "class", "key", "sample")

# One server, many handler threads: appends must not interleave.
_write_lock = threading.Lock()


def read_pool(pool: Path) -> list[dict]:
    with open(Path(pool) / POOL_CSV, newline="") as f:
        rows = list(csv.DictReader(f))
    seen: set[str] = set()
    for n, r in enumerate(rows, 2):
        if not r.get("id") or not r.get("file") or not r.get("class"):
            raise ValueError(f"{pool}/pool.csv line {n}: needs id, file and class")
        if r["id"] in seen:
            raise ValueError(f"{pool}/pool.csv line {n}: duplicate id {r['id']!r}")
        seen.add(r["id"])
    return rows


def pool_meta(pool: Path) -> dict:
    path = Path(pool) / "pool.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def _label_row(line: bytes) -> tuple[list[str], str | None]:
    """One line of labels.csv as its fields, and what is wrong with it (None: nothing)."""
    try:
        # Line by line: a stray quote or a bad byte then spoils its own line, not the rest of the file.
        row = next(csv.reader([line.decode().removesuffix("\r")]), [])
    except (UnicodeDecodeError, csv.Error):
        return [], "not UTF-8 CSV"
    if len(row) != 3:
        return row, f"{len(row)} fields, expected 3: {HEADER.strip()}"
    return row, None if row[1] in LABELS else f"unknown label {row[1]!r}"


def read_labels(pool: Path, problems: list[str] | None = None) -> dict[str, str]:
    """Each id's label (its last line wins). A malformed line raises ValueError; given ``problems``,
    it is skipped instead and described there in one line. A bad header always raises."""
    path = Path(pool) / "labels.csv"
    if not path.is_file():
        return {}
    data = path.read_bytes()
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
    with _write_lock, open(Path(pool) / "labels.csv", "a+b") as f:
        end = f.seek(0, os.SEEK_END)
        f.seek(max(0, end - 65536))
        tail = f.read()
        if tail and not tail.endswith(b"\n"):
            # Cut a torn line before appending, or the new line would be glued onto it.
            end = end - len(tail) + tail.rfind(b"\n") + 1
            f.truncate(end)
        f.write(((HEADER if end == 0 else "") + line.getvalue()).encode())
        f.flush()
        os.fsync(f.fileno())


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
    path = Path(pool) / POOL_CSV
    new = not path.is_file()
    with open(path, "a", newline="") as f:
        w = csv.DictWriter(f, POOL_FIELDS)
        if new:
            w.writeheader()
        w.writerows(rows)
        f.flush()
        os.fsync(f.fileno())
