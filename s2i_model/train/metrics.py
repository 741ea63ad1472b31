"""Per-epoch metrics to RUN/metrics.jsonl (one JSON object a line) and to TensorBoard."""

from __future__ import annotations

import json
from pathlib import Path

from s2i_data import storage


def throughput(n: int, seconds: float) -> dict:
    """The samples an epoch trained on, its seconds and its rate: the same keys in every trainer's rows."""
    return {"samples": n, "seconds": round(seconds, 3), "samples_per_s": n / max(seconds, 1e-9)}


def skipped_samples(held, stream) -> int:
    """Damaged samples left out of the epoch: counted once, when a split held in memory was read,
    else by the stream as it went."""
    return held.skipped if held is not None else stream.skipped.value


class MetricsLog:
    def __init__(self, run: Path, stage: str, start_epoch: int) -> None:
        self.path = Path(run) / "metrics.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.stage = stage
        self._drop_after(start_epoch)
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(Path(run) / "tensorboard"), purge_step=start_epoch + 1)
        except ImportError:  # tensorboard is a dependency; tolerate its absence in odd installs
            self.tb = None

    def _drop_after(self, epoch: int) -> None:
        # A resumed run redoes the epoch it was killed in: forget what that epoch had logged.
        if not self.path.exists():
            return
        keep = [ln for ln in self.path.read_text().splitlines()
                if ln.strip() and not (json.loads(ln)["stage"] == self.stage and json.loads(ln)["epoch"] > epoch)]
        storage.atomic_write(self.path, "".join(ln + "\n" for ln in keep))  # a crash here keeps the old log

    def write(self, row: dict) -> None:
        row = {"stage": self.stage, **row}
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")
        if self.tb:
            for k, v in row.items():
                if isinstance(v, (int, float)) and k != "epoch":
                    self.tb.add_scalar(f"{self.stage}/{k}", v, row["epoch"])
            self.tb.flush()

    def close(self) -> None:
        if self.tb:
            self.tb.close()
