"""Within-class factors travel with the data (issue 28): ROOT/factors.csv, checked as somebody
else's file, gives each video's values to every one of its samples (manifest columns, videos.parquet,
KEY.json), build.json records the preset, a resumed build keeps them, and verify checks them.

The videos are the default synth's (two classes, a few short clips); factors.csv is written here,
so every value the build should carry is known."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from s2i_data import factors, untrusted
from s2i_data.readers import Build, SampleError
from shardcraft import members, replace_member, write_parquet

COLUMNS = factors.columns("factors")
HEADER = ["preset", "class", "video", *COLUMNS]
# (class, video) → the cells of its class's factors, as written (a plain decimal, an exponent, the
# ends of the range); dog_002 has no row
VALUES = {
    ("dog", "dog_000.mp4"): {"factor_dog_size": "0", "factor_dog_distance": "2.5e-1"},
    ("dog", "dog_001.mp4"): {"factor_dog_size": "0.75", "factor_dog_distance": "1"},
    ("fireworks", "fireworks_000.mp4"): {"factor_fireworks_count": "1", "factor_fireworks_size": "0.3"},
    ("fireworks", "fireworks_001.mp4"): {"factor_fireworks_count": "3", "factor_fireworks_size": "0.9"},
}
MINE = ["factor_dog_size", "factor_dog_distance", "factor_fireworks_count", "factor_fireworks_size"]


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "s2i_data.cli", *args], capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=300)


def ok(r: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert r.returncode == 0, r.stdout + r.stderr
    return r


def one_line(r: subprocess.CompletedProcess, *wanted: str) -> str:
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert r.returncode != 0 and len(lines) == 1, r.stdout + r.stderr
    assert "Traceback" not in r.stderr and "internal error" not in r.stderr, r.stderr
    assert all(w in lines[0] for w in wanted), (wanted, lines[0])
    return lines[0]


def fail_lines(r: subprocess.CompletedProcess) -> list[str]:
    return [line for line in r.stdout.splitlines() if line.startswith("FAIL")]


def csv_text(rows: dict = VALUES, preset: str = "factors", header: list[str] = HEADER) -> str:
    lines = [",".join(header)]
    for (cls, video), cells in rows.items():
        rec = {"preset": preset, "class": cls, "video": video, **cells}
        lines.append(",".join(rec.get(c, "") for c in header))
    return "\n".join(lines) + "\n"


def build_args(root, out, *more: str) -> list[str]:
    return ["build", "--root", str(root), "--classes", "dog,fireworks", "--out", str(out), "--shard-size", "2",
            "--workers", "1", "--no-progress", *more]


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
    """dog_000..002 and fireworks_000..001: short real H.264 + AAC clips (two 1 s segments each)."""
    from s2i_data.synth import synth

    root = tmp_path_factory.mktemp("factor-videos")
    synth(root, videos_per_class=3, classes=["dog", "fireworks"], seed=2, min_seconds=2.2, max_seconds=2.6)
    (root / "fireworks" / "fireworks_002.mp4").unlink()
    return root


@pytest.fixture(scope="module")
def root(videos, tmp_path_factory) -> Path:
    """The clips with ROOT/factors.csv: every video but dog_002 has its row."""
    root = tmp_path_factory.mktemp("factor-root") / "root"
    shutil.copytree(videos, root)
    (root / "factors.csv").write_text(csv_text())
    return root


@pytest.fixture(scope="module")
def built(root, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("factor-build") / "shards"
    ok(cli(*build_args(root, out)))
    return out


def expected(cls: str, source: str) -> dict[str, float]:
    """A sample's factor values as factors.csv says (NaN: another class's factor)."""
    cells = VALUES[(cls, Path(source).name)]
    return {c: float(cells[c]) if c in cells else np.nan for c in MINE}


def same(a: float, b: float) -> bool:
    return (np.isnan(a) and np.isnan(b)) or a == b


# ---- the build carries the values ------------------------------------------------------------

def test_build_copies_each_videos_values_onto_its_samples(built):
    manifest = pd.read_parquet(built / "manifest.parquet")
    assert list(manifest.columns) == [*untrusted.SAMPLE_COLUMNS, *MINE]  # the build's classes' factors, in order
    assert all(manifest[c].dtype == np.float64 for c in MINE)
    assert set(manifest["class"]) == {"dog", "fireworks"} and len(manifest) == 8
    for row in manifest.to_dict("records"):
        want = expected(row["class"], row["source"])
        assert all(same(row[c], want[c]) for c in MINE), (row, want)
    videos = pd.read_parquet(built / "videos.parquet")
    assert list(videos.columns)[-4:] == MINE
    for row in videos[videos["status"] == "ok"].to_dict("records"):
        want = expected(row["class"], row["source"])
        assert all(same(row[c], want[c]) for c in MINE), (row, want)
    record = json.loads((built / "build.json").read_text())["factors"]
    assert record == {"preset": "factors", "columns": MINE}
    assert [f.name for f in Build.open(built).factors] == ["dog_size", "dog_distance", "fireworks_count",
                                                           "fireworks_size"]
    assert all(isinstance(f, factors.Factor) for f in Build.open(built).factors)


def test_key_json_carries_the_values_and_null_for_other_classes(built):
    seen = 0
    for shard in sorted(built.rglob("*.tar")):
        for name, data in members(shard):
            if not name.endswith(".json"):
                continue
            meta = json.loads(data, parse_constant=lambda c: pytest.fail(f"{name}: {c} is not standard JSON"))
            want = expected(meta["class"], meta["source"])
            for c in MINE:
                assert (meta[c] is None) if np.isnan(want[c]) else meta[c] == want[c], (name, c, meta[c], want[c])
            seen += 1
    assert seen == 8


def test_a_video_without_a_row_is_recorded_skipped(built):
    videos = pd.read_parquet(built / "videos.parquet").set_index("source")
    row = videos.loc[next(s for s in videos.index if s.endswith("dog_002.mp4"))]
    assert row["status"] == "skipped" and row["segments"] == 0
    assert row["reason"] == "no factor values in factors.csv (class 'dog', video 'dog_002.mp4')"
    assert not pd.read_parquet(built / "manifest.parquet")["source"].str.endswith("dog_002.mp4").any()


def test_a_build_without_factors_csv_is_unchanged(videos, tmp_path):
    out = tmp_path / "plain"
    ok(cli(*build_args(videos, out)))
    manifest = pd.read_parquet(out / "manifest.parquet")
    assert list(manifest.columns) == list(untrusted.SAMPLE_COLUMNS)
    assert not any(c.startswith("factor_") for c in pd.read_parquet(out / "videos.parquet").columns)
    assert "factors" not in json.loads((out / "build.json").read_text())
    assert Build.open(out).factors == ()
    assert (pd.read_parquet(out / "videos.parquet")["status"] == "ok").all()  # dog_002 is used
    meta = json.loads(next(d for n, d in members(sorted(out.rglob("*.tar"))[0]) if n.endswith(".json")))
    assert not any(k.startswith("factor_") for k in meta)


def test_a_folder_url_gives_the_same_values(root, built, tmp_path):
    """ROOT as an fsspec URL (local:// stands in for an object store): factors.csv read there too."""
    out = tmp_path / "from-url"
    ok(cli(*build_args(f"local://{root}", out)))
    a, b = (pd.read_parquet(p / "manifest.parquet") for p in (built, out))
    pd.testing.assert_frame_equal(a.drop(columns="source"), b.drop(columns="source"))
    reasons = pd.read_parquet(out / "videos.parquet")["reason"]
    assert (reasons == "no factor values in factors.csv (class 'dog', video 'dog_002.mp4')").sum() == 1


def test_a_resumed_build_keeps_the_factors(root, built, tmp_path):
    out = tmp_path / "resumed"
    shutil.copytree(built, out)
    for name in ("manifest.parquet", "videos.parquet", "stats.json"):
        (out / name).unlink()
    marker = sorted((out / "_build" / "shards").glob("*.json"))[0]  # that shard is written again
    marker.unlink()
    (out / "train" / marker.name.replace(".json", ".tar")).unlink()
    r = ok(cli(*build_args(root, out)))
    assert "resumed" in r.stdout
    for name in ("manifest.parquet", "videos.parquet"):
        pd.testing.assert_frame_equal(pd.read_parquet(built / name), pd.read_parquet(out / name))
    assert (out / "train" / marker.name.replace(".json", ".tar")).read_bytes() == \
        (built / "train" / marker.name.replace(".json", ".tar")).read_bytes()  # its KEY.json too


def test_a_resumed_build_refuses_an_edited_plan_value(root, built, tmp_path):
    out = tmp_path / "edited"
    shutil.copytree(built, out)
    for name in ("manifest.parquet", "videos.parquet", "stats.json"):
        (out / name).unlink()
    plan = pd.read_parquet(out / "_build" / "plan.parquet")
    plan.loc[plan["class"] == "dog", "factor_dog_size"] = 7.0
    write_parquet(plan, out / "_build" / "plan.parquet")
    one_line(cli(*build_args(root, out)), "plan.parquet", "factor_dog_size", "7", "not resumed")
    assert not (out / "manifest.parquet").exists()


# ---- factors.csv is somebody else's file -------------------------------------------------------

def _rows(**change) -> dict:
    rows = {k: dict(v) for k, v in VALUES.items()}
    rows[("dog", "dog_001.mp4")].update(change)
    return rows


def _write(text: str | bytes):
    return lambda root: (root / "factors.csv").write_bytes(text.encode() if isinstance(text, str) else text)


def _huge(root: Path) -> None:
    with open(root / "factors.csv", "w") as f:
        f.write(csv_text())
        f.write(("factors,dog,x.mp4" + "," * len(COLUMNS) + "\n") * ((untrusted.MAX_FACTOR_BYTES // 20) + 1))


def _link(root: Path) -> None:
    (root / "elsewhere.txt").write_text(csv_text())
    os.symlink(root / "elsewhere.txt", root / "factors.csv")


def _path_video(root: Path) -> None:
    rows = dict(VALUES)
    rows[("dog", "../x.mp4")] = rows.pop(("dog", "dog_001.mp4"))
    _write(csv_text(rows))(root)


def _duplicate(root: Path) -> None:
    _write(csv_text() + csv_text().splitlines()[1] + "\n")(root)


HOSTILE = {  # what factors.csv holds → what its one line names
    "a path as video": (_path_video, ["factors.csv line", "video", "'../x.mp4'", "path separators"]),
    "a path as class": (_write(csv_text({("../dog", "dog_000.mp4"): {}})), ["class", "'../dog'"]),
    "a newline in a video name": (_write(csv_text({("dog", '"dog\n.mp4"'): {}})), ["video", r"\n"]),
    "NaN": (_write(csv_text(_rows(factor_dog_size="nan"))), ["line 3", "factor_dog_size", "'nan' is not a number"]),
    "infinite": (_write(csv_text(_rows(factor_dog_size="1e999"))), ["factor_dog_size", "not a finite number"]),
    "out of range": (_write(csv_text(_rows(factor_dog_size="1.5"))), ["factor_dog_size", "1.5 is out of range"]),
    "negative": (_write(csv_text(_rows(factor_dog_distance="-0.1"))), ["factor_dog_distance", "out of range"]),
    "count 2.5": (_write(csv_text({("fireworks", "fireworks_000.mp4"): {"factor_fireworks_count": "2.5",
                                                                          "factor_fireworks_size": "0.5"}})),
                  ["factor_fireworks_count", "2.5 is not a whole number"]),
    "count 0": (_write(csv_text({("fireworks", "fireworks_000.mp4"): {"factor_fireworks_count": "0",
                                                                        "factor_fireworks_size": "0.5"}})),
                ["factor_fireworks_count", "out of range"]),
    "a missing value": (_write(csv_text(_rows(factor_dog_size=""))), ["factor_dog_size", "needs a value"]),
    "another class's value": (_write(csv_text(_rows(factor_water_density="0.5"))),
                              ["factor_water_density", "'water'", "leave it empty"]),
    "a duplicate row": (_duplicate, ["'dog_000.mp4' appears twice"]),
    "an unknown preset": (_write(csv_text(preset="mine")), ["line 2: preset", "'mine' is not a factor preset"]),
    "a missing column": (_write(csv_text(header=HEADER[:-1])), ["lacks column(s) factor_water_roughness"]),
    "an unknown column": (_write(csv_text(header=[*HEADER, "factor_cat_size"])), ["'factor_cat_size'", "not one of"]),
    "a short row": (_write(csv_text() + "factors,dog,dog_002.mp4\n"), ["line 6", "3 fields"]),
    "no rows": (_write(",".join(HEADER) + "\n"), ["no rows"]),
    "empty": (_write(""), ["empty"]),
    "not UTF-8": (_write(csv_text().encode() + b"factors,dog,\xff.mp4\n"), ["not UTF-8"]),
    "huge": (_huge, ["more than 32 MB"]),
    "a link": (_link, ["symbolic link"]),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_a_hostile_factors_csv_is_one_line_and_nothing_is_written(videos, tmp_path, case):
    make, wanted = HOSTILE[case]
    root = tmp_path / "root"
    shutil.copytree(videos, root)
    make(root)
    before = sorted(p.name for p in root.rglob("*"))
    one_line(cli(*build_args(root, tmp_path / "out")), "factors.csv", *wanted)
    assert not (tmp_path / "out").exists()
    assert sorted(p.name for p in root.rglob("*")) == before


def test_factor_table_takes_what_synth_writes():
    """Values as Python writes floats (repr, exponents included) come back exactly."""
    x = [0.1, 1e-05, 0.9999999999999999, 1.0, 0.0]
    rows = [(i + 2, ["factors", "water", f"water_{i:03d}.mp4", *[""] * 8, repr(v), "0.5"]) for i, v in enumerate(x)]
    table = untrusted.factor_table(HEADER, rows, "f.csv")
    assert [table.values[("water", f"water_{i:03d}.mp4")]["factor_water_density"] for i in range(5)] == x


# ---- build.json's record and verify ------------------------------------------------------------

@pytest.mark.parametrize("record,wanted", [
    ({"preset": "nope", "columns": []}, ["build.json: factors.preset", "'nope' is not a factor preset"]),
    ({"preset": "factors", "columns": ["factor_cat_size"]}, ["factors.columns", "'factor_cat_size'"]),
    ({"preset": "factors", "columns": "factor_dog_size"}, ["factors.columns", "not a list"]),
    ("factors", ["build.json: factors", "not an object"]),
])
def test_a_hostile_factor_record_in_build_json_is_refused(built, tmp_path, record, wanted):
    out = tmp_path / "copy"
    shutil.copytree(built, out)
    bj = json.loads((out / "build.json").read_text())
    bj["factors"] = record
    (out / "build.json").write_text(json.dumps(bj))
    with pytest.raises(SampleError) as e:
        Build.open(out)
    assert all(w in str(e.value) for w in wanted), str(e.value)
    one_line(cli("verify", str(out)), *wanted)


def test_verify_passes_a_good_factor_build(built):
    r = ok(cli("verify", str(built), "--content-samples", "0"))
    assert not fail_lines(r)
    assert "every sample carries its class's factors of preset 'factors' in range" in r.stdout


def _edit_manifest(name: str, change):
    def edit(out: Path) -> None:
        df = pd.read_parquet(out / name)
        change(df)
        write_parquet(df, out / name)
    return edit


def _first(cls: str, column: str, value, name: str = "manifest.parquet"):
    def change(df):
        i = df.index[(df["class"] == cls) & ((df["status"] == "ok") if "status" in df else True)][0]
        df.loc[i, column] = value
    return _edit_manifest(name, change)


def _json_value(column: str, value):
    """The first dog sample's KEY.json with ``column`` set to ``value`` (its manifest row unchanged)."""
    def edit(out: Path) -> None:
        for shard in sorted(out.rglob("*.tar")):
            for name, data in members(shard):
                meta = json.loads(data) if name.endswith(".json") else None
                if meta and meta["class"] == "dog":
                    meta[column] = value
                    keys = list(dict.fromkeys(n.split(".", 1)[0] for n, _ in members(shard)))
                    replace_member(shard, "json", json.dumps(meta, sort_keys=True).encode(),
                                   index=keys.index(meta["key"]))
                    return
    return edit


def _as_text(column: str):
    return lambda df: df.__setitem__(column, df[column].astype(str))


DAMAGE = {  # the build's files edited → what a FAIL line says
    "out of range": (_first("dog", "factor_dog_size", 1.5),
                     ["manifest.parquet: row", "factor_dog_size 1.5 is not a finite number in [0, 1]"]),
    "missing": (_first("dog", "factor_dog_distance", np.nan),
                ["manifest.parquet: row", "factor_dog_distance is empty; every dog row needs a value"]),
    "count not whole": (_first("fireworks", "factor_fireworks_count", 2.5),
                        ["factor_fireworks_count 2.5 is not a whole number in [1, 3]"]),
    "infinite": (_first("fireworks", "factor_fireworks_size", np.inf), ["factor_fireworks_size inf is not a finite"]),
    "another class's value": (_first("fireworks", "factor_dog_size", 0.5),
                              ["factor_dog_size holds 0.5, but it is a factor of 'dog', not of 'fireworks'"]),
    "a column dropped": (_edit_manifest("manifest.parquet", lambda df: df.pop("factor_dog_distance")),
                         ["manifest.parquet: lacks column factor_dog_distance"]),
    "a column of text": (_edit_manifest("manifest.parquet", _as_text("factor_dog_size")),
                         ["column factor_dog_size holds", "not numbers"]),
    "videos.parquet out of range": (_first("dog", "factor_dog_size", -1.0, "videos.parquet"),
                                    ["videos.parquet: row", "factor_dog_size -1 is not a finite number"]),
    "KEY.json differs": (_json_value("factor_dog_size", 0.5), ["json factor_dog_size=0.5 != manifest"]),
    "KEY.json fills an empty factor": (_json_value("factor_fireworks_size", 0.5),
                                       ["json factor_fireworks_size=0.5 != manifest empty"]),
    "KEY.json empties a factor": (_json_value("factor_dog_distance", None),
                                  ["json factor_dog_distance=None != manifest"]),
}


@pytest.mark.parametrize("case", list(DAMAGE))
def test_verify_fails_a_damaged_factor_value(built, tmp_path, case):
    damage, wanted = DAMAGE[case]
    out = tmp_path / "copy"
    shutil.copytree(built, out)
    damage(out)
    r = cli("verify", str(out), "--content-samples", "0")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "Traceback" not in r.stderr
    hits = [line for line in fail_lines(r) if all(w in line for w in wanted)]
    assert hits, (wanted, fail_lines(r))
    if not case.startswith("KEY.json"):
        # the reader hands no such table on: one line naming it
        with pytest.raises(SampleError, match="factor_"):
            Build.open(out).manifest(name="videos.parquet" if "videos" in case else "manifest.parquet")


def test_factors_csv_added_to_a_built_root_is_refused_not_ignored(videos, tmp_path):
    """A build planned without factors is not called complete (nor resumed) once ROOT gives some:
    its plan holds no values, so none would reach its samples."""
    root, out = tmp_path / "root", tmp_path / "out"
    shutil.copytree(videos, root)
    ok(cli(*build_args(root, out)))
    before = {p: p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    (root / "factors.csv").write_text(csv_text())
    one_line(cli(*build_args(root, out)), str(out), "planned without factors", "factors.csv now gives", "another --out")
    assert {p: p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()} == before
    (root / "factors.csv").unlink()
    assert "already complete" in ok(cli(*build_args(root, out))).stdout
