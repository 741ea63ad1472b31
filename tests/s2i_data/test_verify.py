"""Shards from other people: verify and inspect report every damaged or hostile shard as one line
naming the shard and the key, keep checking the others, run nothing, and never crash. And verify
by content: samples recomputed from their sources, and one test per check of the contract."""

from __future__ import annotations

import json
import pickle
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from s2i_data.readers import SampleError, check_shard_name, shard_list, shard_location
from shardcraft import (Planted, copy_build, drop_sample, keys_of, load_npy, member, nested_json, npy, object_npy,
                        png_claiming, repeat_sample, replace_member, set_member, swap_members, write_parquet)


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "s2i_data.cli", *args], capture_output=True, text=True)


def assert_clean(r: subprocess.CompletedProcess) -> None:
    text = r.stdout + r.stderr
    assert "Traceback" not in text and "internal error" not in text, text


def fail_lines(r: subprocess.CompletedProcess) -> list[str]:
    return [line for line in r.stdout.splitlines() if line.startswith("FAIL")]


@pytest.fixture(scope="module")
def damaged(tiny_build, tmp_path_factory) -> tuple[Path, dict]:
    """A copy of the tiny build with one kind of damage per shard (so each must be found on its
    own, and a damaged shard must not stop the check of the next)."""
    out = copy_build(tiny_build, tmp_path_factory.mktemp("damaged") / "shards")
    keys = {}
    train = sorted((out / "train").glob("*.tar"))
    data = train[0].read_bytes()
    train[0].write_bytes(data[: len(data) // 2 + 100])  # truncated mid-member
    train[1].write_bytes(b"this is not a tar file\n" * 50)
    keys["object"] = replace_member(train[2], "mel.npy", object_npy())
    keys["nested"] = replace_member(train[3], "json", nested_json(), index=0)
    keys["huge"] = replace_member(train[3], "json", b'{"a": "' + b"x" * 2_000_000 + b'"}', index=1)
    keys["giant"] = replace_member(sorted((out / "val").glob("*.tar"))[0], "png", png_claiming(12000, 12000))
    keys["pickle"] = replace_member(sorted((out / "test").glob("*.tar"))[0], "pickle",
                                    pickle.dumps(Planted(out.parent / "pwned")), add=True)
    return out, keys


def test_verify_names_every_damaged_shard_and_sample(damaged):
    out, keys = damaged
    r = cli("verify", str(out))
    assert r.returncode == 1
    assert_clean(r)
    fails = "\n".join(fail_lines(r))
    assert re.search(r"train/train-000000\.tar: unreadable shard", fails), fails
    assert re.search(r"train/train-000001\.tar: unreadable shard", fails), fails
    assert re.search(rf"train/train-000002\.tar: {keys['object']}\.mel\.npy: dtype object", fails), fails
    assert re.search(rf"train/train-000003\.tar: {keys['nested']}\.json: nested too deeply", fails), fails
    assert re.search(rf"train/train-000003\.tar: {keys['huge']}\.json: \d+ bytes", fails), fails
    assert re.search(rf"val/val-000000\.tar: {keys['giant']}\.png: image is 12000x12000.*not decoded", fails), fails
    assert re.search(rf"test/test-000000\.tar: {keys['pickle']}: member\(s\) pickle outside the contract", fails), fails
    assert not (out.parent / "pwned").exists()
    # the undamaged shards were read too: their samples are not reported missing
    missing = next(line for line in fail_lines(r) if "every manifest row is present" in line)
    n_missing = int(re.search(r"(\d+) missing", missing).group(1))
    assert n_missing < 16, missing  # only what the truncated and non-tar shards lost


def test_inspect_reports_damage_and_still_draws_the_sheet(damaged, tmp_path):
    out, keys = damaged
    png = tmp_path / "sheet.png"
    r = cli("inspect", str(out), "--png", str(png), "--split", "val")
    assert r.returncode == 1, r.stdout + r.stderr
    assert_clean(r)
    assert any(keys["giant"] in line and "not decoded" in line for line in fail_lines(r)), r.stdout
    assert png.is_file()


def test_a_corrupt_stats_file_is_one_line(tiny_build, tmp_path):
    out = copy_build(tiny_build, tmp_path / "shards")
    (out / "stats.json").write_bytes(nested_json())
    for args in (["verify", str(out)], ["inspect", str(out)]):
        r = cli(*args)
        assert r.returncode != 0 and "stats.json: nested too deeply" in r.stderr, r.stderr
        assert_clean(r)


def test_shard_names_from_a_build_never_reach_a_shell(tiny_build, tmp_path):
    out = copy_build(tiny_build, tmp_path / "shards")
    marker = tmp_path / "pwned"
    stats = json.loads((out / "stats.json").read_text())
    stats["shards"]["train"].append(f"train/train-000009.tar; touch {marker}")
    (out / "stats.json").write_text(json.dumps(stats))
    r = cli("verify", str(out), "--shard-url", f"pipe:cat {out}/{{shard}}")
    assert r.returncode == 2 and "is not of the form split/split-NNNNNN.tar" in r.stderr, r.stderr
    assert_clean(r)
    assert not marker.exists()
    # a name of the contract under the wrong split is refused too
    stats["shards"]["train"][-1] = "val/val-000000.tar"
    (out / "stats.json").write_text(json.dumps(stats))
    with pytest.raises(SampleError, match="listed under 'train'"):
        shard_list(out, "train", "pipe:cat {shard}")


def test_shard_names_are_checked_and_quoted():
    assert check_shard_name("val/val-000012.tar") == "val/val-000012.tar"
    for bad in ("val/train-000000.tar", "train/train-0.tar", "../train/train-000000.tar", "train/train-000000.tar\n",
                "train/train-000000.tar$(id)"):
        with pytest.raises(SampleError):
            check_shard_name(bad)
    # braces elsewhere in a command are left alone (no str.format), the name is quoted
    assert (shard_location("pipe:curl -s https://h/{shard} | awk '{print}'", "test/test-000001.tar")
            == "pipe:curl -s https://h/test/test-000001.tar | awk '{print}'")
    assert shard_location("https://h/b/{shard}", "train/train-000002.tar") == "https://h/b/train/train-000002.tar"


def _readme_reader() -> str:
    text = (Path(__file__).parents[2] / "README.md").read_text()
    m = re.search(r"<!-- reader-example -->\s*```python\n(.*?)```", text, re.S)
    assert m, "README.md has no reader example (<!-- reader-example --> then a python block)"
    return m.group(1)


def test_the_readme_reader_unpickles_nothing(damaged):
    """The reader the README gives other models, run on a shard that carries a pickle member."""
    out, keys = damaged
    marker = out.parent / "pwned"
    shard = str(sorted((out / "test").glob("*.tar"))[0])
    scope: dict = {}
    exec(_readme_reader().replace('"data/vegas5/train/train-{000000..000099}.tar"', repr(shard)), scope)
    samples = list(scope["dataset"])
    assert not marker.exists()
    assert {s["key"] for s in samples} >= {keys["pickle"]}
    s = samples[0]
    assert s["mel"].shape == (100, 128) and s["image"].shape == (96, 96, 3) and isinstance(s["cls"], int)
    # the planted member is real: webdataset's default decoders would have run it
    import webdataset as wds

    list(wds.WebDataset(shard, shardshuffle=False).decode("rgb8"))
    assert marker.exists()
    marker.unlink()


# ---- content: samples recomputed from their sources (s2i_data/deep.py), and one test per check

def verify_in_process(out: Path, *args: str) -> tuple[int, list[str], str]:
    """`s2i-data verify` run in this process (no interpreter start-up): exit code, FAIL lines,
    and the whole standard output."""
    from typer.testing import CliRunner

    from s2i_data.cli import app

    r = CliRunner().invoke(app, ["verify", str(out), *args])
    assert r.exception is None or isinstance(r.exception, SystemExit), r.exception
    assert "Traceback" not in r.output and "internal error" not in r.output, r.output
    return r.exit_code, [line for line in r.stdout.splitlines() if line.startswith("FAIL")], r.stdout


def _manifest(out: Path):
    import pandas as pd

    return pd.read_parquet(out / "manifest.parquet")


def _sampled_with_partner(out: Path) -> tuple[Path, str, str]:
    """A key the default content check reads, and another sample of its shard from another
    video (another video: the two must really differ, not be two seconds of one still scene)."""
    from s2i_data.deep import DEFAULT_PER_SPLIT, sampled_keys

    m = _manifest(out).set_index("key")
    for key in sorted(sampled_keys(m.reset_index(), DEFAULT_PER_SPLIT)):
        shard = m.loc[key, "shard"]
        others = m[(m["shard"] == shard) & (m["video_id"] != m.loc[key, "video_id"])].index
        if len(others):
            return out / shard, key, sorted(others)[0]
    raise AssertionError("no sampled key with a partner from another video in its shard")


@pytest.mark.parametrize("member_suffix,what", [("mel.npy", r"mel\.npy vs the source's log-mel: max \|Δ\| [\d.]+"),
                                                ("png", r"png vs the source's frame at [\d.]+ s: mean \|Δ\| [\d.]+ levels")],
                         ids=["mel", "image"])
def test_a_swapped_member_passes_the_contract_but_not_the_default_content_check(tiny_build, tmp_path, member_suffix, what):
    out = copy_build(tiny_build, tmp_path / "shards")
    shard, key, partner = _sampled_with_partner(out)
    swap_members(shard, member_suffix, key, partner)
    # every sample still decodes and matches its manifest row: only the content is wrong
    code, fails, _ = verify_in_process(out, "--content-samples", "0")
    assert code == 0 and not fails, fails
    code, fails, _ = verify_in_process(out)
    assert code == 1, fails
    name = f"{shard.parent.name}/{shard.name}"
    assert any(re.match(rf"FAIL {re.escape(name)}: {key}: content differs from \S+ at [\d.]+ s: {what}", f)
               for f in fails), fails
    assert all(": content differs from " in f for f in fails), fails  # nothing else is reported


def test_the_tiny_build_passes_the_default_content_check(tiny_build):
    code, fails, text = verify_in_process(tiny_build)
    assert code == 0, fails
    assert "ok   content of 2 sampled per split (--deep: every sample): 6 recomputed from their sources match" in text


@pytest.fixture(scope="module")
def kept(synth_videos, tmp_path_factory) -> Path:
    """A small --keep-audio build of its own copy of three videos a class (so that a test may take
    a source away): 2 samples a class in each split, 12 in all."""
    import shutil

    base = tmp_path_factory.mktemp("kept")
    for cls in ("dog", "water"):
        (base / "videos" / cls).mkdir(parents=True)
        for src in sorted((synth_videos / cls).glob("*.mp4"))[:3]:
            shutil.copy(src, base / "videos" / cls / src.name)
    subprocess.run([sys.executable, "-m", "s2i_data.cli", "build", "--root", str(base / "videos"), "--classes", "dog,water",
                    "--out", str(base / "shards"), "--shard-size", "8", "--workers", "1", "--no-progress", "--keep-audio"],
                   check=True, capture_output=True)
    return base / "shards"


def test_deep_recomputes_every_sample_and_its_kept_audio(kept, tmp_path):
    from s2i_data.deep import DEFAULT_PER_SPLIT, sampled_keys

    code, fails, text = verify_in_process(kept, "--deep")
    assert code == 0, fails
    assert "ok   content of every sample: 12 recomputed from their sources match" in text
    # two samples the default check does not read, their audio swapped: only --deep sees it
    out = copy_build(kept, tmp_path / "shards")
    m = _manifest(out)
    sampled = sampled_keys(m, DEFAULT_PER_SPLIT)
    rest = m[~m["key"].isin(sampled)]
    shard = next(s for s, part in rest.groupby("shard") if part["video_id"].nunique() > 1)
    part = rest[rest["shard"] == shard]
    a = part["key"].iloc[0]
    b = part[part["video_id"] != part["video_id"].iloc[0]]["key"].iloc[0]
    swap_members(out / shard, "flac", a, b)
    code, fails, _ = verify_in_process(out)
    assert code == 0, fails
    code, fails, _ = verify_in_process(out, "--deep")
    assert code == 1
    for key in (a, b):
        line = next((f for f in fails if f.startswith(f"FAIL {shard}: {key}: content differs")), "")
        assert re.search(r"flac vs the source's audio: max \|Δ\| [\d.]+ .*log-mel of the flac vs mel\.npy: mean \|Δ\| [\d.]+",
                         line), fails
        assert "mel.npy vs" not in line and "png vs" not in line, line  # the rest of the sample is right
    assert len(fails) == 2, fails


def test_a_missing_source_cannot_be_checked_and_is_not_a_failure(kept):
    m = _manifest(kept)
    source = Path(m["source"].iloc[0])
    away = source.with_name(source.name + ".away")
    source.rename(away)
    try:
        code, fails, text = verify_in_process(kept, "--deep")
    finally:
        away.rename(source)
    assert code == 0, fails
    n = int((m["source"] == str(source)).sum())
    assert re.search(rf"^skip cannot check {n} sample\(s\) of .*: source missing: {re.escape(str(source))} \(not a failure\)",
                     text, re.M), text
    assert f"ok   content of every sample: {12 - n} recomputed" in text


# One test per check of verify: a copy of the tiny build with one defect, which must give exit 1
# and the FAIL line of that check. The content check is off (--content-samples 0): these are
# about the contract, and fast.

def _edit_json(path: Path, change) -> None:
    obj = json.loads(path.read_text())
    change(obj)
    path.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def _wrong_cls(out: Path) -> str:
    shard = out / "train" / "train-000000.tar"
    key = keys_of(shard)[0]
    right = int(member(shard, key, "cls"))
    set_member(shard, key, "cls", str((right + 1) % 5).encode())
    return rf"train/train-000000\.tar: {key}: cls {(right + 1) % 5} != class_index {right}$"


def _nan_mel(out: Path) -> str:
    shard = out / "val" / "val-000000.tar"
    key = keys_of(shard)[1]
    mel = load_npy(member(shard, key, "mel.npy"))
    mel[50, 64] = np.nan
    set_member(shard, key, "mel.npy", npy(mel))
    return rf"val/val-000000\.tar: {key}\.mel\.npy: non-finite values$"


def _duplicate_key(out: Path) -> str:
    shard = out / "test" / "test-000001.tar"
    key = keys_of(shard)[0]
    repeat_sample(shard, key)
    return rf"no sample appears twice: 1 duplicated, e\.g\. \['{key}'\]$"


def _stray_shard(out: Path) -> str:
    (out / "train" / "train-000099.tar").write_bytes((out / "train" / "train-000000.tar").read_bytes())
    return r"the shards on disk are exactly those of this build: unexpected \['train/train-000099\.tar'\], missing \[\]$"


def _skewed_counts(out: Path) -> str:
    _edit_json(out / "stats.json", lambda s: s["counts"]["train"].update(dog=s["counts"]["train"]["dog"] + 1))
    return r"train: stats\.json counts match the manifest: stats \{.*'dog': 7.*\} vs manifest \{.*'dog': 6.*\}$"


def _video_in_two_splits(out: Path) -> str:
    m = _manifest(out)
    train_video = m[m["split"] == "train"]["video_id"].iloc[0]
    m.loc[m.index[m["split"] == "val"][0], "video_id"] = train_video  # a val row now names a train video
    write_parquet(m, out / "manifest.parquet")
    return r"no video is in two splits: 1 videos span splits$"


def _balanced_flag(out: Path) -> str:
    _edit_json(out / "stats.json", lambda s: s.update(balanced=False))
    return r"stats\.json says balanced: true, as the counts are: it says false$"


@pytest.mark.parametrize("edit", [_wrong_cls, _nan_mel, _duplicate_key, _stray_shard, _skewed_counts,
                                  _video_in_two_splits, _balanced_flag], ids=lambda f: f.__name__.strip("_"))
def test_each_check_fails_on_its_defect(tiny_build, tmp_path, edit):
    out = copy_build(tiny_build, tmp_path / "shards")
    expected = edit(out)
    code, fails, _ = verify_in_process(out, "--content-samples", "0")
    assert code == 1, fails
    assert any(re.fullmatch(f"FAIL {expected}", f) for f in fails), (expected, fails)


def test_an_unbalanced_build_fails_and_nothing_else(tiny_build, tmp_path):
    """A build that lost one val sample (a video that failed to decode, say), recorded
    consistently everywhere, with stats.json saying balanced: false: the balance check alone fails."""
    import pandas as pd

    out = copy_build(tiny_build, tmp_path / "shards")
    m = _manifest(out)
    row = m[m["split"] == "val"].iloc[0]
    drop_sample(out / row["shard"], row["key"])
    write_parquet(m[m["key"] != row["key"]].reset_index(drop=True), out / "manifest.parquet")
    videos = pd.read_parquet(out / "videos.parquet")
    videos.loc[videos["video_id"] == row["video_id"], "segments"] -= 1
    write_parquet(videos, out / "videos.parquet")

    def lose(stats: dict) -> None:
        stats["counts"]["val"][row["class"]] -= 1
        stats["samples"] -= 1
        stats["balanced"] = False

    _edit_json(out / "stats.json", lose)
    code, fails, text = verify_in_process(out, "--content-samples", "0")
    assert code == 1
    assert fails == [f"FAIL val: every class has the same count (2): counts "
                     f"{ {c: 2 - (c == row['class']) for c in json.loads((out / 'stats.json').read_text())['classes']} }"], fails
    assert "ok   stats.json says balanced: false, as the counts are" in text
