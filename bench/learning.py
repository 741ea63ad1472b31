"""Learning curves on the built-in data: class agreement of pictures imagined from held-out sounds
against generator updates, for λ = 0 and the paper's λ = 0.1, over several data seeds.

For each data seed: the synthetic set (``--videos`` a class), a build with 30 % of the videos held
out for test, one autoencoder (shared by both λ), then the translator trained in steps of
``--every`` epochs (each step resumes the last), and after each step the class agreement of
``--pictures`` pictures per test sound by an independent judge (a classifier of real frames,
`realframe.train_frame_classifier`). Also the separability of the held-out embeddings (the ceiling)
and the agreement of the pictures a linear map draws from them (`realframe.linear_decoder_agreement`).

    python bench/learning.py [--seeds 3,4,5] [--lams 0,0.1] [--epochs-ae 40] [--epochs-gan 80] [--every 10]

Writes bench/out/learning.json and bench/out/learning.png; figures go to docs/performance.md.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
CLASSES = ["baby", "dog", "rail", "fireworks", "water"]


def build(root: Path, seed: int, videos: int) -> Path:
    from s2i_data.synth import synth

    out = root / "shards"
    if not (out / "stats.json").exists():
        synth(root / "videos", videos_per_class=videos, seed=seed)
        subprocess.run([sys.executable, "-m", "s2i_data.cli", "build", "--root", str(root / "videos"), "--classes",
                        ",".join(CLASSES), "--out", str(out), "--shard-size", "32", "--splits", "0.6,0.1,0.3",
                        "--no-progress"], check=True, capture_output=True)
    return out


def measure(run: Path, data: Path, judge, pictures: int) -> dict:
    from s2i_model.models.s2i.load import Translator
    from s2i_model.evaluate.realframe import class_agreement, load_split

    mels, _, classes, _ = load_split(data, "test")
    tr = Translator.load(run, "cpu")
    with torch.no_grad():
        images = tr.images(tr.encoder(mels), pictures).flatten(0, 1)
    return {"agreement": class_agreement(judge, images, classes.repeat_interleave(pictures))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="3,4,5")
    ap.add_argument("--lams", default="0,0.1")
    ap.add_argument("--videos", type=int, default=20)
    ap.add_argument("--epochs-ae", type=int, default=40)
    ap.add_argument("--epochs-gan", type=int, default=80)
    ap.add_argument("--every", type=int, default=10)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--width", type=float, default=0.0625)
    ap.add_argument("--emb", type=int, default=128)
    ap.add_argument("--pictures", type=int, default=4)
    ap.add_argument("--work", type=Path, default=REPO / "bench" / "out" / "learning")
    args = ap.parse_args()

    from s2i_model.models.s2i.config import AutoencoderConfig, TranslatorConfig
    from s2i_model.evaluate.realframe import embedding_separability, train_frame_classifier
    from s2i_model.models.s2i.train_autoencoder import train_autoencoder
    from s2i_model.models.s2i.train_translator import train_translator

    quiet = dict(log=lambda *_: None)
    rows, ceilings = [], {}
    for seed in [int(s) for s in args.seeds.split(",")]:
        root = args.work / f"seed{seed}"
        data = build(root, seed, args.videos)
        judge = train_frame_classifier(data, len(CLASSES), epochs=60)
        ae_run = root / "ae"
        t0 = time.time()
        train_autoencoder(AutoencoderConfig(data=str(data), run=str(ae_run), emb=args.emb, width=args.width,
                                            epochs=args.epochs_ae, batch_size=args.batch, optimizer="adam"), **quiet)
        ceilings[seed] = embedding_separability(ae_run, data, classifier=judge)
        print(f"seed {seed}: autoencoder {time.time() - t0:.0f} s; held-out embeddings: nearest centroid "
              f"{ceilings[seed]['centroid']:.1%}, 1-NN {ceilings[seed]['nn1']:.1%}; a linear decoder's pictures "
              f"{ceilings[seed]['linear']:.1%}", flush=True)
        for lam in [float(x) for x in args.lams.split(",")]:
            run = root / f"lam{lam:g}"
            if not run.exists():
                shutil.copytree(ae_run, run)
            for epochs in range(args.every, args.epochs_gan + 1, args.every):
                t0 = time.time()
                state = train_translator(TranslatorConfig(data=str(data), run=str(run), epochs=epochs,
                                                          batch_size=args.batch, optimizer="adam", lam=lam), **quiet)
                m = measure(run, data, judge, args.pictures)
                last = state["last"]
                rows.append({"seed": seed, "lam": lam, "epoch": epochs, "g_steps": state["g_steps"],
                             "agreement": m["agreement"], "d_loss": last["d_loss"], "pixel_loss": last["pixel_loss"],
                             "adv_loss": last["adv_loss"], "seconds": round(time.time() - t0, 1)})
                print(f"  λ={lam:g} epoch {epochs:3d} ({state['g_steps']} G updates): agreement {m['agreement']:.1%}, "
                      f"D loss {last['d_loss']:.3f}, pixel {last['pixel_loss']:.3f}", flush=True)

    out = args.work.parent
    (out / "learning.json").write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                                   "rows": rows, "ceilings": ceilings}, indent=2))
    print("\n| seed | λ | " + " | ".join(f"ep {e}" for e in range(args.every, args.epochs_gan + 1, args.every)) + " |")
    for seed in ceilings:
        for lam in sorted({r["lam"] for r in rows}):
            mine = [r for r in rows if r["seed"] == seed and r["lam"] == lam]
            print(f"| {seed} | {lam:g} | " + " | ".join(f"{r['agreement']:.1%}" for r in mine) + " |")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 4))
        for seed in ceilings:
            for lam, style in ((0.0, "--"), (0.1, "-")):
                mine = [r for r in rows if r["seed"] == seed and r["lam"] == lam]
                if mine:
                    ax.plot([r["g_steps"] for r in mine], [r["agreement"] for r in mine], style,
                            label=f"seed {seed}, λ={lam:g}")
        ax.axhline(0.2, color="grey", lw=0.8)
        ax.set_xlabel("generator updates")
        ax.set_ylabel("class agreement (held-out sounds)")
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out / "learning.png", dpi=120)
    except ImportError:
        pass


if __name__ == "__main__":
    main()
