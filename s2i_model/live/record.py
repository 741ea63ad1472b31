"""``--record DIR``: every window's pictures and one line of ``DIR/live.jsonl`` per window.

A kill at any moment leaves a usable recording: each line goes out in one ``write`` to a file
opened for appending (whole lines, in order, flushed per window), and each picture is written to a
temporary name and renamed, so a picture named in the journal is complete. ``DIR/live.json`` says
what was recorded (run, input, settings) and, once the input ends, how it ended.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from s2i_data import storage

from s2i_model.live.loop import Result

JOURNAL = "live.jsonl"
SESSION = "live.json"


class RecordError(Exception):
    """A recording folder that cannot be used: one line."""


def picture_name(t: float, k: int) -> str:
    return f"{t:09.2f}s_{k}.png"


class Recorder:
    def __init__(self, folder: Path, session: dict) -> None:
        self.folder = Path(folder)
        if (self.folder / JOURNAL).exists():
            raise RecordError(f"{self.folder} already holds a recording ({JOURNAL}): record into another folder")
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            self.session = dict(session)
            self._write_session()
            self._fd = os.open(self.folder / JOURNAL, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        except OSError as e:
            raise RecordError(f"cannot record into {self.folder}: {e.strerror or e}") from None

    def _write_session(self) -> None:
        storage.atomic_write(self.folder / SESSION, json.dumps(self.session, indent=2))

    def __call__(self, res: Result) -> None:
        w = res.window
        names = []
        for k, png in enumerate(res.png):
            name = picture_name(w.end_s, k)
            tmp = self.folder / f".{name}.tmp"
            tmp.write_bytes(png)
            os.replace(tmp, self.folder / name)
            names.append(name)
        line = {"t": round(w.end_s, 4), "latency_ms": res.latency_ms, "loudness": w.loudness_db, "quiet": res.quiet,
                "dropped": res.dropped}
        if res.label is not None:
            line |= {"class": res.label, "confidence": res.confidence, "shown": res.shown}
        line["pictures"] = names
        os.write(self._fd, (json.dumps(line) + "\n").encode())

    def close(self, summary: dict) -> None:
        os.close(self._fd)
        self.session["ended"] = summary
        self._write_session()
