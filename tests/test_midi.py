"""MIDI: mapping files, the pure mapper (mido messages straight in), learn, and real ports on JACK.

The end-to-end tests start a real JACK server (Debian's jackd2, dummy driver) under a unique name,
open ffvj's virtual input through python-rtmidi's JACK API, and drive it from another process."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from pathlib import Path

import mido
import pytest

from ffvj.midi import (Learner, MappingError, MidiError, MidiInput, MidiMapper, _guess_cc_mode, bundled_mappings,
                       default_mappings, learn_session, load_mapping, parse_mapping, resolve_mapping)
from ffvj.params import ActionQueue, ParamStore, build_registry
from ffvj.tempo import Tempo

MAPPINGS = Path(__file__).resolve().parents[1] / "mappings"
REG = build_registry(3)


def cc(n, v, ch=1):
    return mido.Message("control_change", channel=ch - 1, control=n, value=v)


def note(n, vel, ch=1):
    return mido.Message("note_on", channel=ch - 1, note=n, velocity=vel)


def mapping(*entries, **device):
    return parse_mapping({"device": {"name": "test", **device}, "map": list(entries)}, REG)


def wait_until(pred, timeout=10.0, interval=0.02):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(interval)
    return pred()


class FakeTempo(Tempo):
    """A Tempo on a clock the test advances, so MIDI clock → BPM is deterministic on a busy machine."""

    def __init__(self):
        super().__init__()
        self.now = 1000.0
        self.taps = 0

    def clock_tick(self, now=None):
        super().clock_tick(self.now)

    def start(self, now=None):
        super().start(self.now)

    def stop(self, now=None):
        super().stop(self.now)

    def cont(self, now=None):
        super().cont(self.now)

    def tap(self, now=None):
        self.taps += 1
        return super().tap(self.now)


class FakePort:
    def __init__(self, name="fake"):
        self.name, self.sent, self.closed, self.callback = name, [], False, None

    def send(self, msg):
        self.sent.append(msg)

    def close(self):
        self.closed = True


@pytest.fixture
def rig():
    store = ParamStore(build_registry(3))
    return store, ActionQueue(), FakeTempo()


def make(rig, *entries, **kw):
    store, actions, tempo = rig
    return MidiMapper(mapping(*entries), store, actions, tempo, **kw)


# ---------------------------------------------------------------------------------------------- values

def test_absolute_cc_range_curve_invert(rig):
    store = rig[0]
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
    assert m.unmapped == 1


def test_cc14_lsb_after_msb_and_msb_only(rig):
    store = rig[0]
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
    assert m.unmapped == 0


@pytest.mark.parametrize("mode, up, down", [("relative-twos", 1, 127), ("relative-binary", 65, 63),
                                            ("relative-signmag", 1, 65)])
def test_relative_modes(rig, mode, up, down):
    store = rig[0]
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
    store = rig[0]
    m = make(rig, {"param": "bound", "type": "cc", "number": 40, "mode": "relative-binary", "step": 8})
    seen = []
    for _ in range(20):
        m.handle(cc(40, 65))
        seen.append(store.get("bound"))
    assert seen == sorted(seen) and seen[-1] == 5.0 and len(set(seen)) == 6  # every choice, in order


def test_nrpn(rig):
    store = rig[0]
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
    assert m.unmapped == 1
    # The null NRPN deselects: CC 6 is plain again.
    m.handle(cc(99, 127, ch=3))
    m.handle(cc(98, 127, ch=3))
    m.handle(cc(6, 0, ch=3))
    assert store.get("drive") == pytest.approx(0.25)


def test_pitchbend(rig):
    store = rig[0]
    m = make(rig, {"param": "l0.rotate", "type": "pitchbend", "channel": "any"})
    m.handle(mido.Message("pitchwheel", channel=5, pitch=-8192))
    assert store.get("l0.rotate") == pytest.approx(-10)
    m.handle(mido.Message("pitchwheel", channel=0, pitch=8191))
    assert store.get("l0.rotate") == pytest.approx(10)
    m.handle(mido.Message("pitchwheel", pitch=0))
    assert abs(store.get("l0.rotate")) < 1e-3


# ------------------------------------------------------------------------------------- soft takeover

def test_soft_takeover(rig):
    store = rig[0]
    m = make(rig, {"param": "input.mix", "type": "cc", "number": 1, "curve": "linear"},
             {"param": "input.mix", "type": "cc", "number": 2, "curve": "linear"},
             {"param": "drive", "type": "cc", "number": 3, "takeover": "jump"})
    m.handle(cc(1, 20))  # at start-up a control is engaged
    assert store.get("input.mix") == pytest.approx(20 / 127)
    store.set("input.mix", 0.8, source="osc")  # a preset/OSC moves the parameter
    m.handle(cc(1, 30))
    m.handle(cc(1, 60))
    assert store.get("input.mix") == pytest.approx(0.8)  # held: the fader is far below
    assert m.held == 2
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
    store = rig[0]
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
    assert m.unmapped == 0


def test_actions_and_tap(rig):
    store, actions, tempo = rig
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
    assert actions.drain() == [("reset", {}), ("preset.recall", {"name": "dawn", "seconds": 4.0}),
                               ("preset.save", {"name": "dawn"}), ("snapshot.store", {"slot": 3}),
                               ("snapshot.recall", {"slot": 3, "seconds": 0.5})]
    m.handle(note(4, 127))
    tempo.now += 0.5
    m.handle(note(4, 127))
    assert tempo.taps == 2 and tempo.bpm == pytest.approx(120.0)
    assert "reset" not in store.registry  # "reset" is the action, not a parameter


def test_midi_clock_drives_tempo(rig):
    store, actions, tempo = rig
    m = MidiMapper(mapping({"param": "drive", "type": "cc", "number": 1}), store, actions, tempo)
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
    assert m.unmapped == 0


def test_malformed_and_unmapped_input_never_raises(rig, caplog):
    store = rig[0]
    m = make(rig, {"param": "drive", "type": "cc", "number": 1})
    with caplog.at_level(logging.WARNING, logger="ffvj.midi"):
        m.handle(b"\xb0\x01")  # truncated CC
        m.handle([0xF8, 0x99, 0x99])  # data bytes after a realtime byte
        m.handle(12345)
        for v in range(50):
            m.handle(cc(99 - v % 3, v, ch=16))  # a flood of unmapped CCs
        m.handle(mido.Message("sysex", data=[1, 2, 3]))
        m.handle(mido.Message("program_change", program=3))
    assert m.malformed == 3
    assert m.unmapped == 50
    assert len([r for r in caplog.records if "unmapped" in r.getMessage()]) <= 3  # rate-limited per control
    assert store.get("drive") == REG["drive"].default


def test_a_broken_consumer_is_counted_not_raised(rig):
    store, actions, tempo = rig

    class BrokenTempo:
        def clock_tick(self):
            raise RuntimeError("boom")

    m = MidiMapper(mapping({"param": "drive", "type": "cc", "number": 1}), store, actions, BrokenTempo())
    m.handle(mido.Message("clock"))
    assert m.errors == 1


# ------------------------------------------------------------------------------------------ LED echo

def test_led_echo(rig):
    store = rig[0]
    port = FakePort()
    m = make(rig, {"param": "l0.freeze", "type": "note", "number": 36, "mode": "toggle"},
             {"param": "bound", "type": "note", "number": 40, "value": "tanh", "led_on": 60, "led_off": 12},
             {"param": "bound", "type": "note", "number": 41, "value": "sine", "led_on": 60, "led_off": 12},
             {"param": "input.mix", "type": "cc", "number": 7, "curve": "linear"},
             {"param": "l0.rotate", "type": "cc", "number": 8, "mode": "relative-twos"},
             {"param": "drive", "type": "cc14", "number": 2, "channel": "any", "curve": "linear"},
             output=port)
    m.handle(note(36, 127))  # a toggle lights its own LED
    assert wait_until(lambda: mido.Message("note_on", note=36, velocity=127) in port.sent)
    store.set("bound", "sine", source="osc")  # OSC picks a bound: exactly that button lit
    assert wait_until(lambda: mido.Message("note_on", note=41, velocity=60) in port.sent
                      and mido.Message("note_on", note=40, velocity=12) in port.sent)
    store.set("input.mix", 0.5, source="preset")  # a fader gets its value (motor faders, rings)
    assert wait_until(lambda: cc(7, 64) in port.sent)
    before = len(port.sent)
    m.handle(cc(7, 100))  # the fader's own move is not echoed back to it
    m.handle(cc(8, 1))  # an encoder's ring is: it shows where the parameter went
    assert wait_until(lambda: any(x.type == "control_change" and x.control == 8 for x in port.sent[before:]))
    time.sleep(0.1)
    assert not any(x.type == "control_change" and x.control == 7 for x in port.sent[before:])
    m.handle(cc(2, 3, ch=5))  # an "any"-channel 14-bit control echoes MSB and LSB on the channel it used
    store.set("drive", 4.0, source="osc")
    assert wait_until(lambda: cc(2, 127, ch=5) in port.sent and cc(34, 127, ch=5) in port.sent)
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
    store = rig[0]

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
    assert wait_until(lambda: port.sent and port.sent[-1] == cc(7, round(0.99 * 127)), timeout=5)
    assert len(port.sent) < 10  # latest value won: no backlog of 100 sends
    m.close()


# ------------------------------------------------------------------------------------ mapping files

@pytest.mark.parametrize("path", sorted(MAPPINGS.glob("*.toml")), ids=lambda p: p.name)
def test_bundled_mappings_load(path):
    m = load_mapping(path, REG)
    assert m.entries and not m.skipped
    controls = [e.control for e in m.entries]
    assert len(controls) == len(set(controls)), "one control mapped twice"
    if path.name != "generic.toml":
        assert m.device.match and m.device.output
    # A smaller model: the entries for the levels it lacks are skipped, not an error.
    small = load_mapping(path, build_registry(1))
    assert all(s.startswith(("l2.", "l3.", "l1.gain_down")) for s in small.skipped)


def test_bundled_mappings_cover_the_musical_core():
    targets = {e.target for p in MAPPINGS.glob("*.toml") for e in load_mapping(p, REG).entries}
    for name in ("drive", "input.mix", "l0.zoom", "l0.rotate", "l0.warp", "l0.gain_self", "l1.gain_up",
                 "l0.gain_down", "color.hue", "l0.blur", "l0.temporal", "bound", "reset", "tap",
                 "snapshot.store:1", "snapshot.recall:1"):
        assert name in targets


def write(tmp_path, text, name="bad.toml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


ENTRY = '[device]\nname = "x"\n\n[[map]]\nparam = "drive"\ntype = "cc"\nnumber = 1\n\n[[map]]\n'


@pytest.mark.parametrize("body, expected", [
    ('param = "l0.zom"\ntype = "cc"\nnumber = 2\n', ["entry 2", "'l0.zom'", "unknown parameter", "l0.zoom"]),
    ('param = "drive"\nnumber = 2\n', ["entry 2", "missing key 'type'"]),
    ('param = "drive"\ntype = "cc"\n', ["entry 2", "missing key 'number'"]),
    ('param = "drive"\ntype = "ccc"\nnumber = 2\n', ["entry 2", "type 'ccc'", "cc14"]),
    ('param = "drive"\ntype = "cc"\nnumber = 128\n', ["entry 2", "0..127"]),
    ('param = "drive"\ntype = "cc14"\nnumber = 40\n', ["entry 2", "0..31", "LSB"]),
    ('param = "drive"\ntype = "nrpn"\nnumber = 20000\n', ["entry 2", "0..16383"]),
    ('param = "drive"\ntype = "cc"\nnumber = 2\nchannel = 17\n', ["entry 2", "channel", "1..16"]),
    ('param = "drive"\ntype = "cc"\nnumber = 2\nchannel = "all"\n', ["entry 2", "\"any\""]),
    ('param = "drive"\ntype = "cc"\nnumber = 2\nmode = "relative"\n', ["entry 2", "mode 'relative'", "relative-twos"]),
    ('param = "drive"\ntype = "note"\nnumber = 2\nmode = "absolute"\n', ["entry 2", "mode 'absolute'", "toggle"]),
    ('param = "drive"\ntype = "cc"\nnumber = 2\nmin = 3\nmax = 1\n', ["entry 2", "min (3) must be below max"]),
    ('param = "drive"\ntype = "cc"\nnumber = 2\nmax = 9\n', ["entry 2", "max = 9", "outside"]),
    ('param = "drive"\ntype = "cc"\nnumber = 2\nchanel = 1\n', ["entry 2", "unknown key 'chanel'", "channel"]),
    ('param = "l0.rotate"\ntype = "cc"\nnumber = 2\ncurve = "exp"\n', ["entry 2", "exp", "positive"]),
    ('param = "snapshot.recall:x"\ntype = "note"\nnumber = 2\n', ["entry 2", "slot"]),
    ('param = "tap"\ntype = "note"\nnumber = 2\nmin = 1\n', ["entry 2", "'min'", "action"]),
    ('param = "reset"\ntype = "note"\nnumber = 2\nmode = "toggle"\n', ["entry 2", "actions fire once"]),
    ('param = "bound"\ntype = "note"\nnumber = 2\nvalue = "sin"\n', ["entry 2", "'sin'", "sine"]),
    ('param = "drive"\ntype = "pitchbend"\nnumber = 2\n', ["entry 2", "pitchbend has no number"]),
])
def test_malformed_mapping_names_file_entry_and_problem(tmp_path, body, expected):
    path = write(tmp_path, ENTRY + body)
    with pytest.raises(MappingError) as err:
        load_mapping(path, REG)
    msg = str(err.value)
    assert str(path) in msg
    for part in expected:
        assert part in msg, msg


@pytest.mark.parametrize("text, expected", [
    ('[device]\nname = "x"\n[[map]]\nparam = "drive\ntype = "cc"\n', ["TOML syntax error", "line 4"]),
    ('[[map]]\nparam = "drive"\ntype = "cc"\nnumber = 1\n', ["missing [device]"]),
    ('[device]\nname = "x"\n', ["no [[map]] entries"]),
    ('[device]\nname = "x"\nmatch = 3\n[[map]]\nparam = "drive"\ntype = "cc"\nnumber = 1\n', ["[device]", "match"]),
    ('[device]\nname = "x"\n[[maps]]\nparam = "drive"\n', ["unknown top-level key 'maps'", "map"]),
])
def test_malformed_mapping_file_level(tmp_path, text, expected):
    path = write(tmp_path, text)
    with pytest.raises(MappingError) as err:
        load_mapping(path, REG)
    assert str(path) in str(err.value)
    for part in expected:
        assert part in str(err.value), str(err.value)


def test_resolve_mapping_by_name_or_path(tmp_path):
    assert set(bundled_mappings()) >= {"generic", "nanokontrol2", "midimix", "launchcontrol_xl", "xtouch_mini"}
    assert resolve_mapping("nanokontrol2", REG).device.name == "Korg nanoKONTROL2"
    assert resolve_mapping(MAPPINGS / "midimix.toml", REG).device.name == "Akai MIDImix"
    with pytest.raises(MappingError, match="nanokontrol2"):
        resolve_mapping("nanokontrol", REG)
    assert len(default_mappings(REG)) == len(bundled_mappings())


def test_missing_mapping_file(tmp_path):
    with pytest.raises(MappingError, match="cannot read"):
        load_mapping(tmp_path / "nope.toml", REG)


# ------------------------------------------------------------------------------------------- learn

def test_guess_cc_mode():
    assert _guess_cc_mode([10, 12, 15, 19]) == "absolute"
    assert _guess_cc_mode([1, 1, 1, 2]) == "relative-twos"
    assert _guess_cc_mode([127, 127, 126]) == "relative-twos"
    assert _guess_cc_mode([65, 65, 66]) == "relative-binary"
    assert _guess_cc_mode([63, 63, 63]) == "relative-binary"
    assert _guess_cc_mode([65, 65, 65, 1]) in ("relative-signmag", "relative-binary")
    assert _guess_cc_mode([127, 0]) == "button"
    assert _guess_cc_mode([63, 64, 65, 66]) == "absolute"  # a knob turned slowly past the middle


def test_learn_save_load_round_trip(tmp_path, rig):
    store = rig[0]
    learner = Learner(REG, store, name="my controller", auto_flush=False, settle=0.5)
    t = 100.0

    def feed(*msgs):
        nonlocal t
        for msg in msgs:
            t += 0.01
            learner.feed(msg, now=t)

    learner.arm("l0.zoom")
    feed(cc(21, 10), cc(21, 12), cc(21, 14), cc(21, 17))
    assert learner.armed is None
    learner.arm("l0.rotate")
    feed(cc(21, 20))  # the end of the last knob's turn: ignored while it settles
    feed(cc(22, 1, ch=2), cc(22, 1, ch=2), cc(22, 1, ch=2), cc(22, 2, ch=2))
    learner.arm("l1.zoom")
    feed(cc(5, 64), cc(37, 3))  # MSB then LSB: a 14-bit control
    learner.arm("input.mix")
    feed(cc(99, 1, ch=3), cc(98, 2, ch=3), cc(6, 64, ch=3))
    learner.arm("l0.freeze")
    feed(note(36, 0), note(36, 100))  # a stray release first: only a press binds
    learner.arm("snapshot.recall:2")
    feed(note(37, 100))
    learner.arm("color.hue")
    feed(mido.Message("pitchwheel", pitch=100))
    learner.arm("drive")
    feed(cc(40, 127))
    t += 1.0
    learner.flush(now=t)  # a lone CC binds once its watching window has passed
    store.set("l0.warp", 0.01, source="osc /ffvj/l0/warp")
    assert learner.arm() == "l0.warp"  # "the last parameter changed via OSC"
    feed(cc(41, 1), cc(41, 1), cc(41, 1), cc(41, 1), cc(41, 1))

    path = learner.save(tmp_path / "learned.toml", match=["My Controller"])
    loaded = load_mapping(path, REG)
    assert loaded.device.name == "my controller" and loaded.device.match == ("My Controller",)
    got = [(e.target, e.type, e.channel, e.number, e.mode) for e in loaded.entries]
    assert got == [("l0.zoom", "cc", 1, 21, "absolute"), ("l0.rotate", "cc", 2, 22, "relative-twos"),
                   ("l1.zoom", "cc14", 1, 5, "absolute"), ("input.mix", "nrpn", 3, 130, "absolute"),
                   ("l0.freeze", "note", 1, 36, "toggle"), ("snapshot.recall:2", "note", 1, 37, "trigger"),
                   ("color.hue", "pitchbend", 1, 0, "absolute"), ("drive", "cc", 1, 40, "toggle"),
                   ("l0.warp", "cc", 1, 41, "relative-twos")]
    # What was saved drives the store like any mapping.
    m = MidiMapper(loaded, store, rig[1], rig[2])
    m.handle(cc(21, 127))
    assert store.get("l0.zoom") == pytest.approx(REG["l0.zoom"].max)


def test_learn_live_binds_through_the_mapper(rig):
    store, actions, tempo = rig
    learner = Learner(REG, store, auto_flush=False)
    m = MidiMapper(mapping({"param": "drive", "type": "cc", "number": 50}), store, actions, tempo, learner=learner)
    with pytest.raises(ValueError, match="l0.zoom"):
        learner.arm("l0.zom")
    learner.arm("input.mix")
    for v in (10, 20, 30, 40):
        m.handle(cc(50, v))  # consumed by learn: drive does not move
    assert store.get("drive") == REG["drive"].default
    time.sleep(1.05)  # past the settle time
    m.handle(cc(50, 127))  # CC 50 now drives input.mix instead
    assert store.get("input.mix") == pytest.approx(1.0)
    assert store.get("drive") == REG["drive"].default
    m.close()


def test_learn_action_arms_for_the_last_osc_parameter(rig):
    store, actions, tempo = rig
    learner = Learner(REG, store, auto_flush=False)
    m = MidiMapper(mapping({"param": "learn", "type": "note", "number": 1}), store, actions, tempo, learner=learner)
    m.handle(note(1, 127))
    assert learner.armed is None  # nothing touched via OSC yet: stays unarmed, warns
    store.set("l2.zoom", 1.1, source="osc")
    m.handle(note(1, 127))
    assert learner.armed == "l2.zoom"


# ------------------------------------------------------------------------------- ports (fake backend)

class FakeBackend:
    """The part of mido.Backend that MidiInput uses, with ports the test can drive."""

    def __init__(self, inputs=(), outputs=(), fail=None, virtual=True):
        self.inputs, self.outputs, self.fail, self.virtual = list(inputs), list(outputs), fail, virtual
        self.opened: dict[str, FakePort] = {}

    def get_input_names(self):
        if self.fail:
            raise self.fail
        return self.inputs

    def get_output_names(self):
        return self.outputs

    def open_input(self, name, virtual=False, callback=None, client_name=None):
        if virtual and not self.virtual:
            raise NotImplementedError("virtual ports are not supported by the Windows MultiMedia API")
        port = FakePort(name)
        port.callback = callback
        self.opened[name] = port
        return port

    def open_output(self, name):
        port = FakePort(name)
        self.opened["out:" + name] = port
        return port


def test_midi_input_wires_ports_mappings_and_echo(rig):
    store, actions, tempo = rig
    nano = load_mapping(MAPPINGS / "nanokontrol2.toml", store.registry)
    generic = load_mapping(MAPPINGS / "generic.toml", store.registry)
    b = FakeBackend(inputs=["nanoKONTROL2:nanoKONTROL2 MIDI 1 20:0", "Other Synth:out 24:0"],
                    outputs=["nanoKONTROL2:nanoKONTROL2 MIDI 1 20:0", "Other Synth:in 24:0"])
    with MidiInput(store, actions, tempo, [nano, generic], ports=["other synth"], backend=b) as midi:
        assert set(midi.connected) == {"ffvj", "Other Synth:out 24:0", "nanoKONTROL2:nanoKONTROL2 MIDI 1 20:0"}
        nano_in = b.opened["nanoKONTROL2:nanoKONTROL2 MIDI 1 20:0"]
        nano_in.callback(cc(4, 127))  # nanoKONTROL2 fader 5: input.mix
        assert store.get("input.mix") == pytest.approx(1.0)
        nano_in.callback(cc(1, 127, ch=1))  # CC 1 is generic's mod wheel, but this port is a nanoKONTROL2
        assert store.get("l0.warp") == REG["l0.warp"].default
        b.opened["Other Synth:out 24:0"].callback(cc(1, 127))  # matches no device: gets generic
        assert store.get("l0.warp") == pytest.approx(REG["l0.warp"].max)
        b.opened["ffvj"].callback(cc(11, 0))  # the virtual port: generic (expression → drive) ...
        assert store.get("drive") == pytest.approx(REG["drive"].min)
        b.opened["ffvj"].callback(cc(5, 127))  # ... not the nanoKONTROL2's fader 6, also drive
        assert store.get("drive") == pytest.approx(REG["drive"].min)
        out = b.opened["out:nanoKONTROL2:nanoKONTROL2 MIDI 1 20:0"]
        nano_in.callback(cc(55, 127))  # M8: freeze toggle → its LED lit on the nanoKONTROL2 output
        assert wait_until(lambda: cc(55, 127) in out.sent)
    assert all(p.closed for p in b.opened.values())
    midi.close()  # idempotent


def test_midi_input_unknown_port_lists_available(rig):
    store, actions, tempo = rig
    b = FakeBackend(inputs=["nanoKONTROL2 MIDI 1", "Launch Control XL"])
    with pytest.raises(MidiError) as err:
        MidiInput(store, actions, tempo, [], ports=["X-Touch"], backend=b).start()
    assert "unknown MIDI port 'X-Touch'" in str(err.value)
    assert "nanoKONTROL2 MIDI 1, Launch Control XL" in str(err.value)
    assert all(p.closed for p in b.opened.values())


def test_midi_input_without_virtual_ports(rig, caplog):
    store, actions, tempo = rig
    b = FakeBackend(inputs=["MIDI Mix 1"], virtual=False)
    mix = load_mapping(MAPPINGS / "midimix.toml", store.registry)
    with caplog.at_level(logging.WARNING, logger="ffvj.midi"):
        with MidiInput(store, actions, tempo, [mix], backend=b) as midi:
            assert midi.connected == ["MIDI Mix 1"]
    assert any("no virtual input" in r.getMessage() for r in caplog.records)


def test_hot_plug_reconnects_an_unplugged_controller_under_its_new_name(rig, caplog):
    """Unplug mid-show: the port is closed; plug back in (ALSA gives it a new client number): it is
    connected again with the same mapping; a controller plugged in late is connected too."""
    store, actions, tempo = rig
    nano = load_mapping(MAPPINGS / "nanokontrol2.toml", store.registry)
    b = FakeBackend(inputs=[])
    with MidiInput(store, actions, tempo, [nano], backend=b, rescan_s=None) as midi:
        assert midi.connected == ["ffvj"]  # nothing plugged in yet
        b.inputs = ["nanoKONTROL2:nanoKONTROL2 MIDI 1 20:0"]
        midi.rescan()
        first = b.opened["nanoKONTROL2:nanoKONTROL2 MIDI 1 20:0"]
        assert midi.connected == ["ffvj", first.name]
        first.callback(cc(4, 127))
        assert store.get("input.mix") == pytest.approx(1.0)
        with caplog.at_level(logging.WARNING, logger="ffvj.midi"):
            b.inputs = []
            midi.rescan()
        assert first.closed and midi.connected == ["ffvj"]
        assert any("went away" in r.getMessage() for r in caplog.records)
        b.inputs = ["nanoKONTROL2:nanoKONTROL2 MIDI 1 24:0"]
        midi.rescan()
        again = b.opened["nanoKONTROL2:nanoKONTROL2 MIDI 1 24:0"]
        assert not again.closed and midi.connected == ["ffvj", again.name]
        again.callback(cc(4, 0))
        assert store.get("input.mix") == pytest.approx(0.0)
        assert midi.stats()["messages"] == 2  # the unplugged port's count is kept
        midi.rescan()  # nothing changed: nothing reopened
        assert b.opened[again.name] is again
    assert again.closed


def test_a_refused_virtual_port_is_tried_again(rig, caplog):
    """A JACK server busy with other clients can refuse the virtual port at start: the show starts
    anyway, says so, and the watcher opens the port once the server accepts it."""
    store, actions, tempo = rig

    class Refusing(FakeBackend):
        refusals = 5

        def open_input(self, name, virtual=False, callback=None, client_name=None):
            if virtual and self.refusals:
                self.refusals -= 1
                raise OSError("Cannot create new client")
            return super().open_input(name, virtual, callback, client_name)

    b = Refusing()
    with caplog.at_level(logging.WARNING, logger="ffvj.midi"):
        with MidiInput(store, actions, tempo, [], backend=b, rescan_s=0.01) as midi:
            assert midi.available
            assert wait_until(lambda: midi.connected == ["ffvj"], 10)
            b.opened["ffvj"].callback(cc(7, 127))  # generic is the fallback: CC 7 is input.mix
    assert any("refused the virtual input" in r.getMessage() for r in caplog.records)
    assert b.opened["ffvj"].closed


def test_a_backend_that_says_virtual_ports_are_not_supported_is_told_once(rig, caplog):
    """mido's portmidi and pygame backends answer a virtual port with a ValueError: that is
    "never", not "busy": one warning, no retries, no rescans of it."""
    store, actions, tempo = rig

    class PortMidiLike(FakeBackend):
        tries = 0

        def open_input(self, name, virtual=False, callback=None, client_name=None):
            if virtual:
                PortMidiLike.tries += 1
                raise ValueError("virtual ports are not supported by the PortMidi backend")
            return super().open_input(name, virtual, callback, client_name)

    with caplog.at_level(logging.WARNING, logger="ffvj.midi"):
        with MidiInput(store, actions, tempo, [], backend=PortMidiLike(), rescan_s=None) as midi:
            midi.rescan()
            midi.rescan()
            assert midi.connected == []
    assert PortMidiLike.tries == 1
    assert sum("no virtual input port" in r.getMessage() for r in caplog.records) == 1


def test_concurrent_rescans_open_a_port_once(rig):
    """The watcher and a direct rescan at the same moment: one link, one open port."""
    store, actions, tempo = rig
    nano = load_mapping(MAPPINGS / "nanokontrol2.toml", store.registry)

    class Slow(FakeBackend):
        opens = 0

        def open_input(self, name, virtual=False, callback=None, client_name=None):
            if not virtual:
                Slow.opens += 1
                time.sleep(0.05)  # widen the window two rescans could both open in
            return super().open_input(name, virtual, callback, client_name)

    b = Slow(inputs=[])
    with MidiInput(store, actions, tempo, [nano], backend=b, rescan_s=None) as midi:
        b.inputs = ["nanoKONTROL2:nanoKONTROL2 MIDI 1 20:0"]
        threads = [threading.Thread(target=midi.rescan) for _ in range(4)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        assert midi.connected == ["ffvj", "nanoKONTROL2:nanoKONTROL2 MIDI 1 20:0"]
        assert Slow.opens == 1 and len(midi.mappers) == 2


def test_no_midi_api_runs_on_with_one_warning(rig, caplog, monkeypatch):
    store, actions, tempo = rig
    # The real case on this machine: no JACK server under this name, and JACK must not autostart one.
    monkeypatch.setenv("JACK_NO_START_SERVER", "1")
    monkeypatch.setenv("JACK_DEFAULT_SERVER", f"ffvj-absent-{uuid.uuid4().hex[:8]}")
    for backend in ("mido.backends.rtmidi/UNIX_JACK", "mido.backends.no_such_backend",
                    FakeBackend(fail=OSError("MidiInAlsa::initialize: error creating ALSA sequencer client"))):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="ffvj.midi"):
            with MidiInput(store, actions, tempo, [], backend=backend) as midi:
                assert not midi.available and midi.connected == []
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1 and "MIDI disabled" in warnings[0].getMessage()
    # Naming a port explicitly where MIDI cannot work is a setup error, said loudly.
    with pytest.raises(MidiError, match="no usable MIDI API"):
        MidiInput(store, actions, tempo, [], ports=["nanoKONTROL2"], backend="mido.backends.no_such_backend").start()


# --------------------------------------------------------------------------------- real JACK server

JACK_BACKEND = "mido.backends.rtmidi/UNIX_JACK"


def _jack_api_available() -> bool:
    try:
        import rtmidi
    except ImportError:
        return False
    return rtmidi.API_UNIX_JACK in rtmidi.get_compiled_api()


@pytest.fixture(scope="module")
def jack_server(tmp_path_factory):
    """A JACK server (dummy driver, no sound card needed) under a name unique to this run."""
    jackd = shutil.which("jackd")
    if jackd is None:
        pytest.skip("jackd not installed (Debian: apt-get install jackd2)")
    if not _jack_api_available():
        pytest.skip("python-rtmidi was built without JACK support")
    name = f"ffvj-test-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    env = {**os.environ, "JACK_DEFAULT_SERVER": name, "JACK_NO_START_SERVER": "1"}
    logfile = tmp_path_factory.mktemp("jack") / "jackd.log"
    with open(logfile, "w") as log_out:
        # -t: a generous client timeout, so a client starved of CPU on a busy machine is not dropped.
        proc = subprocess.Popen([jackd, "-n", name, "--no-realtime", "-t", "10000", "-d", "dummy", "-r", "48000",
                                 "-p", "256"],
                                env=env, stdout=log_out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        up = False
        if shutil.which("jack_wait"):
            # jack_wait -w blocks until the server answers (-t: give up after that many seconds).
            r = subprocess.run(["jack_wait", "-s", name, "-w", "-t", "20"], env=env, capture_output=True, text=True,
                               timeout=30)
            up = r.returncode == 0 and "available" in r.stdout
        else:
            up = wait_until(lambda: proc.poll() is None and "JACK server starting" in logfile.read_text(), 20)
        if not up or proc.poll() is not None:
            pytest.skip(f"jackd did not come up: {logfile.read_text()[-500:]}")
        old = {k: os.environ.get(k) for k in ("JACK_DEFAULT_SERVER", "JACK_NO_START_SERVER")}
        os.environ.update(JACK_DEFAULT_SERVER=name, JACK_NO_START_SERVER="1")
        yield env
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


PEER_PREAMBLE = """
import json, sys, time, mido
b = mido.Backend(%r, load=True)


def retry(fn, *args, **kwargs):
    # A JACK server starved of CPU by other tests can refuse a new client for a while.
    for attempt in range(10):
        try:
            return fn(*args, **kwargs)
        except OSError:
            if attempt == 9:
                raise
            time.sleep(0.5)
"""


def peer(env, script: str, *args) -> subprocess.Popen:
    """Another process speaking MIDI over the same JACK server."""
    code = PEER_PREAMBLE % JACK_BACKEND + textwrap.dedent(script)
    return subprocess.Popen([sys.executable, "-c", code, *args], env=env, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


# The peer finds ffvj's port by its JACK client name and sends the messages again every 0.2 s until
# the test says "stop" on stdin: JACK delivers in a later cycle and a fresh connection may miss the
# first one on a loaded machine, so the messages are idempotent and the test waits for their effect.
FIND_AND_SEND = """
    import threading
    want, msgs = sys.argv[1], [mido.Message(**spec) for spec in json.loads(sys.argv[2])]
    deadline = time.monotonic() + (float(sys.argv[3]) if len(sys.argv) > 3 else 20)
    while True:
        names = [n for n in retry(b.get_output_names) if n.split(":")[0] == want]
        if names or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    if not names:
        sys.exit("no port %r among %r" % (want, b.get_output_names()))
    print(names[0], flush=True)
    stop = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.readline(), stop.set()), daemon=True).start()
    with retry(b.open_output, names[0]) as out:
        while not stop.is_set() and time.monotonic() < deadline:
            for msg in msgs:
                out.send(msg)
                time.sleep(0.01)
            stop.wait(0.2)
"""


def stop_peer(proc) -> tuple[str, str]:
    try:
        out, err = proc.communicate("stop\n", timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return out, err


def start_midi(expected: list[str], *args, **kwargs) -> MidiInput:
    """MidiInput on the test's JACK server. A JACK server starved of CPU by other tests can refuse a
    new client for seconds ("Cannot create new client"); that is the machine, not ffvj: retry."""
    for attempt in range(4):
        midi = MidiInput(*args, backend=JACK_BACKEND, **kwargs).start()
        if midi.available and midi.connected == expected:
            return midi
        midi.close()
        time.sleep(1.0 + attempt)
    pytest.fail(f"could not open {expected} on the JACK server (available={midi.available}, "
                f"connected={midi.connected})")


def test_jack_virtual_port_end_to_end(jack_server, rig):
    store, actions, tempo = rig
    virtual = f"ffvj{uuid.uuid4().hex[:6]}"
    m = mapping({"param": "l0.zoom", "type": "cc", "number": 21, "min": 0.9, "max": 1.1, "curve": "linear"},
                {"param": "bound", "type": "note", "number": 36, "value": "sine"})
    with start_midi([virtual], store, actions, tempo, [m], virtual_name=virtual) as midi:
        msgs = [{"type": "control_change", "control": 21, "value": 127},
                {"type": "note_on", "note": 36, "velocity": 100}, {"type": "note_on", "note": 36, "velocity": 0}]
        proc = peer(jack_server, FIND_AND_SEND, virtual, json.dumps(msgs))
        moved = wait_until(lambda: store.get("l0.zoom") == pytest.approx(1.1) and store.get("bound") == 2.0, 30)
        out, err = stop_peer(proc)
        assert proc.returncode == 0, err
        assert out.strip() == f"{virtual}:{virtual}"  # how JACK names rtmidi's virtual port: client:port
        assert moved, midi.stats()


def test_jack_auto_connect_and_led_echo(jack_server, rig):
    """A peer pretends to be a controller: ffvj finds its output by the mapping's ``match``, and the
    LED of the pressed button comes back on the peer's input port."""
    store, actions, tempo = rig
    client = f"ctl{uuid.uuid4().hex[:6]}"
    controller = """
        import threading
        client = sys.argv[1]
        lit = mido.Message("note_on", note=16, velocity=127)
        got = []
        with retry(b.open_output, "out", virtual=True, client_name=client) as out, \\
                retry(b.open_input, "leds", virtual=True, client_name=client + "-leds", callback=got.append):
            print("ready", flush=True)
            sys.stdin.readline()  # ffvj is connected
            deadline = time.monotonic() + 20
            while lit not in got and time.monotonic() < deadline:
                out.send(mido.Message("note_on", note=16, velocity=127))
                out.send(mido.Message("note_on", note=16, velocity=0))
                out.send(mido.Message("control_change", control=9, value=0))
                time.sleep(0.2)
            print(json.dumps([m.hex() for m in got]), flush=True)
    """
    proc = peer(jack_server, controller, client)
    try:
        assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
        m = mapping({"param": "bound", "type": "note", "number": 16, "value": "sine"},
                    {"param": "input.mix", "type": "cc", "number": 9},
                    match=client, output=f"{client}-leds")
        with start_midi([f"{client}:out"], store, actions, tempo, [m], virtual_name=None) as midi:
            assert midi.outputs, "no LED echo port"
            proc.stdin.write("go\n")
            proc.stdin.flush()
            out, err = proc.communicate(timeout=40)
            assert proc.returncode == 0, err
            echoed = [mido.Message.from_hex(h) for h in json.loads(out.strip().splitlines()[-1])]
            assert mido.Message("note_on", note=16, velocity=127) in echoed  # the pressed button's LED
            assert wait_until(lambda: store.get("bound") == 2.0 and store.get("input.mix") == 0.0)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_jack_hot_plug(jack_server, rig):
    """A controller on JACK that appears after the show started, goes away and comes back is
    connected, dropped and connected again, with its mapping working each time."""
    store, actions, tempo = rig
    client = f"hot{uuid.uuid4().hex[:6]}"
    controller = """
        client, value = sys.argv[1], int(sys.argv[2])
        with retry(b.open_output, "out", virtual=True, client_name=client) as out:
            print("ready", flush=True)
            while not sys.stdin.readline().startswith("stop"):  # "send": once more; "stop": unplug
                out.send(mido.Message("control_change", control=9, value=value))
    """
    m = mapping({"param": "input.mix", "type": "cc", "number": 9}, match=client)
    with start_midi([], store, actions, tempo, [m], virtual_name=None, rescan_s=0.2) as midi:
        for value in (127, 0):  # plug in, move the fader, unplug; twice
            proc = peer(jack_server, controller, client, str(value))
            try:
                assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
                assert wait_until(lambda: midi.connected == [f"{client}:out"], 30), midi.connected
                want = value / 127

                def moved() -> bool:
                    proc.stdin.write("send\n")  # JACK may miss the first message on a new connection
                    proc.stdin.flush()
                    return store.get("input.mix") == pytest.approx(want)

                assert wait_until(moved, 30, interval=0.2)
                _, err = proc.communicate("stop\n", timeout=30)
                assert proc.returncode == 0, err
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
            assert wait_until(lambda: midi.connected == [], 30), midi.connected


def test_jack_learn_session(jack_server, tmp_path):
    virtual = f"learn{uuid.uuid4().hex[:6]}"
    out_path = tmp_path / "learned.toml"
    lines: list[str] = []
    result = {}

    def run():
        result["mapping"] = learn_session(["l0.zoom"], None, out_path, timeout=20, backend=JACK_BACKEND,
                                          virtual_name=virtual, print_fn=lines.append)

    thread = threading.Thread(target=run)
    thread.start()
    msgs = [{"type": "control_change", "control": 21, "value": v, "channel": 4} for v in (40, 42, 45, 49, 52)]
    proc = peer(jack_server, FIND_AND_SEND, virtual, json.dumps(msgs))
    thread.join(timeout=40)
    _, err = stop_peer(proc)
    assert proc.returncode == 0, err
    assert any("move a control for l0.zoom" in line for line in lines)
    entries = load_mapping(out_path, REG).entries
    # (mido counts channels from 0: its channel 4 is MIDI channel 5, as the file writes it)
    assert [(e.target, e.type, e.channel, e.number, e.mode) for e in entries] == [("l0.zoom", "cc", 5, 21, "absolute")]
    assert result["mapping"].entries[0].number == 21


def test_a_controller_on_jack_drives_a_running_show(jack_server):
    """The whole path: another process sends CC 7 to the virtual `ffvj` port of a running `ffvj run`
    on a JACK server; the generic mapping moves input.mix, and OSC feedback reports the new value."""
    import socket

    from pythonosc.osc_message import OscMessage

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        osc_port = probe.getsockname()[1]
    feedback = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    feedback.bind(("127.0.0.1", 0))
    feedback.settimeout(0.5)
    show = subprocess.Popen([sys.executable, "-m", "ffvj.cli", "run", "--source", "generator", "--sink", "null",
                             "--size", "96x64", "--pace", "realtime", "--midi-backend", "jack", "--osc-port",
                             str(osc_port), "--osc-feedback", f"127.0.0.1:{feedback.getsockname()[1]}",
                             "--no-oscquery", "--midi-mapping", "generic"],
                            env=jack_server, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    # The show's log, read on a thread: the sender starts once the show says its port is open (on a
    # loaded machine importing torch alone can take longer than any fixed wait), and a failure shows it.
    log_lines: list[str] = []
    reader = threading.Thread(target=lambda: log_lines.extend(iter(show.stderr.readline, "")), daemon=True)
    reader.start()
    opened = wait_until(lambda: show.poll() is not None or any("virtual input 'ffvj' open" in line
                                                               for line in log_lines), 120)
    sender = peer(jack_server, FIND_AND_SEND, "ffvj", json.dumps([{"type": "control_change", "control": 7,
                                                                   "value": 127, "channel": 0}]), "60")
    try:
        assert opened and show.poll() is None, "the show did not open its MIDI port:\n" + "".join(log_lines)[-3000:]
        value, deadline = None, time.monotonic() + 60
        while time.monotonic() < deadline and value != 1.0:
            try:
                msg = OscMessage(feedback.recv(65536))
            except (socket.timeout, ValueError):
                continue
            if msg.address == "/ffvj/input/mix":
                value = round(msg.params[0], 4)
    finally:
        _, sender_err = stop_peer(sender)
        show.send_signal(signal.SIGTERM)
        try:
            show.wait(timeout=30)
        finally:
            show.kill()
            reader.join(timeout=10)
            feedback.close()
    show_log = "".join(log_lines)[-3000:]
    assert value == 1.0, f"no feedback for input.mix\nsender: {sender_err[-1500:]}\nshow: {show_log}"
    assert show.returncode == 0, show_log


def test_controls_learned_during_a_show_are_saved_at_once(tmp_path, rig):
    """ffvj run hooks the learner so every learned control is written to a mapping file right away."""
    from ffvj.cli import _save_learned

    store = rig[0]
    learner = Learner(REG, store, auto_flush=False)
    path = tmp_path / "config" / "learned.toml"
    learner.on_learned.append(lambda entry: _save_learned(learner, path))
    learner.arm("l0.zoom")
    for i, v in enumerate((10, 12, 14, 17)):
        learner.feed(cc(21, v), now=100.0 + 0.01 * i)
    assert learner.armed is None and path.is_file()
    loaded = load_mapping(path, REG)
    assert [(e.param.name, e.number) for e in loaded.entries] == [("l0.zoom", 21)]
