"""The one table of actions: the discrete triggers a performer fires (panic, tempo, presets, snapshots, learn).

Parameters are settings (``params``); actions are events. Each action is declared once, in ``ACTIONS``:
its name, its typed arguments, what it does and on which thread. Every surface is generated from the
table: OSC addresses and type tags (``/ffvj/snapshot/recall i f``), OSCQuery nodes, MIDI mapping
targets (``snapshot.recall:3``), TouchOSC buttons and ``ffvj actions``.

Threads: ``Controls.fire(name, ...)`` may be called from any thread (it checks the arguments and raises
ValueError naming the problem, which a surface counts and logs). Then, by the action's ``thread``:

- ``NOW``: it runs at once on the caller's thread: the tempo and MIDI learn have no frame to wait for.
- ``LOOP``: it waits in a bounded ``ActionQueue`` that the render loop drains once per frame, before the
  step, because it changes the picture (the engine belongs to the render loop alone).
- ``FILES``: the render loop hands it to a file worker, because it reads or writes a preset file and
  a slow disk must never stall a frame.

A handler is ``run(controls, engine, **args)``; ``engine`` is the show's engine on the render loop and
None elsewhere. A handler logs its own failures (rate-limited) and returns whether it took effect.
"""

from __future__ import annotations

import collections
import logging
import math
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from ..phi import ADDRESS_PREFIX
from ..reporting import RateLimitedLog
from .model_switch import check_model_name
from .presets import check_name
from .snapshots import SNAPSHOT_SLOTS
from .tempo import MAX_BPM, MIN_BPM

log = logging.getLogger(__name__)

LOOP, FILES, NOW = "loop", "files", "now"
MODEL_FADE_WITH_PRESET = 1.0  # seconds: a preset recalled at once still crossfades the model it names
_TAGS = {int: "i", float: "f", str: "s"}
_warn = RateLimitedLog(log)


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED = _Required()


@dataclass(frozen=True)
class Arg:
    """One typed argument of an action. ``min``/``max`` bound a number: a value outside is brought into
    range when ``clamp`` (a tempo, a fade time: a fader's overshoot), else refused (a slot that does
    not exist is a mistake)."""

    name: str
    kind: type  # int, float or str
    doc: str
    default: object = REQUIRED
    min: float | None = None
    max: float | None = None
    clamp: bool = False
    check: Callable[[str], object] | None = None  # a string's own rule (a preset name): ValueError if broken

    @property
    def tag(self) -> str:
        """The OSC type tag."""
        return _TAGS[self.kind]

    @property
    def required(self) -> bool:
        return self.default is REQUIRED

    def convert(self, value, strict: bool = False):
        """A value from a surface as this argument's type; ValueError naming the problem. ``strict``
        (a file read at start-up): a number out of range is refused even where a live value would be
        clamped, and true/false is not a number."""
        if self.kind is str:
            if not isinstance(value, str) or not value:
                raise ValueError(f"{self.name} must be a non-empty string, not {value!r}")
            if self.check is not None:
                self.check(value)
            return value
        try:
            finite = isinstance(value, (int, float)) and not isinstance(value, str) and math.isfinite(value)
        except OverflowError:  # an integer too large for a float (JSON and TOML have no limit)
            finite = False
        if not finite or (strict and isinstance(value, bool)):
            raise ValueError(f"{self.name} must be a finite number, not {str(value)[:40]}")
        number = float(value)
        if self.kind is int:
            # Surfaces send slots as floats too (OSC's f, a TouchOSC fader): the nearest whole number.
            number = float(round(number))
        low = self.min is not None and number < self.min
        high = self.max is not None and number > self.max
        if low or high:
            if strict or not self.clamp:
                bounds = (f"{self.min:g}.." if self.min is not None else "..") + (
                    f"{self.max:g}" if self.max is not None else "")
                raise ValueError(f"{self.name} = {value!r} is outside {bounds}")
            number = self.min if low else self.max
        return int(number) if self.kind is int else number


@dataclass(frozen=True)
class Action:
    """One action. ``button``: fired by a press; no value or a non-zero one is a press, 0/False its
    release (ignored), so a momentary button fires once. ``value``: what the action sets, readable
    (``bpm``: the tempo), for surfaces that show it."""

    name: str
    doc: str
    run: Callable[..., object]
    args: tuple[Arg, ...] = ()
    thread: str = LOOP
    button: bool = False
    value: Callable[..., float] | None = None
    coalesce: bool = False  # fired again before the loop ran it: one run, the latest arguments
    quantized: bool = False  # its last argument is a quantum: it waits for the next beat, bar or phrase

    @property
    def address(self) -> str:
        """The OSC address: ``/ffvj/`` and the name with dots as slashes."""
        return f"{ADDRESS_PREFIX}/{self.name.replace('.', '/')}"

    @property
    def title(self) -> str:
        """A short caption for a button: the doc's words before its colon ("panic"), else the name."""
        head, colon, _ = self.doc.partition(":")
        return head if colon else self.name

    @property
    def type_tags(self) -> str:
        """OSC type tags of the arguments, in order ("" for none)."""
        return "".join(a.tag for a in self.args)

    def bind(self, values: Sequence = (), named: Mapping | None = None, strict: bool = False) -> dict | None:
        """The arguments as ``{name: value}`` from positional ``values`` (OSC's, MIDI's) and ``named``
        ones (a library call); None for a button's release. Raises ValueError naming the problem;
        ``strict`` as in ``Arg.convert``."""
        named = dict(named or {})
        if self.button and not self.args:
            if len(values) > 1 or named:
                raise ValueError(f"{self.name} takes no arguments (or one press value)")
            return {} if not values or values[0] is None or bool(values[0]) else None
        if len(values) > len(self.args):
            raise ValueError(f"{self.name} takes at most {len(self.args)} argument(s) "
                             f"({', '.join(a.name for a in self.args) or 'none'}), got {len(values)}")
        unknown = set(named) - {a.name for a in self.args}
        if unknown:
            raise ValueError(f"{self.name} has no argument {', '.join(sorted(unknown))}")
        out = {}
        for i, arg in enumerate(self.args):
            if i < len(values):
                raw = values[i]
            elif arg.name in named:
                raw = named[arg.name]
            elif arg.required:
                raise ValueError(f"{self.name} needs {arg.name} ({arg.doc})")
            else:
                out[arg.name] = arg.default
                continue
            try:
                out[arg.name] = arg.convert(raw, strict)
            except ValueError as exc:
                raise ValueError(f"{self.name}: {exc}") from None
        return out

    def describe(self) -> dict:
        return {"name": self.name, "address": self.address, "type_tags": self.type_tags, "thread": self.thread,
                "doc": self.doc, "args": [{"name": a.name, "type": a.kind.__name__, "doc": a.doc,
                                           **({} if a.required else {"default": a.default}),
                                           **({"min": a.min, "max": a.max} if a.min is not None else {})}
                                          for a in self.args]}


# --- what each action does --------------------------------------------------------------------------

def _reset(controls, engine) -> bool:
    engine.reseed()  # from the frame being made, crossfading (a snapshot crossfade under way gives way)
    return True


def _tap(controls, engine) -> bool:
    controls.tempo.tap()
    return True


def _bpm(controls, engine, bpm: float) -> bool:
    controls.tempo.set_bpm(bpm)
    return True


def _learn(controls, engine) -> bool:
    if controls.learner is None:
        _warn.warning("learn-off", "learn ignored: MIDI learn is not running in this show")
        return False
    if controls.learner.arm() is None:
        _warn.warning("learn-osc", "MIDI learn: change a parameter via OSC first, then press learn")
        return False
    return True


def _bank(controls, what: str):
    bank = getattr(controls, what)
    if bank is None:
        _warn.warning(f"off:{what}", "action ignored: no %s in this show", what)
    return bank


def _preset_recall(controls, engine, name: str, seconds: float) -> bool:
    bank = _bank(controls, "presets")
    if bank is None or not bank.recall(name, seconds):
        return False
    if bank.last_model is not None and controls.models is not None:  # a look made for another model
        return controls.models.load(bank.last_model, max(float(seconds), MODEL_FADE_WITH_PRESET))
    return True


def _preset_save(controls, engine, name: str) -> bool:
    bank = _bank(controls, "presets")
    return bank is not None and bank.save(name) is not None


def _snapshot_store(controls, engine, slot: int) -> bool:
    bank = _bank(controls, "snapshots")
    stored = bank is not None and bank.store(engine, slot)
    if stored and controls.snapshots_file is not None:  # the slots outlive the show: written off the loop
        controls.save_snapshots()
    return stored


def _snapshot_recall(controls, engine, slot: int, seconds: float) -> bool:
    bank = _bank(controls, "snapshots")
    return bank is not None and bank.recall(engine, slot, seconds)


def _model(controls, engine, name: str, seconds: float) -> bool:
    switcher = _bank(controls, "models")
    return switcher is not None and switcher.load(name, seconds)


# --- the table --------------------------------------------------------------------------------------

_NAME = Arg("name", str, "the preset's name (letters, digits, space, _ . + -)", check=check_name)
_SECONDS = Arg("seconds", float, "morph or crossfade time (0: at once)", default=0.0, min=0.0, max=600.0,
               clamp=True)
_SLOT = Arg("slot", int, "snapshot slot", min=0, max=SNAPSHOT_SLOTS - 1)
# The change lands on the next multiple of QUANTUM beats (1: the next beat, 4: the next bar, 16: the next
# phrase; 0: at once); -1, the default, takes the show's tempo.quantum parameter (a page control).
QUANTUM = Arg("quantum", float, "beats the change waits for: 0 now, 1 the next beat, 4 the next bar, 16 the next "
              "phrase; -1: tempo.quantum", default=-1.0, min=-1.0, max=64.0, clamp=True)

ACTIONS: dict[str, Action] = {a.name: a for a in (
    Action("reset", "panic: re-seed every level from the source, crossfading over half a second", _reset,
           button=True, coalesce=True),
    Action("tap", "tap tempo: two or more taps within 2 s set the BPM", _tap, thread=NOW, button=True),
    Action("bpm", "set the tempo", _bpm, (Arg("bpm", float, "beats per minute", min=MIN_BPM, max=MAX_BPM, clamp=True),),
           thread=NOW, value=lambda controls: controls.tempo.bpm),
    Action("learn", "MIDI learn: the next MIDI control moved binds to the parameter last changed over OSC",
           _learn, thread=NOW, button=True),
    Action("preset.recall", "recall preset NAME, morphing over SECONDS, from the next QUANTUM beats", _preset_recall,
           (_NAME, _SECONDS, QUANTUM), thread=FILES, quantized=True),
    Action("preset.save", "save every parameter's current target as preset NAME", _preset_save, (_NAME,),
           thread=FILES),
    Action("snapshot.store", "store the feedback state of every level in snapshot SLOT", _snapshot_store,
           (_SLOT,)),
    Action("snapshot.recall", "recall snapshot SLOT, crossfading over SECONDS, from the next QUANTUM beats",
           _snapshot_recall, (_SLOT, _SECONDS, QUANTUM), coalesce=True, quantized=True),
    Action("model", "switch to bundled model NAME, keeping the picture and crossfading over SECONDS, from the next "
           "QUANTUM beats", _model,
           (Arg("name", str, "a bundled model ('ffvj model list')", check=check_model_name),
            Arg("seconds", float, "crossfade time (0: at once)", default=2.0, min=0.0, max=60.0, clamp=True), QUANTUM),
           thread=FILES, quantized=True),
)}


def perform(action: Action, args: Mapping, controls, engine=None) -> bool:
    """Run one action now (its own thread's caller decides where: see the module docstring). A failure
    the handler did not foresee (a disk error saving a preset) is logged, rate-limited, and returns False."""
    try:
        return bool(action.run(controls, engine, **args))
    except (KeyError, TypeError, ValueError, OSError) as exc:  # PresetError is a ValueError
        _warn.warning(f"bad:{action.name}", "action %s%r failed: %s", action.name, dict(args), exc)
        return False


class ActionQueue:
    """Actions fired from control threads for the render loop, which drains them once per frame.
    Bounded: a flood of triggers drops the oldest, counted, rather than growing without limit. An
    action that ``coalesce``s runs once however often it was fired before the frame (200 panics a
    second were 200 re-seeds and took the show from 20 to 6 fps), at the place and with the
    arguments of its latest firing."""

    def __init__(self, maxlen: int = 64):
        self._items: collections.deque = collections.deque(maxlen=maxlen)
        self._lock = threading.Lock()
        self._dropped = self._coalesced = 0

    @property
    def dropped(self) -> int:
        with self._lock:
            return self._dropped

    @property
    def coalesced(self) -> int:
        with self._lock:
            return self._coalesced

    def post(self, action: Action, args: Mapping) -> None:
        with self._lock:
            if action.coalesce:  # the earlier one goes; this one joins the queue at its own place
                for i, (queued, _) in enumerate(self._items):
                    if queued is action:
                        del self._items[i]
                        self._coalesced += 1
                        break
            if len(self._items) == self._items.maxlen:
                self._dropped += 1
            self._items.append((action, dict(args)))

    def drain(self) -> list[tuple[Action, dict]]:
        with self._lock:
            items = list(self._items)
            self._items.clear()
        return items
