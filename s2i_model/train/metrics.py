"""Per-epoch metrics to RUN/metrics.jsonl (one JSON object a line) and to TensorBoard."""

from __future__ import annotations

import json
from pathlib import Path

from s2i_data import storage

from s2i_model.evaluate.history import read_log


def throughput(n: int, seconds: float) -> dict:
    """The samples an epoch trained on, its seconds and its rate: the same keys in every trainer's rows."""
    return {"samples": n, "seconds": round(seconds, 3), "samples_per_s": n / max(seconds, 1e-9)}


def skipped_samples(held, stream) -> int:
    """Damaged samples left out of the epoch: counted once, when a split held in memory was read,
    else by the stream as it went."""
    return held.skipped if held is not None else stream.skipped.value


class MetricsLog:
    """Appends rows to RUN/metrics.jsonl; neither it nor RUN/tensorboard is ever written through a
    link left in the run folder (the log is appended with `storage.open_append`, rewritten with
    `storage.atomic_write`; a tensorboard folder leading out of the run is refused)."""

    def __init__(self, run: Path, stage: str, start_epoch: int) -> None:
        self.path = Path(run) / "metrics.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.stage = stage
        self._drop_after(start_epoch)
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(storage.folder_inside(run, "tensorboard"), purge_step=start_epoch + 1)
        except ImportError:  # tensorboard is a dependency; tolerate its absence in odd installs
            self.tb = None

    def _drop_after(self, epoch: int) -> None:
        # A resumed run redoes the epoch it was killed in: forget what that epoch had logged.
        text = read_log(self.path)
        if text is None:
            return
        keep = [ln for ln in text.splitlines() if ln.strip() and not self._redone(ln, epoch)]
        storage.atomic_write(self.path, "".join(ln + "\n" for ln in keep))  # a crash here keeps the old log

    def _redone(self, line: str, epoch: int) -> bool:
        """A row of this stage after ``epoch``; any other line (a torn one, another stage's, one
        this code did not write) is kept as it was: `history.read_rows` judges it when it is read."""
        try:
            row = json.loads(line)
        except ValueError:
            return False
        e = row.get("epoch") if isinstance(row, dict) else None
        return row.get("stage") == self.stage and isinstance(e, (int, float)) and e > epoch

    def write(self, row: dict) -> None:
        row = {"stage": self.stage, **row}
        with storage.open_append(self.path) as f:
            f.write(json.dumps(row) + "\n")
        if self.tb:
            for k, v in row.items():
                if isinstance(v, (int, float)) and k != "epoch":
                    self.tb.add_scalar(f"{self.stage}/{k}", v, row["epoch"])
            self.tb.flush()

    def close(self) -> None:
        if self.tb:
            self.tb.close()
