"""The one place where values read from somebody else's files are checked before use.

Builds, run folders, labelling pools and mirrors travel between labs, so everything read from
them is hostile until it has passed a check here: a name is a plain name before it becomes part
of a path, a number is finite and in range before it sizes, normalises or positions anything, a
table has its columns with their types before a row of it is read. Readers (`readers.Build`,
the plan on disk, run folders, pools, reports) call these on what they read and hand on only
what passed; nothing else re-checks or trusts raw values.

Every failure is an `Untrusted` (a ValueError) whose message names the file and the field, so
a command prints it as its one line.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Iterable, Mapping

import numpy as np

NAME_MAX_BYTES = 200
SPLITS = ("train", "val", "test")
# bidirectional overrides and isolates make a name display as something else
_BIDI = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f")


class Untrusted(ValueError):
    """A value from a shared file that breaks the contract; the message names file and field."""


def name(value, what: str) -> str:
    """``value`` when it is a plain name (a class, a key, a video id, a model or run name): a
    non-empty string of at most 200 UTF-8 bytes with no path separator, NUL, control or
    bidirectional-override character, and not ``.`` or ``..``. Anything else is refused, so that
    a name read from data can never become a path, a command option or a second line."""
    if not isinstance(value, str):
        raise Untrusted(f"{what}: {type(value).__name__} {_show(value)} is not a name")
    if value in ("", ".", ".."):
        raise Untrusted(f"{what}: {value!r} is not a name")
    if len(value.encode("utf-8", "surrogatepass")) > NAME_MAX_BYTES:
        raise Untrusted(f"{what}: {_show(value)} is longer than {NAME_MAX_BYTES} bytes")
    for ch in value:
        if ch in "/\\\0" or ch in _BIDI or unicodedata.category(ch) in ("Cc", "Cs", "Zl", "Zp"):
            raise Untrusted(f"{what}: {_show(value)} holds {ch!r}; a name may not hold path separators "
                            "or control characters")
    return value


def names(values: Iterable, what: str, unique: bool = True) -> list[str]:
    out = [name(v, f"{what}[{i}]") for i, v in enumerate(values)]
    if unique and len(set(out)) != len(out):
        dup = sorted({v for v in out if out.count(v) > 1})
        raise Untrusted(f"{what}: {_show(dup[0])} appears twice")
    return out


def number(value, what: str, lo: float | None = None, hi: float | None = None, integer: bool = False,
           above: float | None = None) -> float | int:
    """``value`` as a finite int or float within [lo, hi] (and > ``above``); bools, strings, NaN
    and infinities are refused."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise Untrusted(f"{what}: {_show(value)} is not a number")
    if integer:
        if isinstance(value, (float, np.floating)):
            if not math.isfinite(value) or value != int(value):
                raise Untrusted(f"{what}: {_show(value)} is not a whole number")
        value = int(value)
    else:
        value = float(value)
        if not math.isfinite(value):
            raise Untrusted(f"{what}: {value} is not a finite number")
    if (lo is not None and value < lo) or (hi is not None and value > hi) or (above is not None and value <= above):
        rng = f"above {above:g}" if above is not None else f"in [{lo if lo is not None else '-inf'}, " \
                                                           f"{hi if hi is not None else 'inf'}]"
        raise Untrusted(f"{what}: {value} is out of range (must be {rng})")
    return value


def mapping(value, what: str) -> Mapping:
    if not isinstance(value, Mapping):
        raise Untrusted(f"{what}: a {type(value).__name__}, not an object")
    return value


def finite_vector(value, what: str, length: int | None = None) -> list[float]:
    if not isinstance(value, list) or (length is not None and len(value) != length):
        raise Untrusted(f"{what}: not a list of {length if length is not None else 'some'} numbers")
    return [number(v, f"{what}[{i}]") for i, v in enumerate(value)]


def _show(value, most: int = 60) -> str:
    """A value as one short printable line: control characters escaped, long ones cut."""
    text = repr(value) if not isinstance(value, str) else ascii(value)
    return text if len(text) <= most else text[:most] + "…'"


def printable(text: str, most: int = 200) -> str:
    """``text`` (a file name, a reason) escaped so that it prints on one line, control
    characters and bidirectional overrides shown as escapes."""
    out = "".join(ch if ch.isprintable() and ch not in _BIDI else ascii(ch)[1:-1] for ch in str(text))
    return out if len(out) <= most else out[:most] + "…"


# --- a build's files (SPEC 2.6) ---------------------------------------------------------------

SHARD_NAME = re.compile(r"^(train|val|test)/(train|val|test)-\d{6}\.tar$")
MAX_CLASSES = 100_000
MAX_COUNT = 10**9


def shard_name(value, what: str = "shard name") -> str:
    """``value`` when it is a shard name of the contract (``train/train-000000.tar``)."""
    m = SHARD_NAME.fullmatch(value) if isinstance(value, str) else None  # fullmatch: "$" allows a final \n
    if not m or m.group(1) != m.group(2):
        raise Untrusted(f"{what} {_show(value)} is not of the form split/split-NNNNNN.tar; refusing to use it")
    return value


def build_settings(build_json, where: str) -> dict:
    """build.json: the settings every reader relies on (segment, rate, picture size) in range."""
    cfg = mapping(mapping(build_json, where).get("config"), f"{where}: config")
    number(cfg.get("segment_seconds"), f"{where}: config.segment_seconds", above=0, hi=60)
    number(cfg.get("image_size"), f"{where}: config.image_size", lo=8, hi=4096, integer=True)
    number(cfg.get("sample_rate", 16000), f"{where}: config.sample_rate", lo=8000, hi=384000, integer=True)
    fp = build_json.get("fingerprint")
    if fp is not None and not (isinstance(fp, str) and re.fullmatch(r"[0-9a-zA-Z]{1,128}", fp)):
        raise Untrusted(f"{where}: fingerprint {_show(fp)} is not a hex digest")
    return build_json


def build_stats(stats, where: str) -> dict:
    """stats.json: classes are names, counts whole numbers, shard names of the contract, and the
    train log-mel statistics finite with a range a normaliser can divide by."""
    stats = mapping(stats, where)
    classes = stats.get("classes")
    if not isinstance(classes, list) or not 1 <= len(classes) <= MAX_CLASSES:
        raise Untrusted(f"{where}: classes is not a list of 1 to {MAX_CLASSES} names")
    names(classes, f"{where}: classes")
    counts = mapping(stats.get("counts", {}), f"{where}: counts")
    for split, per in counts.items():
        if split not in SPLITS:
            raise Untrusted(f"{where}: counts has split {_show(split)}")
        for cls, n in mapping(per, f"{where}: counts.{split}").items():
            if cls not in classes:
                raise Untrusted(f"{where}: counts.{split} names class {_show(cls)}, which is not in classes")
            number(n, f"{where}: counts.{split}.{cls}", lo=0, hi=MAX_COUNT, integer=True)
    if "samples" in stats:
        number(stats["samples"], f"{where}: samples", lo=0, hi=MAX_COUNT, integer=True)
    shards = mapping(stats.get("shards", {}), f"{where}: shards")
    for split, listed in shards.items():
        if split not in SPLITS or not isinstance(listed, list):
            raise Untrusted(f"{where}: shards.{_show(split)} is not a list of a split's shards")
        for n in listed:
            if shard_name(n, f"{where}: shards.{split}:").split("/")[0] != split:
                raise Untrusted(f"{where}: shard {_show(n)} is listed under {split!r}")
    pending = stats.get("pending_shards", [])
    if not isinstance(pending, list):
        raise Untrusted(f"{where}: pending_shards is not a list")
    for n in pending:
        shard_name(n, f"{where}: pending_shards:")
    for flag in ("complete", "balanced"):
        if flag in stats and not isinstance(stats[flag], bool):
            raise Untrusted(f"{where}: {flag} is {_show(stats[flag])}, not true or false")
    logmel_stats(stats.get("train_logmel", {"count": 0}), f"{where}: train_logmel")
    return stats


def logmel_stats(tl, what: str, bins: int | None = None) -> dict:
    """The train log-mel statistics a normaliser is made from: finite, std not negative, and a
    0.1-99.9 percentile range that is not empty (min-max scaling divides by it)."""
    tl = mapping(tl, what)
    count = number(tl.get("count", 0), f"{what}.count", lo=0, hi=MAX_COUNT * 1000, integer=True)
    if not count:
        return tl
    for key in ("mean", "std"):
        vec = finite_vector(tl.get(key), f"{what}.{key}", bins)
        if key == "std" and min(vec, default=0) < 0:
            raise Untrusted(f"{what}.std holds a negative value")
    for key in ("global_mean", "global_std", "min", "max", "p0.1", "p1", "p50", "p99", "p99.9"):
        if key in tl:
            number(tl[key], f"{what}.{key}")
    lo, hi = number(tl.get("p0.1"), f"{what}.p0.1"), number(tl.get("p99.9"), f"{what}.p99.9")
    if not hi > lo:
        raise Untrusted(f"{what}: p99.9 ({hi}) is not above p0.1 ({lo}); a normaliser cannot scale by that range")
    if "min" in tl and "max" in tl and tl["min"] > tl["max"]:
        raise Untrusted(f"{what}: min is above max")
    return tl


SAMPLE_COLUMNS = ("key", "split", "shard", "class", "class_index", "video_id", "segment_index", "start_s",
                  "end_s", "source")


def samples_table(df, where: str, classes: list[str], segment_seconds: float | None = None):
    """A table of samples (manifest.parquet, ``_build/plan.parquet``): every column of the
    contract, keys and video ids plain names without dots, splits and shards of the contract,
    classes of the build with their own index, times finite and not negative."""
    import pandas as pd

    missing = [c for c in SAMPLE_COLUMNS if c not in df.columns]
    if missing:
        raise Untrusted(f"{where}: lacks column(s) {', '.join(missing)}")
    for col in ("key", "video_id"):
        values = df[col].tolist()
        for i, v in enumerate(values):
            name(v, f"{where}: row {i} {col}")
            if col == "key" and "." in v:
                raise Untrusted(f"{where}: row {i} key {_show(v)} holds a dot (webdataset splits members there)")
    bad_split = ~df["split"].isin(SPLITS)
    if bad_split.any():
        i = int(bad_split.to_numpy().argmax())
        raise Untrusted(f"{where}: row {i} split {_show(df['split'].iloc[i])} is not train, val or test")
    for i, (sh, sp) in enumerate(zip(df["shard"].tolist(), df["split"].tolist())):
        if shard_name(sh, f"{where}: row {i} shard").split("/")[0] != sp:
            raise Untrusted(f"{where}: row {i} shard {_show(sh)} is not in its split {sp!r}")
    index = {c: i for i, c in enumerate(classes)}
    for i, (c, ci) in enumerate(zip(df["class"].tolist(), df["class_index"].tolist())):
        if not isinstance(c, str) or c not in index:
            raise Untrusted(f"{where}: row {i} class {_show(c)} is not a class of this build")
        if number(ci, f"{where}: row {i} class_index", lo=0, integer=True) != index[c]:
            raise Untrusted(f"{where}: row {i} class_index {ci} is not {c!r}'s ({index[c]})")
    for col in ("start_s", "end_s", "segment_index"):
        values = pd.to_numeric(df[col], errors="coerce").to_numpy(dtype=np.float64)
        bad = ~np.isfinite(values) | (values < 0) | (values > 1e7)
        if bad.any():
            i = int(bad.argmax())
            raise Untrusted(f"{where}: row {i} {col} {_show(df[col].iloc[i])} is not a finite time or index >= 0")
    if segment_seconds is not None and len(df):
        span = df["end_s"].to_numpy(np.float64) - df["start_s"].to_numpy(np.float64)
        off = np.abs(span - segment_seconds) > 1e-3
        if off.any():
            i = int(off.argmax())
            raise Untrusted(f"{where}: row {i} spans {span[i]:g} s, the build's segments {segment_seconds:g} s")
    for i, s in enumerate(df["source"].tolist()):
        if not isinstance(s, str) or not s or "\0" in s or len(s) > 4096:
            raise Untrusted(f"{where}: row {i} source {_show(s)} is not a file name")
    return df


# --- run folders: checkpoints, their caches and training logs (s2i_model) ---------------------
# A run folder comes from somebody else as much as a build does: the sizes a checkpoint's config
# claims decide how big a network is built, so they are bounded here, and the tensors it stores
# must be exactly those of the network its config describes (names, shapes, kinds, finite),
# compared before any of them is loaded. Checked without importing torch: tensors are read
# through ``shape``, ``is_floating_point`` and ``isfinite``.

NET_SIZES = {  # what a checkpoint's config may claim, before a network is built from it
    "emb": {"lo": 1, "hi": 65536, "integer": True},
    "latent": {"lo": 1, "hi": 65536, "integer": True},
    "classes": {"lo": 1, "hi": MAX_CLASSES, "integer": True},
    "width": {"lo": 2**-10, "hi": 4},
}
MAX_EPOCH = 10**7
METRICS_MAX_BYTES = 256 * 2**20  # a 4000-epoch log with informativity per class is a few MB
OPT_STATE_KEYS = {  # each parameter's optimiser state, by optimiser (runtime.make_optimizer's)
    "SGD": frozenset({"momentum_buffer"}),
    "Adam": frozenset({"step", "exp_avg", "exp_avg_sq"}),
}


def net_config(cfg, where: str, *fields: str, section: str = "config") -> dict:
    """A checkpoint's config (``section``) with ``fields`` (emb, latent, classes, width) in
    range, whole where they must be: the numbers a network is built with."""
    cfg = mapping(cfg, f"{where}: {section}")
    return {**cfg, **{f: number(cfg.get(f), f"{where}: {section}.{f}", **NET_SIZES[f]) for f in fields}}


def epoch(value, what: str) -> int:
    return number(value, what, lo=0, hi=MAX_EPOCH, integer=True)


def _is_tensor(value) -> bool:
    return all(hasattr(value, a) for a in ("shape", "is_floating_point", "isfinite"))


def _finite_tensor(value, what: str):
    # the largest magnitude is NaN when any value is, and infinite when any is: one cheap pass
    if value.is_floating_point() and value.numel() and not bool(value.abs().amax() < math.inf):
        raise Untrusted(f"{what} holds NaN or infinite values")
    return value


def tensor_shapes(expected: Mapping, stored, where: str) -> Mapping:
    """``stored`` (a state dict read from a checkpoint) when it holds exactly the tensors of
    ``expected`` (the network's own state dict, built from the checked config: on the meta device,
    nothing allocated), each of the same shape and kind (floating or not), and finite."""
    stored = mapping(stored, where)
    missing = [k for k in expected if k not in stored]
    if missing:
        raise Untrusted(f"{where}: lacks {_show(missing[0])}" + (f" and {len(missing) - 1} more" if len(missing) > 1 else "")
                        + "; the network its config describes has them")
    extra = [k for k in stored if k not in expected]
    if extra:
        raise Untrusted(f"{where}: holds {_show(extra[0])}, which the network its config describes does not have")
    for k, want in expected.items():
        got = stored[k]
        if not _is_tensor(got):
            raise Untrusted(f"{where}: {_show(k)} is a {type(got).__name__}, not a tensor")
        if tuple(got.shape) != tuple(want.shape) or got.is_floating_point() != want.is_floating_point():
            raise Untrusted(f"{where}: {_show(k)} is {list(got.shape)}, the network its config describes "
                            f"has {list(want.shape)}")
        _finite_tensor(got, f"{where}: {_show(k)}")
    return stored


def normaliser(value, where: str) -> dict:
    """A checkpoint's log-mel normaliser: finite lo < hi (it divides by hi - lo)."""
    value = mapping(value, where)
    lo, hi = number(value.get("lo"), f"{where}.lo"), number(value.get("hi"), f"{where}.hi")
    if not hi > lo:
        raise Untrusted(f"{where}: hi ({hi}) is not above lo ({lo})")
    return {"lo": lo, "hi": hi}


def _same_kind(saved, fresh) -> bool:
    """An optimiser setting the fresh optimiser can run with: its very flag or None (amsgrad,
    fused, capturable... change what state it needs), else finite numbers where it has numbers."""
    if fresh is None or isinstance(fresh, bool):
        return saved is fresh or (isinstance(saved, bool) and saved == fresh)
    if isinstance(fresh, (int, float)):
        return not isinstance(saved, bool) and isinstance(saved, (int, float)) and math.isfinite(saved)
    if isinstance(fresh, (list, tuple)):
        return (isinstance(saved, (list, tuple)) and len(saved) == len(fresh)
                and all(_same_kind(s, f) for s, f in zip(saved, fresh)))
    return False


def optimizer_state(saved, fresh: Mapping, shapes: list, kind: str, where: str) -> Mapping:
    """An optimiser's saved state that the optimiser ``fresh`` (its own ``state_dict()``, of class
    ``kind``) can take: the same parameter groups of the same sizes and settings of the same kinds,
    and for each parameter the state ``kind`` keeps, each tensor of the parameter's shape
    (``shapes``, in order) and finite."""
    saved = mapping(saved, where)
    groups, fresh_groups = saved.get("param_groups"), fresh["param_groups"]
    if not isinstance(groups, list) or len(groups) != len(fresh_groups):
        raise Untrusted(f"{where}: param_groups is not a list of {len(fresh_groups)} group(s)")
    for i, (g, f) in enumerate(zip(groups, fresh_groups)):
        g = mapping(g, f"{where}: param_groups[{i}]")
        params = g.get("params")
        if not isinstance(params, list) or len(params) != len(f["params"]):
            raise Untrusted(f"{where}: param_groups[{i}] does not hold the {len(f['params'])} parameters of the network")
        for k, v in g.items():
            if k != "params" and (k not in f or not _same_kind(v, f[k])):
                raise Untrusted(f"{where}: param_groups[{i}].{_show(k)} = {_show(v)} is not a setting of {kind}")
    wanted = OPT_STATE_KEYS[kind]
    for p, per in mapping(saved.get("state", {}), f"{where}: state").items():
        if isinstance(p, bool) or not isinstance(p, int) or not 0 <= p < len(shapes):
            raise Untrusted(f"{where}: state of parameter {_show(p)}; the network has {len(shapes)}")
        per = mapping(per, f"{where}: state[{p}]")
        if set(per) != wanted:
            raise Untrusted(f"{where}: state[{p}] holds {sorted(map(str, per))}, not {kind}'s {sorted(wanted)}")
        for k, v in per.items():
            if k == "step":  # a count: a number, or a scalar tensor
                if _is_tensor(v) and tuple(v.shape) == ():
                    v = float(v)
                number(v, f"{where}: state[{p}].step", lo=0)
            elif not (v is None and k == "momentum_buffer"):
                if not _is_tensor(v) or tuple(v.shape) != tuple(shapes[p]):
                    raise Untrusted(f"{where}: state[{p}].{k} is not a tensor of the parameter's shape {list(shapes[p])}")
                _finite_tensor(v, f"{where}: state[{p}].{k}")
    return saved


def rng_state(state, where: str, torch_bytes: int, cuda_bytes: int | None = None) -> Mapping:
    """A checkpoint's random generators' states (`runtime.rng_state`), each of the size its
    generator takes: Python's Mersenne Twister, torch's and numpy's, and optionally CUDA's."""
    state = mapping(state, where)
    py = state.get("python")
    if not (isinstance(py, (list, tuple)) and len(py) == 3 and isinstance(py[1], (list, tuple)) and len(py[1]) == 625):
        raise Untrusted(f"{where}: python is not a Mersenne Twister state")
    number(py[0], f"{where}: python[0]", lo=2, hi=3, integer=True)
    for i, w in enumerate(py[1]):
        number(w, f"{where}: python[1][{i}]", lo=0, hi=2**32 - 1 if i < 624 else 624, integer=True)
    if py[2] is not None:
        number(py[2], f"{where}: python[2]")
    t = state.get("torch")
    if not _is_tensor(t) or tuple(t.shape) != (torch_bytes,) or t.is_floating_point():
        raise Untrusted(f"{where}: torch is not a generator state of {torch_bytes} bytes")
    npy = state.get("numpy")
    if not (isinstance(npy, (list, tuple)) and len(npy) == 5 and npy[0] == "MT19937"
            and getattr(npy[1], "shape", None) is not None and tuple(npy[1].shape) == (624,)):
        raise Untrusted(f"{where}: numpy is not an MT19937 state")
    number(npy[2], f"{where}: numpy[2]", lo=0, hi=624, integer=True)
    number(npy[3], f"{where}: numpy[3]", lo=0, hi=1, integer=True)
    number(npy[4], f"{where}: numpy[4]")
    if "cuda" in state and cuda_bytes is not None:
        cuda = state["cuda"]
        if not isinstance(cuda, list) or not all(_is_tensor(c) and tuple(c.shape) == (cuda_bytes,) for c in cuda):
            raise Untrusted(f"{where}: cuda is not a list of generator states of {cuda_bytes} bytes")
    return state


def embedding_split(value, where: str, width: int, classes: int, most: int = MAX_COUNT) -> Mapping:
    """A split of an embedding cache (RUN/embeddings.pt): ``keys`` plain unique names, ``emb``
    finite [len(keys), width], ``cls`` whole numbers in [0, classes) of the same length."""
    value = mapping(value, where)
    keys = value.get("keys")
    if not isinstance(keys, list) or len(keys) > most:
        raise Untrusted(f"{where}: keys is not a list of at most {most} names")
    names(keys, f"{where}: keys")
    emb, cls = value.get("emb"), value.get("cls")
    n = len(keys)
    if not _is_tensor(emb) or not emb.is_floating_point() or tuple(emb.shape) not in ((n, width),) + (((0,),) if not n else ()):
        raise Untrusted(f"{where}: emb is not {n} embeddings of size {width}")
    _finite_tensor(emb, f"{where}: emb")
    if not _is_tensor(cls) or cls.is_floating_point() or tuple(cls.shape) != (n,):
        raise Untrusted(f"{where}: cls is not {n} class indices")
    if n and not (0 <= int(cls.min()) and int(cls.max()) < classes):
        raise Untrusted(f"{where}: cls holds a class index outside 0..{classes - 1}")
    return value


def log_size(size: int, where: str) -> int:
    if size > METRICS_MAX_BYTES:
        raise Untrusted(f"{where}: {size} bytes, more than a training log holds ({METRICS_MAX_BYTES} at most)")
    return size


def metrics_row(row, where: str) -> Mapping:
    """A row of RUN/metrics.jsonl as its readers use it: a stage name, a whole epoch, and where
    present a finite pixel loss, a count of D updates and informativity in [0, 1] per class."""
    row = mapping(row, where)
    if not isinstance(row.get("stage"), str):
        raise Untrusted(f"{where}: stage {_show(row.get('stage'))} is not a stage name")
    number(row.get("epoch"), f"{where}: epoch", lo=1, hi=MAX_EPOCH, integer=True)
    if "pixel_loss" in row:
        number(row["pixel_loss"], f"{where}: pixel_loss")
    if "d_updates" in row:
        number(row["d_updates"], f"{where}: d_updates", lo=0, hi=MAX_COUNT, integer=True)
    if "informativity" in row:
        inf = mapping(row["informativity"], f"{where}: informativity")
        if inf.get("mean") is not None:
            number(inf["mean"], f"{where}: informativity.mean", lo=0, hi=1)
        for c, v in mapping(inf.get("per_class"), f"{where}: informativity.per_class").items():
            name(c, f"{where}: informativity.per_class key")
            if v is not None:
                number(v, f"{where}: informativity.per_class.{c}", lo=0, hi=1)
    return row


def grad_scaler_state(value, where: str) -> Mapping:
    """An fp16 loss scaler's saved state: its five settings, finite and positive."""
    value = mapping(value, where)
    for k in ("scale", "growth_factor", "backoff_factor"):
        number(value.get(k), f"{where}.{k}", above=0)
    for k in ("growth_interval", "_growth_tracker"):
        number(value.get(k), f"{where}.{k}", lo=0, hi=MAX_COUNT, integer=True)
    return value


def finite_list(value, what: str, most: int = MAX_EPOCH) -> list[float]:
    """A list of at most ``most`` finite numbers (a loss history)."""
    if not isinstance(value, list) or len(value) > most:
        raise Untrusted(f"{what}: not a list of at most {most} numbers")
    return finite_vector(value, what)
