"""A run folder from somebody else: every checkpoint of every model, edited as a hostile sharer
would (sizes that would fill memory, NaN, strings where numbers go, missing parts, tensors of
other shapes), is one line and a non-zero exit from `imagine`, `evaluate` and a resumed training,
before any network is built from it; never an "internal error". Hostile training logs and
embedding caches are refused or recomputed, never a crash."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

from s2i_model import checkpoint
from s2i_model.models.s2i.config import AutoencoderConfig, TranslatorConfig
from s2i_model.models.aivae.train import train_vae
from s2i_model.models.aivae.config import AivaeConfig
from s2i_model.models.aivaegan.config import AivaeganConfig
from s2i_model.models.s2i.train_autoencoder import train_autoencoder
from s2i_model.models.mmgan.train import train_mmgan
from s2i_model.models.mmgan.config import MmganConfig
from s2i_model.models.sound2scene.train import train_sound2scene
from s2i_model.models.sound2scene.config import Sound2SceneConfig
from s2i_model.models.s2i.train_translator import train_translator

QUIET = dict(log=lambda *_: None)
LOOP = dict(batch_size=8, workers=0, grid_every=0, device="cpu")
# the command that resumes each checkpoint, at the sizes it was trained with, one epoch further
RESUME = {
    "autoencoder.pt": ["train-autoencoder", "--emb", "16", "--width", "0.0625", "--optimizer", "adam", "--epochs", "2"],
    "translator.pt": ["train-translator", "--optimizer", "adam", "--epochs", "2", "--grid-every", "0"],
    "aivae.pt": ["train-aivae", "--latent", "8", "--width", "0.0625", "--epochs", "2", "--grid-every", "0"],
    "aivaegan.pt": ["train-aivaegan", "--latent", "8", "--width", "0.0625", "--epochs", "2", "--grid-every", "0"],
    "mmgan.pt": ["train-mmgan", "--width", "0.0625", "--epochs-features", "1", "--epochs-multimodal", "1",
                 "--epochs", "2", "--grid-every", "0"],
    "sound2scene.pt": ["train-sound2scene", "--width", "0.0625", "--epochs-visual", "1", "--epochs-generator", "1",
                       "--epochs", "2", "--neighbours", "4", "--grid-every", "0"],
}
NETS = {"autoencoder.pt": "model", "translator.pt": "G", "aivae.pt": "vae", "aivaegan.pt": "vae", "mmgan.pt": "nets",
        "sound2scene.pt": "nets"}
OPTIMISER = {  # an optimiser each resumed training loads (Sound2Scene's finished run loads none)
    "autoencoder.pt": lambda s: s["optimizer"], "translator.pt": lambda s: s["opt_g"], "aivae.pt": lambda s: s["opt"],
    "aivaegan.pt": lambda s: s["opt_d"], "mmgan.pt": lambda s: s["opts"]["opt_d"],
}
SIZE = {  # the size each checkpoint's network is built with: (where it sits, its name)
    "autoencoder.pt": ("config", "emb"), "translator.pt": ("autoencoder", "emb"), "aivae.pt": ("config", "latent"),
    "aivaegan.pt": ("config", "latent"), "mmgan.pt": (None, "classes"), "sound2scene.pt": ("config", "width"),
}


@pytest.fixture(scope="module")
def runs(tiny_build, tmp_path_factory) -> dict[str, Path]:
    """One tiny finished run of every model."""
    root = tmp_path_factory.mktemp("hostile")
    data = str(tiny_build)
    s2i = root / "s2i"
    train_autoencoder(AutoencoderConfig(data=data, run=str(s2i), emb=16, width=0.0625, epochs=1, optimizer="adam",
                                        **{k: v for k, v in LOOP.items() if k != "grid_every"}), **QUIET)
    train_translator(TranslatorConfig(data=data, run=str(s2i), epochs=1, optimizer="adam", **LOOP), **QUIET)
    for cls in (AivaeConfig, AivaeganConfig):
        train_vae(cls(data=data, run=str(root / cls.model), latent=8, width=0.0625, epochs=1, **LOOP), **QUIET)
    train_mmgan(MmganConfig(data=data, run=str(root / "mmgan"), width=0.0625, epochs_features=1, epochs_multimodal=1,
                            epochs=1, **LOOP), **QUIET)
    train_sound2scene(Sound2SceneConfig(data=data, run=str(root / "sound2scene"), width=0.0625, epochs_visual=1,
                                        epochs_generator=1, epochs=1, neighbours=4, **LOOP), **QUIET)
    return {"autoencoder.pt": s2i, "translator.pt": s2i, "aivae.pt": root / "aivae", "aivaegan.pt": root / "aivaegan",
            "mmgan.pt": root / "mmgan", "sound2scene.pt": root / "sound2scene"}


@pytest.fixture(scope="module")
def sound(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("sound") / "noise.wav"
    soundfile.write(path, np.random.default_rng(0).uniform(-0.3, 0.3, 32000).astype(np.float32), 16000)
    return path


def cli(*args, capsys) -> tuple[int, str]:
    """`s2i-model ARGS` as its console script runs it (`cli.main`, the same process: 150 cases)."""
    from s2i_model import cli as model_cli

    argv, sys.argv = sys.argv, ["s2i-model", *map(str, args)]
    code = 0
    try:
        model_cli.main()
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    finally:
        sys.argv = argv
    return code, capsys.readouterr().err


def one_line_failure(code: int, err: str, what: str, progress: bool = False) -> None:
    """Exit ≠ 0 with one line; with ``progress`` (a resumed training) that line, last, may follow
    what the training said before it reached the part refused (a stage's optimisers are made
    once its data is held)."""
    assert code != 0, f"{what}: accepted"
    assert "internal error" not in err and "Traceback" not in err, f"{what}: {err}"
    lines = err.strip().splitlines()
    assert (lines[-1].startswith("error: ") and sum(ln.startswith("error") for ln in lines) == 1) if progress \
        else len(lines) == 1, f"{what}: {err}"


def first_float(sd: dict) -> str:
    return next(k for k, v in sd.items() if v.is_floating_point() and v.dim() > 0)


def set_size(state: dict, file: str, value) -> None:
    section, key = SIZE[file]
    (state[section] if section else state)[key] = value


def hostile_variants(file: str) -> dict:
    """name → edit of the checkpoint ``file`` (a function of its loaded state)."""
    net = NETS[file]

    def reshaped(s):
        k = first_float(s[net])
        s[net][k] = torch.zeros(*(d + 1 for d in s[net][k].shape))

    def nan_weight(s):
        s[net][first_float(s[net])].fill_(math.nan)

    variants = {
        "size of 10**9": lambda s: set_size(s, file, 10**9),
        "size NaN": lambda s: set_size(s, file, math.nan),
        "size a string": lambda s: set_size(s, file, "16"),
        "negative width": lambda s: (s["autoencoder"] if file == "translator.pt" else s["config"]).update(width=-1.0),
        "width of 1e6": lambda s: (s["autoencoder"] if file == "translator.pt" else s["config"]).update(width=1e6),
        "epoch a string": lambda s: s.update(epoch="1"),
        "no config": lambda s: s.pop("config"),
        "config a list": lambda s: s.update(config=[1, 2]),
        "no weights": lambda s: s.pop(net),
        "a tensor of another shape": reshaped,
        "an extra tensor": lambda s: s[net].update({"bogus.weight": torch.zeros(3)}),
        "a weight a string": lambda s: s[net].update({first_float(s[net]): "0.5"}),
        "NaN weights": nan_weight,
    }
    if file != "translator.pt":  # a resumed training makes its normaliser from the build again
        variants["an empty normaliser range (not resumed)"] = lambda s: s.update(normalizer={"lo": 1.0, "hi": 1.0})
        variants["a normaliser of strings (not resumed)"] = lambda s: s.update(normalizer={"lo": "a", "hi": "b", "x": 1})
    if file in ("mmgan.pt", "sound2scene.pt"):
        variants["stage a list"] = lambda s: s.update(stage=["gan"])
    return variants


def resume_variants(file: str) -> dict:
    """Edits only a resumed training reads: optimiser and RNG states, loss histories."""
    variants = {
        "rng garbage": lambda s: s.update(rng={"python": 1, "torch": "x"}),
        "rng an empty list": lambda s: s.update(rng=[]),
        "rng torch state short": lambda s: s["rng"].update(torch=torch.zeros(7, dtype=torch.uint8)),
    }
    opt = OPTIMISER.get(file)
    if opt:
        def other_shape(s):
            per = next(iter(opt(s)["state"].values()))
            per["exp_avg"] = torch.zeros(2, 2, 2)

        variants["an optimiser state of another shape"] = other_shape
        variants["an optimiser setting a string"] = lambda s: opt(s)["param_groups"][0].update(eps="tiny")
        variants["an optimiser with amsgrad switched on"] = lambda s: opt(s)["param_groups"][0].update(amsgrad=True)
        variants["optimiser states missing"] = lambda s: opt(s).update(state={0: {"step": torch.tensor(1.0)}})
        variants["an optimiser of another parameter count"] = lambda s: opt(s)["param_groups"][0].update(params=[0])
    if file == "translator.pt":
        variants["adv_history of strings"] = lambda s: s.update(adv_history=["a"])
        variants["g_steps NaN"] = lambda s: s.update(g_steps=math.nan)
    if file in ("mmgan.pt", "sound2scene.pt"):
        variants["opts a string"] = lambda s: s.update(opts="x")
        variants["stage unknown"] = lambda s: s.update(stage="elsewhere")
    if file == "sound2scene.pt":
        variants["best of another shape"] = lambda s: s["best"].update(
            audio_encoder={k: torch.zeros(1) for k in s["best"]["audio_encoder"]})
    return variants


def edited_copy(runs: dict, file: str, edit, tmp_path: Path) -> Path:
    run = tmp_path / f"run-{len(list(tmp_path.iterdir()))}"
    shutil.copytree(runs[file], run)
    state = checkpoint.load(run / file)
    edit(state)
    torch.save(state, run / file)
    checkpoint.previous(run / file).unlink(missing_ok=True)  # no older copy to fall back on
    return run


@pytest.mark.parametrize("file", list(NETS))
def test_a_hostile_checkpoint_is_one_line_for_imagine_evaluate_and_a_resumed_training(runs, file, tiny_build, sound,
                                                                                       tmp_path, capsys):
    for name, edit in hostile_variants(file).items():
        run = edited_copy(runs, file, edit, tmp_path)
        code, err = cli("imagine", sound, "--run", run, "-o", tmp_path / "out.png", "--device", "cpu", capsys=capsys)
        one_line_failure(code, err, f"imagine, {file} with {name}")
        code, err = cli("evaluate", "--run", run, "--data", tiny_build, "--samples", "2", "--device", "cpu",
                        capsys=capsys)
        one_line_failure(code, err, f"evaluate, {file} with {name}")
        assert not (run / "evaluation.json").exists()
        if "(not resumed)" in name:
            continue
        code, err = cli(*RESUME[file], "--data", tiny_build, "--run", run, "--batch-size", "8", "--workers", "0",
                        "--device", "cpu", capsys=capsys)
        one_line_failure(code, err, f"resuming {file} with {name}")
    assert not (tmp_path / "out.png").exists()


@pytest.mark.parametrize("file", list(NETS))
def test_a_hostile_training_state_is_one_line_when_the_training_resumes(runs, file, tiny_build, tmp_path, capsys):
    for name, edit in resume_variants(file).items():
        run = edited_copy(runs, file, edit, tmp_path)
        before = (run / file).read_bytes()
        code, err = cli(*RESUME[file], "--data", tiny_build, "--run", run, "--batch-size", "8", "--workers", "0",
                        "--device", "cpu", capsys=capsys)
        one_line_failure(code, err, f"resuming {file} with {name}", progress=True)
        assert (run / file).read_bytes() == before, f"{file} with {name} was written over"


def test_the_sizes_are_checked_before_any_network_is_built(runs, sound, tmp_path):
    """A config claiming sizes within range (E = 65536 at width 4) whose network would take 10 GiB,
    with the weights of a small one: refused on their shapes in a process that could not even
    allocate that network (its address space capped at 6 GiB)."""
    def claim(s):
        s["config"].update(emb=65536, width=4.0)

    run = edited_copy(runs, "autoencoder.pt", claim, tmp_path)
    capped = ("import resource, sys; resource.setrlimit(resource.RLIMIT_AS, (6 << 30, 6 << 30)); "
              "sys.argv = ['s2i-model', *sys.argv[1:]]; from s2i_model.cli import main; main()")
    r = subprocess.run([sys.executable, "-c", capped, "imagine", str(sound), "--run", str(run), "-o",
                        str(tmp_path / "out.png"), "--device", "cpu"], capture_output=True, text=True, timeout=300)
    one_line_failure(r.returncode, r.stderr, "E = 65536 at width 4 under a 6 GiB cap")
    assert "autoencoder.pt: model:" in r.stderr and "the network its config describes has" in r.stderr, r.stderr


BAD_ROWS = [
    '{"stage": "translator", "epoch": "one"}',
    '[1, 2, 3]',
    '{"stage": "translator"}',
    '{"stage": "translator", "epoch": 1, "pixel_loss": NaN}',
    '{"stage": "translator", "epoch": 1, "informativity": {"mean": "high", "per_class": {}}}',
    '{"stage": "translator", "epoch": 1, "informativity": {"mean": 0.5, "per_class": {"../x": 0.5}}}',
    "[" * 100_000 + "]" * 100_000,  # nested past the parser's recursion limit
    '{"stage": "translator", "epoch": 1, "informativity": {"mean": 0.5}}',
]


def test_a_hostile_metrics_log_is_one_line_for_evaluate_and_kept_by_a_resumed_training(runs, tiny_build, tmp_path,
                                                                                      capsys):
    for row in BAD_ROWS:
        run = edited_copy(runs, "translator.pt", lambda s: None, tmp_path)
        with open(run / "metrics.jsonl", "a") as f:
            f.write(row + "\n")
        code, err = cli("evaluate", "--run", run, "--data", tiny_build, "--samples", "2", "--device", "cpu",
                        capsys=capsys)
        one_line_failure(code, err, f"evaluate with metrics row {row}")
        assert "metrics.jsonl: line" in err, err
    # the trainer drops only its own redone epochs: a line it cannot read stays, and it goes on
    code, err = cli(*RESUME["translator.pt"], "--data", tiny_build, "--run", run, "--batch-size", "8",
                    "--workers", "0", "--device", "cpu", capsys=capsys)
    assert code == 0, err
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert BAD_ROWS[-1] in lines and json.loads(lines[-1])["epoch"] == 2


def bad_cache(edit):
    def apply(cache):
        edit(cache["train"])
    return apply


BAD_CACHES = {
    "embeddings of another size": bad_cache(lambda t: t.update(emb=torch.zeros(len(t["keys"]), 3))),
    "NaN embeddings": bad_cache(lambda t: t["emb"].fill_(math.nan)),
    "a key that is a path": bad_cache(lambda t: t["keys"].__setitem__(0, "../../x")),
    "a class index out of range": bad_cache(lambda t: t["cls"].fill_(99)),
    "more keys than the split holds": bad_cache(lambda t: t.update(keys=[f"k{i}" for i in range(10000)],
                                                                   emb=torch.zeros(10000, 16),
                                                                   cls=torch.zeros(10000, dtype=torch.long))),
    "a split that is a list": lambda c: c.update(train=[1]),
}


def test_a_hostile_embedding_cache_is_computed_again_by_the_trainer_and_left_out_by_evaluate(runs, tiny_build,
                                                                                           tmp_path, capsys):
    from s2i_data import untrusted

    evaluated = edited_copy(runs, "translator.pt", lambda s: None, tmp_path)
    code, err = cli("evaluate", "--run", evaluated, "--data", tiny_build, "--samples", "2", "--device", "cpu",
                    capsys=capsys)
    assert code == 0, err  # its real-frame classifier (RUN/frame-classifier.pt) serves every copy below
    for name, edit in BAD_CACHES.items():
        run = edited_copy({"translator.pt": evaluated}, "translator.pt", lambda s: None, tmp_path)
        (run / "evaluation.json").unlink()
        cache = checkpoint.load(run / "embeddings.pt")
        edit(cache)
        torch.save(cache, run / "embeddings.pt")
        code, err = cli("evaluate", "--run", run, "--data", tiny_build, "--samples", "2", "--device", "cpu",
                        capsys=capsys)
        assert code == 0 and "internal error" not in err, f"evaluate with {name}: {err}"
        assert "the embedding ceiling is left out" in err, f"evaluate with {name}: {err}"
        assert json.loads((run / "evaluation.json").read_text())["embedding_separability"]["centroid"] is None
        code, err = cli(*RESUME["translator.pt"], "--data", tiny_build, "--run", run, "--batch-size", "8",
                        "--workers", "0", "--device", "cpu", capsys=capsys)
        assert code == 0 and "computing the embeddings again" in err, f"training with {name}: {err}"
        again = checkpoint.load(run / "embeddings.pt")
        untrusted.embedding_split(again["train"], "recomputed", 16, 5)  # a good cache in its place


@pytest.mark.parametrize("content", ["[1, 2]", "{not json", "\x00\x01"])
def test_a_hostile_earlier_evaluation_is_measured_again(runs, tiny_build, tmp_path, capsys, content):
    run = edited_copy(runs, "aivae.pt", lambda s: None, tmp_path)
    (run / "evaluation.json").write_text(content)
    code, err = cli("evaluate", "--run", run, "--data", tiny_build, "--samples", "2", "--device", "cpu", capsys=capsys)
    assert code == 0, err
    assert json.loads((run / "evaluation.json").read_text())["model"] == "aivae"


@pytest.fixture(scope="module")
def evaluated(runs, tiny_build, tmp_path_factory) -> Path:
    """The S2I run once evaluated: it holds its real-frame classifier (RUN/frame-classifier.pt)."""
    run = tmp_path_factory.mktemp("evaluated") / "run"
    shutil.copytree(runs["translator.pt"], run)
    r = subprocess.run([sys.executable, "-m", "s2i_model.cli", "evaluate", "--run", str(run), "--data",
                        str(tiny_build), "--samples", "2", "--device", "cpu"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return run


def test_a_hostile_judges_cache_is_fitted_again(evaluated, tiny_build, tmp_path, capsys):
    """RUN/judges.pt (the cross-fitted judges) with a tensor of another shape: a warning, the judges
    fitted again in its place, the evaluation done."""
    run = edited_copy({"judges.pt": evaluated}, "judges.pt",
                      lambda s: s["states"]["blurred"][1].update({first_float(s["states"]["blurred"][1]): torch.zeros(2, 2)}),
                      tmp_path)
    (run / "evaluation.json").unlink()
    code, err = cli("evaluate", "--run", run, "--data", tiny_build, "--samples", "2", "--device", "cpu", capsys=capsys)
    assert code == 0 and "fitting the judges again" in err, err
    fitted = checkpoint.load(run / "judges.pt")["states"]["blurred"][1]
    assert fitted[first_float(fitted)].dim() == 4  # a convolution's weights again, in the cache's place


def judges_state() -> dict:
    from s2i_model.nets import InformativityClassifier

    return {"classes": ["dog", "water"], "judges": {"dog": InformativityClassifier(2).state_dict()}, "report": {}}


BAD_JUDGES = {
    "a judge of another shape": lambda s: s["judges"]["dog"].update({first_float(s["judges"]["dog"]): torch.zeros(1)}),
    "a judge of a class it does not have": lambda s: s["judges"].update({"../x": s["judges"]["dog"]}),
    "classes a string": lambda s: s.update(classes="dog"),
    "a class that is a path": lambda s: s.update(classes=["dog", "a/b"]),
    "judges a list": lambda s: s.update(judges=[1]),
}


def test_hostile_informativity_judges_are_one_line(evaluated, tiny_build, tmp_path, capsys):
    for name, edit in BAD_JUDGES.items():
        folder = tmp_path / name.replace(" ", "-")
        folder.mkdir()
        state = judges_state()
        edit(state)
        torch.save(state, folder / "informativity.pt")
        code, err = cli("evaluate", "--run", evaluated, "--data", tiny_build, "--samples", "2", "--device", "cpu",
                        "--informativity", folder, capsys=capsys)
        one_line_failure(code, err, f"judges with {name}")


@pytest.mark.parametrize("data", [None, 7, "", ["a"]])
def test_sample_without_a_build_named_by_the_checkpoint_is_one_line(runs, tmp_path, capsys, data):
    """`sample` without --data takes the build the checkpoint names: a checkpoint that names none,
    or names it with something other than text, is one line."""
    def edit(state):
        if data is None:
            state["config"].pop("data", None)
        else:
            state["config"]["data"] = data

    run = edited_copy(runs, "translator.pt", edit, tmp_path)
    code, err = cli("sample", "--run", run, "--out", tmp_path / "pool", capsys=capsys)
    one_line_failure(code, err, f"sample, config.data {data!r}")
    assert "build" in err and not (tmp_path / "pool").exists()
