"""verify's content tolerances at their edges (s2i_data/deep.py): a change a little over a
tolerance fails, naming the sample and the member; a change under it passes. One copy of a build
carries every edit, each on its own sample of those the default content check recomputes, so
that one verify run shows which samples fail and that no other does.

The edits are sized from the tolerances' documented values, not from the code's constants (a
test that read ``deep.MEL_TOL`` would follow a loosened tolerance): the log-mel's largest |Δ|
1e-3, the picture's mean |Δ| 0.5 levels, the kept audio's largest |Δ| 2 steps of 16-bit PCM, the
log-mel of the kept audio against mel.npy a mean |Δ| of 0.05. The untouched builds match their
sources to a few 1e-4 (mel), 0 levels (pictures) and 1 PCM step (audio)."""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from shardcraft import copy_build, load_npy, member, npy, set_member
from test_verify import _manifest, kept, verify_in_process  # noqa: F401 (kept: the --keep-audio build fixture)

STEP = 1 / 32768  # one step of 16-bit PCM


def sampled_samples(out: Path) -> list[tuple[str, str, str]]:
    """(split, shard, key) of the samples plain verify recomputes, train last: a mel edit changes
    the train log-mel statistics too, so mel edits go to val and test samples."""
    from s2i_data.deep import DEFAULT_PER_SPLIT, sampled_keys

    m = _manifest(out)
    rows = m[m["key"].isin(sampled_keys(m, DEFAULT_PER_SPLIT))]
    return sorted(zip(rows["split"], rows["shard"], rows["key"]), key=lambda r: (r[0] == "train", r[2]))


def edit_mel(out: Path, shard: str, key: str, change) -> None:
    mel = load_npy(member(out / shard, key, "mel.npy"))
    change(mel)
    set_member(out / shard, key, "mel.npy", npy(mel.astype(np.float32)))


def edit_png(out: Path, shard: str, key: str, change) -> None:
    img = np.asarray(Image.open(io.BytesIO(member(out / shard, key, "png"))).convert("RGB")).astype(np.int16)
    img = change(img)
    buf = io.BytesIO()
    Image.fromarray(img.astype(np.uint8)).save(buf, format="PNG")
    set_member(out / shard, key, "png", buf.getvalue())


def edit_flac(out: Path, shard: str, key: str, change) -> None:
    import soundfile

    wave, sr = soundfile.read(io.BytesIO(member(out / shard, key, "flac")), dtype="int16")
    wave = change(wave.astype(np.int32))
    buf = io.BytesIO()
    soundfile.write(buf, np.clip(wave, -32768, 32767).astype(np.int16), sr, format="FLAC", subtype="PCM_16")
    set_member(out / shard, key, "flac", buf.getvalue())


def levels(img: np.ndarray, by: int, where: np.ndarray | None = None) -> np.ndarray:
    """``img`` with ``by`` levels added (subtracted where that would pass 255) at ``where``
    (every value when None): |Δ| is exactly ``by`` there, 0 elsewhere."""
    moved = np.where(img + by <= 255, img + by, img - by)
    return moved if where is None else np.where(where, moved, img)


def every_third_pixel(img: np.ndarray) -> np.ndarray:
    return (np.arange(img.shape[0] * img.shape[1]) % 3 == 0).reshape(img.shape[0], img.shape[1], 1)


def add_to_cell(by: float):
    def change(mel: np.ndarray) -> None:
        mel[50, 64] += by
    return change


def add_everywhere(by: float):
    def change(mel: np.ndarray) -> None:
        mel += by
    return change


def content_lines(fails: list[str]) -> dict[str, str]:
    """key → the problems of its FAIL line; every FAIL must be a content line."""
    got = {}
    for line in fails:
        m = re.match(r"FAIL (\S+): (\S+): content differs from \S+ at [\d.]+ s: (.*)$", line)
        assert m, f"not a content line: {line}"
        got[m[2]] = m[3]
    return got


def verify_edited(out: Path, edits: dict[str, tuple[str, bool]]) -> dict[str, str]:
    """Plain verify of ``out`` whose samples were edited as ``edits`` says (key → (the edit,
    whether it must fail)): exit 1, a FAIL line for each edit that must fail and for no other
    sample; key → its problems."""
    code, fails, _ = verify_in_process(out)
    got = content_lines(fails)
    missed = [f"{what} ({key})" for key, (what, fail) in edits.items() if fail and key not in got]
    wrong = [f"{edits.get(key, ('untouched', False))[0]} ({key}): {line}" for key, line in got.items()
             if not edits.get(key, ("", False))[1]]
    assert not missed and not wrong, f"passed although over the tolerance: {missed}; failed although under: {wrong}"
    assert code == 1, fails
    return got


MEL = r"mel\.npy vs the source's log-mel: max \|Δ\| ([\d.e-]+)"
PNG = r"png vs the source's frame at [\d.]+ s: mean \|Δ\| ([\d.e-]+) levels"
FLAC = r"flac vs the source's audio: max \|Δ\| ([\d.e-]+)"
FLAC_MEL = r"log-mel of the flac vs mel\.npy: mean \|Δ\| ([\d.e-]+)"


def assert_only(line: str, *wanted: str) -> dict[str, float]:
    """``line`` reports exactly the ``wanted`` problems (of MEL, PNG, FLAC, FLAC_MEL); their values."""
    values = {}
    for what in (MEL, PNG, FLAC, FLAC_MEL):
        m = re.search(what, line)
        assert bool(m) == (what in wanted), f"{'no' if m else 'missing'} {what.split(':')[0]!r} problem in: {line}"
        if m:
            values[what] = float(m[1])
    return values


def test_mel_and_picture_tolerances(tiny_build, tmp_path):
    out = copy_build(tiny_build, tmp_path / "shards")
    (s_cell, m_cell), (s_small, m_small), (s_3x, m_3x), *rest = [(s, k) for _, s, k in sampled_samples(out)]
    (s_3, p_3), (s_third, p_third), (s_1, p_1) = rest
    edit_mel(out, s_cell, m_cell, add_to_cell(0.01))
    edit_mel(out, s_3x, m_3x, add_to_cell(3e-3))
    edit_mel(out, s_small, m_small, add_to_cell(1e-4))
    edit_png(out, s_3, p_3, lambda img: levels(img, 3))
    edit_png(out, s_1, p_1, lambda img: levels(img, 1))
    edit_png(out, s_third, p_third, lambda img: levels(img, 1, every_third_pixel(img)))
    got = verify_edited(out, {m_cell: ("one mel cell +0.01 (10x the tolerance)", True),
                              m_3x: ("one mel cell +3e-3 (3x)", True),
                              m_small: ("one mel cell +1e-4 (a tenth)", False),
                              p_3: ("the picture 3 levels off (mean 3: 6x)", True),
                              p_1: ("the picture 1 level off (mean 1: 2x)", True),
                              p_third: ("every third pixel 1 level off (mean 1/3)", False)})
    assert assert_only(got[m_cell], MEL)[MEL] == pytest.approx(0.01, abs=1e-3)
    assert assert_only(got[m_3x], MEL)[MEL] == pytest.approx(3e-3, abs=1e-3)
    assert assert_only(got[p_3], PNG)[PNG] == pytest.approx(3, abs=0.01)
    assert assert_only(got[p_1], PNG)[PNG] == pytest.approx(1, abs=0.01)


def test_kept_audio_tolerances(kept, tmp_path):
    out = copy_build(kept, tmp_path / "shards")
    (s_mel, k_mel), (s_mel_small, k_mel_small), *rest = [(s, k) for _, s, k in sampled_samples(out)]
    (s_4, k_4), (s_1, k_1) = rest[:2]
    at = 4000  # a sample in the middle of the segment

    def nudge(by: int):
        def change(wave: np.ndarray) -> np.ndarray:
            wave[at] += by if wave[at] + by <= 32767 else -by
            return wave
        return change

    edit_flac(out, s_4, k_4, nudge(4))
    edit_flac(out, s_1, k_1, nudge(1))
    # mel.npy moved, the kept audio left alone: the audio's log-mel no longer matches mel.npy
    edit_mel(out, s_mel, k_mel, add_everywhere(0.1))
    edit_mel(out, s_mel_small, k_mel_small, add_everywhere(0.02))
    got = verify_edited(out, {k_4: ("one flac sample 4 steps off (2x the tolerance)", True),
                              k_1: ("one flac sample 1 step off", False),
                              k_mel: ("mel.npy +0.1 everywhere (flac-mel mean 2x its tolerance)", True),
                              k_mel_small: ("mel.npy +0.02 everywhere (fails the mel check only)", True)})
    assert assert_only(got[k_4], FLAC)[FLAC] == pytest.approx(4 * STEP, abs=1.01 * STEP)
    assert assert_only(got[k_mel], MEL, FLAC_MEL)[FLAC_MEL] == pytest.approx(0.1, abs=0.01)
    assert assert_only(got[k_mel_small], MEL)[MEL] == pytest.approx(0.02, abs=1e-3)  # the flac-mel check passed
