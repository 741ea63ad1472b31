"""Benchmark: `s2i-data download` at AudioSet scale (issue 29): planning and resuming a
2,000,000-row segment CSV until the first request, and the record's fold at the end of a run.

A synthetic CSV in the real format (three ``#`` lines, ``YTID, start, end, "label"``: random
11-character ids, random windows of 10 s, one label each drawn from the 527 classes of
``class_labels_indices.csv``) is written to a temporary folder. The classes asked for are the
seven roots of the AudioSet ontology, so every row is part of the job; the few labels under two
roots make their rows ``skipped`` (ambiguous), as they would be.

Each measurement runs in a fresh process (``--child``), with the real `download` path and a real
HTTP server on 127.0.0.1 in that process as ``--url-template``: the moment it receives its first
request (through yt-dlp and the guard, like any fetch) it reads the process's wall time since start
and peak RSS (``VmHWM``) and ends the process. Nothing is patched.

- (a) ``fresh``: an empty ROOT.
- (b) ``resume``: a ROOT whose record holds the first ``--done`` CSV rows done, as one earlier run
  leaves it: skipped rows with the reader's reasons, and of the rest 72 % ok, 20 % unavailable,
  2 % private, 4 % removed, 2 % error (retried by the re-run). Every ``ok`` row's file exists
  under its final name, empty (planning lists the class folders; it never opens an ok clip). The
  record is written by the real writer, in the run's own checkpoint batches, then closed (folded);
  today's path gets the same rows as its one ``download.parquet`` file, sorted by key as its
  ``manifest.save`` writes it. The state (and its files) is made once; each run gets its own
  record put back and the leftovers of the run before removed. (b') is the new code on today's
  file: the first run after the upgrade turns it into parts before planning.
- (c) ``fold``: the record keeping of a re-run of N rows on top of (b), through the real planning:
  the first N rows of its to-do list (retried errors first, then rows never reached), each
  through the journal (an fsynced line) as the run does, then the end of the run. Timed apart:
  the journal lines, and everything else (checkpoint parts and the end of the run; today's path:
  ``manifest.save``).

"Today's path" is `s2i_data/download` as of commit ``BASELINE`` (before issue 29's second part),
taken out of git into a temporary package and run by the same children in the same bench run.
``--baseline-rows`` runs it on a CSV of that many rows (same generator; ``--done`` and ``--fold``
scaled alike) when the full size is too slow or too big for the machine; ``0`` skips it.

    python bench/download.py [--rows 2000000] [--done 1900000] [--fold 10000 100000]
                             [--baseline-rows 2000000] [--out bench/out/download.json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # runnable from a checkout without installing the package
sys.path.insert(0, str(REPO / "bench"))

import audioset_csv  # noqa: E402  (the CSV writer bench/plan.py uses too)

# Heavy imports stay in the functions: the parent only spawns, so each child's VmHWM is its own.

BASELINE = "3d30906"  # today's path: the commit before this change
BASELINE_FILES = ("__init__.py", "rows.py", "manifest.py", "fetch.py", "ratelimit.py", "guard.py")
# the seven roots of the AudioSet ontology: every row is of one of them (or of two: skipped)
CLASSES = ["/m/0dgw9r", "/m/0jbk", "/m/04rlf", "/m/059j3w", "/t/dd00041", "/t/dd00098", "/t/dd00123"]
DONE_SHARES = {"ok": 0.72, "unavailable": 0.20, "private": 0.02, "removed": 0.04, "error": 0.02}
REASONS = {"unavailable": "Video unavailable",
           "removed": "Video unavailable. This video has been removed by the uploader",
           "private": "Private video. Sign in if you've been granted access to this video",
           "error": "HTTP Error 429: Too Many Requests (after 4 attempts)", "ok": ""}


# ------------------------------------------------------------------------------------ the CSV

def write_csv(path: Path, rows: int, seed: int = 0) -> None:
    """The bench's CSV (`audioset_csv.write_csv`): one class a row, a tenth of the windows at a
    millisecond."""
    audioset_csv.write_csv(path, rows, seed, most_labels=1, odd_windows=0.1)


# ------------------------------------------------------------------------------------ the two paths

def baseline_package(tmp: Path) -> Path:
    """Today's `s2i_data/download`, out of git, as the package ``s2i_download_baseline``."""
    pkg = tmp / "baseline" / "s2i_download_baseline"
    pkg.mkdir(parents=True, exist_ok=True)
    for name in BASELINE_FILES:
        text = subprocess.run(["git", "-C", str(REPO), "show", f"{BASELINE}:s2i_data/download/{name}"],
                              capture_output=True, text=True, check=True).stdout
        (pkg / name).write_text(text)
    return pkg.parent


def impl(which: str, baseline_dir: str | None):
    if which == "old":
        sys.path.insert(0, baseline_dir)
        import s2i_download_baseline as dl
    else:
        import s2i_data.download as dl
    return dl


def peak_mib() -> tuple[float, float]:
    """(VmHWM, VmRSS) of this process in MiB."""
    got = {}
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(("VmHWM", "VmRSS")):
                got[line.split(":")[0]] = int(line.split()[1]) / 1024
    return got["VmHWM"], got["VmRSS"]


def loadavg() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


# ------------------------------------------------------------------------------------ children

def child_plan(args, t_start: float) -> None:
    """Run `download` until its first request; the server's handler reports and ends the process."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    dl = impl(args.impl, args.baseline_dir)
    t_imported = time.perf_counter()
    out = Path(args.result)

    first = threading.Lock()

    class First(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            t = time.perf_counter()
            hwm, rss = peak_mib()
            first.acquire()  # the other workers' requests wait here until the process ends
            tmp = out.with_suffix(".tmp")
            tmp.write_text(json.dumps({"seconds": t - t_start, "seconds_after_imports": t - t_imported,
                                       "peak_rss_mib": hwm, "rss_mib": rss, "loadavg": loadavg(),
                                       "path": self.path}))
            os.replace(tmp, out)
            os._exit(0)

        def log_message(self, *a) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), First)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    cfg = dl.DownloadConfig(csv=args.csv, out=args.root, fmt="audioset", classes=CLASSES,
                            url_template=f"http://127.0.0.1:{server.server_address[1]}/{{ytid}}.mp4",
                            workers=4, attempts=1, rate="0")
    dl.download(cfg)
    out.write_text(json.dumps({"error": "download finished without a request"}))


def _done_table(csv_path: str, done: int, seed: int = 1):
    """The record one earlier run leaves for the first ``done`` CSV rows (see the docstring)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    from s2i_data.download.rows import read_table

    sel = read_table(csv_path, "audioset", CLASSES)
    sel = sel.filter(pc.less_equal(sel["line"], done + 3))  # + the three '#' lines
    n = sel.num_rows
    rng = np.random.default_rng(seed)
    skipped = pc.not_equal(sel["reason"], "").to_numpy(zero_copy_only=False)
    names = np.array(list(DONE_SHARES))
    status = names[rng.choice(len(names), n, p=list(DONE_SHARES.values()))]
    status[skipped] = "skipped"
    ok = status == "ok"
    reason = np.where(skipped, sel["reason"].to_numpy(zero_copy_only=False),
                      np.vectorize(lambda s: REASONS.get(s, ""), otypes=[object])(status))
    keys = sel["key"].to_numpy(zero_copy_only=False)
    cls = sel["cls"].to_numpy(zero_copy_only=False)
    files = np.where(ok, np.char.add(np.char.add(cls.astype(str), "/"), np.char.add(keys.astype(str), ".mp4")), "")
    attempts = np.where(status == "error", 4, np.where(skipped, 0, 1 + (rng.random(n) < 0.05)))
    sha = np.where(ok, np.array([f"{x:064x}" for x in rng.integers(0, 2**62, n)]), "")
    table = pa.table({
        "key": sel["key"], "ytid": sel["ytid"], "start": sel["start"], "end": sel["end"], "class": sel["cls"],
        "split": sel["split"], "status": pa.array(status, pa.string()), "reason": pa.array(reason, pa.string()),
        "attempts": pa.array(attempts, pa.int64()),
        "bytes": pa.array(np.where(ok, rng.integers(200_000, 900_000, n), 0), pa.int64()),
        "sha256": pa.array(sha, pa.string()),
        "duration": pa.array(np.where(ok, 10.0, np.nan), pa.float64()),
        "file": pa.array(files, pa.string())})
    return table


def child_state(args, t_start: float) -> None:
    """Build the resume state in ``args.root``: the ok rows' files, the record as the new writer
    leaves it (``download.parquet/``), and today's record of the same rows (one file, sorted by key,
    as its ``manifest.save`` writes it) in ``args.baseline_record``."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from s2i_data.download import manifest

    table = _done_table(args.csv, args.done)
    root = Path(args.root)
    ok = table.filter(pc.equal(table["status"], "ok"))
    t0 = time.perf_counter()
    folders = set()
    for f in ok["file"].to_pylist():
        folder = root / f.split("/", 1)[0]
        if folder not in folders:
            folder.mkdir(parents=True, exist_ok=True)
            folders.add(folder)
        os.close(os.open(root / f, os.O_WRONLY | os.O_CREAT, 0o644))
    t_files = time.perf_counter() - t0
    t0 = time.perf_counter()
    writer = manifest.Writer(root, manifest.load(root))
    for i in range(0, table.num_rows, manifest.CHECKPOINT_ROWS):  # the run's checkpoints
        writer.add_table(table.slice(i, manifest.CHECKPOINT_ROWS))
    writer.close()
    t_record = time.perf_counter() - t0
    old = Path(args.baseline_record)
    old.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table.take(pc.sort_indices(table, [("key", "ascending")])), old)
    Path(args.result).write_text(json.dumps({"rows": table.num_rows, "ok_files": ok.num_rows,
                                             "files_s": t_files, "record_s": t_record,
                                             "parts": sorted(os.listdir(root / "download.parquet"))}))


def child_fold(args, t_start: float) -> None:
    """A re-run of ``args.n`` rows on top of the resume state, through the real planning: each row
    to the journal (an fsynced line, as each fetch finishes), then the end of the run."""
    import numpy as np

    dl = impl(args.impl, args.baseline_dir)
    root = Path(args.root)
    rng = np.random.default_rng(2)
    if args.impl == "new":
        from s2i_data.download import manifest
        from s2i_data.download.plan import make_plan
        from s2i_data.download.rows import read_table

        writer = manifest.Writer(root, manifest.load(root))
        plan = make_plan(read_table(args.csv, "audioset", CLASSES), writer.known, root, False)
        writer.replaces(*plan.replacing)
        writer.add_table(plan.skipped)  # (the lines never reached that are skipped: before the timing)
        rows = plan.rows.take(plan.todo[: args.n]).to_pylist()
    else:
        from s2i_data.download.rows import read_table

        record = dl.manifest.load(root)
        sel = read_table(args.csv, "audioset", CLASSES).to_pylist()
        rows = [r for r in sel if not r["reason"] and record.get(r["key"], {}).get("status") in (None, "error")]
        rows = rows[: args.n]
    outcomes = rng.choice(["ok", "unavailable", "error"], len(rows), p=[0.6, 0.3, 0.1])
    records = [_fetched(r, s) for r, s in zip(rows, outcomes)]
    t0 = time.perf_counter()
    journal_s = 0.0
    if args.impl == "new":
        for rec in records:
            t1 = time.perf_counter()
            writer.journal.append(rec)
            journal_s += time.perf_counter() - t1
            writer.keep(rec)  # the run's buffer, and its parts every CHECKPOINT_ROWS rows
        t1 = time.perf_counter()
        writer.close()
    else:
        journal = dl.manifest.Journal(root)
        for rec in records:
            t1 = time.perf_counter()
            journal.append(rec)
            journal_s += time.perf_counter() - t1
            record[rec["key"]] = rec
        journal.close()
        t1 = time.perf_counter()
        dl.manifest.save(root, record)
    close_s = time.perf_counter() - t1
    total = time.perf_counter() - t0
    hwm, _ = peak_mib()
    Path(args.result).write_text(json.dumps({"n": len(records), "journal_s": journal_s,
                                             "fold_s": total - journal_s, "end_of_run_s": close_s,
                                             "peak_rss_mib": hwm, "loadavg": loadavg()}))


def _fetched(r: dict, status: str) -> dict:
    """The record a fetch of row ``r`` leaves (download._record's fields)."""
    ok = status == "ok"
    return {"key": r["key"], "ytid": r["ytid"], "start": r["start"], "end": r["end"], "class": r["cls"], "split": "",
            "status": status, "reason": REASONS.get(status, ""), "attempts": 1, "bytes": 500_000 if ok else 0,
            "sha256": "ab" * 32 if ok else "", "duration": 10.0 if ok else float("nan"),
            "file": f"{r['cls']}/{r['key']}.mp4" if ok else ""}


# ------------------------------------------------------------------------------------ parent

def spawn(mode: str, result: Path, **kw) -> dict:
    cmd = [sys.executable, __file__, "--child", mode, "--result", str(result)]
    for k, v in kw.items():
        cmd += [f"--{k.replace('_', '-')}", str(v)]
    t0 = time.perf_counter()
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
    if run.returncode != 0 or not result.is_file():
        raise SystemExit(f"{mode} {kw.get('impl')}: exit {run.returncode}\n{run.stderr[-3000:]}")
    got = json.loads(result.read_text())
    got["process_s"] = time.perf_counter() - t0
    result.unlink()
    if "error" in got:
        raise SystemExit(f"{mode} {kw.get('impl')}: {got['error']}")
    return got


def install(record: Path, root: Path) -> None:
    """``root`` as the state left it: its record (a file or a folder of parts) put back, and what a
    run killed at its first request leaves (the journal, its first parts) gone."""
    shutil.rmtree(root / ".download", ignore_errors=True)
    target = root / "download.parquet"
    if target.is_dir():
        shutil.rmtree(target)
    elif target.exists():
        target.unlink()
    (shutil.copytree if record.is_dir() else shutil.copy2)(record, target)


def measure(tmp: Path, rows: int, done: int, folds: list[int], impls: dict[str, str | None], log) -> dict:
    """Both paths on one CSV and one resume state (the ok rows' files are made once)."""
    csv_path = tmp / f"segments-{rows}.csv"
    t0 = time.perf_counter()
    write_csv(csv_path, rows)
    log(f"wrote {rows:,} rows ({csv_path.stat().st_size / 2**20:.0f} MiB) in {time.perf_counter() - t0:.1f} s")
    res = tmp / "result.json"
    out: dict = {which: {"rows": rows, "done": done, "fold": []} for which in impls}
    common = {which: {"impl": which, "csv": csv_path, "baseline_dir": d or ""} for which, d in impls.items()}
    for which in impls:
        fresh = tmp / f"fresh-{which}"
        got = out[which]["fresh"] = spawn("plan", res, root=fresh, **common[which])
        log(f"[{which} {rows:,}] (a) fresh: first request after {got['seconds']:.1f} s, "
            f"peak RSS {got['peak_rss_mib']:.0f} MiB (load {got['loadavg']})")
        shutil.rmtree(fresh, ignore_errors=True)
    root = tmp / "resume"
    records = {"new": tmp / "record-new", "old": tmp / "record-old" / "download.parquet"}
    state = spawn("state", res, root=root, done=done, baseline_record=records["old"], **common["new"])
    shutil.copytree(root / "download.parquet", records["new"])
    log(f"[{rows:,}] state: {state['rows']:,} rows recorded, {state['ok_files']:,} files ({state['files_s']:.0f} s), "
        f"record written in {state['record_s']:.1f} s as {', '.join(state['parts'])}")
    for which in impls:
        out[which]["state"] = state
        install(records[which], root)
        got = out[which]["resume"] = spawn("plan", res, root=root, **common[which])
        log(f"[{which} {rows:,}] (b) resume: first request after {got['seconds']:.1f} s, "
            f"peak RSS {got['peak_rss_mib']:.0f} MiB (load {got['loadavg']})")
    if "new" in impls and "old" in impls:  # today's record file under the new code: turned into parts first
        install(records["old"], root)
        got = out["new"]["resume_from_todays_record"] = spawn("plan", res, root=root, **common["new"])
        log(f"[new {rows:,}] (b') resume from today's download.parquet file (turned into parts first): first "
            f"request after {got['seconds']:.1f} s, peak RSS {got['peak_rss_mib']:.0f} MiB (load {got['loadavg']})")
    for which in impls:
        for n in folds:
            install(records[which], root)
            got = spawn("fold", res, root=root, n=n, **common[which])
            out[which]["fold"].append(got)
            log(f"[{which} {rows:,}] (c) fold of {n:,} rows into {done:,}: record keeping {got['fold_s']:.2f} s "
                f"(end of run {got['end_of_run_s']:.2f} s), journal lines {got['journal_s']:.1f} s, "
                f"peak RSS {got['peak_rss_mib']:.0f} MiB")
    shutil.rmtree(root, ignore_errors=True)
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=2_000_000)
    ap.add_argument("--done", type=int, default=1_900_000)
    ap.add_argument("--fold", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--baseline-rows", type=int, default=2_000_000, help="today's path on this many rows (0: not run)")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "out" / "download.json")
    ap.add_argument("--tmp", type=Path, help="work folder (default: a temporary one)")
    # children
    ap.add_argument("--child", choices=["plan", "state", "fold"], help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    ap.add_argument("--impl", choices=["new", "old"], default="new", help=argparse.SUPPRESS)
    ap.add_argument("--csv", help=argparse.SUPPRESS)
    ap.add_argument("--root", help=argparse.SUPPRESS)
    ap.add_argument("--n", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--baseline-dir", help=argparse.SUPPRESS)
    ap.add_argument("--baseline-record", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        t_start = time.perf_counter()
        {"plan": child_plan, "state": child_state, "fold": child_fold}[args.child](args, t_start)
        return
    lines: list[str] = []

    def log(msg: str) -> None:
        print(msg, flush=True)
        lines.append(msg)

    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp_name:
        tmp = Path(tmp_name)
        report: dict = {"loadavg_before": loadavg(), "cpus": os.cpu_count(), "baseline_commit": BASELINE}
        log(f"load average {report['loadavg_before']} on {os.cpu_count()} CPUs")
        baseline = str(baseline_package(tmp)) if args.baseline_rows else None
        if args.baseline_rows == args.rows:
            report.update(measure(tmp, args.rows, args.done, args.fold, {"new": None, "old": baseline}, log))
        else:
            report.update(measure(tmp, args.rows, args.done, args.fold, {"new": None}, log))
            if args.baseline_rows:  # today's path on a smaller CSV: the same shares of done rows
                scale = args.baseline_rows / args.rows
                report.update(measure(tmp, args.baseline_rows, round(args.done * scale),
                                      [max(1, round(n * scale)) for n in args.fold], {"old": baseline}, log))
        report["loadavg_after"] = loadavg()
        log(f"load average {report['loadavg_after']}")
    if "new" in report and "old" in report:
        for what in ("fresh", "resume"):
            new, old = report["new"][what], report["old"][what]
            log(f"({what}) {old['seconds']:.1f} s -> {new['seconds']:.1f} s ({old['seconds'] / new['seconds']:.1f}x), "
                f"peak RSS {old['peak_rss_mib']:.0f} -> {new['peak_rss_mib']:.0f} MiB "
                f"(today's path on {report['old']['rows']:,} rows)")
        for new, old in zip(report["new"]["fold"], report["old"]["fold"]):
            log(f"(fold of {new['n']:,}) {old['fold_s']:.2f} s -> {new['fold_s']:.2f} s "
                f"({old['n']:,} rows for today's path)")
    report["log"] = lines
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"figures: {args.out}")


if __name__ == "__main__":
    sys.exit(main())
