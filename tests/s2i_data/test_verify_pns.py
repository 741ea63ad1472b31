"""verify accepts what build made, also where the audio depends on where decoding starts: AAC
with perceptual noise substitution (ffmpeg's AAC encoder uses it on noisy sound) fills its noisy
bands from a random generator that runs from the first packet decoded. The builder decodes a
video from a second before its first segment; verify must decode it the same way."""

from __future__ import annotations

import io
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from s2i_data.media import ffmpeg_exe
from shardcraft import copy_build, keys_of, load_npy, member, npy, set_member, swap_members
from test_verify import _manifest, verify_in_process

SECONDS = 8


def _noisy_aac_video(path: Path, seed: int) -> Path:
    """Pink noise as AAC at a low bitrate with noise substitution on, and a keyframe every second
    (so that seeking to another second starts the audio decoder at another packet)."""
    subprocess.run([ffmpeg_exe(), "-nostdin", "-loglevel", "error", "-y",
                    "-f", "lavfi", "-i", f"anoisesrc=color=pink:duration={SECONDS}:seed={seed}:amplitude=0.5",
                    "-f", "lavfi", "-i", f"testsrc=size=160x120:rate=25:duration={SECONDS}",
                    "-c:a", "aac", "-aac_pns", "1", "-b:a", "24k", "-ar", "16000",
                    "-c:v", "libx264", "-g", "25", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-shortest",
                    str(path)], check=True)
    return path


@pytest.fixture(scope="module")
def pns_build(tmp_path_factory) -> Path:
    """3 noisy videos a class, 2 segments a class and split picked from their 8 each (so most
    videos start their segments seconds into the file), audio kept: 12 samples."""
    base = tmp_path_factory.mktemp("pns")
    for c, cls in enumerate(("dog", "water")):
        (base / "videos" / cls).mkdir(parents=True)
        for i in range(3):
            _noisy_aac_video(base / "videos" / cls / f"{cls}{i}.mp4", seed=10 * c + i + 1)
    subprocess.run([sys.executable, "-m", "s2i_data.cli", "build", "--root", str(base / "videos"), "--classes",
                    "dog,water", "--out", str(base / "shards"), "--per-class", "2", "--shard-size", "8",
                    "--workers", "1", "--no-progress", "--keep-audio"], check=True, capture_output=True)
    out = base / "shards"
    firsts = _manifest(out).groupby("video_id")["start_s"].min()
    assert (firsts >= 2).sum() >= 2, firsts  # the builder sought into these videos: not the file's start
    return out


def test_an_untouched_build_of_noisy_aac_verifies(pns_build):
    code, fails, text = verify_in_process(pns_build, "--deep")
    assert code == 0, fails
    assert "ok   content of every sample: 12 recomputed from their sources match" in text


def test_plain_verify_decodes_each_sampled_video_from_where_the_builder_began(pns_build):
    """The default check (a few samples per split, not each video's first) on the same build:
    verify hands the manifest's segment starts to the content check."""
    for per_split in ("1", "3"):
        code, fails, text = verify_in_process(pns_build, "--content-samples", per_split)
        assert code == 0, fails
        assert "recomputed from their sources match" in text


def test_a_swapped_or_edited_sample_still_fails(pns_build, tmp_path):
    out = copy_build(pns_build, tmp_path / "shards")
    m = _manifest(out)
    shard = next(s for s, part in m.groupby("shard") if part["video_id"].nunique() > 1)
    part = m[m["shard"] == shard].sort_values("key")
    a = part["key"].iloc[0]
    b = part[part["video_id"] != part["video_id"].iloc[0]]["key"].iloc[0]
    swap_members(out / shard, "mel.npy", a, b)
    edited = next(k for k in keys_of(out / shard) if k not in (a, b))
    mel = load_npy(member(out / shard, edited, "mel.npy"))
    mel[40, 20] += 0.01  # ten times the tolerance, in one band of one frame
    set_member(out / shard, edited, "mel.npy", npy(mel))
    code, fails, _ = verify_in_process(out, "--deep")
    assert code == 1
    for key in (a, b, edited):
        line = next((f for f in fails if f.startswith(f"FAIL {shard}: {key}: content differs")), "")
        assert re.search(r"mel\.npy vs the source's log-mel: max \|Δ\| [\d.]+", line), fails
        # the picture and the kept audio are right (the swapped mel.npy also differs from the flac's)
        assert "png vs" not in line and "flac vs the source's audio" not in line, line
    assert len(fails) == 3, fails  # every other sample verifies


def test_a_sample_checked_without_its_video_s_first_segment_is_decoded_as_the_builder_did(pns_build):
    """What the default check (a few samples per split) meets: a video's first sample is not
    among those checked, yet its audio must be decoded from where the builder began. The
    manifest's `segment_starts` says where."""
    from PIL import Image

    from s2i_data.deep import ContentCheck, Sample, segment_starts

    m = _manifest(pns_build)
    later = m[m["start_s"] > m.groupby("video_id")["start_s"].transform("min")]
    assert len(later) >= 4, m
    check = ContentCheck(sample_rate=16000, seconds=1.0, image_size=96, segments=segment_starts(m))
    for row in later.itertuples():
        shard = pns_build / row.shard
        check.add(Sample(shard=row.shard, key=row.key, source=row.source, start_s=row.start_s,
                         mel=load_npy(member(shard, row.key, "mel.npy")),
                         image=np.asarray(Image.open(io.BytesIO(member(shard, row.key, "png")))), image_ext="png",
                         flac=member(shard, row.key, "flac")))
    check.flush()
    assert check.errors == [] and check.notes == []
    assert check.checked == len(later)

