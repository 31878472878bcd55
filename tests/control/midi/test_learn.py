"""MIDI learn: binding controls by moving them, live and in a file."""

from __future__ import annotations

import time

import mido
import pytest

from ffvj.control.midi.learn import Learner, _guess_cc_mode
from ffvj.control.midi.mapper import MidiMapper
from ffvj.control.midi.mapping import load_mapping
from .rig import REG, cc, mapping, note, wait_until


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
    store = rig.store
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
    m = MidiMapper(loaded, rig)
    m.handle(cc(21, 127))
    assert store.get("l0.zoom") == pytest.approx(REG["l0.zoom"].max)


def test_learn_live_binds_through_the_mapper(rig):
    store = rig.store
    learner = rig.learner = Learner(REG, store, auto_flush=False)
    m = MidiMapper(mapping({"param": "drive", "type": "cc", "number": 50}), rig)
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
    store = rig.store
    learner = rig.learner = Learner(REG, store, auto_flush=False)
    m = MidiMapper(mapping({"param": "learn", "type": "note", "number": 1}), rig)
    m.handle(note(1, 127))
    assert learner.armed is None  # nothing touched via OSC yet: stays unarmed, warns
    store.set("l2.zoom", 1.1, source="osc")
    m.handle(note(1, 127))
    assert learner.armed == "l2.zoom"


def test_controls_learned_during_a_show_are_saved_at_once(tmp_path, rig):
    """A show's learner writes every learned control to a mapping file right away (off the MIDI thread)."""
    learner = Learner(REG, rig.store, auto_flush=False)
    path = tmp_path / "config" / "learned.toml"
    learner.save_each_time(path)
    learner.arm("l0.zoom")
    for i, v in enumerate((10, 12, 14, 17)):
        learner.feed(cc(21, v), now=100.0 + 0.01 * i)
    assert learner.armed is None
    wait_until(lambda: path.is_file(), what="the learned mapping to be written")
    loaded = load_mapping(path, REG)
    assert [(e.param.name, e.number) for e in loaded.entries] == [("l0.zoom", 21)]
