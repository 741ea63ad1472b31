"""Sound2Scene (paper 003) from scratch: a visual space (SimCLR) and an IC-GAN generator learnt from
the train frames alone, then an audio encoder aligned to that space (docs/models.md).

    nets.py     Sound2Scene and its parts (tables of layers), describe
    config.py   Sound2SceneConfig
    train.py    three stages
    load.py     the run folder → `Sound2SceneModel`, a model.SoundToImage
"""

from s2i_model.models import ModelSpec, Stage
from s2i_model.models.sound2scene.config import Sound2SceneConfig

CHECKPOINT = "sound2scene.pt"

MODEL = ModelSpec(
    name="sound2scene",
    title="Sound2Scene",
    paper="003: Sound to Visual Scene Generation by Audio-to-Visual Latent Alignment (Sung-Bin et al.)",
    labels_used="none (frames alone, then sound-frame pairs)",
    checkpoint=CHECKPOINT,
    load="s2i_model.models.sound2scene.load:load",
    stages=(Stage("sound2scene", Sound2SceneConfig, "s2i_model.models.sound2scene.train:train_sound2scene",
                  "Sound2Scene (paper 003) from scratch: a visual space (SimCLR) and an IC-GAN generator learnt from "
                  "the train frames alone, then an audio encoder aligned to that space (docs/models.md).",
                  {"width": "channel width multiplier (1.0: the widths in nets.py)",
                   "epochs_visual": "stage 1: the frame encoder (SimCLR, frames only)",
                   "epochs_generator": "stage 2: the IC-GAN generator (frames only)",
                   "epochs": "stage 3: the audio encoder (the paper's 50, with early stopping)",
                   "temperature": "stage 1: NT-Xent's τ",
                   "crop_scale": "stage 1: smallest area of the random resized crop",
                   "lr_g": "stage 2: G (BigGAN)", "lr_d": "stage 2: D",
                   "d_steps": "stage 2: D updates per G update (BigGAN)",
                   "neighbours": "stage 2: IC-GAN's k, the frames of an instance's neighbourhood",
                   "lr": "stage 3 (the paper)",
                   "patience": "stage 3: epochs without a better validation loss before it stops",
                   "grid_every": "epochs of stages 2 and 3 between validation image grids (0: none)"},
                  epoch_fields=("epochs_visual", "epochs_generator", "epochs")),),
    # cpu (docs/models.md): k = 10 neighbours for a few hundred frames; G and D at Adam 4e-4 with one
    # D step per G step (BigGAN's 1e-4 / 4e-4 and two D steps draw blurs in CPU minutes); the comparison's
    # equal budget, 60 passes (docs/models.md, "Budgets"), split 1:2:1 as the 20 + 40 + 20 it had
    presets={"cpu": {"sound2scene": {"width": 0.0625, "epochs_visual": 15, "epochs_generator": 30, "epochs": 15,
                                     "batch_size": 16, "neighbours": 10, "lr_g": 4e-4, "lr_d": 4e-4, "d_steps": 1,
                                     "workers": 2, "grid_every": 10}},
             "test": {"sound2scene": {"width": 0.0625, "epochs_visual": 1, "epochs_generator": 1, "epochs": 1,
                                      "batch_size": 8, "neighbours": 5, "workers": 0, "grid_every": 1}}},
    describe="s2i_model.models.sound2scene.nets:describe",
    retrieval_space=True,
    image_space=True,  # its frame encoder is the visual space its audio encoder is aligned to
)
