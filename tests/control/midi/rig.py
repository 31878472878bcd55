"""What the MIDI tests share: messages, mappings, a Controls on a tempo the test advances, a fake port."""

from __future__ import annotations

import mido
import pytest

from ffvj.control.controls import Controls
from ffvj.control.midi.mapper import MidiMapper
from ffvj.control.midi.mapping import parse_mapping
from ffvj.control.params import ParamStore, build_registry
from ffvj.control.tempo import Tempo
from tests.helpers import REPO, poll_until, wait_until  # noqa: F401 (for the MIDI tests)

MAPPINGS = REPO / "mappings"
REG = build_registry(3)


def cc(n, v, ch=1):
    return mido.Message("control_change", channel=ch - 1, control=n, value=v)


def note(n, vel, ch=1):
    return mido.Message("note_on", channel=ch - 1, note=n, velocity=vel)


def mapping(*entries, **device):
    return parse_mapping({"device": {"name": "test", **device}, "map": list(entries)}, REG)


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
def rig() -> Controls:
    """A show's controls (no presets) on a FakeTempo."""
    return Controls(ParamStore(build_registry(3)), tempo=FakeTempo())


def make(rig: Controls, *entries, **kw) -> MidiMapper:
    return MidiMapper(mapping(*entries), rig, **kw)


def queued(controls: Controls) -> list[tuple[str, dict]]:
    """What the render loop would drain: (action name, arguments)."""
    return [(action.name, args) for action, args in controls.actions.drain()]


