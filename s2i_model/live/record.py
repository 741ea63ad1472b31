"""``--record DIR``: every window's pictures and one line of ``DIR/live.jsonl`` per window.

A kill at any moment leaves a usable recording: each line goes out in one ``write`` to a file
opened for appending (whole lines, in order, flushed per window), and each picture is written
whole before the line that names it (`storage.atomic_write`: a temporary, then a rename), so a
picture named in the journal is complete. ``DIR/live.json`` says what was recorded (run, input,
settings) and, once the input ends, how it ended.

``DIR`` must be new or empty: a recording never replaces nor mixes with files already there (an
earlier recording, or anything else), and nothing is written through a link left in it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from s2i_data import storage
from s2i_data.untrusted import path_shown

from s2i_model.live.loop import Result

JOURNAL = "live.jsonl"
SESSION = "live.json"


class RecordError(Exception):
    """A recording folder that cannot be used: one line."""


def picture_name(index: int, t: float, k: int) -> str:
    """Unique per window (its index), whatever the hop: two windows 1 ms apart share a rounded time."""
    return f"{index:06d}_{t:09.2f}s_{k}.png"


def to_json(value) -> str:
    """JSON, strictly: a NaN or infinity is an error here, never ``NaN`` written for a reader to choke on."""
    return json.dumps(value, allow_nan=False)


def _claim(folder: Path) -> int:
    """The journal of a new recording in ``folder`` (made if missing), opened for appending; a
    folder that holds anything already is refused."""
    shown = path_shown(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        held = sorted(os.listdir(folder))
    except OSError as e:
        raise RecordError(f"cannot record into {shown}: {e.strerror or e}") from None
    if held:
        what = (f"a recording ({JOURNAL if JOURNAL in held else SESSION})" if {JOURNAL, SESSION} & set(held)
                else f"{len(held)} {'entry' if len(held) == 1 else 'entries'} ({path_shown(held[0])}"
                     f"{', ...' if len(held) > 1 else ''})")
        raise RecordError(f"{shown} already holds {what}: record into a new or empty folder "
                          "(a recording never replaces or mixes with other files)")
    try:
        # O_EXCL claims the folder: of two sessions started into it at once, the second stops
        # here; and it never opens a link planted in the journal's place.
        return os.open(folder / JOURNAL, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
    except FileExistsError:
        raise RecordError(f"{shown} already holds a recording ({JOURNAL}): record into a new or empty folder") from None
    except OSError as e:
        raise RecordError(f"cannot record into {shown}: {e.strerror or e}") from None


class Recorder:
    def __init__(self, folder: Path, session: dict) -> None:
        self.folder = Path(folder)
        self._fd = _claim(self.folder)
        self.session = dict(session)
        try:
            self._write_session()
        except OSError as e:
            os.close(self._fd)
            raise RecordError(f"cannot record into {path_shown(self.folder)}: {e.strerror or e}") from None

    def _write_session(self) -> None:
        storage.atomic_write(self.folder / SESSION, json.dumps(self.session, indent=2, allow_nan=False))

    def __call__(self, res: Result) -> None:
        w = res.window
        names = []
        for k, png in enumerate(res.png):
            name = picture_name(w.index, w.end_s, k)
            storage.atomic_write(self.folder / name, png)
            names.append(name)
        line = {"t": round(w.end_s, 4), "latency_ms": res.latency_ms, "loudness": w.loudness_db, "quiet": res.quiet,
                "dropped": res.dropped}
        if res.label is not None:
            line |= {"class": res.label, "confidence": res.confidence, "shown": res.shown}
        line["pictures"] = names
        os.write(self._fd, (to_json(line) + "\n").encode())

    def close(self, summary: dict) -> None:
        os.close(self._fd)
        self.session["ended"] = summary
        self._write_session()
