"""The run folder: what a trained S2I run holds, its file names, and each trained net loaded back.

    RUN/autoencoder.pt   stage 1: the audio autoencoder, its normaliser, config and build record
    RUN/embeddings.pt    the frozen encoder's embedding of every split (a cache, tagged with the build)
    RUN/translator.pt    stage 2: G and D, their optimisers, config and build record
    RUN/metrics.jsonl, RUN/tensorboard/, RUN/grids/      what training logged
    RUN/evaluation.json, RUN/evaluation-grid.png         what `s2i-model evaluate` measured
    RUN/.lock            held (flock) by the one training or evaluation writing the folder

Inference (imagine, evaluate, sample, live) reads a run through this module only and never
imports a trainer; the trainers write these same names.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import torch

from s2i_data import lock, untrusted
from s2i_data.readers import Build

from s2i_model import checkpoint
from s2i_model.config import AutoencoderConfig, from_dict
from s2i_model.data import Normalizer
from s2i_model.nets import AudioAutoencoder, DenseGenerator

AUTOENCODER = "autoencoder.pt"
TRANSLATOR = "translator.pt"
EMBEDDINGS = "embeddings.pt"
EVALUATION = "evaluation.json"
LOCK = ".lock"


# What the S2I networks take (SPEC 3): 1 s of log-mel at a 10 ms hop, 128 mel bands, 96 px frames.
# The sample rate is free: the front end keeps 128 bands and a 10 ms hop at any rate.
NET_INPUT = {"frames": 100, "mel_bins": 128, "image_size": 96}
# For runs trained before checkpoints recorded their build.
LEGACY_BUILD = {"segment_seconds": 1.0, "sample_rate": 16000, **NET_INPUT}


class RunError(Exception):
    """A run folder that cannot serve what was asked (a stage missing or unfinished, a build the
    run was not trained for): one line for the user."""


class RunLockError(RunError):
    """Another process writes the run folder (or it cannot be written): one line, exit 2."""


@contextlib.contextmanager
def writing(run: str | Path, hold: bool = True) -> Iterator[Path]:
    """``run`` held by this process alone while the block runs: the build's folder lock
    (`s2i_data.lock.FolderLock`) on RUN/.lock, its holder named in the refusal a second writer
    gets. The kernel frees it when the holder dies, however it dies (kill -9 leaves nothing stale).
    ``hold=False`` (a DDP rank other than 0, which writes nothing) takes nothing."""
    run = Path(run)
    if not hold:
        yield run
        return
    guard = lock.FolderLock(run, run / LOCK, what="training or evaluation", option="--run")
    try:
        guard.acquire()
    except lock.LockError as e:
        raise RunLockError(str(e)) from None
    try:
        guard.claim()
        yield run
    finally:
        guard.release()


def check_build(build: Build) -> Build:
    """``build`` when the S2I networks can take its samples; otherwise one line naming the setting."""
    rec = build.record()
    if rec["frames"] != NET_INPUT["frames"]:
        raise RunError(f"{build} was built with --segment-seconds {rec['segment_seconds']:g} "
                       f"({rec['frames']} log-mel frames); the S2I networks take 1 s windows (100 frames): "
                       "rebuild with --segment-seconds 1")
    if rec["image_size"] != NET_INPUT["image_size"]:
        raise RunError(f"{build} was built with --image-size {rec['image_size']}; the S2I networks draw "
                       f"{NET_INPUT['image_size']} px pictures: rebuild with --image-size 96")
    if rec["mel_bins"] != NET_INPUT["mel_bins"]:
        raise RunError(f"{build} holds {rec['mel_bins']} mel bands; the S2I networks take 128")
    return build


def open_build(cfg) -> Build:
    """A trainer's build, reached as its config says and checked against the networks."""
    return check_build(Build.open(cfg.data, cfg.shard_url, cfg.cache_dir, cfg.skip_bad_samples))


def build_record(state: dict) -> dict:
    """The build a checkpoint was trained on (segment seconds, sample rate, shapes, fingerprint),
    checked: a run folder comes from somebody else, and these numbers go to ffmpeg."""
    given = state.get("build") or {}
    rec = {**LEGACY_BUILD, **(given if isinstance(given, dict) else {})}
    try:
        seconds, rate = float(rec["segment_seconds"]), int(rec["sample_rate"])
    except (TypeError, ValueError):
        seconds, rate = -1.0, -1
    if not (0 < seconds <= 60 and 8000 <= rate <= 384000):
        raise RunError(f"the checkpoint's build record is not usable (segment_seconds {rec['segment_seconds']!r}, "
                       f"sample_rate {rec['sample_rate']!r})")
    return {**rec, "segment_seconds": seconds, "sample_rate": rate}


def autoencoder_state(run: str | Path, device: torch.device | str = "cpu", log=None, finished: bool = True) -> dict:
    """The stage-1 checkpoint, refused when absent (or, with ``finished``, not trained to the end),
    and checked (`check_autoencoder`) before anything is built from it."""
    run = Path(run)
    state = checkpoint.load(run / AUTOENCODER, device, log)
    if state is None:
        raise RunError(f"{run / AUTOENCODER} not found: train the autoencoder first (s2i-model train-autoencoder)")
    cfg = check_autoencoder(state, run / AUTOENCODER)
    if finished and state["epoch"] < cfg.epochs:
        raise RunError(f"the autoencoder in {run} is at epoch {state['epoch']} of {cfg.epochs}: finish it first")
    return state


def _common(state: dict, where: Path | str) -> dict:
    """What every checkpoint of a run holds and readers use: whole epochs, a config (naming its
    build, where it does)."""
    untrusted.epoch(state.get("epoch"), f"{where}: epoch")
    cfg = untrusted.mapping(state.get("config"), f"{where}: config")
    if "data" in cfg and not isinstance(cfg["data"], str):
        raise untrusted.Untrusted(f"{where}: config.data {cfg['data']!r} is not the location of a build")
    return cfg


def check_autoencoder(state: dict, where: Path | str) -> AutoencoderConfig:
    """The autoencoder a checkpoint describes, once its sizes are in range, its weights exactly
    those of that network, and its normaliser usable."""
    raw = untrusted.net_config(_common(state, where), str(where), "emb", "width")
    untrusted.epoch(raw.get("epochs", 0), f"{where}: config.epochs")
    cfg = from_dict(AutoencoderConfig, raw)
    checkpoint.check_net(lambda: AudioAutoencoder(cfg.emb, cfg.width), state.get("model"), f"{where}: model")
    untrusted.normaliser(state.get("normalizer"), f"{where}: normalizer")
    return cfg


def load_encoder(run: str | Path, device: torch.device | str = "cpu",
                 log=None) -> tuple[torch.nn.Module, AutoencoderConfig, Normalizer]:
    """The trained, frozen encoder (eval mode, no gradients), its config and its normaliser."""
    return encoder_from(autoencoder_state(run, device, log), device)


def encoder_from(state: dict, device: torch.device | str = "cpu") -> tuple[torch.nn.Module, AutoencoderConfig, Normalizer]:
    """The encoder of a checkpoint `autoencoder_state` has checked."""
    cfg = from_dict(AutoencoderConfig, untrusted.net_config(state["config"], AUTOENCODER, "emb", "width"))
    ae = AudioAutoencoder(cfg.emb, cfg.width)
    ae.load_state_dict(state["model"])
    encoder = ae.encoder.to(device).eval()
    for p in encoder.parameters():
        p.requires_grad_(False)
    return encoder, cfg, Normalizer(**untrusted.normaliser(state["normalizer"], AUTOENCODER))


def translator_state(run: str | Path, device: torch.device | str = "cpu", log=None) -> dict:
    """The stage-2 checkpoint, its generator's sizes and weights checked (`generator_maker`)."""
    run = Path(run)
    state = checkpoint.load(run / TRANSLATOR, device, log)
    if state is None:
        raise RunError(f"{run} holds no trained translator ({TRANSLATOR}): run s2i-model train-translator")
    return check_translator(state, run / TRANSLATOR)


def check_translator(state: dict, where: Path | str) -> dict:
    """A translator checkpoint whose recorded autoencoder sizes are in range and whose generator
    weights are exactly those of the generator they describe."""
    _common(state, where)
    checkpoint.check_net(generator_maker(state, where), state.get("G"), f"{where}: G")
    return state


def generator_maker(state: dict, where: Path | str):
    """What builds a translator checkpoint's generator: its recorded autoencoder's E and width, in range."""
    ae = untrusted.net_config(state.get("autoencoder"), str(where), "emb", "width", section="autoencoder")
    narrow = generator_narrow(state)
    return lambda: DenseGenerator(ae["emb"], ae["width"], narrow=narrow)


def generator_narrow(state: dict | None) -> bool | None:
    """Whether a translator checkpoint's generator has the narrow-width adaptations
    (`DenseGenerator`'s ``narrow``): as the checkpoint records; for one that does not say (from
    before they existed, or written by other code), whether its weights hold a BatchNorm before
    the RGB output; None (the width decides) for no checkpoint."""
    if state is None:
        return None
    gen = state.get("generator") or {}
    said = gen.get("narrow") if isinstance(gen, dict) else gen
    if said is not None:
        if not isinstance(said, bool):
            raise untrusted.Untrusted(f"{TRANSLATOR}: generator.narrow {said!r} is not true or false")
        return said
    return "layers.transition6.1.weight" not in untrusted.mapping(state.get("G") or {}, f"{TRANSLATOR}: G")


def load_generator(run: str | Path, device: torch.device | str = "cpu") -> torch.nn.Module:
    """The trained generator in eval mode (its test-time dropout stays on: one sound, many pictures)."""
    state = translator_state(run, device)
    G = generator_maker(state, Path(run) / TRANSLATOR)()
    G.load_state_dict(state["G"])
    return G.to(device).eval()


# ---- any model's run folder (S2I or a comparison model, docs/models.md)
#     RUN/aivae.pt, RUN/aivaegan.pt, RUN/mmgan.pt    a comparison model: its networks, optimisers, config,
#     build record (mmgan: all three stages and the stage it is at)
AIVAE = "aivae.pt"
AIVAEGAN = "aivaegan.pt"
MMGAN = "mmgan.pt"
SOUND2SCENE = "sound2scene.pt"
REFERENCE = "reference.json"  # a reference row of a comparison (evaluate/reference.py): retrieval or real frames
MODEL_FILES = {"s2i": TRANSLATOR, "aivae": AIVAE, "aivaegan": AIVAEGAN, "mmgan": MMGAN, "sound2scene": SOUND2SCENE}


def run_model(run: str | Path) -> str:
    """Which model a run folder holds, from its checkpoint's name (a current or previous copy)."""
    run = Path(run)
    if (run / REFERENCE).is_file():
        from s2i_model.evaluate.reference import read_reference

        return read_reference(run)["model"]
    for name, file in MODEL_FILES.items():
        if name != "s2i" and ((run / file).exists() or checkpoint.previous(run / file).exists()):
            return name
    return "s2i"


def model_path(run: str | Path, model: str) -> Path:
    """The file a run's model lives in: its checkpoint, or a reference row's record."""
    return Path(run) / (REFERENCE if (Path(run) / REFERENCE).is_file() else MODEL_FILES[model])


def model_state(run: str | Path, device: torch.device | str = "cpu", log=None) -> tuple[str, dict]:
    """(model name, its final-stage checkpoint): translator.pt for S2I, RUN/<model>.pt otherwise."""
    model = run_model(run)
    if model == "s2i":
        return model, translator_state(run, device, log)
    if (Path(run) / REFERENCE).is_file():  # a reference row: nothing trained, its record stands in
        from s2i_model.evaluate.reference import read_reference

        record = read_reference(Path(run))
        return model, {"config": {"data": record["data"]}, "epoch": None, "build": record["build"], "reference": record}
    state = checkpoint.load(Path(run) / MODEL_FILES[model], device, log)
    if state is None:  # pragma: no cover - run_model saw the file
        raise RunError(f"{run} holds no trained {model}")
    _common(state, Path(run) / MODEL_FILES[model])
    return model, state


class VaeModel:
    """A trained AIVAE / AIVAEGAN as a `model.SoundToImage`: n pictures of a sound are n draws of
    the latent f ~ q(f|a), decoded (`seeded_pictures`' seeding rule)."""

    def __init__(self, name: str, vae: torch.nn.Module, norm: Normalizer, device: torch.device, build: dict) -> None:
        self.name, self.vae, self.norm, self.device, self.build = name, vae, norm, device, build

    @property
    def window(self) -> tuple[float, int]:
        return float(self.build["segment_seconds"]), int(self.build["sample_rate"])

    @torch.no_grad()
    def embed(self, mels: torch.Tensor) -> torch.Tensor:
        """The posterior means μ of normalised log-mels: what the sound says, without the draw."""
        return self.vae.encode(mels.to(self.device))[0]

    @torch.no_grad()
    def sound_pictures(self, mels: torch.Tensor, n: int, seed: int | None = 0) -> torch.Tensor:
        from s2i_model.model import seeded_pictures

        return next(seeded_pictures(self.vae.pictures, mels.to(self.device), n, seed))


class MmganModel(VaeModel):
    """A trained multimodal-feature GAN as a `model.SoundToImage`: sound → its multimodal feature →
    G1 → G2; n pictures of a sound differ by the U-Nets' test-time dropout (pix2pix's noise)."""

    @torch.no_grad()
    def embed(self, mels: torch.Tensor) -> torch.Tensor:
        """The multimodal features of normalised log-mels (the hidden layer before its activation)."""
        return self.vae.sound_feature(mels.to(self.device))


class Sound2SceneModel(VaeModel):
    """A trained Sound2Scene as a `model.SoundToImage`: sound → the audio encoder's feature → the
    frozen IC-GAN generator; n pictures of a sound are n noise vectors (the paper's inference)."""

    @torch.no_grad()
    def embed(self, mels: torch.Tensor) -> torch.Tensor:
        """The audio features (unit norm) of normalised log-mels: where sounds land in the visual space."""
        return self.vae.audio_encoder(mels.to(self.device))


def load_model(run: str | Path, device: torch.device | str = "auto"):
    """The run's trained model as a `model.SoundToImage`: `imagine.Translator` for an S2I run,
    `VaeModel` for an AIVAE or AIVAEGAN run, `MmganModel` for a multimodal-feature GAN run.
    Inference imports no trainer."""
    from s2i_model.device import pick_device

    dev = pick_device(str(device))
    model = run_model(run)
    if model == "s2i":
        from s2i_model.imagine import Translator

        return Translator.load(Path(run), str(device))
    if (Path(run) / REFERENCE).is_file():
        from s2i_model.evaluate.reference import load_reference

        return load_reference(Path(run), str(device))
    _, state = model_state(run, dev)
    where = str(Path(run) / MODEL_FILES[model])
    if model in ("sound2scene", "mmgan") and not isinstance(state.get("stage"), str):
        raise untrusted.Untrusted(f"{where}: stage {state.get('stage')!r} is not a stage name")
    norm = Normalizer(**untrusted.normaliser(state.get("normalizer"), f"{where}: normalizer"))
    if model == "sound2scene":
        from s2i_model.nets.sound2scene import Sound2Scene

        if state["stage"] != "audio":
            raise RunError(f"Sound2Scene in {run} is still at its {state['stage']} stage: finish training it first")
        width = untrusted.net_config(state["config"], where, "width")["width"]
        net = checkpoint.build(lambda: Sound2Scene(width), state.get("nets"), f"{where}: nets")
        return Sound2SceneModel(model, net.to(dev).eval(), norm, dev, build_record(state))
    if model == "mmgan":
        from s2i_model.nets.mmgan import MmGan

        if state["stage"] != "gan":
            raise RunError(f"the multimodal-feature GAN in {run} is still at its {state['stage']} stage: "
                           "finish training it first")
        classes = untrusted.number(state.get("classes"), f"{where}: classes", **untrusted.NET_SIZES["classes"])
        width = untrusted.net_config(state["config"], where, "width")["width"]
        net = checkpoint.build(lambda: MmGan(classes, width), state.get("nets"), f"{where}: nets")
        return MmganModel(model, net.to(dev).eval(), norm, dev, build_record(state))
    from s2i_model.nets.aivae import MODELS

    cfg = untrusted.net_config(state["config"], where, "latent", "width")
    vae = checkpoint.build(lambda: MODELS[model](cfg["latent"], cfg["width"]), state.get("vae"), f"{where}: vae")
    return VaeModel(model, vae.to(dev).eval(), norm, dev, build_record(state))


# ---- what a comparison states about each model (s2i_model/evaluate/report.py)
# The labels each model's training reads besides the sound-frame pairs, declared here once: a
# model that learns from class labels is not on equal terms with one that learns from pairs alone.
LABELS_USED = {
    "s2i": "none (sound-frame pairs only)",
    "aivae": "none (sound-frame pairs only)",
    "aivaegan": "none (sound-frame pairs only)",
    "mmgan": "class labels",
    "sound2scene": "none (frames alone, then sound-frame pairs)",
    "retrieval": "none (copies train frames; the space is its model's)",
    "real": "none (the test sound's own frame: the ceiling)",
}


def labels_used(model: str) -> str:
    return LABELS_USED.get(model, "not declared")


def parameter_count(model) -> int:
    """Parameters of the networks a loaded model (`load_model`) draws with: those of every module
    that runs while it pictures one sound. Training-only nets (S2I's audio decoder and D, AIVAEGAN's
    D, the multimodal GAN's frame encoder and Ds) sit in the same objects but never run here, and a
    layer shared by two nets counts once."""
    if not hasattr(model, "sound_pictures"):  # real frames: no network draws them
        return 0
    used: dict[int, int] = {}

    def seen(module, _inputs, _output) -> None:
        used.update((id(p), p.numel()) for p in module.parameters(recurse=False))

    # the model's own nets, and those of an object it draws through (retrieval's space model)
    held = list(vars(model).values())
    held += [v for h in held if not isinstance(h, torch.nn.Module) and hasattr(h, "sound_pictures")
             for v in vars(h).values()]
    hooks = [m.register_forward_hook(seen) for net in held if isinstance(net, torch.nn.Module) for m in net.modules()]
    dev = torch.device(model.device)
    try:  # a picture drawn on the side: the caller's random state is left as it was
        with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
            rec = getattr(model, "build", None) or LEGACY_BUILD
            model.sound_pictures(torch.zeros(1, 1, int(rec.get("mel_bins", 128)), int(rec.get("frames", 100)),
                                             device=dev), 1, None)
    finally:
        for h in hooks:
            h.remove()
    return sum(used.values())
