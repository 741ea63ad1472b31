"""S2I, the Sound-to-Imagination translator (paper 000): an audio autoencoder (stage 1), then a
dense generator and discriminator on its frozen embeddings (stage 2).

    nets.py (autoencoder.py, generator.py, discriminator.py)   the networks of SPEC 3
    config.py                   AutoencoderConfig, TranslatorConfig: the paper's settings
    train_autoencoder.py, train_translator.py                  the two stages' trainers
    load.py                     the run folder → `Translator`, a model.SoundToImage
    flops.py                    multiply-adds for describe --flops
"""

from s2i_model.models import ModelSpec, Stage
from s2i_model.models.s2i.config import AutoencoderConfig, TranslatorConfig

AUTOENCODER = "autoencoder.pt"
TRANSLATOR = "translator.pt"

_AE_OPTIONS = {
    "emb": "embedding size E",
    "width": "channel width multiplier (1.0: the paper's network)",
    "adam_lr": "learning rate when --optimizer adam",
}
_TR_OPTIONS = {
    "n_gd": "generator updates per discriminator update",
    "d_schedule": "step: D once every n_gd G steps; epoch: D through every n_gd-th epoch",
    "lam": "weight of the moving-average adversarial loss",
    "ma_k": "k: epochs in the moving-average adversarial loss (the paper does not give k; the batch term carries "
            "1/k of λ's weight)",
    "adam_lr": "learning rate of G and D when --optimizer adam",
    "informativity": "informativity classifiers: measure informativity every epoch",
    "informativity_every": "epochs between informativity measurements",
    "informativity_samples": "pictures per test sound for it",
    "narrow_generator": "below width 1: auto | on: dropout scaled to the width and no BatchNorm before the RGB output "
                        "(docs/training.md); off: the paper's network",
}
# cpu: issue 11's command (tests/s2i_model/train/test_learns.py) at the comparison's equal budget,
# 60 passes over the train split like every model's cpu preset (docs/models.md, "Budgets"): 10 + 50,
# between the paper's 1:4 and the 40 + 240 (1:6) that make demo trains (its epochs are in the Makefile)
_CPU_AE = {"emb": 128, "width": 0.0625, "epochs": 10, "batch_size": 16, "optimizer": "adam", "workers": 2}
_CPU_TR = {"epochs": 50, "batch_size": 16, "optimizer": "adam", "lam": 0.1, "workers": 2}

MODEL = ModelSpec(
    name="s2i",
    title="S2I, the Sound-to-Imagination translator",
    paper="000: Sound-to-Imagination (Fanzeres & Nadeu)",
    labels_used="none (sound-frame pairs only)",
    checkpoint=TRANSLATOR,
    load="s2i_model.models.s2i.load:load",
    stages=(
        Stage("autoencoder", AutoencoderConfig, "s2i_model.models.s2i.train_autoencoder:train_autoencoder",
              "Stage 1: the audio autoencoder on the train split's spectrograms.", _AE_OPTIONS),
        Stage("translator", TranslatorConfig, "s2i_model.models.s2i.train_translator:train_translator",
              "Stage 2: generator and discriminator on the frozen encoder's embeddings.", _TR_OPTIONS),
    ),
    presets={
        "cpu": {"autoencoder": _CPU_AE, "translator": _CPU_TR},
        "test": {"autoencoder": {"emb": 64, "width": 0.0625, "epochs": 1, "batch_size": 8, "optimizer": "adam",
                                 "workers": 0},
                 # 4: the comparison's learning curve has its four points (make compare COMPARE_SIZE=test)
                 "translator": {"epochs": 4, "batch_size": 8, "optimizer": "adam", "workers": 0}},
    },
    describe="s2i_model.models.s2i.flops:describe",
    retrieval_space=True,
)
