"""AIVAE (paper 002): a VAE from the sound to its picture, trained on the ELBO (docs/models.md).

    nets.py     Aivae, Aivaegan, ImageDiscriminator (tables of layers), describe
    config.py   AivaeConfig: the paper's settings
    train.py    one loop for AIVAE and AIVAEGAN (aivaegan's folder holds its config and presets)
    load.py     the run folder → `VaeModel`, a model.SoundToImage
"""

from s2i_model.models import ModelSpec, Stage
from s2i_model.models.aivae.config import AivaeConfig

CHECKPOINTS = {"aivae": "aivae.pt", "aivaegan": "aivaegan.pt"}
OPTIONS = {"latent": "latent size (the paper's 64)", "width": "channel width multiplier (1.0: the paper's widths)",
           "balance": "paper: the reconstruction sum × 784/(C·H·W), the paper's ratios to KL and α·GAN; "
                      "sum: every value summed (runs before the option)"}
# cpu: width 1/16 and Adam at the paper's 1e-3, 60 epochs: the comparison's equal budget of 60 passes
# over the train split (docs/models.md, "Budgets")
CPU = {"width": 0.0625, "epochs": 60, "batch_size": 16, "workers": 2, "grid_every": 10}
TEST = {"width": 0.0625, "epochs": 4, "batch_size": 8, "workers": 0, "grid_every": 4}  # 4: a learning curve's points

MODEL = ModelSpec(
    name="aivae",
    title="AIVAE",
    paper="002: Audio-to-Image Cross-Modal Generation (Żelaszczyk & Mańdziuk)",
    labels_used="none (sound-frame pairs only)",
    checkpoint=CHECKPOINTS["aivae"],
    load="s2i_model.models.aivae.load:load",
    stages=(Stage("aivae", AivaeConfig, "s2i_model.models.aivae.train:train_vae",
                  "AIVAE (paper 002): a VAE from the sound to its picture, trained on the ELBO (docs/models.md).",
                  OPTIONS),),
    presets={"cpu": {"aivae": CPU}, "test": {"aivae": TEST}},
    describe="s2i_model.models.aivae.nets:describe",
)
