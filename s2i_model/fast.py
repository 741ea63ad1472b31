"""The fast inference path of `live` and `imagine`: S2I's trained networks rewritten for inference
and run by a CPU runtime, with the same pictures as the eager networks (docs/performance.md, "The
fast path").

What `accelerate` does to a loaded `Translator`, each step kept because bench/live.py showed it:

1. `inference_copy`: every BatchNorm folded into the convolution before it (in eval mode BN is an
   affine map per channel: w' = w·γ/σ, b' = (b − μ)·γ/σ + β); every stride-1 transposed convolution
   rewritten as the convolution it equals (kernel flipped, in/out swapped, padding k − 1 − p); every
   stride-2 one (kernel 4, padding 1) as a 2×2 convolution to 4× the channels, a crop per output
   phase and a pixel shuffle (the same multiply-adds; a 3×3 version with zero taps cost 2.25× in
   those layers and 12 % more time a picture); every test-time dropout a mask that the caller
   hands in. On one CPU thread the transposed convolutions ran at a third of the convolutions'
   arithmetic rate; as convolutions they go through the runtime's best kernels.
2. The masks are drawn from torch's generator exactly as ``F.dropout2d`` draws them (a Bernoulli
   ``[B, C, 1, 1]`` tensor per layer, in layer order, divided by 1 − p), so a seed gives the same
   pictures on every path: `seeded_pictures`, `Translator.pictures`, live's stream.
3. A backend runs the copy: ``openvino`` (the copy exported to ONNX in memory, compiled by
   OpenVINO's CPU plugin, which uses bf16 dot products where the CPU has them) or ``torch``
   (the copy in torch, channels-last, in bf16 where oneDNN supports it). ``auto`` takes OpenVINO
   when it and ``onnx`` are installed (``pip install 's2i[fast]'``), else torch.
4. Before it is used, the fast path draws pictures for one probe window beside the eager networks
   with the same seed; a difference beyond `TOLERANCE` of its precision, or any failure to build
   it, is one line and the eager networks are used instead (``eager`` asks for them outright).

Only S2I's translator has a fast path; another model gets one line and its eager networks.
"""

from __future__ import annotations

import contextlib
import copy
import ctypes
import dataclasses
import io
import sys
import warnings
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from s2i_model.nets.blocks import StochasticDropout2d

BACKENDS = ("auto", "openvino", "torch", "eager")
PRECISIONS = ("auto", "fp32", "bf16")
# largest difference, on the [-1, 1] picture scale, between the fast path's pictures and the eager
# networks' for the same window and seed: fp32 is a reordering of the same sums; bf16 keeps 8 bits
# of mantissa in the products (measured on trained and untrained networks: docs/performance.md)
TOLERANCE = {"fp32": 2e-3, "bf16": 0.25}


class FastPathError(Exception):
    """The fast path could not be built or does not give the eager pictures: one line."""


class MaskSlot(nn.Module):
    """Where a test-time dropout was: multiplies by the caller's mask ``i`` (``Masked.masks``)."""

    def __init__(self, i: int, owner: "Masked") -> None:
        super().__init__()
        self.i = i
        self.owner = [owner]  # a list: not a submodule (no cycle in the module tree)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.owner[0].masks[self.i]


class Masked(nn.Module):
    """A network whose test-time dropouts take their masks as inputs: ``forward(x, *masks)``, so an
    exported graph is deterministic and the masks come from torch's generator."""

    def __init__(self, net: nn.Module, rates: list[float]) -> None:
        super().__init__()
        self.net = net
        self.rates = rates
        self.masks: tuple[torch.Tensor, ...] = ()

    def forward(self, x: torch.Tensor, *masks: torch.Tensor) -> torch.Tensor:
        self.masks = masks
        try:
            return self.net(x)
        finally:
            self.masks = ()


def fold_batchnorm(conv: nn.Module, bn: nn.BatchNorm2d) -> None:
    """Folds eval-mode ``bn`` into ``conv`` (a Conv2d or ConvTranspose2d) in place."""
    scale = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)
    w = conv.weight.detach()
    w = w * (scale[None, :, None, None] if isinstance(conv, nn.ConvTranspose2d) else scale[:, None, None, None])
    bias = conv.bias.detach() if conv.bias is not None else torch.zeros_like(bn.running_mean)
    conv.weight = nn.Parameter(w, requires_grad=False)
    conv.bias = nn.Parameter((bias - bn.running_mean) * scale + bn.bias.detach(), requires_grad=False)


class Upsample2(nn.Module):
    """ConvTranspose2d(kernel 4, stride 2, padding 1) as one 2×2 convolution to 4× the channels over
    the input padded by one, a shifted crop per output phase and PixelShuffle(2): the same
    multiply-adds as the transposed convolution, through the runtime's convolution kernels. Output
    row 2m + a reads input rows m − 1, m with kernel rows 3, 1 (a = 0) or m, m + 1 with kernel rows
    2, 0 (a = 1): the 2×2 window at padded row m + a; the same in columns."""

    TAPS = {0: (3, 1), 1: (2, 0)}  # phase → the kernel index read at the 2×2 window's offsets 0, 1

    def __init__(self, ct: nn.ConvTranspose2d) -> None:
        super().__init__()
        w = ct.weight.detach()  # [in, out, 4, 4]
        cin, cout = w.shape[:2]
        wc = w.new_zeros(2, 2, cout, cin, 2, 2)
        for ah, rows in self.TAPS.items():
            for aw, cols in self.TAPS.items():
                for dh, kh in enumerate(rows):
                    for dw, kw in enumerate(cols):
                        wc[ah, aw, :, :, dh, dw] = w[:, :, kh, kw].t()
        self.cout = cout
        self.conv = nn.Conv2d(cin, 4 * cout, 2, 1, 1, bias=ct.bias is not None)
        self.conv.weight = nn.Parameter(wc.reshape(4 * cout, cin, 2, 2), requires_grad=False)
        if ct.bias is not None:
            self.conv.bias = nn.Parameter(ct.bias.detach().repeat(4), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w, c = x.shape[2], x.shape[3], self.cout
        y = self.conv(x)  # [B, 4C, H + 1, W + 1]: phase (a, b) in channels (2a + b)·C ...
        phases = [y[:, (2 * a + b) * c:(2 * a + b + 1) * c, a:a + h, b:b + w] for a in (0, 1) for b in (0, 1)]
        # pixel_shuffle wants channel c·4 + 2a + b: phases interleaved per output channel
        return F.pixel_shuffle(torch.stack(phases, 2).flatten(1, 2), 2)


def as_convolution(ct: nn.ConvTranspose2d) -> nn.Module:
    """The convolution a transposed convolution equals (itself where no rewrite is known)."""
    if ct.groups != 1 or ct.dilation != (1, 1) or ct.output_padding != (0, 0):
        return ct
    if ct.stride == (1, 1):
        (kh, kw), (ph, pw) = ct.kernel_size, ct.padding
        if ph > kh - 1 or pw > kw - 1:
            return ct
        conv = nn.Conv2d(ct.in_channels, ct.out_channels, ct.kernel_size, 1, (kh - 1 - ph, kw - 1 - pw),
                         bias=ct.bias is not None)
        conv.weight = nn.Parameter(ct.weight.detach().transpose(0, 1).flip(2, 3).contiguous(), requires_grad=False)
        if ct.bias is not None:
            conv.bias = nn.Parameter(ct.bias.detach().clone(), requires_grad=False)
        return conv
    if ct.stride == (2, 2) and ct.kernel_size == (4, 4) and ct.padding == (1, 1):
        return Upsample2(ct)
    return ct


def inference_copy(net: nn.Module) -> Masked:
    """An eval-mode copy of ``net`` for inference (steps 1 and 2 of the module's text); ``net`` is
    left as it was."""
    net = copy.deepcopy(net).eval()
    for mod in list(net.modules()):
        if isinstance(mod, nn.Sequential):
            names = list(mod._modules)
            for a, b in zip(names, names[1:]):
                conv, bn = mod._modules[a], mod._modules[b]
                if isinstance(conv, (nn.Conv2d, nn.ConvTranspose2d)) and isinstance(bn, nn.BatchNorm2d) \
                        and bn.track_running_stats and bn.running_var is not None:
                    fold_batchnorm(conv, bn)
                    mod._modules[b] = nn.Identity()
    rates: list[float] = []
    wrapper = Masked(net, rates)
    for mod in list(net.modules()):
        for name, child in list(mod._modules.items()):
            if isinstance(child, nn.ConvTranspose2d):
                mod._modules[name] = as_convolution(child)
            elif isinstance(child, StochasticDropout2d) and child.always and child.p > 0:
                rates.append(float(child.p))
                mod._modules[name] = MaskSlot(len(rates) - 1, wrapper)
            elif isinstance(child, (nn.Dropout, nn.Dropout2d, StochasticDropout2d)):
                mod._modules[name] = nn.Identity()  # off in eval mode: nothing to draw
    for p in wrapper.parameters():
        p.requires_grad_(False)
    return wrapper


def mask_channels(net: nn.Module, example: torch.Tensor) -> list[int]:
    """The channels of each test-time dropout of ``net``, in the order its forward pass meets them."""
    seen: list[int] = []
    hooks = [m.register_forward_pre_hook(lambda _m, inp: seen.append(int(inp[0].shape[1])))
             for m in net.modules() if isinstance(m, StochasticDropout2d) and m.always and m.p > 0]
    try:
        with torch.no_grad():
            net.eval()(example)
    finally:
        for h in hooks:
            h.remove()
    return seen


def draw_masks(batch: int, channels: list[int], rates: list[float]) -> list[torch.Tensor]:
    """One mask per dropout layer, drawn from torch's generator as ``F.dropout2d`` draws its noise."""
    return [torch.empty(batch, c, 1, 1).bernoulli_(1 - p).div_(1 - p) for c, p in zip(channels, rates)]


# ----------------------------------------------------------------------------------------- backends
def bf16_supported(backend: str) -> bool:
    """Whether this CPU computes bf16 products natively for ``backend`` (else bf16 is emulated: slower)."""
    if backend == "openvino":
        import openvino as ov

        return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())


class TorchNet:
    """The inference copy run by torch: channels-last, bf16 where asked."""

    def __init__(self, masked: Masked, channels: list[int], precision: str) -> None:
        self.dtype = torch.bfloat16 if precision == "bf16" else torch.float32
        self.net = masked.to(dtype=self.dtype, memory_format=torch.channels_last)
        self.channels = channels

    @torch.inference_mode()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        masks = [m.to(self.dtype) for m in draw_masks(len(x), self.channels, self.net.rates)]
        if x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.net(x.to(self.dtype), *masks).float().contiguous()


class _SignalStack(ctypes.Structure):
    _fields_ = [("ss_sp", ctypes.c_void_p), ("ss_flags", ctypes.c_int), ("ss_size", ctypes.c_size_t)]


@contextlib.contextmanager
def signal_stack_kept():
    """Run the body, then give this thread back the alternate signal stack it had before.

    OpenVINO's CPU plugin (2026.4) gives a thread that compiles a model an alternate signal stack
    of its own, and when that model is freed puts back the stack it found. Two models freed in the
    order they were made (the encoder, then the generator) leave the thread on a stack that was
    unmapped with the first; the next signal whose handler runs on it (SIGCHLD when a child process
    ends, once torch's DataLoader has set a handler; Python sets SA_ONSTACK on every handler) kills
    the process with SIGSEGV from the kernel. It killed pytest workers in the suite and would kill
    a notebook that imagines twice. OpenVINO installs no handler of its own (SigCgt unchanged), so
    its stack is never used: keeping ours, a model's free puts back a stack that still exists."""
    libc = None
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            before = _SignalStack()
            if libc.sigaltstack(None, ctypes.byref(before)) != 0:
                libc = None
        except (OSError, AttributeError):
            libc = None
    try:
        yield
    finally:
        if libc is not None:
            before.ss_flags &= ~1  # SS_ONSTACK is reported, never set
            libc.sigaltstack(ctypes.byref(before), None)


class OpenVinoNet:
    """The inference copy exported to ONNX (in memory) and compiled by OpenVINO's CPU plugin."""

    def __init__(self, masked: Masked, channels: list[int], example: torch.Tensor, precision: str,
                 threads: int) -> None:
        import openvino as ov

        self.channels, self.rates = channels, masked.rates
        masks = draw_masks(len(example), channels, masked.rates)
        names = ["x"] + [f"mask{i}" for i in range(len(masks))]
        buf = io.BytesIO()
        with warnings.catch_warnings():  # the TorchScript exporter is deprecated in favour of one needing onnxscript
            warnings.simplefilter("ignore")
            torch.onnx.export(masked, (example, *masks), buf, input_names=names, output_names=["y"],
                              dynamic_axes={n: {0: "batch"} for n in [*names, "y"]}, dynamo=False)
        core = ov.Core()
        config = {"INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32",
                  "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1}
        if threads > 0:
            config["INFERENCE_NUM_THREADS"] = threads
        with signal_stack_kept():
            self.compiled = core.compile_model(core.read_model(buf.getvalue()), "CPU", config)
            self.request = self.compiled.create_infer_request()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        masks = draw_masks(len(x), self.channels, self.rates)
        feed = [x.detach().float().contiguous().numpy(), *(m.numpy() for m in masks)]
        out = self.request.infer(feed)  # share_outputs is off: the result is ours to keep
        return torch.from_numpy(out[0])


# ------------------------------------------------------------------------------------------ the path
@dataclasses.dataclass(frozen=True)
class Choice:
    backend: str  # openvino | torch | eager
    precision: str  # fp32 | bf16
    reason: str = ""  # why not the one asked for (empty: as asked)

    def line(self) -> str:
        what = "eager networks" if self.backend == "eager" else f"{self.backend} {self.precision}"
        return f"fast path: {what}" + (f" ({self.reason})" if self.reason else "")


def _openvino_missing() -> str | None:
    try:
        import onnx  # noqa: F401 - torch's exporter needs it
        import openvino  # noqa: F401
    except ImportError as e:
        return f"{e.name} is not installed: pip install 's2i[fast]'"
    return None


def choose(backend: str = "auto", precision: str = "auto") -> Choice:
    """The backend and precision this machine runs (``auto``: OpenVINO if installed, else torch;
    bf16 where this CPU computes it natively, else fp32)."""
    if backend not in BACKENDS:
        raise FastPathError(f"unknown fast path {backend!r} (one of {', '.join(BACKENDS)})")
    if precision not in PRECISIONS:
        raise FastPathError(f"unknown precision {precision!r} (one of {', '.join(PRECISIONS)})")
    reason = ""
    if backend in ("auto", "openvino"):
        missing = _openvino_missing()
        if missing and backend == "openvino":
            reason = f"openvino asked for, but {missing}; torch instead"
        backend = "torch" if missing else "openvino"
    if backend == "eager":
        return Choice("eager", "fp32")
    native = bf16_supported(backend)
    if precision == "auto":
        precision = "bf16" if native else "fp32"
    elif precision == "bf16" and not native:
        reason = (reason + "; " if reason else "") + "this CPU has no native bf16: fp32"
        precision = "fp32"
    return Choice(backend, precision, reason)


def fast_net(net: nn.Module, example: torch.Tensor, choice: Choice, threads: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """``net`` (an eval-mode network) as the chosen backend runs it: a callable x → y drawing its
    dropout masks from torch's generator."""
    masked = inference_copy(net)
    channels = mask_channels(net, example)
    if len(channels) != len(masked.rates):
        raise FastPathError(f"{type(net).__name__}: {len(channels)} dropouts met, {len(masked.rates)} rewritten")
    if choice.backend == "openvino":
        return OpenVinoNet(masked, channels, example, choice.precision, threads)
    return TorchNet(masked, channels, choice.precision)


def difference(fast, eager, mels: torch.Tensor, n: int = 2, seed: int = 0) -> float:
    """Largest difference between two models' pictures of the same windows and seed ([-1, 1] scale)."""
    a = fast.sound_pictures(mels, n, seed)
    b = eager.sound_pictures(mels, n, seed)
    return float((a.float() - b.float()).abs().max())


def accelerate(model, backend: str = "auto", precision: str = "auto", threads: int = 0, log=print,
               quiet: bool = False):
    """``model`` with its networks on the fast path, and one line saying which (``quiet``: only when
    it is not the path asked for); or ``model`` itself, with one line saying why."""
    from s2i_model.models.s2i.load import Translator

    choice = choose(backend, precision)
    if choice.backend == "eager":
        return model
    threads = threads if threads > 0 else torch.get_num_threads()  # as torch's: OpenVINO's own default takes every core
    if not isinstance(model, Translator) or model.device.type != "cpu":
        where = "this model" if not isinstance(model, Translator) else f"{model.device.type}"
        log(f"fast path: none for {where} (S2I on the CPU only); eager networks")
        return model
    seconds, _ = model.window
    mel = torch.zeros(1, 1, 128, int(round(seconds * 100)))
    try:
        with torch.no_grad():
            z = model.encoder(mel)
            fast = dataclasses.replace(model, encoder=fast_net(model.encoder, mel, choice, threads),
                                       generator=fast_net(model.generator, z, choice, threads))
            probe = torch.Generator().manual_seed(0)
            mels = torch.rand(2, 1, 128, mel.shape[-1], generator=probe) * 2 - 1
            state = torch.random.get_rng_state()
            try:
                diff = difference(fast, model, mels)
            finally:
                torch.random.set_rng_state(state)
    except Exception as e:  # noqa: BLE001 - any failure of a runtime: the eager networks, one line
        log(f"fast path: {choice.backend} could not be built ({type(e).__name__}: {str(e).splitlines()[0][:200]}); "
            "eager networks")
        return model
    if not diff <= TOLERANCE[choice.precision]:
        log(f"fast path: {choice.backend} {choice.precision} differs from the eager pictures by {diff:.3g} "
            f"(> {TOLERANCE[choice.precision]}); eager networks")
        return model
    if choice.reason or not quiet:
        log(choice.line() + f", pictures within {diff:.2g} of the eager networks'")
    return fast
