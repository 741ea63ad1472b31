"""The multimodal-feature GAN (paper 004): feature extractors and multimodal layers trained on the
build's class labels, then two stacked U-Net cGANs (docs/models.md).

    nets.py     MmGan and its parts (tables of layers), describe
    config.py   MmganConfig
    train.py    one loop over three stages
    load.py     the run folder → `MmganModel`, a model.SoundToImage
"""

from s2i_model.models import ModelSpec, Stage
from s2i_model.models.mmgan.config import MmganConfig

CHECKPOINT = "mmgan.pt"

MODEL = ModelSpec(
    name="mmgan",
    title="the multimodal-feature GAN",
    paper="004: Generating Images from Sounds Using Multimodal Features and GANs (anonymous, ICLR 2019 submission)",
    labels_used="class labels",
    checkpoint=CHECKPOINT,
    load="s2i_model.models.mmgan.load:load",
    stages=(Stage("mmgan", MmganConfig, "s2i_model.models.mmgan.train:train_mmgan",
                  "The multimodal-feature GAN (paper 004): feature extractors and multimodal layers trained on the "
                  "build's class labels, then two stacked U-Net cGANs (docs/models.md).",
                  {"width": "channel width multiplier (1.0: the widths in nets.py)",
                   "epochs_features": "stage 1: the frame and sound encoders on the class labels",
                   "epochs_multimodal": "stage 2: the multimodal layers",
                   "epochs": "stage 3: the two stacked cGANs (pix2pix's 200)",
                   "lr": "the cGANs' G and D learning rate (pix2pix)",
                   "d_weight": "weight of the Ds' loss (the paper's 0.001)",
                   "l1_weight": "pix2pix's λ on the L1 to each target",
                   "grid_every": "cGAN epochs between validation image grids (0: none)"},
                  epoch_fields=("epochs_features", "epochs_multimodal", "epochs")),),
    # cpu: the comparison's equal budget, 60 passes (docs/models.md, "Budgets"), split 1:1:4 as its
    # learning test's 5 + 5 + 20
    presets={"cpu": {"mmgan": {"width": 0.0625, "epochs_features": 10, "epochs_multimodal": 10, "epochs": 40,
                               "batch_size": 8, "lr": 1e-3, "workers": 2, "grid_every": 10}},
             "test": {"mmgan": {"width": 0.0625, "epochs_features": 1, "epochs_multimodal": 1, "epochs": 1,
                                "batch_size": 8, "workers": 0, "grid_every": 1}}},
    describe="s2i_model.models.mmgan.nets:describe",
)
