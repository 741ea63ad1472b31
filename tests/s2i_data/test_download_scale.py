"""`s2i-data download` at AudioSet scale (issue 29): the columns that replaced a Python object a row
give the same answers as the row-by-row reading they replaced, and the record's end of run
touches only the parts of the rows the run recorded.

Each equivalence is checked against an independent reference written here: the reading before
issue 29, one CSV record / one parquet row at a time (the csv module, pandas ``to_dict``,
`untrusted.download_record`), on hostile inputs as well as plain ones. The resume at scale runs
the real `download` on 20,000 rows against a real HTTP server on 127.0.0.1 (test_download.py's
mirror) and counts what it asks for.
"""

from __future__ import annotations

import math
import os
import random
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from s2i_data import untrusted
from s2i_data.download import keys, manifest, rows, segments


# ------------------------------------------------------------------------------------ validator

def row_by_row(table: pa.Table, where: str):
    """The record as the loader before issue 29 read it: pandas rows, NaN as None, numpy scalars
    as Python's, each through `download_record`; (key, status, attempts) lists, or the message."""
    def plain(v):
        if isinstance(v, float) and math.isnan(v):
            return None
        return v.item() if hasattr(v, "item") else v

    out = []
    try:
        for i, rec in enumerate(table.to_pandas().to_dict("records")):
            rec = untrusted.download_record({k: plain(v) for k, v in rec.items()}, f"{where}: row {i}")
            out.append((rec["key"], rec["status"], rec["attempts"]))
    except untrusted.Untrusted as e:
        return str(e)
    return out


def columnar(table: pa.Table, where: str):
    try:
        k, s, a = untrusted.download_table(table, where)
    except untrusted.Untrusted as e:
        return str(e)
    return list(zip(k.to_pylist(), s.to_pylist(), a.to_pylist()))


def _column(kind: str, n: int, rng: random.Random):
    """A column of ``n`` values of a kind a hostile record may hold."""
    texts = [f"k{rng.randrange(10**6)}" for _ in range(n)]
    ints = [rng.randrange(0, 5) for _ in range(n)]
    bad_at = rng.randrange(n) if n else 0

    def one_bad(good, bad, type_):
        values = list(good)
        if n:
            values[bad_at] = bad
        return pa.array(values, type_)

    return {
        "text": lambda: pa.array(texts, pa.string()),
        "text-null": lambda: one_bad(texts, None, pa.string()),
        "large-text": lambda: pa.array(texts, pa.large_string()),
        "dict-text": lambda: pa.array(texts, pa.string()).dictionary_encode(),
        "int": lambda: pa.array(ints, pa.int64()),
        "int-null": lambda: one_bad(ints, None, pa.int64()),
        "int-negative": lambda: one_bad(ints, -1, pa.int64()),
        "int-huge": lambda: one_bad(ints, 2 * 10**9, pa.int64()),
        "int-huge-null": lambda: pa.array([2 * 10**9 if i == bad_at else None for i in range(n)], pa.int64()),
        "uint-huge": lambda: one_bad(ints, 2**63 + 5, pa.uint64()),
        "int8": lambda: pa.array(ints, pa.int8()),
        "float-whole": lambda: pa.array([float(x) for x in ints], pa.float64()),
        "float-half": lambda: one_bad([float(x) for x in ints], 2.5, pa.float64()),
        "float-nan": lambda: one_bad([float(x) for x in ints], float("nan"), pa.float64()),
        "float-inf": lambda: one_bad([float(x) for x in ints], float("inf"), pa.float64()),
        "float-negative": lambda: one_bad([float(x) for x in ints], -3.0, pa.float64()),
        "float-null": lambda: one_bad([float(x) for x in ints], None, pa.float64()),
        "float32": lambda: pa.array([float(x) for x in ints], pa.float32()),
        "bool": lambda: pa.array([bool(x % 2) for x in ints], pa.bool_()),
        "bool-null": lambda: pa.array([None] * n, pa.bool_()),
        "text-number": lambda: pa.array([str(x) for x in ints], pa.string()),
        "binary": lambda: pa.array([t.encode() for t in texts], pa.binary()),
        "decimal": lambda: pa.array([__import__("decimal").Decimal(x) for x in ints], pa.decimal128(5, 0)),
        "date-null": lambda: pa.array([None] * n, pa.date32()),
        "timestamp": lambda: pa.array([1_600_000_000_000] * n, pa.timestamp("ms")),
        "null": lambda: pa.nulls(n),
    }[kind]()


TEXT_KINDS = ["text", "text", "text-null", "large-text", "dict-text", "int", "binary", "bool", "null", None]
ATTEMPT_KINDS = ["int", "int", "int-null", "int-negative", "int-huge", "int-huge-null", "uint-huge", "int8",
                 "float-whole", "float-half", "float-nan", "float-inf", "float-negative", "float-null", "float32",
                 "bool", "bool-null", "text-number", "decimal", "date-null", "timestamp", "null", None]


def test_the_columnar_validator_answers_as_the_row_by_row_reader(tmp_path):
    """Every hostile record refused row by row is refused column by column with the same line
    (file, row, field), and every record read is read with the same values; tables go through
    parquet as the loader reads them."""
    rng = random.Random(29)
    cases = [("text", "text", "int")] + [
        (rng.choice(TEXT_KINDS), rng.choice(TEXT_KINDS), rng.choice(ATTEMPT_KINDS)) for _ in range(400)]
    refused = 0
    for n_case, (key, status, attempts) in enumerate(cases):
        n = rng.choice([0, 1, 3, 7])
        columns = {name: _column(kind, n, rng) for name, kind in (("key", key), ("status", status),
                                                                  ("attempts", attempts)) if kind}
        columns["reason"] = pa.array(["x"] * n, pa.string())
        path = tmp_path / f"part{n_case}.parquet"
        pq.write_table(pa.table(columns), path)
        table = pq.read_table(path)
        expected, got = row_by_row(table, str(path)), columnar(table, str(path))
        assert got == expected, (key, status, attempts, n, table.to_pydict())
        refused += isinstance(expected, str)
    assert 100 < refused < len(cases) - 50, refused  # both kinds of answer were exercised


# ------------------------------------------------------------------------------------ keys

def test_keys_match_exactly_when_hashes_collide(monkeypatch):
    """The key matching (a 64-bit hash, then the strings) against Python's dicts; with a hash of
    three values every match goes through the collision path."""
    rng = random.Random(3)

    def reference(a, b):
        first = {}
        for i, s in enumerate(b):
            first.setdefault(s, i)
        return [first.get(s, -1) for s in a]

    def first_rows(a):
        seen, out = set(), []
        for s in a:
            out.append(s not in seen)
            seen.add(s)
        return out

    for weak in (False, True):
        if weak:
            strong = keys.hash64
            monkeypatch.setattr(keys, "hash64", lambda array: strong(array) % np.uint64(3))
        for _ in range(150):
            alphabet = rng.choice(["ab", "abcé", "xy\x00"])
            a = ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 5))) for _ in range(rng.randint(0, 30))]
            b = ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 5))) for _ in range(rng.randint(0, 30))]
            A, B = pa.array(["pad"] + a, pa.string()).slice(1), pa.array(b, pa.string())  # a sliced array too
            assert keys.index_in(A, B).tolist() == reference(a, b), (a, b)
            first = keys.first_of_each(A)
            assert (first.tolist() if first is not None else [True] * len(a)) == first_rows(a), a
            last = keys.last_of_each(A)
            assert (last.tolist() if last is not None else [True] * len(a)) == first_rows(a[::-1])[::-1], a


# ------------------------------------------------------------------------------------ the CSV

def reference_rows(path, classes) -> list[tuple]:
    """`rows._audioset` before issue 29: the csv module, a record at a time."""
    from s2i_data.classes import ontology, resolve_classes
    from s2i_data.sources import vggsound
    from s2i_data.sources.audioset import label_classes

    infos = resolve_classes(classes)
    table = label_classes(infos, ontology())
    out = []
    records = rows._records(path)
    for line, fields in records:
        if len(fields) != 4:
            reason = f"line {line}: expected 4 fields (YTID, start, end, \"labels\"), got {len(fields)}"
            out.append((line, fields[0], math.nan, math.nan, "", reason, f"{fields[0]}_line{line}"))
            continue
        ytid, start_text, end_text, labels = fields
        matched = sorted({i for label in labels.split(",") for i in table.get(label.strip(), ())})
        if not matched:
            continue
        start, end, reason = rows._window(line, ytid, start_text, end_text)
        if not reason and len(matched) > 1:
            aliases = ", ".join(infos[i].alias for i in matched)
            reason = f"line {line}: labels match several requested classes: {aliases}"
        if reason:
            key = vggsound.stem(ytid, start) if math.isfinite(start) else f"{ytid}_line{line}"
        else:
            key = f"{ytid}_{round(start * 1000)}_{round(end * 1000)}"
        out.append((line, ytid, start, end, "" if reason else infos[matched[0]].alias, reason, key))
    if not out and not records:
        raise ValueError(f"{path}: AudioSet segment CSV has no rows")
    return out


def _same(a: list[tuple], b: list[tuple]) -> bool:
    def norm(r):
        return tuple("nan" if isinstance(x, float) and math.isnan(x) else x for x in r)

    return [norm(r) for r in a] == [norm(r) for r in b]


H = ("# Segments csv created Sun Mar  5 10:54:31 2017\n# num_ytids=9\n"
     "# YTID, start_seconds, end_seconds, positive_labels\n")
SEGMENT_CASES = [  # dog: /m/0bt9lr, fireworks: /m/0g6b5; /m/05tny_ (bark) is under dog
    H + '--aE2O5G5WE, 0.000, 10.000, "/m/0bt9lr,/m/05tny_"\n--abc, 30.000, 40.000, "/m/0bt9lr,/m/0g6b5"\n'
        '--def, 30.000, 40.000, "/m/04rlf"\n',
    H + 'a1, 0, 10, "/m/0bt9lr"\n\n\na2, -5, 5, "/m/0bt9lr"\na3, 5, 5, "/m/0bt9lr"\na4, x, 5, "/m/0bt9lr"\n'
        '../evil, 1, 11, "/m/0bt9lr"\na5, 1, 11\na6, 1, 11, /m/0bt9lr\n',
    H + 'a1, 0, 10, "/m/0bt9lr"\r\na2, 1, 11, "/m/0bt9lr"\r\na3, 1, 11\r\n',
    H + 'a1, 0, 10, "/m/0bt9lr\na2, 1, 11, "/m/0bt9lr"\n',  # a field spanning lines
    H + 'a1, 0, 10, "/m/0bt9lr" \na2,0,10,"/m/0bt9lr"\na3 , 1 , 11 , " /m/0bt9lr , /m/0g6b5 "\n',
    H + '   # comment, "x\na1, 0, 10, "/m/0bt9lr"\n',
    H + '\xa0#a1, 0, 10, "/m/0bt9lr"\n\xa0a1, 0, 10, "/m/0bt9lr"\n\ta1, 0, 10, "/m/0bt9lr"\n  #x\n',
    H + 'a1, inf, nan, "/m/0bt9lr"\na2, 1e3, 1_0000, "/m/0bt9lr"\na3, 1.0005, 11.0005, "/m/0bt9lr"\n'
        'a4, 0.0025, 10.0025, "/m/0bt9lr"\na5, 1e300, 1e301, "/m/0bt9lr"\na6, 0x10, 20, "/m/0bt9lr"\n',
    H + 'a1, 0, 10, "/m/0bt9lr",\na2, 0, 10, "/m/0bt9lr", "x"\n, , , \n , \na3, 0, 10, ""\na4, 0, 10,\n',
    H + 'a1, 0, 10, "/m/0bt9lr"\na1, 0, 10, "/m/0g6b5"\nü1, 0, 10, "/m/0bt9lr"\nab cd, 0, 10, "/m/0bt9lr"\n'
        + "x" * 70 + ', 0, 10, "/m/0bt9lr"\n',
    H + 'a1\x00, 0, 10, "/m/0bt9lr"\n',
    H + 'a1, 0, 10, "/m/0bt9lr"\na\u20281, 0, 10, "/m/0bt9lr"\na2, 0\r, 10, "/m/0bt9lr"\n',
    H + 'a1, 0, 10, "/m/0bt9lr"\na3,1,11,"/m/0bt9lr"extra\na4,\t1,\t11,\t"/m/0bt9lr"\nlast, 1, 11, "/m/0g6b5"',
    'a1, 0, 10, "/m/0bt9lr"\n',
    H,
    "\n\n",
]


@pytest.mark.parametrize("small_blocks", [False, True])
def test_segment_csvs_read_as_a_record_at_a_time(tmp_path, monkeypatch, small_blocks):
    """The columnar reading (the expression over blocks of lines, the csv module for the lines it
    does not take, or for the whole file) gives every row, field, reason and key of the reading a
    record at a time, on odd and hostile lines; with blocks of a few lines too (block edges)."""
    if small_blocks:
        monkeypatch.setattr(segments, "BLOCK_BYTES", 40)
        monkeypatch.setattr(segments, "BLOCK_RECORDS", 2)
    raw = [c.encode() for c in SEGMENT_CASES] + [
        b"\xef\xbb\xbf" + H.encode() + b'a1, 0, 10, "/m/0bt9lr"\n',  # a BOM
        H.encode() + b'a1, 0, 10, "/m/0bt9lr"\n\xff\xfe, 1, 2, "x"\n',  # not UTF-8
        H.encode() + b'a1, 0, 10, "/m/0bt9lr"\r a2, 1, 11, "/m/0bt9lr"\n']  # a lone carriage return
    for i, data in enumerate(raw):
        path = tmp_path / f"case{i}.csv"
        path.write_bytes(data)
        try:
            expected = reference_rows(path, ["dog", "fireworks"])
        except ValueError as e:
            with pytest.raises(ValueError) as got:
                segments.audioset_table(path, ["dog", "fireworks"])
            assert str(got.value) == str(e)
            continue
        t = segments.audioset_table(path, ["dog", "fireworks"])
        got = list(zip(*(t[c].to_pylist() for c in ("line", "ytid", "start", "end", "cls", "reason", "key"))))
        assert _same(got, expected), (data, got, expected)


def test_a_large_segment_csv_reads_as_a_record_at_a_time(tmp_path):
    """50,000 lines in the real shape, with odd lines among them: the same rows."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
    from download import CLASSES, write_csv

    path = tmp_path / "segments.csv"
    write_csv(path, 50_000)
    with open(path, "a", encoding="utf-8") as f:
        f.write('bad id!, 1, 11, "/m/0bt9lr"\nshort, 1\nneg, -1, 9, "/m/04rlf"\n')
    t = segments.audioset_table(path, CLASSES)
    got = list(zip(*(t[c].to_pylist() for c in ("line", "ytid", "start", "end", "cls", "reason", "key"))))
    expected = reference_rows(path, CLASSES)
    assert len(got) == 50_003 and _same(got, expected)


# ------------------------------------------------------------------------------------ the record

def _record(key: str, status: str, attempts: int = 1, reason: str = "") -> dict:
    return {"key": key, "ytid": key.split("_")[0], "start": 0.0, "end": 10.0, "class": "dog", "split": "",
            "status": status, "reason": reason, "attempts": attempts, "bytes": 0, "sha256": "", "duration": math.nan,
            "file": ""}


def _run(root: Path, records: list[dict], close: bool = True) -> manifest.Writer:
    """One run's record keeping: each record through the journal, then the end of the run."""
    writer = manifest.Writer(root, manifest.load(root))
    for rec in records:
        writer.add(rec)
    if close:
        writer.close()
    else:
        writer.journal.close()  # killed: no end of run
    return writer


def _naive(root: Path) -> dict[str, tuple]:
    """download.parquet as anyone reads it (pandas on the folder): one row a key, asserted."""
    df = pd.read_parquet(root / "download.parquet")
    assert not df["key"].duplicated().any(), df[df["key"].duplicated(keep=False)]
    return {k: (s, a) for k, s, a in zip(df["key"], df["status"], df["attempts"])}


def test_the_end_of_a_run_rewrites_only_the_parts_of_the_rows_it_recorded(tmp_path):
    """A record of 4,000 rows (ok, failed, error); a re-run that retries 30 errors and fetches 40
    rows never seen: the ok and failed parts are the same files afterwards (same inode, never
    rewritten), the error part lost the retried rows, and anyone reading the folder sees one row
    a key with its newest values."""
    root = tmp_path / "root"
    first = ([_record(f"ok{i}_000000", "ok") for i in range(3000)] + [_record(f"gone{i}_000000", "unavailable")
                                                                       for i in range(800)]
             + [_record(f"err{i}_000000", "error", 4) for i in range(200)])
    writer = manifest.Writer(root, manifest.load(root))
    writer.add_table(manifest.records_table(first))
    writer.close()
    parts = {p.name.split("-", 1)[1]: p for p in (root / "download.parquet").iterdir()}
    assert sorted(parts) == ["error.parquet", "failed.parquet", "ok.parquet"]
    inode = {g: p.stat().st_ino for g, p in parts.items()}
    again = [_record(f"err{i}_000000", "ok" if i % 2 else "error", 5) for i in range(30)]
    new = [_record(f"new{i}_000000", "unavailable") for i in range(40)]
    _run(root, again + new)
    expected = {r["key"]: (r["status"], r["attempts"]) for r in first + again + new}
    assert _naive(root) == expected
    assert manifest.read_record(root).set_index("key")["status"].to_dict() == {k: s for k, (s, _) in expected.items()}
    assert parts["ok.parquet"].stat().st_ino == inode["ok.parquet"]
    assert parts["failed.parquet"].stat().st_ino == inode["failed.parquet"]
    assert pq.read_table(parts["error.parquet"]).num_rows == 200 - 30
    assert not (root / ".download" / "journal.jsonl").exists()


def test_a_killed_run_loses_nothing_and_the_next_one_folds_it(tmp_path, monkeypatch):
    """Checkpoints every 10 rows; a run killed after 35 (three checkpoints' parts, five journal
    lines) that had retried rows recorded by an earlier run: the next run reads the newest of
    each, and its end leaves one row a key."""
    monkeypatch.setattr(manifest, "CHECKPOINT_ROWS", 10)
    root = tmp_path / "root"
    _run(root, [_record(f"r{i}_000000", "error", 1) for i in range(25)])
    killed = [_record(f"r{i}_000000", "ok", 2) for i in range(0, 25, 2)] + [_record(f"n{i}_000000", "private")
                                                                             for i in range(22)]
    _run(root, killed, close=False)
    journal = root / ".download" / "journal.jsonl"
    assert len(journal.read_text().splitlines()) == 5
    with open(journal, "a") as f:
        f.write('{"key": "torn')  # the line the kill cut
    expected = {r["key"]: (r["status"], r["attempts"]) for r in
                [_record(f"r{i}_000000", "error", 1) for i in range(25)] + killed}
    known = manifest.load(root)
    assert dict(zip(known.keys.to_pylist(), zip(known.status.to_pylist(), known.attempts.to_pylist()))) == expected
    assert known.stale  # older rows the killed run's replace
    _run(root, [_record("x_000000", "removed")])
    expected["x_000000"] = ("removed", 1)
    assert _naive(root) == expected


def test_merges_keep_a_few_parts_a_group(tmp_path):
    """Thirty runs of 50 new rows: the parts of a group stay within log2 of the rows."""
    root = tmp_path / "root"
    for run in range(30):
        _run(root, [_record(f"k{run}x{i}_000000", "ok") for i in range(50)])
    names = os.listdir(root / "download.parquet")
    assert len(_naive(root)) == 1500
    assert 1 <= len(names) <= math.ceil(math.log2(1500 / 50)) + 1, names


def test_a_download_parquet_file_of_before_becomes_parts(tmp_path):
    """A ROOT written before issue 29 (one download.parquet file, pandas' schema, an extra column
    and a text where a number goes): read as it was, then turned into parts by the next run, its
    rows written back as the old save wrote them."""
    root = tmp_path / "root"
    root.mkdir()
    old = pd.DataFrame([_record("a_000000", "ok"), _record("b_000000", "error"),
                        _record("c_000000", "skipped", 0, "line 3: bad"), _record("d_000000", "private")])
    old["extra"] = 1
    old["bytes"] = ["12", "oops", "0", "7"]
    old.to_parquet(root / "download.parquet")
    known = manifest.load(root)
    assert known.legacy == root / "download.parquet" and len(known) == 4
    _run(root, [_record("b_000000", "ok", 2)])
    assert (root / "download.parquet").is_dir()
    df = pd.read_parquet(root / "download.parquet").set_index("key")
    assert df.loc["a_000000", "status"] == "ok" and df.loc["b_000000", "attempts"] == 2
    assert df.loc["c_000000", "reason"] == "line 3: bad" and "extra" not in df.columns
    assert df.loc["a_000000", "bytes"] == 12 and df.loc["d_000000", "bytes"] == 7 and len(df) == 4
    assert not (root / ".download" / "legacy-download.parquet").exists()


def test_hostile_parts_are_one_line_and_nothing_is_written(tmp_path):
    root = tmp_path / "root"
    _run(root, [_record("a_000000", "ok")])
    folder = root / "download.parquet"
    before = sorted(os.listdir(folder))
    bad = folder / "00000007-error.parquet"
    pq.write_table(pa.table({"key": ["b_000000", "c_000000"], "status": ["error", "error"], "attempts": [1, -4]}), bad)
    refused = r"00000007-error.parquet: row 1: 'c_000000' attempts: -4 is out of range"
    with pytest.raises(untrusted.Untrusted, match=refused):
        manifest.load(root)
    bad.write_bytes(b"not parquet")
    with pytest.raises(untrusted.Untrusted, match="not a parquet table"):
        manifest.load(root)
    bad.unlink()
    bad.symlink_to(folder / before[0])
    with pytest.raises(OSError, match="symbolic link"):
        manifest.load(root)
    bad.unlink()
    (folder / "notes.txt").write_text("x")
    with pytest.raises(untrusted.Untrusted, match="not a part of the record"):
        manifest.load(root)
    (folder / "notes.txt").unlink()
    assert sorted(os.listdir(folder)) == before


# ------------------------------------------------------------------------------------ resume at scale

def test_a_resume_of_20000_rows_fetches_only_what_is_left(tmp_path):
    """A ROOT where an earlier run recorded 19,900 of 20,000 AudioSet rows (its ok clips on disk,
    empty: planning lists the folders and opens no clip). The re-run asks the server for the
    rows never reached, its errors and the one ok row whose clip was deleted; not for ok rows,
    permanent failures, skipped lines, nor for an error row whose clip is on disk (adopted: checked
    and recorded ok). The record then holds one row a key, the newest, and the skipped lines the
    earlier run recorded are not recorded again (their part is the same file)."""
    import sys

    import pyarrow.compute as pc

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
    from download import CLASSES, write_csv
    from test_download import Mirror, make_video

    from s2i_data.download import DownloadConfig, download

    csv = tmp_path / "unbalanced_train_segments.csv"
    write_csv(csv, 20_000, seed=5)
    sel = rows.read_table(csv, "audioset", CLASSES)
    done = sel.filter(pc.less_equal(sel["line"], 19_900 + 3)).to_pylist()  # + the three '#' lines
    later = sel.filter(pc.greater(sel["line"], 19_900 + 3)).to_pylist()
    rng = random.Random(7)
    records, errors, clips = [], [], {}
    for r in done:
        status = "skipped" if r["reason"] else rng.choices(["ok", "unavailable", "error"], [0.988, 0.01, 0.002])[0]
        rec = {**_record(r["key"], status, 0 if r["reason"] else 1, r["reason"]), "ytid": r["ytid"],
               "start": r["start"], "end": r["end"], "class": r["cls"]}
        if status == "ok":
            rec["file"] = clips[r["key"]] = f"{r['cls']}/{r['key']}.mp4"
        errors += [r] if status == "error" else []
        records.append(rec)
    root = tmp_path / "root"
    writer = manifest.Writer(root, manifest.load(root))
    writer.add_table(manifest.records_table(records[:10_000]))  # as an earlier run's checkpoints left them
    writer.add_table(manifest.records_table(records[10_000:]))
    writer.close()
    skipped_part = next((root / "download.parquet").glob("*-skipped.parquet"))
    inode = skipped_part.stat().st_ino
    for f in clips.values():
        (root / f).parent.mkdir(exist_ok=True)
        (root / f).touch()
    gone = next(iter(clips))  # an ok row whose clip was deleted since
    os.unlink(root / clips.pop(gone))
    adopted = errors[0]  # an error row whose clip is there (a run killed after the rename)
    make_video(root / adopted["cls"] / f"{adopted['key']}.mp4", 440, seconds=10.5)
    assert 5 <= len(errors) <= 60, len(errors)

    with Mirror({}, {}) as mirror:  # 404 for every id
        result = download(DownloadConfig(csv=str(csv), out=str(root), classes=CLASSES, url_template=mirror.template,
                                         rate="0", workers=4, attempts=1))
        asked = {ytid for _, ytid, _ in mirror.log}
    expected = ({r["ytid"] for r in errors[1:]} | {r["ytid"] for r in later if not r["reason"]}
                | {k.rsplit("_", 2)[0] for k in [gone]})
    assert asked == expected
    assert result.done_now == len(expected)
    record = _naive(root)
    assert len(record) == len(sel)
    assert record[adopted["key"]][0] == "ok" and record[gone][0] == "unavailable"
    for r in later:
        assert record[r["key"]][0] == ("skipped" if r["reason"] else "unavailable")
    assert sum(s == "ok" for s, _ in record.values()) == len(clips) + 1
    assert sum(s == "unavailable" for s, _ in record.values()) > 100  # the permanent failures kept
    assert skipped_part.stat().st_ino == inode  # no skipped line recorded again: its part untouched
    assert result.counts["ok"] == len(clips) + 1 and sum(result.counts.values()) == len(sel)
