"""tiny: the smallest model s2i can train and compare, from a package of its own.

Its picture of a sound is a linear map of the sound's mean log-mel spectrum (128 numbers) to a
12 × 12 picture, scaled up to the build's 96 px; trained on mean squared error to the sound's own
frame. It uses what s2i shares (the build, the streams, the normaliser, checkpoints, the run lock,
the metrics log) and is known to s2i only through the entry point in pyproject.toml."""

from s2i_model.models import ModelSpec, Stage

from s2i_tiny.config import TinyConfig

MODEL = ModelSpec(
    name="tiny",
    title="tiny: a linear map from the mean spectrum to a 12 px picture",
    paper="none: a worked example of a model from another package (docs/adding-a-model.md)",
    labels_used="none (sound-frame pairs only)",
    checkpoint="tiny.pt",
    load="s2i_tiny.model:load",
    stages=(Stage("tiny", TinyConfig, "s2i_tiny.model:train", "tiny: the mean spectrum → a 12 px picture.",
                  {"side": "the picture's side before it is scaled up to the build's size"}),),
    presets={"cpu": {"tiny": {"epochs": 20, "workers": 0}}, "test": {"tiny": {"epochs": 2, "workers": 0}}},
    retrieval_space=True,
)
