"""The drop-stale scheduler: one reader thread turns the source into windows, the main thread
turns each window into pictures, and between them is a mailbox of one.

From a live source (a microphone, a stream, ``--realtime``) the sound comes at its own pace: a
window that is still waiting when a newer one is ready is stale and is dropped (counted and
recorded as dropped), so the picture shown is always of the newest sound, the queue never
holds more than one window and memory stays flat over hours. From a file or a pipe the reader
waits for the mailbox instead (ffmpeg then waits on its full pipe), and every window is made.

Latency is counted from the moment a window's last audio arrived (`Window.ready`) to the moment
its pictures were handed to the page (`Hub.publish`); the recording is written after that.
"""

from __future__ import annotations

import io
import math
import statistics
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image

from s2i_model.live.sources import Source, SourceError
from s2i_model.live.window import Window, Windower

MAX_DROPPED_KEPT = 10_000  # dropped windows remembered between two made ones (beyond: counted only)
_NO_MEL = np.zeros((0, 128), np.float32)


@dataclass
class Result:
    window: Window
    dropped: bool = False
    quiet: bool = False
    pictures: np.ndarray | None = None  # uint8 [n, H, W, 3]
    png: list[bytes] = field(default_factory=list)  # the pictures, encoded once for page and recording
    label: str | None = None  # the frame classifier's most likely class for the pictures
    confidence: float | None = None
    shown: bool = False  # pictures made and above the confidence gate
    latency_ms: float | None = None


def png_bytes(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG", compress_level=1)  # speed over size: a loopback page
    return buf.getvalue()


@torch.no_grad()
def class_scores(classifier, imgs: torch.Tensor) -> torch.Tensor:
    """[classes]: how much n pictures look like each class. A frame classifier's softmax averaged
    over the pictures; for informativity judges (`JudgeScores`), each class judge's probability
    that the pictures are informative pictures of its class."""
    if isinstance(classifier, JudgeScores):
        return classifier(imgs)
    dev = next(classifier.parameters()).device
    return torch.softmax(classifier(imgs.to(dev)), 1).mean(0).cpu()


class JudgeScores:
    """The informativity judges of a labelled pool (`evaluate.informativity.Judges`) as a class line:
    the class whose judge finds the pictures most informative, and that probability."""

    def __init__(self, judges) -> None:
        self.names = [c for c in judges.classes if c in judges.models]
        self.models = [judges.models[c] for c in self.names]

    @torch.no_grad()
    def __call__(self, imgs: torch.Tensor) -> torch.Tensor:
        out = []
        for m in self.models:
            dev = next(m.parameters()).device
            out.append(torch.softmax(m(imgs.to(dev)), 1)[:, 1].mean().cpu())  # output 1: "informative"
        return torch.stack(out)


class Imaginer:
    """A window → its result: "quiet" below ``quiet_db``, else ``n`` pictures from the model
    (test-time dropout makes them differ) and, with a frame classifier, the class it sees in
    them (softmax averaged over the n pictures) and whether that clears ``gate``."""

    def __init__(self, model, n: int = 1, quiet_db: float = -50.0, classifier: torch.nn.Module | None = None,
                 class_names: list[str] | None = None, gate: float = 0.0, seed: int = 0) -> None:
        self.model, self.n, self.quiet_db = model, n, quiet_db
        self.classifier, self.class_names, self.gate = classifier, class_names, gate
        self.networks = ""  # which path draws the pictures (`fast.accelerate`'s line), for the session's first line
        self.warm_up()
        torch.manual_seed(seed)  # once: the stream of pictures is reproducible for a given stream of windows

    def warm_up(self) -> None:
        """One window through every step before the first real one: torch's first call of a network
        allocates and picks its kernels (hundreds of ms), which the first picture must not wait for."""
        frames = int(round(self.model.window[0] * 100))
        self(Window(-1, 0.0, np.zeros((frames, 128), np.float32), 0.0, time.monotonic()))

    @torch.no_grad()
    def __call__(self, w: Window) -> Result:
        if w.loudness_db < self.quiet_db:
            return Result(w, quiet=True)
        x = self.model.norm(w.mel)[None].to(self.model.device)
        imgs = self.model.sound_pictures(x, self.n, None)[0]  # [n, 3, H, W] in [-1, 1]
        res = Result(w, pictures=imgs.float().clamp(-1, 1).add(1).mul(127.5).round().byte()
                     .permute(0, 2, 3, 1).cpu().numpy(), shown=True)
        if self.classifier is not None:
            p = class_scores(self.classifier, imgs.float())
            k = int(p.argmax())
            if math.isfinite(float(p[k])):  # a classifier with NaN weights names no class (and writes no NaN)
                res.label = self.class_names[k] if self.class_names and k < len(self.class_names) else f"class {k}"
                res.confidence = round(float(p[k]), 4)
            res.shown = res.confidence is not None and res.confidence >= self.gate
        res.png = [png_bytes(im) for im in res.pictures]
        return res


class Mailbox:
    """One slot between the reader and the worker. ``drop_stale``: a new window replaces a waiting
    one (kept, without its log-mel, for the worker to count and record); otherwise the reader waits
    until the slot is free."""

    def __init__(self, drop_stale: bool) -> None:
        self.drop_stale = drop_stale
        self._cv = threading.Condition()
        self._item = None
        self._has = False
        self.dropped: list[Window] = []
        self.dropped_total = 0
        self.closed = False

    def put(self, item, final: bool = False) -> None:
        with self._cv:
            if self._has and not final and self.drop_stale and isinstance(self._item, Window):
                self.dropped_total += 1
                if len(self.dropped) < MAX_DROPPED_KEPT:  # kept without its log-mel: a line each, flat memory
                    w = self._item
                    self.dropped.append(Window(w.index, w.end_s, _NO_MEL, w.loudness_db, w.ready))
            else:
                while self._has and not self.closed:
                    self._cv.wait()
            self._item, self._has = item, True
            self._cv.notify_all()

    def get(self) -> tuple[object, list[Window]]:
        """The next item and the windows dropped before it."""
        with self._cv:
            while not self._has:
                self._cv.wait()
            item, dropped = self._item, self.dropped
            self._item, self._has, self.dropped = None, False, []
            self._cv.notify_all()
            return item, dropped

    def close(self) -> None:
        with self._cv:
            self.closed = True
            self._cv.notify_all()


class _End:
    def __init__(self, error: BaseException | None = None) -> None:
        self.error = error


@dataclass
class Summary:
    windows: int = 0  # made + dropped
    made: int = 0
    dropped: int = 0
    quiet: int = 0
    seconds: float = 0.0  # of sound heard
    invalid_samples: int = 0  # NaN or infinite samples in it, heard as silence
    latencies_ms: deque = field(default_factory=lambda: deque(maxlen=10_000))  # the last ones, for the summary
    error: str | None = None

    def latency(self, q: float) -> float | None:
        xs = sorted(self.latencies_ms)
        return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else None

    def line(self) -> str:
        med = statistics.median(self.latencies_ms) if self.latencies_ms else None
        lat = f", latency median {med:.0f} ms, p95 {self.latency(0.95):.0f} ms" if med is not None else ""
        bad = f" ({self.invalid_samples} NaN or infinite samples heard as silence)" if self.invalid_samples else ""
        return (f"{self.seconds:.1f} s of sound{bad}: {self.windows} windows, {self.made} made "
                f"({self.quiet} quiet), {self.dropped} dropped{lat}")


def run(source: Source, windower: Windower, imaginer: Callable[[Window], Result], publish=None, record=None,
        stop: threading.Event | None = None, on_result=None, summary: Summary | None = None) -> Summary:
    """Until the source ends (or ``stop`` is set): every window made or dropped, in order. ``publish``
    (the page) and ``record`` (the recording) get each `Result`; ``on_result`` too, after both. A
    source that fails ends the run with its one line in ``Summary.error`` after the windows it gave."""
    box = Mailbox(drop_stale=source.live)
    summary = Summary() if summary is None else summary  # the caller's: filled in as it goes (Ctrl-C keeps it)

    def read() -> None:
        err = None
        try:
            for chunk in source.chunks():
                for w in windower.push(chunk):
                    box.put(w)
                if box.closed:
                    return
            for w in windower.finish():
                box.put(w)
        except SourceError as e:
            err = e
        except BaseException as e:  # noqa: BLE001 - handed to the main thread, which re-raises it
            err = e
        finally:
            summary.seconds = windower.samples / windower.sr
            summary.invalid_samples = windower.invalid
            box.put(_End(err), final=True)

    reader = threading.Thread(target=read, name="live-reader", daemon=True)
    reader.start()

    def done(res: Result) -> None:
        summary.windows += 1
        if record is not None:
            record(res)
        if on_result is not None:
            on_result(res)

    try:
        while True:
            if stop is not None and stop.is_set():
                break
            item, dropped = box.get()
            for w in dropped:
                summary.dropped += 1
                done(Result(w, dropped=True))
            if isinstance(item, _End):
                if isinstance(item.error, SourceError):
                    summary.error = str(item.error)
                elif item.error is not None:
                    raise item.error
                break
            res = imaginer(item)
            if publish is not None:
                publish(res)
            res.latency_ms = round((time.monotonic() - item.ready) * 1000, 2)
            summary.made += 1
            summary.quiet += res.quiet
            summary.latencies_ms.append(res.latency_ms)
            done(res)
    finally:
        source.close()
        box.close()
        reader.join(timeout=10)
    # (beyond MAX_DROPPED_KEPT windows dropped in a row, the rest are counted without a line)
    summary.dropped = max(summary.dropped, box.dropped_total)
    summary.windows = summary.made + summary.dropped
    return summary
