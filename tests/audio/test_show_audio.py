"""A show that hears a track: ``--audio file:`` through the real show, offline and repeatable."""

import math

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
