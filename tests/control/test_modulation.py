import math

import pytest

from ffvj.control.modulation import Modulation, held_random, lfo_value, synced_cycles
from ffvj.control.params import (LFO_DIVISIONS as DIVISIONS, LFO_SHAPES as SHAPES, LFO_SLOTS, ParamStore, build_registry,
                                 lfo_slots)
from ffvj.control.tempo import Tempo


def registry(levels: int = 3) -> dict:
    return build_registry(levels)


def values_with(reg: dict, **settings) -> dict:
    """Default values, with ``lfo1__depth=0.5``-style overrides (enums by choice name)."""
    store = ParamStore(reg)
    for key, value in settings.items():
        assert store.set(key.replace("__", "."), value), key
    return store.targets()


# LFO 1's output, read from what it does: it moves l1.rotate (0 by default, half its range 10°) at depth 1.
PROBE = {"lfo1__target": "l1.rotate", "lfo1__depth": 1.0}


def lfo1(mod: Modulation, values: dict, beat: float, seconds: float) -> float:
    return mod.apply(values, beat, seconds)["l1.rotate"] / 10.0


# --- shapes ----------------------------------------------------------------------------------------

SHAPE_TABLE = {
    "sine": [(0, 0), (0.25, 1), (0.5, 0), (0.75, -1), (1.25, 1), (3.75, -1)],
    "triangle": [(0, 0), (0.125, 0.5), (0.25, 1), (0.5, 0), (0.625, -0.5), (0.75, -1), (0.875, -0.5), (1, 0),
                 (2.25, 1)],
    "saw": [(0, -1), (0.25, -0.5), (0.5, 0), (0.75, 0.5), (1, -1), (1.5, 0)],
    "square": [(0, 1), (0.25, 1), (0.4999, 1), (0.5, -1), (0.75, -1), (1, 1)],
}


@pytest.mark.parametrize("shape", list(SHAPE_TABLE))
def test_shape_values_at_known_positions(shape):
    for cycles, expected in SHAPE_TABLE[shape]:
        got = lfo_value(shape, cycles)
        if shape == "sine":  # sin(π) is 1.2e-16 in floating point, not 0
            assert got == pytest.approx(expected, abs=1e-15), cycles
        else:
            assert got == expected, cycles


def test_every_shape_stays_in_range_and_unknown_shape_fails():
    for shape in SHAPES:
        assert all(-1 <= lfo_value(shape, i / 97) <= 1 for i in range(300))
    with pytest.raises(ValueError, match="sine"):
        lfo_value("wobble", 0.0)


def test_division_lengths_in_beats():
    assert DIVISIONS["8bar"] == 32 and DIVISIONS["4bar"] == 16 and DIVISIONS["2bar"] == 8
    assert DIVISIONS["1bar"] == 4 and DIVISIONS["1/2"] == 2 and DIVISIONS["1/4"] == 1
    assert DIVISIONS["1/8"] == 0.5 and DIVISIONS["1/16"] == 0.25
    assert DIVISIONS["1/4t"] * 3 == pytest.approx(2)  # three triplet quarters in a half note
    assert DIVISIONS["1/8t"] * 3 == pytest.approx(1) and DIVISIONS["1/16t"] * 6 == pytest.approx(1)
    assert DIVISIONS["free"] is None


@pytest.mark.parametrize("division", [d for d in DIVISIONS if d != "free"])
@pytest.mark.parametrize("shape", ["sine", "triangle", "saw", "square"])
def test_synced_lfo_at_known_beats_for_every_division(division, shape):
    """Through Modulation.apply: a quarter of the division's beats in, the LFO is a quarter cycle in."""
    reg = registry()
    length = DIVISIONS[division]
    for quarter in range(9):
        beat = length * quarter / 4
        values = values_with(reg, lfo1__shape=shape, lfo1__division=division, **PROBE)
        got = lfo1(Modulation(reg), values, beat, 0.0)
        expected = lfo_value(shape, quarter / 4)
        if length in (0.25, 0.5, 1, 2, 4, 8, 16, 32):  # powers of two: exact in floating point
            assert synced_cycles(beat, division) == quarter / 4
        assert got == pytest.approx(expected, abs=1e-12)


def test_modulated_value_is_value_plus_depth_times_half_range():
    reg = registry()
    values = values_with(reg, lfo1__target="l0.zoom", lfo1__shape="square", lfo1__division="1/4",
                         lfo1__depth=0.5)
    zoom = reg["l0.zoom"]
    out = Modulation(reg).apply(values, 0.0, 0.0)  # square is +1 at the start of the cycle
    assert out["l0.zoom"] == values["l0.zoom"] + 0.5 * 1.0 * (zoom.max - zoom.min) / 2
    out = Modulation(reg).apply(values, 0.5, 0.0)  # and -1 in the second half
    assert out["l0.zoom"] == values["l0.zoom"] - 0.5 * (zoom.max - zoom.min) / 2
    assert {k: v for k, v in out.items() if k != "l0.zoom"} == {k: v for k, v in values.items() if k != "l0.zoom"}


def test_phase_offset_shifts_the_cycle():
    reg = registry()
    mod = Modulation(reg)
    values = values_with(reg, lfo1__division="1bar", lfo1__phase=0.25, **PROBE)
    assert lfo1(mod, values, 0.0, 0.0) == 1.0  # sine a quarter cycle in
    assert lfo1(mod, values, 1.0, 0.0) == pytest.approx(0.0, abs=1e-15)  # one beat = a quarter bar, + the offset
    values = values_with(reg, lfo1__division="1bar", lfo1__phase=0.5, lfo1__shape="saw", **PROBE)
    assert lfo1(mod, values, 1.0, 0.0) == 0.5  # 0.25 + 0.5 cycles in: saw 2·0.75 − 1


def test_free_running_lfo_integrates_its_rate():
    reg = registry()
    mod = Modulation(reg)
    values = values_with(reg, lfo1__division="free", lfo1__rate=2.0, lfo1__shape="saw", **PROBE)
    assert lfo1(mod, values, 123.0, 10.0) == -1.0  # the first call starts free LFOs at 0 whatever the beat
    assert lfo1(mod, values, 123.0, 10.125) == -0.5  # 2 Hz · 0.125 s = a quarter cycle
    values["lfo1.rate"] = 1.0  # a new rate continues from where the phase is: no jump
    assert lfo1(mod, values, 123.0, 10.125) == -0.5
    assert lfo1(mod, values, 123.0, 10.375) == 0.0  # 0.25 + 1 Hz · 0.25 s
    assert lfo1(mod, values, 123.0, 9.0) == 0.0  # a clock going backwards does not run the LFO backwards


def test_random_holds_one_value_per_cycle_deterministically():
    reg = registry()
    values = values_with(reg, lfo1__shape="random", lfo1__division="1/4", **PROBE)
    mod = Modulation(reg, seed=7)
    per_cycle = []
    for cycle in range(20):
        held = {lfo1(mod, values, cycle + f, 0.0) for f in (0.0, 0.3, 0.999)}
        assert len(held) == 1  # sample and hold: one value for the whole cycle
        per_cycle += held
    assert len(set(per_cycle)) == 20  # a new value every cycle
    assert all(-1 <= v < 1 for v in per_cycle)
    again = Modulation(reg, seed=7)
    assert [lfo1(again, values, c + 0.5, 0.0) for c in range(20)] == per_cycle
    # A pure function of (seed, slot, cycle) (times 10°, then back, within rounding).
    assert per_cycle == pytest.approx([held_random(7, 1, c) for c in range(20)], abs=1e-12)
    assert per_cycle != [held_random(8, 1, c) for c in range(20)]
    assert per_cycle != [held_random(7, 2, c) for c in range(20)]  # slots differ


def test_modulation_clamps_at_both_range_ends():
    reg = registry()
    mod = Modulation(reg)
    # input.mix at its top, pushed further up; l0.noise at its bottom, pushed further down.
    values = values_with(reg, **{"input.mix": 1.0, "l0.noise": 0.0},
                         lfo1__target="input.mix", lfo1__shape="square", lfo1__depth=1.0,
                         lfo2__target="l0.noise", lfo2__shape="square", lfo2__depth=-1.0)
    out = mod.apply(values, 0.0, 0.0)
    assert out["input.mix"] == 1.0 and out["l0.noise"] == 0.0
    out = mod.apply(values, 2.0, 0.0)  # second half of the bar: the square flips, ± half the range
    assert out["input.mix"] == 0.5 and out["l0.noise"] == reg["l0.noise"].max / 2


def test_two_lfos_on_one_target_add_up_before_the_clamp():
    reg = registry()
    values = values_with(reg, lfo1__target="l0.rotate", lfo1__shape="square", lfo1__depth=0.25,
                         lfo2__target="l0.rotate", lfo2__shape="square", lfo2__depth=0.5, **{"l0.rotate": 0.0})
    out = Modulation(reg).apply(values, 0.0, 0.0)
    assert out["l0.rotate"] == 0.75 * 10.0  # half of rotate's range is 10 degrees


def test_apply_never_touches_the_store_or_its_input():
    reg = registry()
    store = ParamStore(reg)
    store.set("lfo1.target", "l0.zoom")
    store.set("lfo1.depth", 1.0)
    store.set("lfo1.shape", "square")
    before = store.targets()
    values = store.advance(1.0)
    snapshot = dict(values)
    mod = Modulation(reg)
    out = mod.apply(values, 0.0, 0.0)
    assert store.targets() == before and values == snapshot
    assert out["l0.zoom"] != values["l0.zoom"]
    assert mod.modulated == {"l0.zoom": out["l0.zoom"]} and mod.released == set()
    values["lfo1.depth"] = 0.0  # the performer turns it off: the target is reported as released
    out = mod.apply(values, 0.0, 0.0)
    assert out == values and mod.modulated == {} and mod.released == {"l0.zoom"}


def test_tempo_change_keeps_the_lfo_phase_continuous():
    tempo = Tempo(120)
    tempo.start(now=100.0)
    reg = registry()
    values = values_with(reg, lfo1__division="1bar", lfo1__shape="saw", **PROBE)
    mod = Modulation(reg)
    before = lfo1(mod, values, tempo.beat(101.0), 101.0)  # beat 2 at 120 BPM: half a bar
    assert before == 0.0
    tempo.set_bpm(60, now=101.0)
    assert lfo1(mod, values, tempo.beat(101.0), 101.0) == before  # no jump at the change
    assert lfo1(mod, values, tempo.beat(102.0), 102.0) == 0.5  # one more beat at 60 BPM: ¾ of the bar


def test_lfo_params_declare_every_slot_in_the_registry():
    reg = build_registry(3)
    params = {name: p for name, p in reg.items() if name.startswith("lfo")}
    assert len(params) == 6 * LFO_SLOTS and lfo_slots(reg) == list(range(1, LFO_SLOTS + 1))
    for k in range(1, LFO_SLOTS + 1):
        for field in ("target", "shape", "division", "rate", "depth", "phase"):
            assert f"lfo{k}.{field}" in params
    target = params["lfo1.target"]
    assert target.kind == "enum" and target.choices[0] == "none" and target.default == 0
    assert "l0.zoom" in target.choices and "l3.period" in target.choices and "color.hue" in target.choices
    assert not {"bound", "map.kind", "l0.freeze"} & set(target.choices)  # not numeric
    assert not any(c.startswith("lfo") for c in target.choices)
    assert params["lfo1.depth"].default == 0 and (params["lfo1.depth"].min, params["lfo1.depth"].max) == (-1, 1)
    assert params["lfo1.shape"].choices == SHAPES
    assert params["lfo1.division"].choices[int(params["lfo1.division"].default)] == "1bar"
    assert len({p.address for p in reg.values()}) == len(reg)  # every OSC address is distinct
    assert lfo_slots(build_registry(3, lfo_slots=2)) == [1, 2] and lfo_slots(build_registry(3, lfo_slots=0)) == []


def test_modulation_without_lfo_slots_passes_values_through():
    reg = build_registry(3, lfo_slots=0)
    values = ParamStore(reg).targets()
    mod = Modulation(reg)
    assert mod.slots == [] and mod.apply(values, 1.0, 1.0) == values


# --- audio slots ------------------------------------------------------------------------------------

def test_an_audio_slot_pushes_its_target_by_depth_times_the_feature_and_rests_in_silence():
    from ffvj.audio.analysis import AudioFeatures

    reg = registry()
    mod = Modulation(reg)
    values = values_with(reg, audio1__target="l1.rotate", audio1__feature="bass", audio1__depth=0.5)
    assert mod.apply(values, 0.0, 0.0)["l1.rotate"] == 0.0  # no audio input: the fader's value
    assert mod.apply(values, 0.0, 0.1, AudioFeatures(bass=0.8))["l1.rotate"] == pytest.approx(0.5 * 0.8 * 10)
    assert mod.modulated == {"l1.rotate": pytest.approx(4.0)}
    assert mod.apply(values, 0.0, 0.2, AudioFeatures())["l1.rotate"] == 0.0
    curved = values_with(reg, audio1__target="l1.rotate", audio1__feature="bass", audio1__depth=1.0, audio1__curve=2.0)
    assert mod.apply(curved, 0.0, 0.3, AudioFeatures(bass=0.5))["l1.rotate"] == pytest.approx(0.25 * 10)
    # A beat pulse on the drive, with an LFO on the same target: they add, and the clamp comes once.
    both = values_with(reg, audio2__target="drive", audio2__feature="beat", audio2__depth=1.0,
                       lfo1__target="drive", lfo1__depth=1.0, lfo1__shape="square")
    assert mod.apply(both, 0.0, 0.4, AudioFeatures(beat=7.0, confidence=1.0))["drive"] == reg["drive"].max


def test_an_audio_slots_smoothing_is_seconds_on_the_render_clock():
    from ffvj.audio.analysis import AudioFeatures

    reg = registry()
    values = values_with(reg, audio1__target="l1.rotate", audio1__feature="onset", audio1__depth=1.0,
                         audio1__smooth=0.5)
    for fps in (30, 120):
        mod = Modulation(reg)
        mod.apply(values, 0.0, 0.0, AudioFeatures())
        for frame in range(1, fps // 2 + 1):  # half a second of a steady feature at 1
            out = mod.apply(values, 0.0, frame / fps, AudioFeatures(onset=1.0))["l1.rotate"]
        assert out == pytest.approx(10 * (1 - math.exp(-1)), abs=0.01)  # one time constant, at any frame rate
