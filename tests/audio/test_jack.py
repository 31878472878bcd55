"""Music through a real JACK server (dummy driver): a peer plays a click track and a drum clip into ffvj's
PortAudio input, and ffvj, a show of its own in another process, hears the tempo, the beat and the hits."""

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from tests.audio.signals import click_track, drum_clip, match_onsets
from tests.jack import jack_audio_server  # noqa: F401 (a fixture)

pytestmark = pytest.mark.slow  # (pytest -m "not slow": the quick subset; CI runs them all)

# The player: a JACK client whose output goes to every PortAudio input port once ffvj has opened them. It
# plays the samples in a .npy file after a second of silence (from when it connected) and prints, as JSON, when each of the given
# event times (seconds into the samples) went out, on time.monotonic()'s clock: this cycle's buffer ends
# now, and ffvj's input gets the same buffer in the same cycle.

PLAYER = """
import json, sys, time, threading
import jack, numpy as np
samples = np.load(sys.argv[1]).astype(np.float32)
events = json.loads(sys.argv[2])
lead = 48000  # a second of silence first
client = jack.Client("ffvj-test-player", no_start_server=True)
out = client.outports.register("out")
position, sent, done, connected = -lead, [], threading.Event(), threading.Event()

@client.set_process_callback
def process(frames):
    global position
    now = time.monotonic()
    buffer = out.get_array()
    buffer[:] = 0
    if not connected.is_set():  # the second of silence starts once ffvj listens
        return
    lo, hi = max(position, 0), max(position + frames, 0)
    if hi > lo and lo < len(samples):
        chunk = samples[lo:hi]
        buffer[frames - (hi - lo):frames - (hi - lo) + len(chunk)] = chunk
    for t in events:
        i = int(round(t * 48000))
        if position <= i < position + frames:
            sent.append(now - (position + frames - i) / 48000)
    position += frames
    if position > len(samples) + 48000:
        done.set()

with client:
    deadline = time.monotonic() + 30
    while not client.get_ports("PortAudio", is_input=True, is_audio=True) and time.monotonic() < deadline:
        time.sleep(0.05)
    for port in client.get_ports("PortAudio", is_input=True, is_audio=True):
        client.connect(out, port)
    connected.set()
    print("playing", flush=True)
    done.wait(60)
print(json.dumps(sent), flush=True)
"""

# ffvj: a live show (real time, 60 fps) hearing the JACK device "system", printing every frame's tempo
# and what it heard as JSON lines.
SHOW = """
import json, math, sys, time
from ffvj.control.controls import Controls
from ffvj.show import RunConfig, run
controls = Controls.for_levels(3)
def on_frame(slot, picture, source, engine):
    now = time.monotonic()
    h = controls.heard
    print(json.dumps({"t": now, "beat": controls.tempo.beat(now), "bpm": controls.tempo.bpm,
                      "source": controls.tempo.source, "onsets": h.onsets, "dropped": controls.audio.counts["dropped_blocks"],
                      "onsets_at": [[t, h.clock - (h.time - t)] for t in h.recent_onsets]}), flush=True)
run(RunConfig(source="generator", sinks=["null"], width=64, height=48, fps=60, frames=int(sys.argv[1]),
              pace="realtime", audio="system", status_interval=math.inf), controls=controls, on_frame=on_frame)
"""


def play_and_listen(env, tmp_path, samples, events, seconds):
    np.save(tmp_path / "play.npy", samples)
    show = subprocess.Popen([sys.executable, "-c", textwrap.dedent(SHOW), str(int(seconds * 60))], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    player = subprocess.Popen([sys.executable, "-c", textwrap.dedent(PLAYER), str(tmp_path / "play.npy"),
                               json.dumps([float(t) for t in events])], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    try:
        out, err = show.communicate(timeout=seconds + 60)
        assert show.returncode == 0, err[-2000:]
        played, perr = player.communicate(timeout=60)
        assert player.returncode == 0, perr[-2000:]
    finally:
        for proc in (show, player):
            if proc.poll() is None:
                proc.kill()
    frames = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    return frames, np.array(json.loads(played.splitlines()[-1]))


def test_through_jack_ffvj_finds_120_bpm_within_4_s_and_the_beat_within_20_ms(jack_audio_server, tmp_path):
    samples, beats = click_track(120, 12, start=0.25)
    frames, sent = play_and_listen(jack_audio_server, tmp_path, samples, beats, 14)
    assert len(sent) == len(beats)
    first = sent[0]
    settled = [f for f in frames if first + 4.0 <= f["t"] <= sent[-1]]
    assert settled and all(f["source"] == "audio" for f in settled)
    assert all(abs(f["bpm"] - 120) <= 1 for f in settled), sorted({round(f["bpm"], 1) for f in settled})
    # The show's beat against the clicks as they went out (latency compensated by the input's stamps).
    errors = np.array([((f["beat"] % 1.0) - ((f["t"] - first) / 0.5) % 1.0 + 0.5) % 1.0 - 0.5 for f in settled])
    assert np.percentile(np.abs(errors) * 500, 95) <= 20, np.percentile(np.abs(errors) * 500, [50, 95])


def test_through_jack_the_hits_of_a_drum_clip_are_heard(jack_audio_server, tmp_path):
    samples, hits = drum_clip(10, bpm=120, seed=11)
    frames, sent = play_and_listen(jack_audio_server, tmp_path, samples, hits, 12)
    heard = {}  # every onset the frames saw (each carries the last few): its time in the audio → on the clock
    for f in frames:
        for audio_time, t in f["onsets_at"]:
            heard.setdefault(audio_time, t)
    recall, false = match_onsets(sorted(heard.values()), sent)
    assert recall >= 0.95 and false <= 0.05, (recall, false, len(heard), len(sent))


TONE = """
import sys, time, jack, numpy as np
client = jack.Client("tone", no_start_server=True)
out = client.outports.register("out")
done = [0]

@client.set_process_callback
def process(frames):
    t = (np.arange(frames) + done[0]) / client.samplerate
    done[0] += frames
    out.get_array()[:] = 0.3 * np.sin(2 * np.pi * 220 * t) * (1 + 0.5 * np.sin(2 * np.pi * 0.7 * t))

with client:
    print("playing", flush=True)
    time.sleep(60)
"""


def test_a_jack_server_that_goes_away_mid_show_eases_the_music_to_rest_and_is_heard_again_when_back(
        tmp_path, caplog, monkeypatch):
    """``--audio jack:tone:out``: the server killed under a live input, then started again with the player."""
    import logging
    import shutil

    pytest.importorskip("jack")
    if shutil.which("jackd") is None:
        pytest.skip("jackd not installed (Debian: apt-get install jackd2)")
    from ffvj.audio.inputs import open_audio
    from tests.helpers import wait_until

    # One name on every run: the server dies by SIGKILL (a crash, as on stage), which leaves its entry in
    # JACK's shared registry (a handful of slots); a server of the same name takes a dead one's entry over.
    name = "ffvj-test-unplug"
    monkeypatch.setenv("JACK_DEFAULT_SERVER", name)
    monkeypatch.setenv("JACK_NO_START_SERVER", "1")

    def server_and_player():
        log_file = open(tmp_path / "jackd.log", "a")
        server = subprocess.Popen(["jackd", "-n", name, "-t", "10000", "-d", "dummy", "-r", "48000", "-p", "256"],
                                  stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True)
        player = None
        for _ in range(40):  # the server takes a moment; the player retries until it answers
            player = subprocess.Popen([sys.executable, "-c", TONE], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True)
            if player.stdout.readline().strip() == "playing":
                return server, player
            error = player.communicate()[1]
            time.sleep(0.25)
        server.kill()
        pytest.skip(f"jackd did not come up: {(tmp_path / 'jackd.log').read_text()[-600:]}; the player: {error[-600:]}")

    import time

    server, player = server_and_player()
    audio = open_audio("jack:tone:out")
    try:
        with caplog.at_level(logging.INFO, logger="ffvj.audio.inputs"):
            audio.start(time.monotonic())
            wait_until(lambda: audio.features_at(time.monotonic()).active, 20, what="the tone heard")
            for proc in (player, server):
                proc.kill()
                proc.wait(10)
            lost = time.monotonic()
            wait_until(lambda: not audio.features_at(time.monotonic()).active, 5, what="the loss noticed")
            wait_until(lambda: audio.features_at(time.monotonic()).level < 0.01, 5, what="the level at rest")
            assert time.monotonic() - lost < 4.0
            assert "absent" in audio.status()
            server, player = server_and_player()
            wait_until(lambda: audio.features_at(time.monotonic()).active, 20, what="the tone heard again")
        said = [r.getMessage() for r in caplog.records]
        assert any("lost" in m for m in said) and any("is back" in m for m in said)
    finally:
        audio.close()
        for proc in (player, server):
            proc.kill()
            proc.wait(10)
