"""`s2i-model live` as a user runs it: ffmpeg streams a video's sound over loopback HTTP at its own
speed, and the recording has a line per hop; bad input gets one line, a clean exit and an intact
recording."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from childprocs import ctrl_c_as_at_a_terminal
from conftest import LENGTH_S, SILENCE_S, SOUND_S, SR, Streamer, live_cmd, sound  # tests/s2i_model/live/conftest.py


def journal(folder: Path) -> list[dict]:
    text = (folder / "live.jsonl").read_text()
    assert text == "" or text.endswith("\n")  # whole lines only
    return [json.loads(x) for x in text.splitlines()]


def one_line(res: subprocess.CompletedProcess) -> str:
    err = res.stderr.strip()
    assert "Traceback" not in res.stdout + res.stderr and len(err.splitlines()) == 1, res.stdout + res.stderr
    return err


def test_a_stream_gives_a_line_per_hop_with_latencies(live_run, talk_and_silence, tmp_path):
    stream = Streamer(talk_and_silence)
    try:
        res = subprocess.run(live_cmd(stream.url, "--run", live_run, "--record", tmp_path / "rec", fast="auto"),
                             capture_output=True, text=True, timeout=120)
    finally:
        stream.close()
    assert res.returncode == 0 and "input ended" in res.stdout and "Traceback" not in res.stderr, res.stdout + res.stderr
    # the pictures come from the fast path (the test extra installs OpenVINO), which the first line names
    networks = json.loads((tmp_path / "rec" / "live.json").read_text())["networks"]
    assert networks.startswith("fast path: openvino ") and f"; {networks}; page at " in res.stdout.splitlines()[0]
    lines = journal(tmp_path / "rec")
    expected = int((LENGTH_S - 1.0) / 0.5) + 1  # windows ending at 1.0, 1.5, ..., 7.0
    assert abs(len(lines) - expected) <= 1, [x["t"] for x in lines]
    ts = [x["t"] for x in lines]
    assert np.allclose(np.diff(ts), 0.5, atol=1e-3) and abs(ts[0] - 1.0) < 1e-3
    made = [x for x in lines if not x["dropped"]]
    assert len(made) >= expected // 2  # at most the odd stale window is dropped on a loaded machine
    assert all(isinstance(x["latency_ms"], float) and 0 <= x["latency_ms"] < 30_000 for x in made)
    assert all(x["latency_ms"] is None for x in lines if x["dropped"])
    # the silent stretch (3 to 5.5 s): the windows that lie inside it are quiet, the others are not
    quiet_from, quiet_to = SOUND_S, SOUND_S + SILENCE_S
    for x in made:
        start, end = x["t"] - 1.0, x["t"]
        sounding = max(0.0, min(end, quiet_from) - start) + max(0.0, end - max(start, quiet_to))
        if sounding >= 0.2:
            assert not x["quiet"], x
        elif start >= quiet_from + 0.05 and end <= quiet_to - 0.05:  # (a window touching an edge may go either way)
            assert x["quiet"], x
        assert isinstance(x["loudness"], float)
    assert sum(x["quiet"] for x in made) >= 2
    for x in made:  # the class line of the run's real-frame classifier, and the pictures named
        if not x["quiet"]:
            assert x["class"] in ("baby", "dog", "rail", "fireworks", "water") and 0 < x["confidence"] <= 1
            assert x["pictures"] and all((tmp_path / "rec" / p).stat().st_size > 0 for p in x["pictures"])
    session = json.loads((tmp_path / "rec" / "live.json").read_text())
    assert session["ended"]["error"] is None and session["ended"]["windows"] == len(lines)
    assert not list((tmp_path / "rec").glob(".*tmp*"))


def test_raw_pcm_on_stdin_makes_every_window(live_run, tmp_path):
    pcm = (np.clip(sound(3.0), -1, 1) * 32767).astype("<i2").tobytes()
    res = subprocess.run(live_cmd("-", "--run", live_run, "--record", tmp_path / "rec", "-n", "2"),
                         input=pcm, capture_output=True, timeout=120)
    assert res.returncode == 0, res.stderr
    lines = journal(tmp_path / "rec")
    assert [x["t"] for x in lines] == [1.0, 1.5, 2.0, 2.5, 3.0] and not any(x["dropped"] for x in lines)
    assert all(len(x["pictures"]) == 2 for x in lines)


def test_an_unreachable_stream(live_run, tmp_path):
    from conftest import free_port

    res = subprocess.run(live_cmd(f"http://viewer:s3cret@127.0.0.1:{free_port()}/nothing.ts", "--run", live_run,
                                  "--record", tmp_path / "rec"), capture_output=True, text=True, timeout=120)
    assert res.returncode == 1 and "Connection refused" in one_line(res)
    assert journal(tmp_path / "rec") == []
    # a URL's password is neither printed nor recorded
    session = (tmp_path / "rec" / "live.json").read_text()
    assert "s3cret" not in res.stdout + res.stderr + session and "http://***@127.0.0.1" in session


def test_a_stream_that_stalls(live_run, talk_and_silence, tmp_path):
    stream = Streamer(talk_and_silence)
    try:
        proc = subprocess.Popen(live_cmd(stream.url, "--run", live_run, "--record", tmp_path / "rec",
                                         "--stall-timeout", "1.5"), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
        deadline = time.monotonic() + 60
        while not (tmp_path / "rec" / "live.jsonl").exists() or not journal(tmp_path / "rec"):
            assert time.monotonic() < deadline and proc.poll() is None, proc.communicate()
            time.sleep(0.1)
        stream.proc.send_signal(signal.SIGSTOP)  # the sender freezes: connection open, no more bytes
        out, err = proc.communicate(timeout=60)
        stream.proc.send_signal(signal.SIGCONT)
    finally:
        stream.close()
    res = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    assert res.returncode == 1 and "stalled (no audio for 1.5 s)" in one_line(res)
    lines = journal(tmp_path / "rec")  # what was heard before the stall is kept, whole
    assert lines and all(x["t"] <= SOUND_S + 1 for x in lines)
    assert "stalled" in json.loads((tmp_path / "rec" / "live.json").read_text())["ended"]["error"]


def test_a_stream_without_audio(live_run, talk_and_silence, tmp_path):
    stream = Streamer(talk_and_silence, video=True, audio=False)
    try:
        res = subprocess.run(live_cmd(stream.url, "--run", live_run, "--record", tmp_path / "rec"),
                             capture_output=True, text=True, timeout=120)
    finally:
        stream.close()
    assert res.returncode == 1 and "no audio stream" in one_line(res)
    assert journal(tmp_path / "rec") == []


def test_bad_arguments_are_one_line(live_run, tmp_path):
    for args, said in ((["no-such-file.wav"], "no such file"), ([str(tmp_path)], "a folder"),
                       (["-", "--hop", "0"], "--hop")):
        res = subprocess.run(live_cmd(*args, "--run", live_run), capture_output=True, text=True, timeout=120,
                             input="")
        assert res.returncode != 0 and said in one_line(res), (args, res.stderr)
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "live.jsonl").write_text("")
    res = subprocess.run(live_cmd("-", "--run", live_run, "--record", tmp_path / "taken"), capture_output=True,
                         text=True, timeout=120, input="")
    assert res.returncode == 1 and "already holds a recording" in one_line(res)


def test_no_microphone_is_one_line(live_run):
    # This machine's microphone state decides which line: no sounddevice, no PortAudio, or no input
    # device: each is one line and exit 1. A machine with a working microphone starts hearing it
    # instead; then the test stops it and checks that it started and stopped cleanly.
    proc = subprocess.Popen(live_cmd("--run", live_run), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=ctrl_c_as_at_a_terminal)
    try:
        first = proc.stdout.readline()  # "hearing ..." once started, or nothing when it gave up
        if first.startswith("hearing microphone"):
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=30)
            assert proc.returncode == 0 and "stopped" in out, out + err
            return
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    res = subprocess.CompletedProcess(proc.args, proc.returncode, first + out, err)
    line = one_line(res)
    assert res.returncode == 1 and ("microphone" in line or "PortAudio" in line), line
def test_a_file_played_as_if_live_and_stopped_with_ctrl_c(live_run, talk_and_silence, tmp_path):
    proc = subprocess.Popen(live_cmd(talk_and_silence, "--realtime", "--run", live_run, "--record", tmp_path / "rec"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=ctrl_c_as_at_a_terminal)
    try:
        deadline = time.monotonic() + 60
        while not (tmp_path / "rec" / "live.jsonl").exists() or len(journal(tmp_path / "rec")) < 2:
            assert time.monotonic() < deadline and proc.poll() is None, proc.communicate()
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0 and "stopped" in out and "Traceback" not in err, out + err
    lines = journal(tmp_path / "rec")
    assert 2 <= len(lines) < int((LENGTH_S - 1) / 0.5) + 1  # paced by the clock: stopped before the end
    assert [x["t"] for x in lines] == [1.0 + 0.5 * k for k in range(len(lines))]
    ended = json.loads((tmp_path / "rec" / "live.json").read_text())
    assert ended["live"] is True and ended["ended"]["error"] == "stopped (Ctrl-C)"
    assert ended["ended"]["windows"] >= len(lines) - 1


def test_the_microphone_path_hears_what_alsa_gives_it(live_run, tmp_path):
    # The real capture path (sounddevice -> PortAudio -> ALSA) on a machine without a sound card:
    # the default capture device of a test-made ALSA configuration is ALSA's file plugin reading a
    # steady tone (4 s, whole periods) from a file, over the null device. (The null device alone
    # hands PortAudio float buffers it never fills: whatever was in that memory, up to 1e15 here.)
    # The null device keeps no clock, so the tone comes as fast as it is read (and keeps coming once
    # the file has been read) and most windows are dropped as stale. Checked: the microphone opens,
    # a line comes every hop, and every window made hears the tone (its loudness, not "quiet").
    # `make test` installs sounddevice (the test extra) and PortAudio (.ci/install-portaudio):
    # without them this skips, which fails under CI.
    import os

    try:
        import sounddevice  # noqa: F401
    except (ImportError, OSError) as e:
        pytest.skip(f"no microphone library here ({type(e).__name__}: pip install 's2i[live]', "
                    "apt-get install libportaudio2: .ci/install-portaudio)")
    if not Path("/usr/share/alsa/alsa.conf").is_file():
        pytest.skip("no ALSA configuration (/usr/share/alsa/alsa.conf): not a Linux with ALSA")
    t = np.arange(4 * SR) / SR
    (np.round(0.5 * np.sin(2 * np.pi * 440 * t) * 32767)).astype("<i2").tofile(tmp_path / "tone.raw")
    conf = tmp_path / "asound.conf"
    conf.write_text("</usr/share/alsa/alsa.conf>\n"
                    "pcm.s2i_null { type null }\n"
                    f'pcm.s2i_tone {{ type file slave.pcm "s2i_null" file "/dev/null" infile "{tmp_path / "tone.raw"}" '
                    'format "raw" }\n'
                    f'pcm.!default {{ type plug slave {{ pcm "s2i_tone" format S16_LE rate {SR} channels 1 }} }}\n')
    proc = subprocess.Popen(live_cmd("--run", live_run, "--record", tmp_path / "rec"), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "ALSA_CONFIG_PATH": str(conf)},
                            preexec_fn=ctrl_c_as_at_a_terminal)
    try:
        first = proc.stdout.readline()
        assert first.startswith("hearing microphone (default)"), first + proc.stderr.read()
        deadline = time.monotonic() + 120
        while sum(not x["dropped"] for x in journal(tmp_path / "rec")) < 3:
            assert time.monotonic() < deadline and proc.poll() is None, proc.communicate()
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0 and "stopped" in out and "Traceback" not in err, out + err
    lines = journal(tmp_path / "rec")
    assert [x["t"] for x in lines[:3]] == [1.0, 1.5, 2.0]
    tone_db = 20 * np.log10(0.5 / np.sqrt(2))  # -9.03 dBFS
    made = [x for x in lines if not x["dropped"]]
    assert len(made) >= 3 and all(not x["quiet"] and abs(x["loudness"] - tone_db) < 0.1 and len(x["pictures"]) == 1
                                  for x in made), made
    assert json.loads((tmp_path / "rec" / "live.json").read_text())["input"] == "microphone (default)"
