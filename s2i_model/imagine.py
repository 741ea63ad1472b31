"""imagine: any sound → pictures of what could be making it.

The sound goes through the very front end the shards were built with (`s2i_data.media` to decode
and `s2i_data.features` for the log-mel), cut into the windows of the build the run learnt from
(its checkpoint records segment seconds and sample rate: 1 s at 16 kHz for S2I); each window's embedding is
turned into n images by the generator, whose test-time dropout makes them differ. Any model that
offers `model.SoundToImage` with a ``norm`` and a ``window`` (`run.load_model`: any registered model,
`s2i_model.models`) is imagined from the same way.

Files come from anywhere, so a name is only ever a local file (`media.as_input`: ``concat:x.mp4``
is a file called that, not an ffmpeg protocol), a recording of any length is decoded as a stream
in flat memory (`sound_windows`), and in a folder each file's pictures keep its relative path
and one bad file is skipped with its reason (`imagine_folder`).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from s2i_data import features, media, storage
from s2i_data.untrusted import audio_samples, path_shown, printable
from s2i_data.readers import Build
from s2i_data.sources import VIDEO_EXTENSIONS

from s2i_model.data import tensor_to_image
from s2i_model import run as run_folder
from s2i_model.grid import save_grid
from s2i_model.model import SoundToImage

AUDIO_EXTENSIONS = frozenset({"wav", "flac", "mp3", "ogg", "oga", "opus", "m4a", "aac", "wma", "aiff", "aif"})
SILENCE = 1e-4  # peak amplitude under which there is nothing to hear
PICTURES_PER_CALL = 8  # generator batch for a file: bounds memory, costs no speed on a CPU


class ImagineError(Exception):
    """Unreadable, silent or too-short input: one line for the user."""


@torch.no_grad()
def picture_bytes(model: SoundToImage, mels: torch.Tensor, n: int, seed: int = 0, per_call: int = 8) -> np.ndarray:
    """uint8 [windows, n, H, W, 3] from any model: `model.sound_pictures` on ``per_call`` pictures'
    worth of windows at a time (at least one), each call's floats turned into bytes at once, so a
    long file never holds its pictures as floats nor more than one call's activations (for S2I:
    `Translator.pictures`' bytes; bench/imagine.py). Seeded once, as `seeded_pictures` does: the
    same windows, n and seed give the same pictures whatever ``per_call``."""
    torch.manual_seed(seed)
    step = max(1, per_call // max(n, 1))
    chunks = [model.sound_pictures(mels[i:i + step], n, None).float().clamp(-1, 1).add(1).mul(127.5).round()
              .byte().permute(0, 1, 3, 4, 2).cpu().numpy() for i in range(0, len(mels), step)]
    return np.concatenate(chunks)


def _whole_windows(samples: int, seconds: float, sr: int) -> int:
    return int(np.floor(samples / sr / seconds + 1e-6))


def _picked(n: int, max_windows: int) -> list[int]:
    """Indices of the windows kept out of ``n``: all, or ``max_windows`` evenly spread."""
    if n <= max_windows:
        return list(range(n))
    return [int(round(i)) for i in np.linspace(0, n - 1, max_windows)]


@dataclass
class _Pass:
    """One streamed decode of a file: its length, its peak, and the log-mel of the windows asked
    for (``wanted``), or of every window while there are at most ``cap`` (``wanted`` None)."""

    total: int = 0  # samples decoded
    peak: float = 0.0
    invalid: int = 0  # NaN or infinite samples, read as silence
    mels: dict | None = None  # window index -> log-mel [frames, 128]


def _stream_pass(path: Path, seconds: float, sr: int, wanted: list[int] | None, cap: int, idle_timeout: float,
                 chunk_samples: int) -> _Pass:
    step = seconds * sr
    # Analysis frames overhang a window by 7.5 ms; the buffer keeps a wider margin of real audio
    # on both sides so that log_mel_segments only pads where the file itself ends.
    margin = int(np.ceil(media.AUDIO_MARGIN_S * sr))
    out = _Pass(mels={})
    todo = list(wanted) if wanted is not None else None
    nxt = 0  # position in todo, or the next window index when every window is wanted
    buf, buf_start = np.zeros(0, np.float32), 0  # buf[0] is sample buf_start of the file

    def next_index() -> int | None:
        if todo is None:
            return nxt if out.mels is not None else None
        return todo[nxt] if nxt < len(todo) else None

    def compute(upto: int, ended: bool) -> None:
        nonlocal nxt
        ready = []
        while (i := next_index()) is not None:
            s0 = int(round(i * step))
            if ended:
                if i >= _whole_windows(out.total, seconds, sr):
                    break
            elif s0 + int(np.ceil(step)) + margin > upto:
                break
            ready.append(i)
            nxt += 1
            if todo is None and nxt > cap:  # more windows than kept: thinning needs the length first
                out.mels = None
                return
        if ready:
            mels = features.log_mel_segments(buf, buf_start / sr, [i * seconds for i in ready], seconds, sr)
            out.mels.update(zip(ready, mels))

    try:
        for chunk in media.stream_audio(path, sr, chunk_samples, idle_timeout):
            chunk, bad = audio_samples(chunk)  # a float file's NaN or inf is silence, not NaN pictures
            out.invalid += bad
            if chunk.size:
                out.peak = max(out.peak, float(np.max(np.abs(chunk))))
            buf = np.concatenate([buf, chunk])
            out.total += chunk.size
            compute(out.total, ended=False)
            i = next_index()
            # Keep only what the next wanted window reads (nothing at all while counting).
            keep = out.total if i is None else min(out.total, max(buf_start, int(round(i * step)) - margin))
            buf, buf_start = buf[keep - buf_start:], keep
        compute(out.total, ended=True)
    except media.MediaError as e:
        raise ImagineError(f"{path_shown(path)}: {printable(str(e))}") from None  # ffmpeg's line may quote the name
    return out


def sound_windows(path: Path, seconds: float = 1.0, max_windows: int = 60, idle_timeout: float = 120.0,
                  chunk_samples: int = 1 << 16, sample_rate: int = features.SAMPLE_RATE) -> tuple[np.ndarray, list[float]]:
    """Log-mel of the 1 s windows of a file (evenly thinned to ``max_windows``) and their starts.

    Streamed: one ffmpeg process decodes to a pipe and each kept window's log-mel is computed
    (with the shard builder's `features.log_mel_segments`, the same numbers as on the whole
    decoded file) as soon as its audio has arrived; only a few seconds of audio and the kept
    windows are ever in memory, so an hour-long recording needs no more than a minute's.

    Which windows to keep depends on how many there are. The count is taken from the container
    header (`media.header_duration`); the stream then measures the real length, and only when
    the two disagree about the windows kept (a header that lies or states nothing, for a file with
    more than ``max_windows`` windows) is the file decoded a second time, keeping exactly the right
    ones. Files with at most ``max_windows`` windows never need the header. There is no time
    limit on the decode, only ``idle_timeout`` seconds without any output from ffmpeg.
    ``chunk_samples`` is how much is read from the pipe at a time; it changes no result.
    """
    if max_windows < 1:
        raise ImagineError(f"max_windows must be at least 1, not {max_windows}")
    if not os.path.isfile(path):
        # A pipe or a device may never end (/dev/urandom) and cannot be read twice.
        raise ImagineError(f"{path_shown(path)}: " + ("file not found" if not os.path.exists(path) else
                                          "not a regular file (a folder, pipe or device): save the sound to a file"))
    claimed = media.header_duration(path)
    est = int(np.floor(claimed / seconds + 1e-6)) if claimed is not None else None
    wanted = _picked(est, max_windows) if est is not None and est > max_windows else None
    first = _stream_pass(path, seconds, sample_rate, wanted, max_windows, idle_timeout, chunk_samples)
    length = first.total / sample_rate
    n = _whole_windows(first.total, seconds, sample_rate)
    if n < 1:
        raise ImagineError(f"{path_shown(path)}: too short ({length:.2f} s of sound; a window is {seconds:g} s)")
    if first.peak < SILENCE:
        bad = f"; its {first.invalid} NaN or infinite samples count as silence" if first.invalid else ""
        raise ImagineError(f"{path_shown(path)}: silent (peak below {SILENCE:g}{bad}): nothing to imagine")
    keep = _picked(n, max_windows)
    mels = first.mels or {}
    if not all(i in mels for i in keep):
        mels = _stream_pass(path, seconds, sample_rate, keep, max_windows, idle_timeout, chunk_samples).mels
        if not all(i in mels for i in keep):
            raise ImagineError(f"{path_shown(path)}: changed while being read (the second decode is shorter)")
    return np.stack([mels[i] for i in keep]), [i * seconds for i in keep]


def media_files(folder: Path) -> list[Path]:
    exts = AUDIO_EXTENSIONS | VIDEO_EXTENSIONS
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower().lstrip(".") in exts
                  and not p.name.startswith("."))


def imagine_file(tr: SoundToImage, path: Path, n: int, grid: Path, out_dir: Path | None = None,
                 max_windows: int = 60, seed: int = 0, prefix: str | None = None, inside: Path | None = None) -> Path:
    """The grid of a file (a row per window), and with ``out_dir`` every picture in it as
    ``{prefix}{start:07.1f}s_{k}.png`` (``prefix`` defaults to ``{stem}_``); ``inside``: a folder
    that grid and pictures must not leave through a link (`storage.folder_inside`)."""
    seconds, sample_rate = tr.window
    mels, starts = sound_windows(path, seconds, max_windows=max_windows, sample_rate=sample_rate)
    imgs = picture_bytes(tr, torch.stack([tr.norm(m) for m in mels]), n, seed, per_call=PICTURES_PER_CALL)
    rows = [(f"{t:g}-{t + seconds:g} s", None, list(imgs[i])) for i, t in enumerate(starts)]
    for d in (grid.parent, out_dir) if inside is not None else ():
        if d is not None:
            storage.folder_inside(inside, *d.relative_to(inside).parts)
    save_grid(rows, grid)
    if out_dir is not None:
        prefix = f"{path.stem}_" if prefix is None else prefix
        for i, t in enumerate(starts):
            for k in range(n):  # a temporary, then a rename: never written through a link left in out_dir
                storage.atomic_write(out_dir / f"{prefix}{t:07.1f}s_{k}.png",
                                     lambda tmp, im=imgs[i, k]: Image.fromarray(im).save(tmp, format="PNG"))
    return grid


def folder_outputs(folder: Path, path: Path, out_dir: Path) -> tuple[Path, Path]:
    """Where a folder's file goes: its relative path is kept, so ``a/same.wav`` and ``b/same.wav``
    (or ``same.wav`` and ``same.mp3``) never meet: grid ``OUT/a/same.wav.png``, pictures
    ``OUT/a/same.wav/{start:07.1f}s_{k}.png``."""
    rel = path.relative_to(folder)
    return out_dir / rel.parent / f"{rel.name}.png", out_dir / rel


def _name_max(folder: Path) -> int:
    p = Path(os.path.abspath(folder))
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        return int(os.pathconf(p, "PC_NAME_MAX"))
    except (OSError, ValueError, AttributeError):  # no pathconf (Windows) or no answer
        return 255


def imagine_folder(tr: SoundToImage, folder: Path, out_dir: Path, n: int = 8, max_windows: int = 60,
                   seed: int = 0) -> Iterator[tuple[Path, Path | None, str]]:
    """Every audio or video file under ``folder`` (see `folder_outputs` for the names): yields
    ``(file, grid, "")`` for each file done and ``(file, None, reason)`` for each one skipped (not
    decodable, silent, too short, a name too long for the output file system, unwritable output);
    one file never stops the others."""
    limit = _name_max(out_dir)
    for path in media_files(folder):
        grid, pictures = folder_outputs(folder, path, out_dir)
        rel = path.relative_to(folder)
        long = [c for c in (*rel.parts, grid.name) if len(os.fsencode(c)) > limit]
        if long:
            yield path, None, (f"{path_shown(path)}: its output name would be {len(os.fsencode(long[0]))} bytes, over the "
                               f"{limit}-byte limit for a file name: rename the file")
            continue
        try:
            yield path, imagine_file(tr, path, n, grid, pictures, max_windows, seed, prefix="", inside=out_dir), ""
        except ImagineError as e:
            yield path, None, str(e)
        except OSError as e:  # the output side: a name taken by a folder, no space, no permission
            where = f" ({path_shown(e.filename)})" if e.filename else ""
            yield path, None, f"{path_shown(path)}: cannot write its pictures: {e.strerror or e}{where}"


def imagine_split(tr: SoundToImage, data: Build | str | Path, split: str, out: Path, n: int = 4, per_class: int = 2,
                  seed: int = 0) -> Path:
    """A grid from a built split's own sounds: a row per sound, its real frame then n pictures
    (the first ``per_class`` samples of every class, by key)."""
    from s2i_model.data import ShardStream

    data = run_folder.check_build(Build.open(data))
    chosen: dict[int, list] = {}
    for mel, img, cls, key in sorted(ShardStream(data, split, tr.norm, shuffle=False), key=lambda s: s[3]):
        if len(chosen.setdefault(cls, [])) < per_class:
            chosen[cls].append((key, mel, img))
    rows = [r for c in sorted(chosen) for r in chosen[c]]
    if not rows:
        raise ImagineError(f"{data}: the {split} split has no samples")
    imgs = tr.sound_pictures(torch.stack([m for _, m, _ in rows]), n, seed).cpu()
    return save_grid([(key, tensor_to_image(img), list(imgs[i])) for i, (key, _, img) in enumerate(rows)], out)
