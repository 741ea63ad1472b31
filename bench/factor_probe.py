"""Where a factor is lost (issue 28): how well each within-class factor can be read, on held-out
test sounds, from (a) the sound itself (the log-mel's band means and spreads), (b) a run's audio
embedding (what its encoder keeps), next to (c) the factor agreement of its pictures
(evaluation.json, when the run was evaluated).

(a) and (b) are ridge regressions fitted on the train split's sounds of the class, scored by
Spearman's rank correlation on its test sounds: if (a) is high and (b) low, the encoder drops
the factor; if (b) is high and (c) low, the generator does.

    python bench/factor_probe.py --data BUILD --run RUN [--run RUN2 ...]

Prints a table and writes bench/out/factor-probe.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr

from s2i_data.readers import Build
from s2i_model import run as run_folder
from s2i_model.data import ShardStream

OUT = Path(__file__).resolve().parent / "out"


def _ridge(x: np.ndarray, y: np.ndarray, xt: np.ndarray, alpha: float = 1.0) -> np.ndarray:
    mu, sd = x.mean(0), x.std(0) + 1e-6
    x, xt = (x - mu) / sd, (xt - mu) / sd
    w = np.linalg.solve(x.T @ x + alpha * len(x) * np.eye(x.shape[1]), x.T @ (y - y.mean()))
    return xt @ w + y.mean()


def _features(build: Build, split: str, tr, device: str) -> tuple[list[str], np.ndarray, np.ndarray]:
    keys, sound, emb = [], [], []
    with torch.no_grad():
        for mel, _img, _cls, key in ShardStream(build, split, tr.norm, shuffle=False):
            m = mel.squeeze(0)  # [128, 100] or [100, 128]: both statistics are over time either way
            t = m if m.shape[-1] == 128 else m.T
            sound.append(torch.cat([t.mean(0), t.std(0)]).numpy())
            emb.append(tr.embed(mel[None].to(device)).float().cpu().numpy()[0] if hasattr(tr, "embed") else np.zeros(1))
            keys.append(key)
    return keys, np.stack(sound), np.stack(emb)


def probe(data: str, run: Path, device: str = "cpu") -> dict:
    build = Build.open(data)
    tr = run_folder.Run.open(run).model(device)
    m = build.manifest().set_index("key")
    parts = {s: _features(build, s, tr, device) for s in ("train", "test")}
    ev = run / "evaluation.json"
    pictures = json.loads(ev.read_text()).get("factors", {}) if ev.is_file() else {}
    out = {}
    for f in build.factors:
        rows = {}
        for s, (keys, sound, emb) in parts.items():
            sel = [i for i, k in enumerate(keys) if m.at[k, "class"] == f.cls]
            rows[s] = (np.array([m.at[keys[i], f.column] for i in sel]), sound[sel], emb[sel])
        (y, xs, xe), (yt, ts, te) = rows["train"], rows["test"]
        found = {"sound": float(spearmanr(_ridge(xs, y, ts), yt)[0])}
        if xe.shape[1] > 1:
            found["embedding"] = float(spearmanr(_ridge(xe, y, te), yt)[0])
        per = (pictures.get("per_factor") or {}).get(f.name) or {}
        found["pictures"] = per.get("spearman")
        out[f.name] = found
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--run", action="append", required=True)
    args = ap.parse_args()
    OUT.mkdir(exist_ok=True)
    result = {r: probe(args.data, Path(r)) for r in args.run}
    for r, found in result.items():
        print(f"\n{r}\n{'factor':<18} {'sound':>6} {'embedding':>10} {'pictures':>9}")
        for name, v in found.items():
            cells = [f"{v[k]:.2f}" if isinstance(v.get(k), float) else "n/a" for k in ("sound", "embedding", "pictures")]
            print(f"{name:<18} {cells[0]:>6} {cells[1]:>10} {cells[2]:>9}")
    (OUT / "factor-probe.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
