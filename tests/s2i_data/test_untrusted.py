"""Names and numbers from someone else's build are checked before use (s2i_data/untrusted.py):
a class, key, shard name or plan row that is not a plain name, and a NaN, infinite, negative or
degenerate number in stats.json or a manifest, is one line and a non-zero exit from `verify`,
`inspect` and a build resuming from its plan on disk, with nothing written anywhere."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from shardcraft import copy_build, write_parquet

CLASSES = "baby,dog,rail,fireworks,water"


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "s2i_data.cli", *args], capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=600)


def one_line(r: subprocess.CompletedProcess, *wanted: str) -> str:
    """The command failed with exactly one line on stderr, holding every ``wanted`` text."""
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert r.returncode != 0 and len(lines) == 1, r.stdout + r.stderr
    assert "Traceback" not in r.stderr and "internal error" not in r.stderr, r.stderr
    assert all(w in lines[0] for w in wanted), (wanted, lines[0])
    return lines[0]


def snapshot(root: Path) -> dict[str, str]:
    """Every file and folder under ``root`` with a digest of its bytes and its mtime."""
    out = {}
    for p in sorted(root.rglob("*")):
        st = p.lstat()
        out[str(p.relative_to(root))] = (hashlib.sha1(p.read_bytes()).hexdigest() if p.is_file() else "dir",
                                          st.st_mtime_ns)
    return out


# ---- stats.json, manifest.parquet and videos.parquet edited: verify and inspect refuse them

def edit_json(path: Path, change) -> None:
    obj = json.loads(path.read_text())
    change(obj)
    path.write_text(json.dumps(obj))  # NaN and Infinity written as JSON's readers take them


def edit_table(path: Path, change) -> None:
    df = pd.read_parquet(path)
    change(df)
    write_parquet(df, path)


def rename_class(out: Path, old: str, new: str) -> None:
    """The class renamed consistently everywhere it is named, as a sharer would do it."""
    def stats(s):
        s["classes"] = [new if c == old else c for c in s["classes"]]
        s["counts"] = {sp: {new if c == old else c: n for c, n in per.items()} for sp, per in s["counts"].items()}

    edit_json(out / "stats.json", stats)
    for name in ("manifest.parquet", "videos.parquet"):
        edit_table(out / name, lambda df: df.__setitem__("class", df["class"].replace(old, new)))


def set_logmel(key, value):
    return lambda out: edit_json(out / "stats.json", lambda s: s["train_logmel"].__setitem__(key, value))


def first_row(column, value, name="manifest.parquet"):
    def edit(out):
        def change(df):
            df[column] = df[column].astype(object) if isinstance(value, str) else df[column]
            df.loc[0, column] = value
        edit_table(out / name, change)
    return edit


def _degenerate(out: Path) -> None:
    def change(s):
        s["train_logmel"]["p99.9"] = s["train_logmel"]["p0.1"]
    edit_json(out / "stats.json", change)


def _nan_mean(out: Path) -> None:
    edit_json(out / "stats.json", lambda s: s["train_logmel"]["mean"].__setitem__(3, float("nan")))


def _negative_std(out: Path) -> None:
    edit_json(out / "stats.json", lambda s: s["train_logmel"]["std"].__setitem__(0, -1.0))


def _no_val_counts(out: Path) -> None:
    edit_json(out / "stats.json", lambda s: s["counts"].pop("val"))


def _huge_percentile(out: Path) -> None:
    text = (out / "stats.json").read_text()
    obj = json.loads(text)
    key = json.dumps(obj["train_logmel"]["p99.9"])
    (out / "stats.json").write_text(text.replace(f'"p99.9": {key}', '"p99.9": 1' + "0" * 400))


HOSTILE = {  # edit → what the one line must name
    "class ../../x": (lambda out: rename_class(out, "baby", "../../x"), ["stats.json", "classes[0]", "../../x"]),
    "class with a newline": (lambda out: rename_class(out, "dog", "dog\nok   all fine"), ["stats.json", r"\n"]),
    "p0.1 == p99.9": (_degenerate, ["stats.json", "p99.9", "not above p0.1"]),
    "NaN in the mean": (_nan_mean, ["stats.json", "train_logmel.mean[3]", "nan"]),
    "infinite p0.1": (set_logmel("p0.1", float("-inf")), ["stats.json", "train_logmel.p0.1"]),
    "negative std": (_negative_std, ["stats.json", "std", "negative"]),
    "a 400-digit percentile": (_huge_percentile, ["stats.json", "train_logmel.p99.9"]),
    "counts without val": (_no_val_counts, ["stats.json", "counts"]),
    "NaN start_s": (first_row("start_s", float("nan")), ["manifest.parquet", "row 0 start_s"]),
    "negative end_s": (first_row("end_s", -3.0), ["manifest.parquet", "row 0"]),
    "key with a slash": (first_row("key", "../../evil_0000"), ["manifest.parquet", "row 0 key"]),
    "shard outside its folder": (first_row("shard", "../../evil/train-000000.tar"), ["manifest.parquet", "shard"]),
    "videos: class ../x": (first_row("class", "../x", "videos.parquet"), ["videos.parquet", "row 0 class"]),
    "videos: status": (first_row("status", "pwned", "videos.parquet"), ["videos.parquet", "row 0 status"]),
    "videos: segments -1": (first_row("segments", -1, "videos.parquet"), ["videos.parquet", "row 0 segments"]),
}


@pytest.fixture(scope="module")
def hostile(tiny_build, tmp_path_factory) -> dict[str, Path]:
    """One copy of the tiny build per hostile edit."""
    base = tmp_path_factory.mktemp("hostile")
    out = {}
    for i, (case, (edit, _)) in enumerate(HOSTILE.items()):
        out[case] = copy_build(tiny_build, base / f"case{i}" / "shards")
        edit(out[case])
    return out


@pytest.mark.parametrize("case", list(HOSTILE))
def test_verify_refuses_a_hostile_build_in_one_line(hostile, case):
    before = snapshot(hostile[case].parent)
    one_line(cli("verify", str(hostile[case]), "--content-samples", "0"), *HOSTILE[case][1])
    assert snapshot(hostile[case].parent) == before


@pytest.mark.parametrize("case", ["class ../../x", "p0.1 == p99.9", "NaN start_s", "videos: class ../x"])
def test_inspect_refuses_a_hostile_build_in_one_line(hostile, case, tmp_path):
    one_line(cli("inspect", str(hostile[case]), "--png", str(tmp_path / "sheet.png")), *HOSTILE[case][1])
    assert not (tmp_path / "sheet.png").exists()


# ---- a build resumed from an edited plan: refused before it writes anything, anywhere

PENDING = "train/train-000000.tar"  # the shard `unfinished` lacks: the resumed build writes it


def _plan_edit(table: str, column: str, value):
    """Set ``column`` of ``_build/{table}.parquet`` to ``value`` (or ``value(work)``) in the rows
    of the pending shard (plan) or of its first video (probe)."""
    def edit(work: Path) -> None:
        new = value(work) if callable(value) else value
        plan = pd.read_parquet(work / "plan.parquet")
        video = plan.loc[plan["shard"] == PENDING, "video_id"].iloc[0]

        def change(df):
            rows = df["shard"] == PENDING if table == "plan" else df["video_id"] == video
            if isinstance(new, str):
                df[column] = df[column].astype(object)
            df.loc[rows, column] = new
        edit_table(work / f"{table}.parquet", change)
    return edit


PLAN = {
    "shard ../../evil": (_plan_edit("plan", "shard", "../../evil/train-000000.tar"), ["plan.parquet", "shard"]),
    # absolute, but inside the test's folder: the old code did write there
    "absolute shard": (_plan_edit("plan", "shard", lambda work: str(work.parents[2] / "evil-000000.tar")),
                       ["plan.parquet", "shard"]),
    "key with a slash": (_plan_edit("plan", "key", "../../../evil"), ["plan.parquet", "key"]),
    "NaN start_s": (_plan_edit("plan", "start_s", float("nan")), ["plan.parquet", "start_s"]),
    "probe class ../x": (_plan_edit("probe", "class", "../x"), ["probe.parquet", "class"]),
    "probe NaN window": (_plan_edit("probe", "window_start_s", float("nan")), ["probe.parquet", "window_start_s"]),
    "probe stream index": (_plan_edit("probe", "audio_index", -1), ["probe.parquet", "audio_index"]),
}


@pytest.fixture
def unfinished(tiny_build, tmp_path) -> Path:
    """A copy of the tiny build one shard short of complete (its tar and marker gone): the
    next run of the same command resumes it from its plan on disk."""
    out = copy_build(tiny_build, tmp_path / "a" / "shards")
    (out / PENDING).unlink()
    (out / "_build" / "shards" / "train-000000.json").unlink()
    return out


@pytest.mark.parametrize("case", list(PLAN))
def test_a_resumed_build_refuses_an_edited_plan_and_writes_nothing(synth_videos, unfinished, tmp_path, case):
    PLAN[case][0](unfinished / "_build")
    before = snapshot(tmp_path)
    r = cli("build", "--root", str(synth_videos), "--classes", CLASSES, "--out", str(unfinished),
            "--shard-size", "8", "--workers", "2", "--no-progress")
    one_line(r, *PLAN[case][1])
    assert snapshot(tmp_path) == before  # nothing written anywhere: not in --out, not beside it


def test_an_unedited_plan_still_resumes(synth_videos, unfinished):
    r = cli("build", "--root", str(synth_videos), "--classes", CLASSES, "--out", str(unfinished),
            "--shard-size", "8", "--workers", "2", "--no-progress")
    assert r.returncode == 0 and "(resumed)" in r.stdout, r.stdout + r.stderr
    assert (unfinished / PENDING).is_file()


def test_a_build_json_that_is_not_an_object_is_one_line(synth_videos, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "build.json").write_text("[1, 2]")
    r = cli("build", "--root", str(synth_videos), "--classes", CLASSES, "--out", str(out), "--no-progress")
    one_line(r, "build.json")
    assert sorted(p.name for p in out.iterdir()) == ["build.json"]


# ---- the checks themselves (imported here: the module is what these tests are about)

def test_member_names_split_as_webdataset_splits_them():
    from s2i_data import untrusted
    from s2i_data.untrusted import Untrusted

    assert untrusted.tar_member("abc_0001.mel.npy") == ("abc_0001", "mel.npy")
    assert untrusted.tar_member("sub/abc.PNG") == ("sub/abc", "png")
    for bad in ("../abc.png", "/abc.png", "a//b.png", "abc", ".png", "a\0b.png", "x" * 300 + ".png", "a\x1b[2J.png"):
        with pytest.raises(Untrusted):
            untrusted.tar_member(bad)


def test_numbers_refuse_what_is_not_a_finite_number():
    from s2i_data import untrusted
    from s2i_data.untrusted import Untrusted

    assert untrusted.number(3, "n", lo=0) == 3.0
    for bad in (10**400, float("nan"), float("inf"), True, "3", None):
        with pytest.raises(Untrusted):
            untrusted.number(bad, "n")


def test_a_plan_must_be_of_its_probed_videos():
    from s2i_data import untrusted
    from s2i_data.untrusted import Untrusted

    probes = pd.DataFrame({"video_id": ["v1", "v2"], "source": ["/r/a.mp4", "/r/b.mp4"], "class": ["dog", ""],
                           "status": ["ok", "skipped"], "reason": ["", "no audio"], "split": ["train", ""],
                           "segments": [1, 0], "window_start_s": [0.0, np.nan], "window_end_s": [2.0, np.nan],
                           "start_s": [0.0, np.nan], "end_s": [2.0, np.nan], "video_index": [0, np.nan],
                           "audio_index": [1, np.nan], "sar": [1.0, np.nan]})
    plan = pd.DataFrame({"key": ["v1_0000"], "split": ["train"], "shard": ["train/train-000000.tar"],
                         "class": ["dog"], "class_index": [0], "video_id": ["v1"], "segment_index": [0],
                         "start_s": [0.0], "end_s": [1.0], "source": ["/r/a.mp4"]})
    untrusted.plan_tables(plan, probes, "w", ["dog"], 1.0)
    for column, value in (("video_id", "v2"), ("source", "/etc/shadow"), ("class", "cat")):
        edited = plan.assign(**{column: [value]})
        with pytest.raises(Untrusted):
            untrusted.plan_tables(edited, probes, "w", ["dog", "cat"], 1.0)
    with pytest.raises(Untrusted, match="appears twice"):
        untrusted.plan_tables(pd.concat([plan, plan]), probes, "w", ["dog"], 1.0)
