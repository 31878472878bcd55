"""The show's tempo: taps, MIDI clock and set values."""

from ffvj.control.tempo import Tempo


def test_two_taps_on_one_clock_tick_do_not_divide_by_zero():
    tempo = Tempo(100)
    tempo.tap(now=5.0)
    assert tempo.tap(now=5.0) == 100
