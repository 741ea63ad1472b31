"""One `s2i-model live` session: the run's model (and frame classifier) loaded, the source opened,
the page served, the windows imagined until the input ends, the recording closed."""

from __future__ import annotations

import json
import math
import os
import sys
import threading
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from s2i_data import untrusted
from s2i_data.untrusted import path_shown

from s2i_model import checkpoint
from s2i_model.live import loop
from s2i_model.live.record import Recorder
from s2i_model.live.server import Hub, start_server
from s2i_model.live.sources import open_source
from s2i_model.live.window import Windower

FRAME_CLASSIFIER = "frame-classifier.pt"  # where `s2i-model evaluate` kept it in a run before issue 27
JUDGES = "judges.pt"  # the cross-fitted judges `s2i-model evaluate` keeps in a run (evaluate/crossfit.py)


class LiveError(Exception):
    """Settings that cannot work (a bad hop, an unusable classifier): one line."""


@dataclass
class LiveOptions:
    run: str
    input: str | None = None  # None: the default microphone; "-": raw PCM on stdin
    n: int = 1
    hop: float = 0.5
    quiet_db: float = -50.0
    gate: float | None = None  # None: twice chance (2 / classes) for a frame classifier, 0.5 for judges
    classifier: str | None = None  # default RUN/frame-classifier.pt when it exists
    informativity: str | None = None  # a folder of informativity judges: the class line from them instead
    host: str = "127.0.0.1"
    port: int = 8766
    serve: bool = True
    record: str | None = None
    realtime: bool = False
    format: str | None = None
    pcm_rate: int = 16000
    stall_timeout: float = 10.0
    mic: str | None = None
    device: str = "auto"
    seed: int = 0
    strip: int = 8
    threads: int = 1  # torch's threads: one keeps latency steady on a busy CPU (docs/performance.md)
    fast: str = "auto"  # the networks' path (`fast.accelerate`): auto | openvino | torch | eager
    precision: str = "auto"  # the fast path's: auto (bf16 where the CPU has it) | fp32 | bf16


def class_names(run: Path, ident: dict, model) -> list[str] | None:
    """The names of the classifier's outputs: from the run's evaluation, else from the build it was
    trained on (if it can be opened here)."""
    n = int(ident.get("classes", 0))
    try:
        names = json.loads((run / "evaluation.json").read_text()).get("classes")
        if isinstance(names, list) and len(names) == n:
            return [str(x) for x in names]
    except (OSError, ValueError):
        pass
    from s2i_data.readers import Build

    for where in (ident.get("data"), (getattr(model, "build", None) or {}).get("location")):
        if not where:
            continue
        try:
            names = Build.open(where).classes
            if len(names) == n:
                return list(names)
        except Exception:  # noqa: BLE001 - a build moved or gone: the names are a nicety
            continue
    return None


def load_classifier(run: Path, path: str | None, model, device) -> tuple[torch.nn.Module | None, list[str] | None]:
    """The real-frame classifier `evaluate` trained for the run (or ``path``), never unpickled."""
    from s2i_model.evaluate.realframe import FrameClassifier

    file = Path(path) if path else run / FRAME_CLASSIFIER
    if not file.exists():
        if path:
            raise LiveError(f"{file}: no such classifier")
        judges = run / JUDGES
        if not judges.exists():
            return None, None
        from s2i_model.evaluate.crossfit import load_ensemble

        try:  # the cross-fitted judges `evaluate` keeps since issue 27, as one classifier
            clf, ident = load_ensemble(judges, device)
        except (checkpoint.CheckpointError, untrusted.Untrusted) as e:
            raise LiveError(f"{judges} is not the judges of s2i-model evaluate: {e}") from None
        n = int(ident["classes"])
        return clf, class_names(run, ident, model) or [f"class {k}" for k in range(n)]
    state = checkpoint.load(file, device)
    try:
        ident = state["ident"]
        clf = FrameClassifier(int(ident["classes"]))
        clf.load_state_dict(state["model"])
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise LiveError(f"{file} is not a frame classifier of s2i-model evaluate ({type(e).__name__})") from None
    n = int(ident["classes"])
    return clf.to(device).eval(), class_names(run, ident, model) or [f"class {k}" for k in range(n)]


def load_judges(folder: str, device) -> tuple[loop.JudgeScores, list[str]]:
    """The informativity judges of ``s2i-model train-informativity`` as the class line."""
    from s2i_model.evaluate.informativity import Judges

    try:
        judges = Judges.load(Path(folder), str(device))
    except ValueError as e:
        raise LiveError(str(e)) from None
    scores = loop.JudgeScores(judges)
    if not scores.names:
        raise LiveError(f"{folder}: no class has an informativity classifier (too few labels)")
    return scores, scores.names


def default_gate(opts: LiveOptions, names: list[str]) -> float:
    """``--gate`` when given; else a judge's even odds (0.5), or for a frame classifier twice
    chance, 2 / classes (0.4 for five): on the demo run's held-out test videos that kept the share
    of right class lines of a gate of 0.5 (72 % against 73 %) while showing 74 % of the windows
    instead of 32 % (docs/performance.md)."""
    if opts.gate is not None:
        return opts.gate
    return 0.5 if opts.informativity else min(1.0, 2.0 / max(len(names), 2))


def prepare(opts: LiveOptions, log=print):
    """(model, imaginer, windower, source): everything that can fail on bad settings, before any
    port is opened or folder written."""
    from s2i_model.run import load_model

    if not (0 < opts.hop <= 60) or opts.n < 1:
        raise LiveError(f"--hop must be in (0, 60] s and -n at least 1 (got {opts.hop:g} and {opts.n})")
    if not math.isfinite(opts.quiet_db) or (opts.gate is not None and not math.isfinite(opts.gate)):
        # (they are recorded in live.json, which must stay JSON)
        raise LiveError(f"--quiet-db and --gate must be finite numbers (got {opts.quiet_db:g} and {opts.gate})")
    if opts.threads >= 1:
        # A live loop wants steady latency, not throughput: on a 2-core machine with anything else
        # running, two torch threads spin against the reader, the page and the other programs, and
        # the p95 grows tenfold (bench/live.py); one thread leaves a core to the rest.
        torch.set_num_threads(opts.threads)
    model = load_model(opts.run, opts.device)
    if hasattr(model, "sound_pictures"):
        from s2i_model import fast

        said: list[str] = []  # its one line goes into the session's first line (`run_session`)
        try:
            model = fast.accelerate(model, opts.fast, opts.precision, max(opts.threads, 0), said.append)
        except fast.FastPathError as e:
            raise LiveError(str(e)) from None
        networks = "; ".join(said) or "fast path: eager networks"
    else:
        networks = ""
    if not hasattr(model, "sound_pictures"):  # the real-frames reference row shows a test sound's own frame
        raise LiveError(f"{path_shown(opts.run)} is the real-frames reference (s2i-model reference real): it has no model "
                        "that makes pictures from a sound")
    seconds, rate = model.window
    windower = Windower(seconds, rate, opts.hop)
    if opts.informativity:
        clf, names = load_judges(opts.informativity, model.device)
    else:
        clf, names = load_classifier(Path(opts.run), opts.classifier, model, model.device)
    imaginer = loop.Imaginer(model, opts.n, opts.quiet_db, clf, names, default_gate(opts, names) if clf is not None
                             else 0.0, opts.seed)
    imaginer.networks = networks
    source = open_source(opts.input, rate, opts.realtime, opts.format, opts.pcm_rate, opts.stall_timeout, opts.mic)
    return model, imaginer, windower, source


def run_session(opts: LiveOptions, log=print, on_ready=None, stop: threading.Event | None = None) -> loop.Summary:
    """Serve the page and imagine every window until the input ends; the summary (its ``error``: the
    source's one line when it failed). ``on_ready(url)`` is called once the page is up."""
    model, imaginer, windower, source = prepare(opts, log)
    seconds, rate = model.window
    hub = Hub(opts.strip, getattr(model, "norm", None))
    server = recorder = None
    summary = loop.Summary()
    try:
        if opts.serve:
            try:
                server = start_server(hub, opts.host, opts.port, title=source.name)
            except OSError as e:
                raise LiveError(f"cannot serve on {opts.host}:{opts.port}: {e.strerror or e}") from None
        if opts.record:
            recorder = Recorder(Path(opts.record), {
                "run": os.path.abspath(opts.run), "input": source.name, "live": source.live,
                "window_s": seconds, "sample_rate": rate, "hop_s": opts.hop, "n": opts.n, "quiet_db": opts.quiet_db,
                "classifier": imaginer.class_names if imaginer.classifier is not None else None,
                "class_line_from": None if imaginer.classifier is None else
                ("informativity judges" if opts.informativity else "frame classifier"),
                "gate": imaginer.gate, "incremental_log_mel": windower.incremental, "networks": imaginer.networks})
        log(f"hearing {source.name} ({'live: stale windows are dropped' if source.live else 'every window is made'}); "
            f"a picture every {opts.hop:g} s of the last {seconds:g} s" + (f"; {imaginer.networks}" if imaginer.networks else "")
            + (f"; page at {server.url}" if server else ""))
        if on_ready is not None:
            on_ready(server.url if server else None)
        try:
            loop.run(source, windower, imaginer, hub.publish if server else None, recorder,
                     stop=stop, on_result=hub.count_dropped, summary=summary)
        except KeyboardInterrupt:
            summary.error = "stopped (Ctrl-C)"
            raise
    finally:  # also on Ctrl-C: the page is told, the recording's session file says how it ended
        source.close()
        if server is not None:
            hub.end(summary.error or "the input ended")  # the page says so
            server.shutdown()
            server.server_close()
        if recorder is not None:
            recorder.close({k: v for k, v in asdict(summary).items() if k != "latencies_ms"}
                           | {"latency_median_ms": summary.latency(0.5), "latency_p95_ms": summary.latency(0.95)})
    return summary


__all__ = ["LiveError", "LiveOptions", "prepare", "run_session"]


def open_page_in_browser(url: str | None) -> None:
    """Open the page where a browser can show it: not on a machine without a display (a server,
    a container), where a text browser would take the terminal."""
    if not url or (sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))):
        return
    import webbrowser

    try:
        webbrowser.open(url)
    except Exception:  # noqa: BLE001 - the address is printed anyway
        pass
