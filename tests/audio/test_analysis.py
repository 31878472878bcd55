"""The analysis against music whose every beat and hit is known (tests/audio/signals.py)."""

import numpy as np
import pytest

from ffvj.audio.analysis import FEATURES, MIN_CONFIDENCE, Analyser
from tests.audio.signals import click_track, drum_clip, match_onsets


def analyse(samples, block=480):
    """Feed ``samples`` in blocks (a sound card's), keeping the features after each block and every onset."""
    analyser, features, onsets, seen = Analyser(), [], [], 0
    for i in range(0, len(samples), block):
        analyser.feed(samples[i:i + block])
        f = analyser.features()
        features.append(f)
        if f.onsets > seen:
            onsets.extend(f.recent_onsets[len(f.recent_onsets) - (f.onsets - seen):])
            seen = f.onsets
    return features, np.array(onsets)


def phase_errors_ms(features, beats, after=4.0):
    """How far the analysis' beat is from the true beats, in ms, at every block after ``after`` seconds."""
    period = beats[1] - beats[0]
    errors = [((f.beat % 1.0) - ((f.time - beats[0]) / period) % 1.0 + 0.5) % 1.0 - 0.5
              for f in features if f.time > after]
    return np.abs(errors) * period * 1000


@pytest.mark.parametrize("bpm, start, amplitude", [(120, 0.3, 0.5), (127, 0.11, 0.05), (96, 0.2, 0.5),
                                                   (140, 0.05, 0.005)])
def test_a_click_track_gives_its_tempo_within_a_bpm_in_4_s_and_its_beats_within_20_ms(bpm, start, amplitude):
    samples, beats = click_track(bpm, 10, start=start, amplitude=amplitude)
    features, onsets = analyse(samples)
    settled = [f for f in features if f.time >= 4.0]
    assert all(abs(f.bpm - bpm) <= 1.0 for f in settled), [round(f.bpm, 1) for f in settled[::50]]
    assert all(f.confidence >= MIN_CONFIDENCE for f in settled)
    assert np.percentile(phase_errors_ms(features, beats), 95) <= 20
    assert match_onsets(onsets, beats) == (1.0, 0.0)  # every click, nothing else, even at -46 dBFS


def test_the_beat_never_runs_backwards():
    samples, _ = click_track(120, 8, start=0.37)
    beats = [f.beat for f in analyse(samples)[0]]
    assert all(b2 >= b1 for b1, b2 in zip(beats, beats[1:]))


@pytest.mark.parametrize("seed, bpm, silence", [(0, 100, 0.0), (1, 120, 1.5), (2, 140, 0.0)])
def test_a_drum_clip_gives_its_hits_and_its_tempo(seed, bpm, silence):
    """(After ``silence`` seconds of nothing, as when the music starts in a live show.)"""
    samples, hits = drum_clip(20, bpm=bpm, seed=seed)
    samples, hits = np.concatenate([np.zeros(int(silence * 48000), np.float32), samples]), hits + silence
    features, onsets = analyse(samples)
    recall, false = match_onsets(onsets, hits)
    assert recall >= 0.95 and false <= 0.05, (recall, false, len(onsets), len(hits))
    assert abs(features[-1].bpm - bpm) <= 1.0 and features[-1].confidence >= MIN_CONFIDENCE


def test_the_features_do_not_depend_on_the_block_size():
    samples, _ = drum_clip(4, seed=3)
    a, b = Analyser(), Analyser()
    for i in range(0, len(samples), 64):
        a.feed(samples[i:i + 64])
    for i in range(0, len(samples), 4800):
        b.feed(samples[i:i + 4800])
    assert a.features() == b.features()


def test_auto_gain_a_quiet_bar_drives_the_picture_as_a_loud_club_does():
    samples, _ = drum_clip(12, seed=4)
    loud, quiet = analyse(samples)[0], analyse(samples * 0.1)[0]  # 20 dB apart
    for name in ("level", "bass", "high"):
        a = np.array([getattr(f, name) for f in loud if f.time > 8])
        b = np.array([getattr(f, name) for f in quiet if f.time > 8])
        assert abs(a.mean() - b.mean()) < 0.05 and 0.2 < a.mean() < 0.8, (name, a.mean(), b.mean())


def test_silence_rests_every_feature_and_music_ending_eases_to_rest():
    features, _ = analyse(np.zeros(48000 * 2, np.float32))
    assert not features[-1].active and features[-1].level == 0 and features[-1].onsets == 0
    samples, _ = drum_clip(6, seed=5)
    features, _ = analyse(np.concatenate([samples, np.zeros(48000 * 2, np.float32)]))
    during = [f.level for f in features if 3 < f.time < 5.5]
    after = [f for f in features if f.time > 7.0]
    assert max(during) > 0.5
    assert all(f.level < 0.01 and f.onset < 0.01 and f.beat_pulse == f.beat_pulse for f in after)
    easing = [f.level for f in features if 6.0 < f.time < 7.0]
    assert easing[0] > easing[-1] and all(b <= a + 1e-9 for a, b in zip(easing, easing[1:]))


def test_bad_samples_are_silence_not_nan():
    analyser = Analyser()
    analyser.feed(np.full(4800, np.nan, np.float32))
    analyser.feed(np.full(4800, np.inf, np.float32))
    f = analyser.features()
    assert all(np.isfinite(f.value(name)) for name in FEATURES)


def test_every_modulation_feature_is_in_0_1():
    samples, _ = drum_clip(6, seed=6)
    for f in analyse(samples)[0][::20]:
        for name in FEATURES:
            assert 0.0 <= f.value(name) <= 1.0, (name, f.value(name))
