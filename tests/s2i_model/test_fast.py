"""The fast path of live and imagine (s2i_model/fast.py): each rewrite checked against the torch
layer it replaces, the whole path against the eager networks' pictures for the same seed, and
every fall-back to eager with its one line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from typer.testing import CliRunner

from s2i_model import checkpoint, fast
from s2i_model.cli import app
from s2i_model.models.s2i import AUTOENCODER, TRANSLATOR
from s2i_model.models.s2i.config import AutoencoderConfig
from s2i_model.models.s2i.load import Translator
from s2i_model.models.s2i.nets import AudioAutoencoder, DenseGenerator

EMB, WIDTH = 64, 0.0625


def random_stats(bn: nn.BatchNorm2d, g: torch.Generator) -> nn.BatchNorm2d:
    c = bn.num_features
    bn.running_mean.copy_(torch.randn(c, generator=g) * 0.3)
    bn.running_var.copy_(torch.rand(c, generator=g) * 2 + 0.2)
    bn.weight.data.copy_(torch.rand(c, generator=g) + 0.5)
    bn.bias.data.copy_(torch.randn(c, generator=g) * 0.2)
    return bn.eval()


@pytest.mark.parametrize("transposed", [False, True])
def test_a_folded_batchnorm_is_the_eval_batchnorm_it_replaces(transposed):
    g = torch.Generator().manual_seed(1)
    conv = (nn.ConvTranspose2d if transposed else nn.Conv2d)(5, 7, 3, 1, 1)
    bn = random_stats(nn.BatchNorm2d(7), g)
    x = torch.randn(2, 5, 9, 11, generator=g)
    with torch.no_grad():
        want = bn(conv(x))  # torch's own BatchNorm in eval mode
        fast.fold_batchnorm(conv, bn)
        got = conv(x)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)


@pytest.mark.parametrize("kernel,stride,padding", [(3, 1, 1), (3, 1, 0), (2, 1, 0), ((8, 6), 1, 0), ((5, 3), 1, (2, 1)),
                                                    (4, 2, 1)])
def test_a_transposed_convolution_becomes_the_convolution_it_equals(kernel, stride, padding):
    g = torch.Generator().manual_seed(2)
    ct = nn.ConvTranspose2d(6, 4, kernel, stride, padding)
    with torch.no_grad():
        ct.weight.copy_(torch.randn(ct.weight.shape, generator=g))
        ct.bias.copy_(torch.randn(4, generator=g))
    x = torch.randn(3, 6, 5, 7, generator=g)
    conv = fast.as_convolution(ct)
    assert not isinstance(conv, nn.ConvTranspose2d)  # rewritten, not handed back
    with torch.no_grad():
        torch.testing.assert_close(conv(x), ct(x), rtol=0, atol=1e-4)


def test_the_masks_are_the_draws_dropout2d_makes_from_the_same_seed():
    ones = torch.ones(3, 8, 4, 4)
    torch.manual_seed(11)
    want = [F.dropout2d(ones[:, :c], p, training=True) for c, p in ((8, 0.15), (5, 0.5))]
    torch.manual_seed(11)
    got = fast.draw_masks(3, [8, 5], [0.15, 0.5])
    for w, m in zip(want, got):
        torch.testing.assert_close(w, m.expand_as(w), rtol=0, atol=0)


def train(tiny_build, folder: Path, narrow: str) -> Path:
    """A width-1/16 run trained one epoch a stage on the tests' tiny build (``narrow`` off: the paper's
    generator, a BatchNorm before its tanh; on: the cpu preset's). Trained weights, not random ones: an untrained network
    with its BatchNorm statistics set from data is chaotic (a bf16 rounding grows into a different
    picture; the fast path refuses it and keeps the eager networks, which the tests below show), and
    one with the textbook statistics saturates its tanh, which hides every difference."""
    from s2i_model.models.s2i.config import TranslatorConfig
    from s2i_model.models.s2i.train_autoencoder import train_autoencoder
    from s2i_model.models.s2i.train_translator import train_translator

    run = folder / "run"
    quiet = dict(log=lambda *_: None)
    train_autoencoder(AutoencoderConfig(data=str(tiny_build), run=str(run), emb=EMB, width=WIDTH, epochs=1,
                                        batch_size=8, workers=0, device="cpu"), **quiet)
    train_translator(TranslatorConfig(data=str(tiny_build), run=str(run), epochs=1, batch_size=8, workers=0,
                                      device="cpu", narrow_generator=narrow), **quiet)
    return run


@pytest.fixture(scope="module")
def trained(tiny_build, tmp_path_factory) -> Path:
    return train(tiny_build, tmp_path_factory.mktemp("fast"), "off")


@pytest.fixture(scope="module")
def translator(trained) -> Translator:
    return Translator.load(trained, "cpu")


def mels(k: int = 4, seed: int = 5) -> torch.Tensor:
    return torch.rand(k, 1, 128, 100, generator=torch.Generator().manual_seed(seed)) * 2 - 1


@pytest.mark.parametrize("backend", ["torch", "openvino"])
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_the_fast_path_draws_the_eager_pictures_for_the_same_seed(translator, backend, precision, monkeypatch):
    ran = precision
    if precision == "bf16" and not fast.bf16_supported(backend):
        if backend == "torch":  # torch emulates bf16 (slower, the same roundings): its path is tested here too
            monkeypatch.setattr(fast, "bf16_supported", lambda _backend: True)
        else:  # OpenVINO has no bf16 on such a CPU: the path says so and runs fp32
            ran = "fp32"
    said: list[str] = []
    quick = fast.accelerate(translator, backend, precision, 1, log=said.append)
    kind = fast.OpenVinoNet if backend == "openvino" else fast.TorchNet
    assert isinstance(quick.generator, kind) and isinstance(quick.encoder, kind), said
    assert said and said[0].startswith(f"fast path: {backend} {ran}"), said
    assert ("this CPU has no native bf16: fp32" in said[0]) == (ran != precision), said
    x = mels()
    eager = translator.sound_pictures(x, 3, 7)
    got = quick.sound_pictures(x, 3, 7)
    assert got.shape == eager.shape == (4, 3, 3, 96, 96)
    diff = (got - eager).abs()
    if ran == "fp32":
        assert float(diff.max()) < 1e-3 and float(diff.mean()) < 1e-5  # sums in another order
    else:  # bf16: within the stated tolerance, and close on average
        assert float(diff.max()) <= fast.TOLERANCE["bf16"] and float(diff.mean()) < 0.01
    # the seed decides the masks: another seed, other pictures, on both paths alike
    other = quick.sound_pictures(x, 3, 8)
    assert float((other - got).abs().mean()) > 5 * float(diff.mean()) + 1e-3
    torch.testing.assert_close(quick.sound_pictures(x, 3, 7), got, rtol=0, atol=0)


def test_the_narrow_generator_and_imagines_byte_pictures_are_the_eager_ones(tiny_build, tmp_path):
    tr = Translator.load(train(tiny_build, tmp_path, "on"), "cpu")  # no BatchNorm before its tanh, scaled dropout
    quick = fast.accelerate(tr, "openvino", "fp32", 1, log=lambda _s: None)
    z = tr.embed(mels(6))
    a, b = quick.pictures(z, 5, seed=3, per_call=8), tr.pictures(z, 5, seed=3, per_call=8)
    assert a.dtype == np.uint8 and a.shape == b.shape == (6, 5, 96, 96, 3)
    d = np.abs(a.astype(int) - b.astype(int))
    assert d.max() <= 1 and (d > 0).mean() < 1e-3


def test_a_model_without_a_fast_path_keeps_its_networks_with_one_line(translator):
    class Other:  # another registered model's loaded form: it draws pictures, but is not S2I's translator
        def sound_pictures(self, mels, n, seed=0):
            return torch.zeros(len(mels), n, 3, 96, 96)

    said: list[str] = []
    other = Other()
    assert fast.accelerate(other, log=said.append) is other
    assert said == ["fast path: none for this model (S2I on the CPU only); eager networks"]
    said.clear()
    assert fast.accelerate(translator, "eager", log=said.append) is translator and said == []


def test_a_chaotic_network_is_refused_in_bf16_and_keeps_its_eager_networks(monkeypatch):
    # untrained networks whose BatchNorm statistics come from data: a bf16 rounding in one layer
    # grows into another picture (measured: up to 1.6 on the [-1, 1] scale)
    torch.manual_seed(0)
    ae, G = AudioAutoencoder(EMB, WIDTH), DenseGenerator(EMB, WIDTH, narrow=False)
    for m in [*ae.modules(), *G.modules()]:
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = None  # cumulative statistics of the pass below
    x = mels(32, seed=9)
    with torch.no_grad():
        ae.train()(x)
        G.train()(ae.encoder.eval()(x))
    from s2i_model.data import Normalizer

    chaotic = Translator(ae.encoder.eval(), G.eval(), Normalizer(-13.8, 4.0), torch.device("cpu"))
    said: list[str] = []
    monkeypatch.setattr(fast, "bf16_supported", lambda _backend: True)  # emulated where the CPU has no bf16
    assert fast.accelerate(chaotic, "torch", "bf16", 1, log=said.append) is chaotic
    assert len(said) == 1 and said[0].startswith("fast path: torch bf16 differs from the eager pictures by ") \
        and said[0].endswith("(> 0.25); eager networks"), said


def test_pictures_beyond_the_tolerance_fall_back_to_eager_with_one_line(translator, monkeypatch):
    monkeypatch.setitem(fast.TOLERANCE, "fp32", -1.0)  # any difference at all (even none) is too much
    said: list[str] = []
    assert fast.accelerate(translator, "torch", "fp32", 1, log=said.append) is translator
    assert len(said) == 1 and "differs from the eager pictures" in said[0] and "eager networks" in said[0], said


def test_unknown_choices_are_one_line():
    with pytest.raises(fast.FastPathError, match="unknown fast path 'gpu'"):
        fast.choose("gpu")
    with pytest.raises(fast.FastPathError, match="unknown precision 'int4'"):
        fast.choose("auto", "int4")


WITHOUT_OPENVINO = """
import sys
sys.modules["openvino"] = None  # as if it were not installed: importing it raises ImportError
from s2i_model import fast
print(fast.choose("auto", "fp32"))
print(fast.choose("openvino", "fp32").line())
"""


def test_without_openvino_auto_is_torch_and_asking_for_it_says_so_in_one_line():
    r = subprocess.run([sys.executable, "-c", WITHOUT_OPENVINO], capture_output=True, text=True, timeout=120,
                       cwd=Path(__file__).resolve().parents[2])
    assert r.returncode == 0, r.stderr
    auto, asked = r.stdout.splitlines()
    assert auto == "Choice(backend='torch', precision='fp32', reason='')"
    assert asked == ("fast path: torch fp32 (openvino asked for, but openvino is not installed: "
                     "pip install 's2i[fast]'; torch instead)")


# What a process that imagines twice, then has a signal handler run, goes through (a notebook; a
# pytest worker after an in-process training). A child process: a crash must not take the test run.
TWICE_THEN_A_SIGNAL = """
import ctypes, faulthandler, gc, signal, subprocess, sys
import torch
from s2i_model import fast
from s2i_model.models.s2i.load import Translator

class Stack(ctypes.Structure):
    _fields_ = [("sp", ctypes.c_void_p), ("flags", ctypes.c_int), ("size", ctypes.c_size_t)]

def stack():
    s = Stack()
    assert ctypes.CDLL(None).sigaltstack(None, ctypes.byref(s)) == 0
    return s.sp, s.size

faulthandler.enable()  # pytest's workers run with it: it gives the main thread an alternate stack
before = stack()
seen = []
signal.signal(signal.SIGCHLD, lambda *_: seen.append(1))  # as torch's DataLoader sets one
tr = Translator.load(sys.argv[1], "cpu")
for _ in range(2):
    quick = fast.accelerate(tr, "openvino", "fp32", 1, log=lambda _s: None)
    assert isinstance(quick.generator, fast.OpenVinoNet)
    assert stack() == before, (stack(), before)
    del quick  # its encoder, then its generator: freed in the order they were made
    gc.collect()
    assert stack() == before, (stack(), before)
subprocess.run([sys.executable, "-c", "pass"], check=True)  # a child ends: SIGCHLD, its handler runs
print("alive", bool(seen))
"""


def test_a_process_that_imagined_twice_survives_its_next_signal(trained):
    r = subprocess.run([sys.executable, "-c", TWICE_THEN_A_SIGNAL, str(trained)], capture_output=True, text=True,
                       timeout=300, cwd=Path(__file__).resolve().parents[2])
    assert r.returncode == 0 and r.stdout.split() == ["alive", "True"], (r.returncode, r.stdout, r.stderr[-2000:])


# ---- imagine on the command line


@pytest.fixture(scope="module")
def run(trained) -> Path:
    return trained


def test_imagine_uses_the_fast_path_and_gives_the_eager_grid(run, tmp_path):
    rng = np.random.default_rng(0)
    wav = tmp_path / "noise.wav"
    sf.write(wav, (0.2 * rng.standard_normal(3 * 16000) * np.linspace(0, 1, 3 * 16000)).astype(np.float32), 16000)
    grids = {}
    for path in ("eager", "openvino", "torch"):
        r = CliRunner().invoke(app, ["imagine", str(wav), "--run", str(run), "-n", "3", "--fast", path,
                                     "-o", str(tmp_path / f"{path}.png")])
        assert r.exit_code == 0 and "fast path" not in r.output, r.output  # the path asked for: no line
        grids[path] = np.asarray(Image.open(tmp_path / f"{path}.png")).astype(int)
    for path in ("openvino", "torch"):
        d = np.abs(grids[path] - grids["eager"])
        assert d.max() <= 1 and (d > 0).mean() < 1e-3, (path, d.max(), (d > 0).mean())
    r = CliRunner().invoke(app, ["imagine", str(wav), "--run", str(run), "--fast", "gpu"])
    assert r.exit_code == 2 and "unknown fast path 'gpu'" in r.output and "Traceback" not in r.output
