"""The VGGSound source on real files: the CSV's lines (good and bad), class names (VGGSound labels
and the class table's aliases), the downloaded tree as items, and the split rule (official test
rows stay test; train rows become train and val, video-disjoint and per class)."""

from __future__ import annotations

import subprocess
import sys

import pandas as pd
import pytest

from s2i_data import plan
from s2i_data.config import BuildConfig
from s2i_data.sources import vggsound

CSV = """\
aaa,000030,dog barking,train
bbb,10,"dog barking",test
ccc,0,baby crying,train
ddd,0,"male speech, man speaking",train
eee,5,playing cello,test
bad/x,0,dog barking,train
fff,-2,dog barking,train
ggg,1,dog barking,validation
hhh,2
iii,zz,dog barking,train
"""


@pytest.fixture
def csv(tmp_path):
    path = tmp_path / "vggsound.csv"
    path.write_text(CSV)
    return path


def test_lines_and_reasons(csv):
    rows = vggsound.read_csv(csv)
    assert [(r.ytid, r.start, r.label, r.split) for r in rows[:5]] == [
        ("aaa", 30.0, "dog barking", "train"), ("bbb", 10.0, "dog barking", "test"),
        ("ccc", 0.0, "baby crying", "train"), ("ddd", 0.0, "male speech, man speaking", "train"),
        ("eee", 5.0, "playing cello", "test")]
    assert all(not r.reason for r in rows[:5])
    reasons = [r.reason for r in rows[5:]]
    assert reasons == ["line 6: YouTube id 'bad/x' is not [A-Za-z0-9_-]{1,64}", "line 7: start -2 s is negative",
                       "line 8: split 'validation' is not train or test",
                       "line 9: expected 4 fields (ytid,start,label,split), got 2",
                       "line 10: start 'zz' is not a number"]
    assert vggsound.stem("aaa", 30.0) == "aaa_000030"


def test_not_a_vggsound_csv(tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_text("\n")
    with pytest.raises(ValueError, match="has no rows"):
        vggsound.read_csv(empty)
    other = tmp_path / "other.csv"
    other.write_text("# YTID, start_seconds, end_seconds, positive_labels\nabc, 0.0, 10.0, \"/m/0bt9lr\"\n")
    with pytest.raises(ValueError, match="not a VGGSound CSV"):
        vggsound.read_csv(other)


def test_class_names(csv):
    labels = vggsound.csv_labels([csv])
    got = vggsound.resolve_vggsound(["dog barking", "Baby", "MALE SPEECH, man speaking"], labels)
    assert [(c.info.alias, c.labels) for c in got] == [
        ("dog", ("dog barking",)), ("baby", ("baby crying",)),
        ("male_speech_man_speaking", ("male speech, man speaking",))]
    assert [c.info.alias for c in vggsound.resolve_vggsound(["rail", "water"], labels)] == ["rail", "water"]
    with pytest.raises(ValueError, match="did you mean: 'playing cello'"):
        vggsound.resolve_vggsound(["playing chello"], labels)
    with pytest.raises(ValueError, match="requested twice"):
        vggsound.resolve_vggsound(["dog", "dog barking"], labels)
    with pytest.raises(ValueError, match="no VGGSound name"):
        vggsound.resolve_vggsound(["snoring"], labels)
    # the paper's five and the VEGAS ten all have VGGSound names, except snoring (VGGSound has none)
    mapped = vggsound.table_labels()
    assert all(mapped[a] for a in ("baby", "dog", "rail", "fireworks", "water", "chainsaw", "drum", "helicopter", "printer"))


def test_items_from_the_downloaded_tree(csv, tmp_path):
    root = tmp_path / "root"
    (root / "dog").mkdir(parents=True)
    (root / "dog" / "aaa_000030.mp4").write_bytes(b"x")  # a source never opens media
    (root / "elsewhere").mkdir()
    (root / "elsewhere" / "eee_000005.mkv").write_bytes(b"x")  # found by name, at any depth
    (root / "dog" / ".part-bbb_000010-1-2").mkdir()
    (root / "dog" / ".part-bbb_000010-1-2" / "bbb_000010.mp4").write_bytes(b"x")  # unfinished: not used
    pd.DataFrame({"ytid": ["bbb"], "start": [10.0], "status": ["private"], "reason": ["Private video"]}).to_parquet(
        root / "download.parquet")
    labels = vggsound.csv_labels([csv])
    items, splits = vggsound.prepare_vggsound([csv], root, vggsound.resolve_vggsound(["dog", "playing cello"], labels))
    by_id = {it.video_id: it for it in items}
    assert sorted(by_id) == ["aaa_000030", "bbb_000010", "eee_000005"]
    assert by_id["aaa_000030"].source == str(root / "dog" / "aaa_000030.mp4") and by_id["aaa_000030"].reason is None
    assert (by_id["aaa_000030"].start_s, by_id["aaa_000030"].end_s) == (0.0, 10.0)
    assert by_id["eee_000005"].cls == "playing_cello" and by_id["eee_000005"].source.endswith("eee_000005.mkv")
    assert by_id["bbb_000010"].reason == "not downloaded (private: Private video)"
    assert splits == {"aaa_000030": "train", "bbb_000010": "test", "eee_000005": "test"}


def test_split_rule_keeps_test_and_groups_videos():
    """Official test stays test; train rows → train/val per class by video (two windows of one
    video together), in the train:val proportions of --splits; a video with a test row is test."""
    rows = []
    for cls in ("dog", "baby"):
        for v in range(20):
            for start in (0, 30):  # two windows of each video
                rows.append({"video_id": f"{cls}{v}_{start:06d}", "class": cls, "status": "ok",
                             "official_split": "test" if v < 4 else "train", "split_group": f"{cls}{v}"})
    rows.append({"video_id": "dog0_000090", "class": "dog", "status": "ok", "official_split": "train",
                 "split_group": "dog0"})  # a train window of a test video
    videos = pd.DataFrame(rows)
    cfg = BuildConfig(classes=["dog", "baby"], splits=(0.8, 0.1, 0.1))
    split = plan.assign_splits(videos, cfg)
    videos["split"] = split
    assert (videos.loc[videos["official_split"] == "test", "split"] == "test").all()
    assert videos.loc[videos["video_id"] == "dog0_000090", "split"].item() == "test"
    assert videos.groupby("split_group")["split"].nunique().max() == 1  # video-disjoint
    for cls in ("dog", "baby"):
        part = videos[(videos["class"] == cls) & (videos["official_split"] == "train")]
        per_video = part.drop_duplicates("split_group")["split"].value_counts()
        assert per_video["val"] == 2 and per_video["train"] == 14  # 16 videos at 0.8 : 0.1


def test_build_refuses_bad_arguments(csv, tmp_path):
    (tmp_path / "root").mkdir()
    for extra, words in [(["--classes", "dog"], "needs at least one --csv"),
                         (["--csv", str(csv), "--classes", "dgo barking"], "did you mean: 'dog barking'"),
                         (["--csv", str(tmp_path / "none.csv"), "--classes", "dog"], "no such file")]:
        run = subprocess.run([sys.executable, "-m", "s2i_data.cli", "build", "--source", "vggsound", "--root",
                              str(tmp_path / "root"), "--out", str(tmp_path / "out"), *extra],
                             capture_output=True, text=True)
        assert run.returncode == 2 and words in run.stderr and "Traceback" not in run.stderr, run.stderr
