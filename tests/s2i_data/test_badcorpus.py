"""Self-check of the bad-corpus helper: every case file is made and "ok" files really hold A+V."""

from __future__ import annotations

import re
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from badcorpus import CLASSES, UNKNOWN_CLASS, Case, cases_by_name, ffmpeg_exe, make_bad_corpus

# ffmpeg 9 indents streams listed inside a "Stream group" block deeper than the others.
STREAM_RE = re.compile(r"^\s*Stream #\d+:\d+\S*: (Video|Audio|Subtitle|Data|Attachment): (.*)$",
                       re.M)


def _probe(path: Path) -> str:
    """stderr of ``ffmpeg -i path`` (it exits 1: no output file given; that is expected)."""
    proc = subprocess.run([ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", str(path)],
                          capture_output=True, text=True, errors="replace")
    return proc.stderr


def _kinds(stderr: str) -> list[tuple[str, str]]:
    return STREAM_RE.findall(stderr)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, list[Case], dict[str, str]]:
    root = tmp_path_factory.mktemp("badcorpus")
    cases = make_bad_corpus(root)
    with ThreadPoolExecutor(max_workers=2) as pool:
        probes = dict(zip([c.name for c in cases], pool.map(_probe, [c.path for c in cases])))
    return root, cases, probes


def test_cases_well_formed(corpus):
    root, cases, _ = corpus
    names = [c.name for c in cases]
    assert len(names) == len(set(names)), "case names must be unique"
    assert len({c.path for c in cases}) == len(cases)
    for c in cases:
        assert c.path.is_file(), c
        assert c.path.parent == root / c.cls, c
        assert c.cls in (*CLASSES, UNKNOWN_CLASS), c
        assert c.expect in ("ok", "skipped"), c
        assert c.why.strip(), c
        if c.expect == "skipped":
            assert c.segments is None, c
        elif c.segments is not None:
            assert c.segments >= 1, c
    # nothing but the case files under root (scratch inputs live elsewhere)
    assert sorted(p for p in root.rglob("*") if p.is_file()) == sorted(c.path for c in cases)
    assert {c.expect for c in cases} == {"ok", "skipped"}


def test_ok_cases_have_video_and_audio(corpus):
    _, cases, probes = corpus
    for c in cases:
        if c.expect != "ok":
            continue
        kinds = _kinds(probes[c.name])
        real_video = [d for k, d in kinds if k == "Video" and "(attached pic)" not in d]
        audio = [d for k, d in kinds if k == "Audio"]
        assert real_video and audio, f"{c.name}: {probes[c.name]}"


def test_specific_properties(corpus):
    _, cases, probes = corpus
    by = cases_by_name(cases)
    assert "rotation" in probes["rotated"]
    assert re.search(r"Audio: .*\b5\.1\b", probes["surround_5_1"])
    assert "192000 Hz" in probes["audio_192k"] and "8000 Hz" in probes["audio_8k"]
    assert "29.97 fps" in probes["fps_ntsc"] and " 7 fps" in probes["fps_7"]
    assert "120x160" in probes["portrait"] and "16x12" in probes["tiny"]
    assert _kinds(probes["audio_first"])[0][0] == "Audio"
    assert "Subtitle: subrip" in probes["subtitle_mkv"]
    assert "Subtitle: mov_text" in probes["mov_text_mp4"]
    assert "Data: " in probes["timecode_mp4"]
    assert re.search(r"start: 1\.\d+", probes["ts_offset"])
    assert re.search(r"Audio: .*start 0\.[5-7]", probes["audio_late"])
    assert by["zero_byte"].path.stat().st_size == 0
    for name in ("zero_byte", "truncated_moov_lost", "random_bytes", "text_as_mp4"):
        assert not _kinds(probes[name]), name
    assert [k for k, _ in _kinds(probes["video_only"])] == ["Video"]
    assert [k for k, _ in _kinds(probes["audio_only"])] == ["Audio"]
    assert "(attached pic)" in probes["cover_art"]
    assert by["unknown_class"].cls == UNKNOWN_CLASS not in CLASSES
    assert _kinds(probes["unknown_class"]), "the unknown-class file itself is valid"
    # the faststart-truncated file keeps its header: still probes with both streams
    assert {k for k, _ in _kinds(probes["truncated_faststart"])} >= {"Video", "Audio"}
