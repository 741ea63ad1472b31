"""Per-epoch histories in RUN/metrics.jsonl and the paper's aggregates of them (SPEC 5).

- Informativity per epoch, with the paper's rule: the two epochs right after a discriminator
  update are replaced by the mean of the five epochs before them. The rule only means something
  when D is trained in whole epochs (``--d-schedule epoch``); with the default step schedule D is
  updated inside every epoch, no epoch is "right after" one, and nothing is replaced.
- Two aggregates: the mean over an epoch range (paper: 500-4000) and the best moving average
  over a window (paper: 50 epochs).
- The training pixel loss as a moving average over the last window, per embedding size.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from s2i_data import storage, untrusted


def read_log(path: Path) -> str | None:
    """RUN/metrics.jsonl's text (None when there is none): a regular file of the run's own
    (`storage.open_regular`: never through a link left in its place), refused past
    `untrusted.MAX_METRICS_BYTES`."""
    try:
        with storage.open_regular(path) as f:
            data = f.read(untrusted.MAX_METRICS_BYTES + 1)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise OSError(f"cannot read {e}") from None
    if len(data) > untrusted.MAX_METRICS_BYTES:
        raise untrusted.Untrusted(f"{path}: more than a training log holds ({untrusted.MAX_METRICS_BYTES} bytes at most)")
    return data.decode("utf-8", "replace")


def log_rows(run: Path, name: str | None = None) -> list[dict]:
    """RUN/metrics.jsonl's rows, checked (`untrusted.metrics_rows`: a torn last line skipped, an
    epoch logged twice by a resumed run counted once); none when there is no log. ``name`` is how
    the file is named in a refusal (its path by default)."""
    path = Path(run) / "metrics.jsonl"
    text = read_log(path)
    return [] if text is None else untrusted.metrics_rows(text, name or str(path))


def read_rows(run: Path, stage: str = "translator", name: str | None = None) -> list[dict]:
    """One stage's rows of RUN/metrics.jsonl, by epoch (``name``: as `log_rows`; by default
    "PATH: line N")."""
    rows = [r for r in log_rows(run, name or f"{Path(run) / 'metrics.jsonl'}:") if r["stage"] == stage]
    return sorted(rows, key=lambda r: r["epoch"])


def skip_after_d_updates(values: list[float], d_updates: list[int], skip: int = 2, before: int = 5) -> tuple[list[float], list[int]]:
    """The paper's rule; returns the corrected series and the 0-based indices replaced."""
    out = list(values)
    if all(d > 0 for d in d_updates):  # D inside every epoch: no epoch is "after an update"
        return out, []
    replaced = []
    for i, d in enumerate(d_updates):
        if d <= 0:
            continue
        for j in range(i + 1, min(i + 1 + skip, len(out))):
            prev = [values[k] for k in range(max(0, i + 1 - before), i + 1) if k not in replaced]
            if prev and j not in replaced:
                out[j] = float(np.mean(prev))
                replaced.append(j)
    return out, replaced


def moving_average(values: list[float], window: int) -> np.ndarray:
    v = np.asarray(values, np.float64)
    w = max(1, min(window, len(v)))
    return np.convolve(v, np.ones(w) / w, mode="valid") if len(v) else v


def informativity_history(rows: list[dict]) -> dict:
    """epochs, raw and corrected mean informativity, per-class series, and replaced epochs."""
    rows = [r for r in rows if r.get("informativity", {}).get("mean") is not None]  # no judge answered: no value
    epochs = [r["epoch"] for r in rows]
    raw = [r["informativity"]["mean"] for r in rows]
    fixed, replaced = skip_after_d_updates(raw, [r.get("d_updates", 1) for r in rows])
    classes = sorted({c for r in rows for c in r["informativity"]["per_class"]})
    per_class = {c: [r["informativity"]["per_class"].get(c) for r in rows] for c in classes}
    val = [(r.get("informativity_val") or {}).get("mean") for r in rows]
    out = {"epochs": epochs, "raw": raw, "mean": fixed, "replaced_epochs": [epochs[i] for i in replaced],
           "per_class": per_class}
    if val and all(v is not None for v in val):  # measured on val at the same epochs: the same rule applied
        out["val"] = skip_after_d_updates(val, [r.get("d_updates", 1) for r in rows])[0]
    return out


def aggregates(hist: dict, first: int = 500, last: int = 4000, window: int = 50) -> dict:
    """Mean over [first, last] and the best ``window``-epoch moving average of the test split's
    informativity: the best window chosen on the test split itself (the S2I paper's choice, which
    flatters), and, where informativity was also measured on val, chosen on val
    (``best_moving_average_by_val``: the test split's moving average in the window val chose). A
    run shorter than ``first`` is averaged over all its epochs, and the range used is recorded."""
    epochs, values = hist["epochs"], hist["mean"]
    if not epochs:
        return {}
    in_range = [v for e, v in zip(epochs, values) if first <= e <= last]
    used = [first, min(last, epochs[-1])]
    if not in_range:
        in_range, used = values, [epochs[0], epochs[-1]]
    ma = moving_average(values, window)
    best = int(np.argmax(ma))
    w = max(1, min(window, len(values)))
    out = {"mean": float(np.mean(in_range)), "mean_epochs": used, "best_moving_average": float(ma[best]),
           "best_window": [epochs[best], epochs[best + w - 1]], "window": w}
    if hist.get("val"):  # the window chosen on val, its test moving average reported (the test split unseen by the choice)
        by_val = int(np.argmax(moving_average(hist["val"], window)))
        out["best_moving_average_by_val"] = float(ma[by_val])
        out["best_window_by_val"] = [epochs[by_val], epochs[by_val + w - 1]]
    return out


def pixel_loss_ma(rows: list[dict], window: int = 50) -> float | None:
    values = [r["pixel_loss"] for r in rows if "pixel_loss" in r]
    return float(np.mean(values[-window:])) if values else None
