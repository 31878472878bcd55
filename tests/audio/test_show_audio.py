"""A show that hears a track: ``--audio file:`` through the real show, offline and repeatable."""

import math
import time

import numpy as np
import pytest

from ffvj.control.controls import Controls
from ffvj.show import RunConfig, StartupError, run
from tests.audio.signals import drum_clip, write_wav


@pytest.fixture(scope="module")
def track(tmp_path_factory):
    samples, hits = drum_clip(5, bpm=120, seed=8)
    path = tmp_path_factory.mktemp("track") / "drums.wav"
    write_wav(path, samples)
    return path, hits


REACTING = {"audio1.target": "color.contrast", "audio1.feature": "onset", "audio1.depth": 1.0,
            "audio.on_beat": "reset", "audio.beat_every": 2}


def render(path, settings, fired=None):
    controls = Controls.for_levels(3)
    if fired is not None:
        fire = controls.fire
        controls.fire = lambda name, *a, **k: (fired.append(name), fire(name, *a, **k))[1]
    pictures, contrast = [], []

    def on_frame(slot, picture, source, engine):
        pictures.append(picture.copy())
        contrast.append((slot, controls.heard.onset))

    run(RunConfig(source="generator", sinks=["null"], width=96, height=64, fps=30, frames=120, seed=0,
                  audio=f"file:{path}", settings=settings, status_interval=math.inf), controls=controls,
        on_frame=on_frame)
    return pictures, contrast


def test_the_picture_follows_the_track_and_a_render_repeats_exactly(track):
    path, hits = track
    fired = []
    pictures, heard = render(path, REACTING, fired)
    again, _ = render(path, REACTING)
    assert all(np.array_equal(a, b) for a, b in zip(pictures, again))  # the same track, the same film
    plain, _ = render(path, {})
    # The hits are heard on their frames: the onset pulse is 1 within a frame of each hit.
    for t in hits[hits < 3.9]:
        frame = int(math.ceil(t * 30))
        assert max(v for slot, v in heard if frame <= slot <= frame + 1) > 0.8, t
    changed = [float(np.abs(a.astype(int) - b).mean()) for a, b in zip(pictures, plain)]
    assert max(changed) > 5  # the music moved the picture
    assert fired.count("reset") >= 1  # every second beat fired the re-seed nudge


def test_a_missing_track_fails_at_start_with_one_line(tmp_path):
    with pytest.raises(StartupError, match="cannot read it"):
        run(RunConfig(source="generator", sinks=["null"], width=64, height=48, frames=2,
                      audio=f"file:{tmp_path / 'missing.flac'}", status_interval=math.inf))


def test_osc_feedback_and_dump_carry_what_the_music_does(track, tmp_path):
    """A real UDP listener as the feedback target: the readings arrive as the music plays, and a dump
    (asked for over UDP) has every one of them."""
    import socket
    import threading

    from pythonosc.osc_message import OscMessage
    from pythonosc.udp_client import SimpleUDPClient

    from ffvj.control.osc import OscConfig, OscServer
    from ffvj.control.readings import READINGS

    path, _ = track
    listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    listener.bind(("127.0.0.1", 0))
    listener.settimeout(0.2)
    controls = Controls.for_levels(3)
    osc = OscServer(controls, OscConfig(port=0, feedback=(f"127.0.0.1:{listener.getsockname()[1]}",)))
    stop = threading.Event()
    show = threading.Thread(target=run, daemon=True, kwargs=dict(
        cfg=RunConfig(source="generator", sinks=["null"], width=64, height=48, fps=30, pace="realtime",
                      audio=f"file:{path}", status_interval=math.inf), controls=controls, stop=stop, services=[osc]))
    show.start()
    seen: dict[str, list] = {}
    try:
        deadline = time.monotonic() + 30
        while not {"/ffvj/audio/level", "/ffvj/audio/onset", "/ffvj/tempo/bar"} <= set(seen) or \
                len(seen["/ffvj/audio/onset"]) < 5:
            assert time.monotonic() < deadline, sorted(seen)
            try:
                message = OscMessage(listener.recv(65536))
            except TimeoutError:
                continue
            seen.setdefault(message.address, []).append(message.params[0])
        assert max(seen["/ffvj/audio/onset"]) > 0.5 and 0 <= min(seen["/ffvj/audio/level"]) <= 1
        # A subscriber's full dump carries every reading.
        dumped = set()
        SimpleUDPClient("127.0.0.1", osc.port).send_message("/ffvj/feedback/subscribe", [listener.getsockname()[1]])
        deadline = time.monotonic() + 10
        while not {r.address for r in READINGS.values()} <= dumped:
            assert time.monotonic() < deadline, sorted({r.address for r in READINGS.values()} - dumped)
            try:
                dumped.add(OscMessage(listener.recv(65536)).address)
            except TimeoutError:
                continue
        # (values that stopped moving, the heard tempo, reach a subscriber through the dump alone)
        assert {r.address for r in READINGS.values()} <= {address for address, _ in osc._dump(None)}
    finally:
        stop.set()
        show.join(30)
        listener.close()


def test_a_recording_carries_the_sound_in_step_with_the_picture(track, tmp_path):
    """The track muxed into the MP4 (AAC), read back: as long as the picture, and its hits where they were."""
    import av

    from tests.audio.signals import match_onsets
    from tests.audio.test_analysis import analyse

    path, hits = track
    out = tmp_path / "show.mp4"
    run(RunConfig(source="generator", sinks=[f"file:{out}"], width=96, height=64, fps=30, frames=120,
                  audio=f"file:{path}", status_interval=math.inf))
    with av.open(str(out)) as film:
        video, sound = film.streams.video[0], film.streams.audio[0]
        assert sound.codec_context.name == "aac" and sound.rate == 48000
        frames = [f for f in film.decode(sound)]
        start = float(frames[0].pts * frames[0].time_base)  # (AAC's priming: the muxer says where it begins)
        samples = np.concatenate([f.to_ndarray().reshape(-1) for f in frames])
    assert len(samples) / 48000 == pytest.approx(4.0, abs=0.1)  # 120 frames at 30 fps
    _, onsets = analyse(samples)
    recall, false = match_onsets(onsets + start, hits[hits < 3.9], tolerance=0.02)
    assert recall >= 0.9 and false <= 0.1, (recall, false)
