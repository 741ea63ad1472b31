"""AIVAEGAN (paper 002): AIVAE's deeper variant against an image discriminator. Its networks,
trainer and loader are AIVAE's (`s2i_model.models.aivae`), told apart by the config's ``model``;
this folder holds what is its own: its config and presets."""

from s2i_model.models import ModelSpec, Stage
from s2i_model.models.aivae import CHECKPOINTS, CPU, OPTIONS, TEST
from s2i_model.models.aivaegan.config import AivaeganConfig

MODEL = ModelSpec(
    name="aivaegan",
    title="AIVAEGAN",
    paper="002: Audio-to-Image Cross-Modal Generation (Żelaszczyk & Mańdziuk)",
    labels_used="none (sound-frame pairs only)",
    checkpoint=CHECKPOINTS["aivaegan"],
    load="s2i_model.models.aivae.load:load",
    stages=(Stage("aivaegan", AivaeganConfig, "s2i_model.models.aivae.train:train_vae",
                  "AIVAEGAN (paper 002): AIVAE's deeper variant against an image discriminator (docs/models.md).",
                  {**OPTIONS, "alpha": "weight of the reconstruction term (the paper: 0.2, 0.5, 1, 2)",
                   "lr": "the generator's (encoder + decoder) learning rate",
                   "lr_d": "the discriminator's learning rate"}),),
    # cpu: the paper's 2e-4 stays at chance in CPU minutes (docs/models.md): Adam 1e-3 for G and D
    presets={"cpu": {"aivaegan": {**CPU, "lr": 1e-3, "lr_d": 1e-3}}, "test": {"aivaegan": TEST}},
    describe="s2i_model.models.aivae.nets:describe",
)
