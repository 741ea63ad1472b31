"""Shards from other people: verify and inspect report every damaged or hostile shard as one line
naming the shard and the key, keep checking the others, run nothing, and never crash."""

from __future__ import annotations

import json
import pickle
import re
import subprocess
import sys
from pathlib import Path

import pytest

from s2i_data.readers import SampleError, check_shard_name, shard_list, shard_location
from shardcraft import (Planted, copy_build, nested_json, object_npy, png_claiming, replace_member)


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
