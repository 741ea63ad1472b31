"""media: probing real containers and decoding exactly the frame on screen and the right audio."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest

from conftest import encode_frames
from s2i_data import media

FPS = 25


def index_video(n: int, w: int = 160, h: int = 90) -> np.ndarray:
    """Frames whose centre square's grey level encodes the frame index; red bars outside it."""
    frames = np.zeros((n, h, w, 3), np.uint8)
    frames[..., 0] = 255  # the parts a centre crop must remove are pure red
    side = min(w, h)
    x0, y0 = (w - side) // 2, (h - side) // 2
    for k in range(n):
        frames[k, y0 : y0 + side, x0 : x0 + side] = 2 * k
    return frames


def indices(decoded: media.Decoded) -> list[int]:
    return [int(round(f[..., 1].mean() / 2)) for f in decoded.frames]


def test_frame_on_screen_at_segment_centres_cfr(tmp_path):
    path = encode_frames(tmp_path / "idx.mkv", index_video(100), FPS,
                         audio=np.zeros(16000 * 4, np.float32))
    pr = media.probe(str(path))
    assert (pr.width, pr.height) == (160, 90) and pr.fps == FPS
    assert pr.duration_s == pytest.approx(4.0, abs=0.05)
    d = media.decode(str(path), pr, (0.0, 4.0), first_frame_s=0.5, n_frames=4)
    # The frame on screen at t is the last one whose start <= t: at 25 fps, floor(t * 25).
    assert indices(d) == [12, 37, 62, 87]
    # Centre crop: none of the red bars survive anywhere in the 96x96 picture.
    assert d.frames.shape == (4, 96, 96, 3)
    assert np.abs(d.frames[..., 0].astype(int) - d.frames[..., 1]).max() <= 2


def test_frame_on_screen_with_seek_and_variable_rate(tmp_path):
    src = encode_frames(tmp_path / "cfr.mkv", index_video(60), FPS, audio=np.zeros(16000 * 3, np.float32))
    # Irregular timestamps: frame k at k*k/1200 s (gaps grow from 1 ms to ~100 ms).
    vfr = tmp_path / "vfr.mkv"
    subprocess.run([media.ffmpeg_exe(), "-nostdin", "-loglevel", "error", "-y", "-i", str(src),
                    "-vf", "setpts=N*N/1200/TB", "-fps_mode", "passthrough", "-c:v", "ffv1", "-c:a", "copy",
                    str(vfr)], check=True)
    pts = [k * k / 1200 for k in range(60)]
    pr = media.probe(str(vfr))
    d = media.decode(str(vfr), pr, (1.0, 2.0), first_frame_s=1.5, n_frames=2)
    expected = [max(k for k in range(60) if pts[k] <= t) for t in (1.5, 2.5)]
    assert indices(d) == expected


def test_audio_sample_timing_and_late_audio(tmp_path):
    sr = 16000
    audio = np.zeros(sr * 3, np.float32)
    audio[int(1.25 * sr)] = 0.9  # a click at exactly 1.25 s
    plain = encode_frames(tmp_path / "click.mkv", index_video(75), FPS, audio=audio)
    pr = media.probe(str(plain))
    d = media.decode(str(plain), pr, (1.0, 2.0))
    onset = d.audio_start_s + np.argmax(np.abs(d.audio)) / sr
    assert onset == pytest.approx(1.25, abs=0.001)

    late = tmp_path / "late.mkv"  # the same audio, starting 0.5 s after the video
    subprocess.run([media.ffmpeg_exe(), "-nostdin", "-loglevel", "error", "-y", "-i", str(plain),
                    "-itsoffset", "0.5", "-i", str(plain), "-map", "0:v", "-map", "1:a", "-c", "copy",
                    str(late)], check=True)
    pr = media.probe(str(late))
    assert pr.start_s == pytest.approx(0.5, abs=0.01)
    d = media.decode(str(late), pr, (1.0, 2.5))
    onset = d.audio_start_s + np.argmax(np.abs(d.audio)) / sr
    assert onset == pytest.approx(1.75, abs=0.002)


def test_rotation_is_applied(tmp_path):
    src = encode_frames(tmp_path / "land.mp4", index_video(50), FPS, codec="x264",
                        audio=np.zeros(32000, np.float32), extra=["-c:a", "aac"])
    rot = tmp_path / "rot.mp4"
    subprocess.run([media.ffmpeg_exe(), "-nostdin", "-loglevel", "error", "-y", "-display_rotation", "90",
                    "-i", str(src), "-c", "copy", str(rot)], check=True)
    pr = media.probe(str(rot))
    assert pr.rotation == 90 and (pr.width, pr.height) == (90, 160)
    d = media.decode(str(rot), pr, (0.0, 1.0), first_frame_s=0.5, n_frames=1)
    assert d.frames.shape == (1, 96, 96, 3)
    assert np.abs(d.frames[0, ..., 0].astype(int) - d.frames[0, ..., 1]).max() <= 8  # still no red


@pytest.mark.parametrize("content,reason", [
    (b"", "empty file"),
    (b"hello, this is not a video\n" * 20, "not a readable media file"),
])
def test_unreadable_files_raise_a_reason(tmp_path, content, reason):
    p = tmp_path / "bad.mp4"
    p.write_bytes(content)
    with pytest.raises(media.MediaError, match=reason):
        media.probe(str(p))


def test_missing_file(tmp_path):
    with pytest.raises(media.MediaError, match="file not found"):
        media.probe(str(tmp_path / "nope.mp4"))


# ---- content, not plumbing: what a viewer sees and what a listener hears survives decoding

def av_file(path, audio: str, video: str = "color=c=black:s=16x16:r=25") -> str:
    """A 2 s FFV1 + FLAC Matroska file from lavfi sources: ``audio`` is an aevalsrc argument list."""
    subprocess.run([media.ffmpeg_exe(), "-nostdin", "-loglevel", "error", "-y",
                    "-f", "lavfi", "-i", f"{video}:d=2", "-f", "lavfi", "-i", f"aevalsrc={audio}:d=2",
                    "-c:v", "ffv1", "-c:a", "flac", str(path)], check=True)
    return str(path)


def tone_amplitude(x: np.ndarray, hz: float, sr: int = 16000) -> float:
    """Amplitude of the ``hz`` sinusoid in ``x`` (least squares on sin and cos: any phase)."""
    t = np.arange(len(x)) / sr
    basis = np.stack([np.sin(2 * np.pi * hz * t), np.cos(2 * np.pi * hz * t)], axis=1)
    coef = np.linalg.lstsq(basis, x.astype(np.float64), rcond=None)[0]
    return float(np.hypot(*coef))


QUADRANTS = {"red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255), "white": (255, 255, 255)}


def quadrant_colours(img: np.ndarray) -> list[list[str]]:
    """Name of the colour filling each quadrant, [[top-left, top-right], [bottom-left, bottom-right]],
    read away from the seams (the upscale blends neighbouring quadrants there)."""
    h, w = img.shape[:2]
    names, refs = list(QUADRANTS), np.array(list(QUADRANTS.values()), float)
    out = []
    for r in range(2):
        row = []
        for c in range(2):
            q = img[r * h // 2 : (r + 1) * h // 2, c * w // 2 : (c + 1) * w // 2]
            q = q[h // 8 : -h // 8, w // 8 : -w // 8].reshape(-1, 3).mean(0)
            dist = np.abs(refs - q).max(1)
            assert dist.min() < 12, f"quadrant {r},{c} is a blend {q}, not one of {names}"
            row.append(names[int(dist.argmin())])
        out.append(row)
    return out


@pytest.mark.parametrize("rotation", [90, 180, 270])
def test_rotation_shows_what_a_viewer_sees(tmp_path, rotation):
    # A square picture (so the centre crop keeps all of it) with a different colour in each
    # quadrant: every rotation, and a mirror, moves them somewhere else.
    frame = np.zeros((64, 64, 3), np.uint8)
    frame[:32, :32] = QUADRANTS["red"]
    frame[:32, 32:] = QUADRANTS["green"]
    frame[32:, :32] = QUADRANTS["blue"]
    frame[32:, 32:] = QUADRANTS["white"]
    src = encode_frames(tmp_path / "q.mp4", np.repeat(frame[None], 3, 0), FPS, codec="x264",
                        audio=np.zeros(16000, np.float32), extra=["-c:a", "aac"])
    rot = tmp_path / f"q{rotation}.mp4"
    # ffmpeg 9 ignores the old `-metadata:s:v rotate=N` tag when muxing; -display_rotation writes
    # the display matrix, and is documented as "pure counter-clockwise rotation in degrees".
    subprocess.run([media.ffmpeg_exe(), "-nostdin", "-loglevel", "error", "-y", "-display_rotation",
                    str(rotation), "-i", str(src), "-c", "copy", str(rot)], check=True)
    pr = media.probe(str(rot))
    assert pr.rotation == rotation and (pr.width, pr.height) == (64, 64)
    d = media.decode(str(rot), pr, (0.0, 0.1), first_frame_s=0.05, n_frames=1)
    assert d.frames.shape == (1, 96, 96, 3)
    # The viewer sees the stored picture turned counter-clockwise: np.rot90 turns that way
    # (from the row axis towards the column axis), independently of ffmpeg.
    seen = quadrant_colours(d.frames[0])
    assert seen == quadrant_colours(np.rot90(frame, rotation // 90))
    assert seen == {90: [["green", "white"], ["red", "blue"]],   # red (top-left) now bottom-left
                    180: [["white", "blue"], ["green", "red"]],
                    270: [["blue", "red"], ["white", "green"]]}[rotation]  # red now top-right


def blob_shape(img: np.ndarray) -> tuple[float, float, float, float]:
    """Centre (x, y) and semi-axes (a_x, a_y) of the one bright filled ellipse in an image, from its
    intensity-weighted second moments (a filled ellipse has variance a² / 4 along each axis)."""
    wgt = img[..., 1].astype(np.float64) / 255
    ys, xs = np.mgrid[: img.shape[0], : img.shape[1]] + 0.5
    m = wgt.sum()
    cx, cy = (wgt * xs).sum() / m, (wgt * ys).sum() / m
    vx, vy = (wgt * (xs - cx) ** 2).sum() / m, (wgt * (ys - cy) ** 2).sum() / m
    return cx, cy, 2 * np.sqrt(vx), 2 * np.sqrt(vy)


@pytest.mark.parametrize("stored,sar,radius", [
    ((96, 192), (2, 1), 40),   # tall storage, wide pixels: displayed 192x192
    ((192, 96), (1, 2), 30),   # wide storage, narrow pixels: displayed 96x96
    ((128, 96), (3, 2), 30),   # displayed 192x96: the centre crop cuts the sides after the stretch
])
def test_non_square_pixels_keep_a_circle_round(tmp_path, stored, sar, radius):
    w, h = stored
    ratio = sar[0] / sar[1]
    dw, dh = round(w * ratio), h  # as displayed
    # A circle of `radius` display pixels at the display centre, drawn in storage pixels (each
    # `ratio` display pixels wide): an ellipse in the file, a circle on screen.
    ys, xs = np.mgrid[:h, :w] + 0.5
    inside = ((xs * ratio - dw / 2) ** 2 + (ys - dh / 2) ** 2) <= radius**2
    frames = np.repeat(np.where(inside, 255, 0).astype(np.uint8)[None, ..., None], 3, 0).repeat(3, -1)
    path = encode_frames(tmp_path / "sar.mkv", frames, FPS, audio=np.zeros(16000, np.float32),
                         extra=["-vf", f"setsar={sar[0]}/{sar[1]}"])
    pr = media.probe(str(path))
    assert pr.sar == pytest.approx(ratio) and (pr.width, pr.height) == (dw, dh)
    d = media.decode(str(path), pr, (0.0, 0.1), first_frame_s=0.05, n_frames=1)
    cx, cy, ax, ay = blob_shape(d.frames[0])
    # Round within 5 %: the scaler's blur and the pixel grid move either semi-axis by well under
    # a pixel (of 20-30), measured 0.4 % at most; ignoring the SAR gives 0.5, 1.67 (the crop clips
    # the 2:1 ellipse) and 0.67 here.
    assert ax / ay == pytest.approx(1.0, abs=0.05)
    scale = 96 / min(dw, dh)  # crop to the display's short side, then scale to 96
    assert ax == pytest.approx(radius * scale, rel=0.05) and ay == pytest.approx(radius * scale, rel=0.05)
    assert (cx, cy) == (pytest.approx(48, abs=1), pytest.approx(48, abs=1))


# One tone per 5.1 channel, each a whole number of cycles per second (orthogonal over 1 s).
SURROUND_TONES = {"FL": 250, "FR": 350, "FC": 1000, "LFE": 80, "BL": 2000, "BR": 3000}
# `-ac 1` with no matrix of our own is swresample's default downmix, unnormalised for float
# output: FC at 1, FL/FR at -3 dB (1/sqrt 2), surrounds at -3 dB into the front pair and again into
# mono (1/2), LFE dropped (lfe_mix_level = 0).
DOWNMIX = {"FL": 2**-0.5, "FR": 2**-0.5, "FC": 1.0, "LFE": 0.0, "BL": 0.5, "BR": 0.5}


@pytest.mark.parametrize("layout", ["5.1", "5.1(side)"])
def test_surround_downmix_to_mono(tmp_path, layout):
    amp = 0.2
    exprs = "|".join(f"{amp}*sin(2*PI*{hz}*t)" for hz in SURROUND_TONES.values())
    path = av_file(tmp_path / "surround.mkv", f"'{exprs}':c={layout}:s=48000")
    pr = media.probe(str(path))
    assert (pr.audio_channels, pr.audio_rate) == (6, 48000)
    d = media.decode(path, pr, (0.0, 2.0))
    assert d.audio_start_s == 0.0 and len(d.audio) == pytest.approx(32000, abs=16)
    # The same front end in every reader: the builder, decode_audio and imagine's stream_audio.
    whole = media.decode_audio(path)
    streamed = np.concatenate(list(media.stream_audio(path)))
    for audio in (d.audio, whole, streamed):
        mid = audio[8000:24000]  # one whole second, away from the resampler's edges
        got = {ch: tone_amplitude(mid, hz) / amp for ch, hz in SURROUND_TONES.items()}
        # 1 % of full gain: FLAC is lossless and the 48 -> 16 kHz resampler's passband is flat far
        # beyond 3 kHz; taking channel 0 alone, or an equal-weight mean, misses by 30 % or more.
        assert got == {ch: pytest.approx(g, abs=0.01) for ch, g in DOWNMIX.items()}, layout


@pytest.mark.parametrize("rate", [8000, 192000])
def test_audio_rates_resampled_to_16k_keep_pitch_and_level(tmp_path, rate):
    import librosa

    from s2i_data import features

    amp = 0.5
    audio = f"{amp}*sin(2*PI*1000*t)"
    if rate > 16000:  # and a tone the 16 kHz output cannot hold, which must vanish, not alias to 4 kHz
        audio += "+0.3*sin(2*PI*12000*t)"
    path = av_file(tmp_path / f"tone{rate}.mkv", f"{audio}:s={rate}")
    pr = media.probe(path)
    assert pr.audio_rate == rate
    d = media.decode(path, pr, (0.0, 2.0))
    assert d.audio_start_s == 0.0 and len(d.audio) == pytest.approx(32000, abs=16)  # 2 s at 16 kHz
    mid = d.audio[4000:28000]
    # Level within 2 % (measured: 1e-5): a resampler's passband at 1 kHz is flat to far better.
    assert tone_amplitude(mid, 1000) == pytest.approx(amp, rel=0.02)
    assert np.sqrt(np.mean(mid**2)) == pytest.approx(amp / np.sqrt(2), rel=0.02)  # nothing else
    assert tone_amplitude(mid, 4000) < 1e-3
    # Pitch: the loudest mel band is the one whose centre is nearest 1 kHz (librosa's Slaney
    # centres: the 130 band edges of 128 triangles over 0-8 kHz).
    centres = librosa.mel_frequencies(features.N_MELS + 2, fmin=0.0, fmax=8000.0, htk=False)[1:-1]
    band = int(np.argmin(np.abs(centres - 1000)))
    mel = features.log_mel_segments(d.audio, d.audio_start_s, [0.5])[0]
    assert band == 42 and (mel.argmax(1) == band).all()  # in every one of the segment's 100 frames


def test_probe_many_gives_what_probe_gives_or_defers(tmp_path):
    """One ffmpeg run for several files: each answer equals that file's own probe; a file the run
    cannot describe, or a run that logged trouble, answers None (its caller probes it alone)."""
    audio = np.zeros(16000 * 3, np.float32)
    plain = encode_frames(tmp_path / "plain.mkv", index_video(75), FPS, audio=audio)
    land = encode_frames(tmp_path / "land.mp4", index_video(50, 64, 48), FPS, codec="x264", audio=audio[:32000],
                         extra=["-c:a", "aac"])
    rot = tmp_path / "rot.mp4"  # side data under its stream, in the middle of the run's log
    subprocess.run([media.ffmpeg_exe(), "-nostdin", "-loglevel", "error", "-y", "-display_rotation", "90",
                    "-i", str(land), "-c", "copy", str(rot)], check=True)
    silent = encode_frames(tmp_path / "silent.mkv", index_video(25), FPS)  # no audio stream
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video at all " * 100)
    many = [str(plain), str(rot), str(plain), str(silent)]
    got = media.probe_many(many)
    assert got[:3] == [media.probe(p) for p in many[:3]]
    assert got[1].rotation == 90 and (got[1].width, got[1].height) == (48, 64)
    assert got[3] is None  # unusable: the reason is `probe`'s to give
    assert media.probe_many([str(plain), str(junk), str(rot)]) == [None, None, None]  # a failed open
    assert media.probe_many([str(plain)]) == [None]  # one file: nothing to share
