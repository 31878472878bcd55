"""The show's tempo: taps, MIDI clock, the audio beat and set values."""

import pytest

from ffvj.control.tempo import Tempo


def test_two_taps_on_one_clock_tick_do_not_divide_by_zero():
    tempo = Tempo(100)
    tempo.tap(now=5.0)
    assert tempo.tap(now=5.0) == 100


def test_the_audio_beat_leads_unless_midi_clock_spoke_within_the_hold():
    from ffvj.control.tempo import HOLD, MAX_PULL

    tempo = Tempo(120)
    tempo.start(0.0)
    assert tempo.follow("audio", 128.0, 0.0, 0.5) and tempo.source == "audio" and tempo.bpm == 128.0
    for i in range(25):  # MIDI clock at 100 BPM: 24 pulses a beat
        tempo.clock_tick(1.0 + i * 0.025)
    assert tempo.bpm == pytest.approx(100, abs=0.5)
    assert not tempo.follow("audio", 128.0, 0.0, 1.0 + HOLD - 0.1)  # the clock leads
    assert tempo.bpm == pytest.approx(100, abs=0.5)
    assert tempo.follow("audio", 128.0, 0.0, 1.6 + HOLD)  # the clock went quiet
    # Taking the lead far off, the audio sets the phase (a join); after that it pulls it, at most MAX_PULL
    # beats a call: the beat never jumps.
    tempo = Tempo(120)
    tempo.start(0.0)
    tempo.follow("audio", 120.0, 0.0, 1.0)
    assert tempo.beat(1.0) % 1.0 == pytest.approx(0.0)
    before = tempo.beat(1.5)
    tempo.follow("audio", 120.0, 0.4, 1.5)
    assert tempo.beat(1.5) - before == pytest.approx(MAX_PULL)
    for k in range(40):  # an audio beat 0.4 beats ahead of the clock's own: it catches up in 8 calls
        now = 1.5 + k / 60
        tempo.follow("audio", 120.0, (0.4 + now * 2) % 1.0, now)
    assert (tempo.beat(2.0) - 0.4) % 1.0 == pytest.approx(0.0, abs=1e-6)


def test_a_link_session_leads_the_midi_clock_and_aligns_the_bar():
    tempo = Tempo(120)
    tempo.start(0.0)
    assert tempo.follow("link", 126.0, 2.5, 1.0, period=4.0)  # joining: on the session's bar at once
    assert tempo.bpm == 126.0 and tempo.beat(1.0) % 4.0 == pytest.approx(2.5)
    for i in range(30):  # MIDI clock at 100 BPM is heard, not followed
        tempo.clock_tick(1.1 + i * 0.025)
    assert tempo.bpm == 126.0 and tempo.source == "link"
    assert not tempo.follow("audio", 90.0, 0.0, 2.0)
    tempo.set_bpm(130.0, 2.0)  # the performer's word: counted, so the session can be told
    assert tempo.performer_changes == 1
