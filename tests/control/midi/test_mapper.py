"""The MIDI mapper: mido messages straight in; parameters, actions, tempo and LED echo out."""

from __future__ import annotations

import logging
import time

import mido
import pytest

from ffvj.control.controls import Controls
from ffvj.control.midi.mapper import MidiMapper
from .rig import REG, FakePort, cc, make, mapping, note, queued, wait_until


# ---------------------------------------------------------------------------------------------- values

def test_absolute_cc_range_curve_invert(rig):
    store = rig.store
    m = make(rig, {"param": "l0.zoom", "type": "cc", "number": 21, "min": 0.95, "max": 1.05, "channel": 1},
             {"param": "l1.zoom", "type": "cc", "number": 22, "curve": "linear", "min": 0.9, "max": 1.1},
             {"param": "input.mix", "type": "cc", "number": 23, "invert": True})
    m.handle(cc(21, 0))
    assert store.get("l0.zoom") == pytest.approx(0.95)
    m.handle(cc(21, 127))
    assert store.get("l0.zoom") == pytest.approx(1.05)
    m.handle(cc(21, 64))  # zoom's own curve is exp: equal ratios, so the middle is the geometric mean
    assert store.get("l0.zoom") == pytest.approx(0.95 * (1.05 / 0.95) ** (64 / 127))
    m.handle(cc(22, 64))
    assert store.get("l1.zoom") == pytest.approx(0.9 + 0.2 * 64 / 127)
    m.handle(cc(23, 0))
    assert store.get("input.mix") == pytest.approx(1.0)
    m.handle(cc(23, 127))
    assert store.get("input.mix") == pytest.approx(0.0)
    m.handle(cc(21, 10, ch=2))  # channel 1 only
    assert store.get("l0.zoom") == pytest.approx(0.95 * (1.05 / 0.95) ** (64 / 127))
    assert m.stats()["unmapped"] == 1


def test_cc14_lsb_after_msb_and_msb_only(rig):
    store = rig.store
    m = make(rig, {"param": "input.mix", "type": "cc14", "number": 7, "curve": "linear"})
    # An MSB-only controller: 7-bit values, and 127 still reaches the top.
    m.handle(cc(7, 127))
    assert store.get("input.mix") == pytest.approx(1.0)
    m.handle(cc(7, 64))
    assert store.get("input.mix") == pytest.approx(64 / 127)
    # A 14-bit controller: MSB then LSB on CC 7 + 32.
    m.handle(cc(7, 0x40))
    m.handle(cc(39, 0x15))
    assert store.get("input.mix") == pytest.approx(((0x40 << 7) | 0x15) / 16383)
    m.handle(cc(7, 0x7F))  # a new MSB resets the LSB (MIDI spec) ...
    assert store.get("input.mix") == pytest.approx((0x7F << 7) / 16383)
    m.handle(cc(39, 0x7F))  # ... until the LSB that follows
    assert store.get("input.mix") == pytest.approx(1.0)
    assert m.stats()["unmapped"] == 0


@pytest.mark.parametrize("mode, up, down", [("relative-twos", 1, 127), ("relative-binary", 65, 63),
                                            ("relative-signmag", 1, 65)])
def test_relative_modes(rig, mode, up, down):
    store = rig.store
    m = make(rig, {"param": "input.mix", "type": "cc", "number": 30, "mode": mode, "curve": "linear"},
             {"param": "l0.rotate", "type": "cc", "number": 31, "mode": mode, "step": 2.0, "invert": True})
    start = store.get("input.mix")
    m.handle(cc(30, up))
    assert store.get("input.mix") == pytest.approx(start + 1 / 127)
    for _ in range(3):
        m.handle(cc(30, up))
    assert store.get("input.mix") == pytest.approx(start + 4 / 127)
    m.handle(cc(30, down))
    assert store.get("input.mix") == pytest.approx(start + 3 / 127)
    # Bigger steps: three ticks in one message (a fast turn).
    m.handle(cc(30, {"relative-twos": 3, "relative-binary": 67, "relative-signmag": 3}[mode]))
    assert store.get("input.mix") == pytest.approx(start + 6 / 127)
    # Someone else (OSC) moves it: the encoder continues from there.
    store.set("input.mix", 0.5, source="osc")
    m.handle(cc(30, down))
    assert store.get("input.mix") == pytest.approx(0.5 - 1 / 127)
    # Clamped at the ends.
    for _ in range(200):
        m.handle(cc(30, up))
    assert store.get("input.mix") == pytest.approx(1.0)
    # invert + step: "up" turns rotation down by two steps (in the sym curve's control space).
    p = REG["l0.rotate"]
    x0 = p.to_normalized(store.get("l0.rotate"))
    m.handle(cc(31, up))
    assert store.get("l0.rotate") == pytest.approx(p.from_normalized(x0 - 2 / 127))


def test_relative_encoder_steps_through_an_enum(rig):
    store = rig.store
    m = make(rig, {"param": "bound", "type": "cc", "number": 40, "mode": "relative-binary", "step": 8})
    seen = []
    for _ in range(20):
        m.handle(cc(40, 65))
        seen.append(store.get("bound"))
    assert seen == sorted(seen) and seen[-1] == 5.0 and len(set(seen)) == 6  # every choice, in order


def test_nrpn(rig):
    store = rig.store
    m = make(rig, {"param": "input.mix", "type": "nrpn", "number": 0x0123, "curve": "linear", "channel": 3},
             {"param": "drive", "type": "cc", "number": 6, "channel": 3, "curve": "linear"})
    # Before any NRPN is selected, CC 6 is a plain CC.
    m.handle(cc(6, 127, ch=3))
    assert store.get("drive") == pytest.approx(4.0)
    for msg in (cc(99, 0x02, ch=3), cc(98, 0x23, ch=3), cc(6, 64, ch=3)):
        m.handle(msg)
    assert store.get("input.mix") == pytest.approx(64 / 127)  # data MSB only: 7-bit
    m.handle(cc(38, 0x55, ch=3))
    assert store.get("input.mix") == pytest.approx(((64 << 7) | 0x55) / 16383)
    assert store.get("drive") == pytest.approx(4.0)  # data entry went to the NRPN, not the plain CC
    before = store.get("input.mix")
    m.handle(cc(96, 1, ch=3))  # increment
    assert store.get("input.mix") == pytest.approx(before + 1 / 127)
    m.handle(cc(97, 2, ch=3))  # decrement by two
    assert store.get("input.mix") == pytest.approx(before - 1 / 127)
    # Another NRPN: unmapped, counted, the mapped one untouched.
    for msg in (cc(99, 0x10, ch=3), cc(98, 0x00, ch=3), cc(6, 1, ch=3)):
        m.handle(msg)
    assert m.stats()["unmapped"] == 1
    # The null NRPN deselects: CC 6 is plain again.
    m.handle(cc(99, 127, ch=3))
    m.handle(cc(98, 127, ch=3))
    m.handle(cc(6, 0, ch=3))
    assert store.get("drive") == pytest.approx(0.25)


def test_pitchbend(rig):
    store = rig.store
    m = make(rig, {"param": "l0.rotate", "type": "pitchbend", "channel": "any"})
    m.handle(mido.Message("pitchwheel", channel=5, pitch=-8192))
    assert store.get("l0.rotate") == pytest.approx(-10)
    m.handle(mido.Message("pitchwheel", channel=0, pitch=8191))
    assert store.get("l0.rotate") == pytest.approx(10)
    m.handle(mido.Message("pitchwheel", pitch=0))
    assert abs(store.get("l0.rotate")) < 1e-3


# ------------------------------------------------------------------------------------- soft takeover

def test_soft_takeover_protects_a_value_set_before_the_controller_moved(rig):
    """A start-up preset set l0.zoom to 1.004; the first CC16=127 jumped it to 1.25."""
    store = rig.store
    store.set("l0.zoom", 1.004, source="preset")
    m = make(rig, {"param": "l0.zoom", "type": "cc", "number": 16})
    m.handle(cc(16, 127))
    assert store.get("l0.zoom") == pytest.approx(1.004) and m.stats()["takeover_held"] == 1
    x = m.mappings[0].entries[0].to_x(1.004) * 127
    m.handle(cc(16, int(x) - 3))  # comes down through the value: engaged
    m.handle(cc(16, int(x) - 4))
    assert store.get("l0.zoom") != pytest.approx(1.004)


def test_soft_takeover(rig):
    store = rig.store
    m = make(rig, {"param": "input.mix", "type": "cc", "number": 1, "curve": "linear"},
             {"param": "input.mix", "type": "cc", "number": 2, "curve": "linear"},
             {"param": "drive", "type": "cc", "number": 3, "takeover": "jump"})
    m.handle(cc(1, 20))  # at start-up a control is engaged
    assert store.get("input.mix") == pytest.approx(20 / 127)
    store.set("input.mix", 0.8, source="osc")  # a preset/OSC moves the parameter
    m.handle(cc(1, 30))
    m.handle(cc(1, 60))
    assert store.get("input.mix") == pytest.approx(0.8)  # held: the fader is far below
    assert m.stats()["takeover_held"] == 2
    m.handle(cc(1, 110))  # crosses 0.8 (101.6/127) on the way up: engaged
    assert store.get("input.mix") == pytest.approx(110 / 127)
    m.handle(cc(1, 90))
    assert store.get("input.mix") == pytest.approx(90 / 127)
    # Another control on the same parameter counts as "another source" too (and control 2 itself
    # has been held since control 1 moved the value: it engages once it reaches the value).
    m.handle(cc(2, 10))
    assert store.get("input.mix") == pytest.approx(90 / 127)
    m.handle(cc(2, 91))
    m.handle(cc(2, 10))
    assert store.get("input.mix") == pytest.approx(10 / 127)
    m.handle(cc(1, 80))
    assert store.get("input.mix") == pytest.approx(10 / 127)
    m.handle(cc(1, 12))  # within the tolerance of the value: engaged, no need to cross
    assert store.get("input.mix") == pytest.approx(12 / 127)
    # takeover = "jump" follows at once.
    store.set("drive", 3.0, source="osc")
    m.handle(cc(3, 0))
    assert store.get("drive") == pytest.approx(0.25)


# ------------------------------------------------------------------------------------------ buttons

def test_note_toggle_momentary_trigger_velocity_zero_is_off(rig):
    store = rig.store
    m = make(rig, {"param": "l0.freeze", "type": "note", "number": 36, "mode": "toggle"},
             {"param": "l1.freeze", "type": "note", "number": 37, "mode": "momentary"},
             {"param": "bound", "type": "note", "number": 38, "value": "sine"},
             {"param": "map.invert", "type": "cc", "number": 50, "mode": "toggle"})
    m.handle(note(36, 100))
    assert store.get("l0.freeze") == 1.0
    m.handle(note(36, 0))  # a note-on with velocity 0 is a release: no second toggle
    assert store.get("l0.freeze") == 1.0
    m.handle(mido.Message("note_off", note=36))
    assert store.get("l0.freeze") == 1.0
    m.handle(note(36, 1))
    assert store.get("l0.freeze") == 0.0
    m.handle(note(37, 127))
    assert store.get("l1.freeze") == 1.0
    m.handle(note(37, 0))
    assert store.get("l1.freeze") == 0.0
    m.handle(note(38, 90))
    assert store.get("bound") == 2.0  # "sine"
    m.handle(cc(50, 127))  # a button sending CC 127/0
    m.handle(cc(50, 0))
    assert store.get("map.invert") == 1.0
    m.handle(cc(50, 127))
    assert store.get("map.invert") == 0.0
    assert m.stats()["unmapped"] == 0


def test_actions_and_tap(rig):
    tempo = rig.tempo
    m = make(rig, {"param": "reset", "type": "note", "number": 1},
             {"param": "preset.recall:dawn", "type": "note", "number": 2, "seconds": 4},
             {"param": "preset.save:dawn", "type": "note", "number": 3},
             {"param": "snapshot.store:3", "type": "cc", "number": 20},
             {"param": "snapshot.recall:3", "type": "cc", "number": 21, "seconds": 0.5},
             {"param": "tap", "type": "note", "number": 4})
    for n in (1, 2, 3):
        m.handle(note(n, 127))
        m.handle(note(n, 0))  # releases fire nothing
    m.handle(cc(20, 127))
    m.handle(cc(20, 0))
    m.handle(cc(21, 127))
    assert queued(rig) == [("reset", {}), ("preset.recall", {"name": "dawn", "seconds": 4.0, "quantum": -1.0}),
                           ("preset.save", {"name": "dawn"}), ("snapshot.store", {"slot": 3}),
                           ("snapshot.recall", {"slot": 3, "seconds": 0.5, "quantum": -1.0})]
    m.handle(note(4, 127))
    tempo.now += 0.5
    m.handle(note(4, 127))
    assert tempo.taps == 2 and tempo.bpm == pytest.approx(120.0)


def test_midi_clock_drives_tempo(rig):
    tempo = rig.tempo
    m = MidiMapper(mapping({"param": "drive", "type": "cc", "number": 1}), rig)
    m.handle(mido.Message("start"))
    for _ in range(24 * 4):  # four beats at 140 BPM
        tempo.now += 60 / (140 * 24)
        m.handle(mido.Message("clock"))
    assert tempo.bpm == pytest.approx(140.0, rel=1e-6)
    assert tempo.source == "midi clock"
    assert tempo.beat(tempo.now) == pytest.approx(4.0, abs=1e-6)
    m.handle(mido.Message("stop"))
    assert not tempo.running
    m.handle(mido.Message("continue"))
    assert tempo.running
    assert m.stats()["unmapped"] == 0


def test_malformed_and_unmapped_input_never_raises(rig, caplog):
    store = rig.store
    m = make(rig, {"param": "drive", "type": "cc", "number": 1})
    with caplog.at_level(logging.WARNING, logger="ffvj.control.midi"):
        m.handle(b"\xb0\x01")  # truncated CC
        m.handle([0xF8, 0x99, 0x99])  # data bytes after a realtime byte
        m.handle(12345)
        for v in range(50):
            m.handle(cc(99 - v % 3, v, ch=16))  # a flood of unmapped CCs
        m.handle(mido.Message("sysex", data=[1, 2, 3]))
        m.handle(mido.Message("program_change", program=3))
    assert m.stats()["malformed"] == 3
    assert m.stats()["unmapped"] == 50
    assert len([r for r in caplog.records if "unmapped" in r.getMessage()]) <= 3  # rate-limited per control
    assert store.get("drive") == REG["drive"].default


def test_a_broken_consumer_is_counted_not_raised(rig):
    store = rig.store

    class BrokenTempo:
        def clock_tick(self):
            raise RuntimeError("boom")

    m = MidiMapper(mapping({"param": "drive", "type": "cc", "number": 1}), Controls(store, tempo=BrokenTempo()))
    m.handle(mido.Message("clock"))
    assert m.stats()["errors"] == 1


# ------------------------------------------------------------------------------------------ LED echo

def test_led_echo(rig):
    store = rig.store
    port = FakePort()
    m = make(rig, {"param": "l0.freeze", "type": "note", "number": 36, "mode": "toggle"},
             {"param": "bound", "type": "note", "number": 40, "value": "tanh", "led_on": 60, "led_off": 12},
             {"param": "bound", "type": "note", "number": 41, "value": "sine", "led_on": 60, "led_off": 12},
             {"param": "input.mix", "type": "cc", "number": 7, "curve": "linear"},
             {"param": "l0.rotate", "type": "cc", "number": 8, "mode": "relative-twos"},
             {"param": "drive", "type": "cc14", "number": 2, "channel": "any", "curve": "linear"},
             output=port)
    m.handle(note(36, 127))  # a toggle lights its own LED
    wait_until(lambda: mido.Message("note_on", note=36, velocity=127) in port.sent)
    store.set("bound", "sine", source="osc")  # OSC picks a bound: exactly that button lit
    wait_until(lambda: mido.Message("note_on", note=41, velocity=60) in port.sent
                      and mido.Message("note_on", note=40, velocity=12) in port.sent)
    store.set("input.mix", 0.5, source="preset")  # a fader gets its value (motor faders, rings)
    wait_until(lambda: cc(7, 64) in port.sent)
    before = len(port.sent)
    m.handle(cc(7, 100))  # the fader's own move is not echoed back to it
    m.handle(cc(8, 1))  # an encoder's ring is: it shows where the parameter went
    wait_until(lambda: any(x.type == "control_change" and x.control == 8 for x in port.sent[before:]))
    time.sleep(0.1)
    assert not any(x.type == "control_change" and x.control == 7 for x in port.sent[before:])
    m.handle(cc(2, 3, ch=5))  # an "any"-channel 14-bit control echoes MSB and LSB on the channel it used
    store.set("drive", 4.0, source="osc")
    wait_until(lambda: cc(2, 127, ch=5) in port.sent and cc(34, 127, ch=5) in port.sent)
    m.close()


def test_echo_messages_for_each_control_type(rig):
    m = make(rig, {"param": "input.mix", "type": "nrpn", "number": 300, "channel": 2, "curve": "linear"},
             {"param": "l0.rotate", "type": "pitchbend", "channel": 3},
             {"param": "drive", "type": "cc", "number": 5, "invert": True, "channel": 1})
    nrpn, bend, inverted = m.entries
    assert m.echo_messages(nrpn, 1.0) == [cc(99, 2, ch=2), cc(98, 44, ch=2), cc(6, 127, ch=2), cc(38, 127, ch=2)]
    assert m.echo_messages(bend, 0.0) == [mido.Message("pitchwheel", channel=2, pitch=0)]
    assert m.echo_messages(bend, 10.0) == [mido.Message("pitchwheel", channel=2, pitch=8191)]
    assert m.echo_messages(inverted, 4.0) == [cc(5, 0)]


def test_led_echo_never_blocks_the_caller(rig):
    store = rig.store

    class SlowPort(FakePort):
        def send(self, msg):
            time.sleep(0.2)
            super().send(msg)

    port = SlowPort()
    m = make(rig, {"param": "input.mix", "type": "cc", "number": 7}, output=port)
    t0 = time.monotonic()
    for i in range(100):
        store.set("input.mix", i / 100, source="osc")
    assert time.monotonic() - t0 < 0.5
    wait_until(lambda: port.sent and port.sent[-1] == cc(7, round(0.99 * 127)), timeout=5)
    assert len(port.sent) < 10  # latest value won: no backlog of 100 sends
    m.close()


def test_a_control_stays_engaged_after_its_first_move_on_a_coarse_parameter(rig):
    """An enum at its default: the first move applies, and so do the next (they were held)."""
    store = rig.store
    m = make(rig, {"param": "map.kind", "type": "cc", "number": 40})
    for v in (40, 100, 120):
        m.handle(cc(40, v))
    assert m.stats()["takeover_held"] == 0
    assert store.get("map.kind") == m.mappings[0].entries[0].to_value(120 / 127)
