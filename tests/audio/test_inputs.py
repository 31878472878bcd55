"""Audio inputs: a real sound file through PyAV, in step with the show's clock; a device that is not there."""

import logging
import math

import numpy as np
import pytest

from ffvj.audio.analysis import Analyser
from ffvj.audio.inputs import AudioError, DeviceAudio, FileAudio, open_audio
from tests.audio.signals import click_track, drum_clip, write_wav
from tests.helpers import wait_until


@pytest.fixture(scope="module")
def drums_wav(tmp_path_factory):
    samples, hits = drum_clip(6, bpm=120, seed=7)
    path = tmp_path_factory.mktemp("audio") / "drums.wav"
    write_wav(path, samples)
    return path, samples, hits


def test_a_file_is_heard_in_step_with_the_show_clock(drums_wav):
    path, samples, _ = drums_wav
    audio = open_audio(f"file:{path}")
    assert isinstance(audio, FileAudio)
    audio.start(100.0)  # frame 0 at show time 100 s
    try:
        reference = Analyser()
        for t in (0.5, 1.0, 1.0, 2.25, 4.0):  # (asking twice for one moment gives the same answer)
            heard = audio.features_at(100.0 + t)
            assert t - 0.006 < heard.time <= t  # the last hop that ended by then
            assert heard.clock == pytest.approx(100.0 + heard.time)
        reference.feed(samples[:int(round(heard.time * 48000))])
        assert heard.onsets == reference.features().onsets and heard.level == pytest.approx(reference.features().level, abs=1e-3)  # (the file is 16-bit)
    finally:
        audio.close()


def test_after_its_end_a_file_is_silence_and_the_features_rest(drums_wav):
    path, *_ = drums_wav
    audio = open_audio(f"file:{path}")
    audio.start(0.0)
    try:
        during, after = audio.features_at(5.0), audio.features_at(8.5)
        assert during.active and during.level > 0.2
        assert not after.active and after.level == 0 and after.onset < 0.01
    finally:
        audio.close()


def test_a_file_that_is_not_sound_says_so_at_start(tmp_path):
    with pytest.raises(AudioError, match="cannot read it"):
        open_audio(f"file:{tmp_path / 'nothing.wav'}")
    picture = tmp_path / "picture.png"
    import cv2

    cv2.imwrite(str(picture), np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(AudioError, match="no audio stream"):
        open_audio(f"file:{picture}")


def test_a_device_that_is_not_there_is_said_once_and_the_features_rest(caplog):
    pytest.importorskip("sounddevice", exc_type=ImportError)
    try:
        audio = DeviceAudio("no such input 9f3c")
    except AudioError as exc:  # no PortAudio library here at all: that is said at start too
        assert "libportaudio2" in str(exc)
        return
    with caplog.at_level(logging.WARNING, logger="ffvj.audio.inputs"):
        audio.start(0.0)
        try:
            wait_until(lambda: audio.features_at(0.0).time > 0.2, 10, what="silence analysed")
            heard = audio.features_at(0.0)
            assert not heard.active and heard.level == 0 and math.isfinite(heard.beat)
            assert "absent" in audio.status()
        finally:
            audio.close()
    said = [r for r in caplog.records if "no such input 9f3c" in r.getMessage()]
    assert len(said) == 1 and "looks for it" in said[0].getMessage()


def test_click_track_file_leads_the_show_tempo(tmp_path):
    from ffvj.control.controls import Controls

    samples, _ = click_track(100, 6, start=0.25)
    write_wav(tmp_path / "click.wav", samples)
    controls = Controls.for_levels(3)
    controls.audio = open_audio(f"file:{tmp_path / 'click.wav'}")
    controls.audio.start(0.0)
    try:
        for frame in range(int(5.5 * 30)):
            controls.next_phi(None, 1 / 30, frame / 30)
        assert controls.tempo.source == "audio" and controls.tempo.bpm == pytest.approx(100, abs=1)
        # On the beat: the clicks fall at 0.25 + 0.6 k seconds.
        beat = controls.tempo.beat(0.25 + 0.6 * 9)
        assert abs((beat + 0.5) % 1.0 - 0.5) < 0.02 / 0.6
    finally:
        controls.audio.close()
