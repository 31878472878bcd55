"""The one registry of controllable parameters, and the thread-safe store the render loop reads.

The picture's parameters (φ) are declared in ``ffvj.phi``, the floor the engine and the controls share;
the controls' own are declared here: ``LFO_PARAMS`` (repeated for every LFO slot as ``lfo<k>.<name>``),
``AUDIO_PARAMS`` (every audio slot, ``audio<k>.<name>``), the music's triggers and the tempo's settings.
OSC addresses, MIDI mappings, presets, the CLI, TouchOSC layouts, OSCQuery and ``ffvj params`` all read
``build_registry``'s table; nothing else declares a parameter. (The discrete triggers, such as the panic
button, are actions: ``actions.ACTIONS``.)

Threads: control threads (OSC, MIDI, clock) call ``ParamStore.set``; the render loop calls
``ParamStore.advance(dt)`` once per frame, which returns a snapshot of smoothed values by name (``Controls``
makes the frame's typed ``Phi`` of it). Setting never blocks on the render loop and never touches a tensor.
"""

from __future__ import annotations

import difflib
import logging
import math
import re
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field, replace

from ..audio.analysis import FEATURES
from ..phi import Param, picture_params
from ..reporting import Counts, RateLimitedLog

log = logging.getLogger(__name__)

LFO_SHAPES = ("sine", "triangle", "saw", "square", "random")
# An LFO's cycle length in beats (quarter notes, bars of 4/4), slow to fast so a knob sweeps in order;
# "free" (last) means lfo<k>.rate in Hz instead.
LFO_DIVISIONS: dict[str, float | None] = {
    "8bar": 32.0, "4bar": 16.0, "2bar": 8.0, "1bar": 4.0,
    "1/2": 2.0, "1/2t": 4.0 / 3.0, "1/4": 1.0, "1/4t": 2.0 / 3.0,
    "1/8": 0.5, "1/8t": 1.0 / 3.0, "1/16": 0.25, "1/16t": 1.0 / 6.0,
    "free": None,
}
LFO_SLOTS = 4
LFO_NO_TARGET = "none"
# tempo.quantum's choices: how many beats a quantised change (a preset, snapshot or model) waits for.
QUANTA: dict[str, float] = {"off": 0.0, "beat": 1.0, "bar": 4.0, "2 bars": 8.0, "phrase": 16.0}
AUDIO_SLOTS = 4
AUDIO_TRIGGERS = ("none", "reset", "snapshot.next", "preset.next")  # what an onset or a beat may fire


def close_matches(word: str, choices: Iterable[str]) -> str:
    """" (did you mean l0.zoom, l1.zoom?)" for a misspelled name among ``choices``, or ""."""
    near = difflib.get_close_matches(word, list(choices), n=4, cutoff=0.5)
    return f" (did you mean {', '.join(near)}?)" if near else ""


def _p(name, default, lo, hi, doc, **kw) -> Param:
    return Param(name, float(default), float(lo), float(hi), doc, **kw)


# Declared once, instantiated for every LFO slot k as "lfo<k>.<name>" (see ``modulation``).
# ``target`` is a placeholder here: its choices are the registry's numeric parameters.
LFO_PARAMS: tuple[Param, ...] = (
    _p("target", 0, 0, 0, "parameter this LFO moves (none: off)", kind="enum", choices=(LFO_NO_TARGET,),
       smoothing=0),
    _p("shape", 0, 0, len(LFO_SHAPES) - 1, "wave shape; random holds one value per cycle", kind="enum",
       choices=LFO_SHAPES, smoothing=0),
    _p("division", tuple(LFO_DIVISIONS).index("1bar"), 0, len(LFO_DIVISIONS) - 1,
       "cycle length synced to the tempo (t: triplet), or free to run at the rate in Hz", kind="enum",
       choices=tuple(LFO_DIVISIONS), smoothing=0),
    _p("rate", 0.25, 0.01, 20.0, "cycles per second when the division is free", unit="Hz", curve="exp"),
    _p("depth", 0, -1, 1, "how far the LFO moves its target: ± depth × half the target's range (negative "
       "inverts)", curve="sym"),
    # No smoothing: a smoothed phase would sweep through the whole cycle when wrapping 1 → 0.
    _p("phase", 0, 0, 1, "phase offset", unit="cycles", smoothing=0),
)
_LFO_NAME = re.compile(r"lfo(\d+)\.target")

# Declared once, instantiated for every audio slot k as "audio<k>.<name>": a feature of the music moving a
# parameter (see ``modulation``). ``target`` is a placeholder here, as for the LFOs.
AUDIO_PARAMS: tuple[Param, ...] = (
    _p("target", 0, 0, 0, "parameter this feature of the music moves (none: off)", kind="enum",
       choices=(LFO_NO_TARGET,), smoothing=0),
    _p("feature", 0, 0, len(FEATURES) - 1, "level, bass, mid or high (auto-gained: 0.5 is as loud as lately), "
       "onset (1 at a hit, falling), beat (1 on the beat, falling over it) or one of the bands, low to high",
       kind="enum", choices=FEATURES, smoothing=0),
    _p("depth", 0, -1, 1, "how far: depth × the feature (0..1) × half the target's range (negative: down)",
       curve="sym"),
    _p("curve", 1, 0.25, 4, "the feature to this power first: above 1 only the peaks move the target, below 1 "
       "quieter parts too", curve="exp"),
    _p("smooth", 0, 0, 2, "extra smoothing of the feature (0: as the analysis gives it)", unit="s"),
)
# The music's events as triggers: an action on every onset, or every N beats.
AUDIO_GLOBAL_PARAMS: tuple[Param, ...] = (
    _p("audio.on_onset", 0, 0, len(AUDIO_TRIGGERS) - 1, "what each onset fires (reset: a re-seed nudge)",
       kind="enum", choices=AUDIO_TRIGGERS, smoothing=0),
    _p("audio.on_beat", 0, 0, len(AUDIO_TRIGGERS) - 1, "what the beat fires, every audio.beat_every beats",
       kind="enum", choices=AUDIO_TRIGGERS, smoothing=0),
    _p("audio.beat_every", 4, 1, 32, "beats between two firings of audio.on_beat (4: every bar)", kind="int",
       smoothing=0),
)
# The tempo clock's own settings (the clock itself: ``tempo.Tempo``).
TEMPO_PARAMS: tuple[Param, ...] = (
    _p("tempo.quantum", 0, 0, len(QUANTA) - 1, "preset, snapshot and model changes wait for the next beat, bar "
       "(4 beats) or phrase (16) of the tempo clock (an action's own quantum argument overrides it)",
       kind="enum", choices=tuple(QUANTA), smoothing=0),
    _p("tempo.lookahead", 0, 0, 0.25, "a quantised change starts this much early, besides ffvj's own measured "
       "output latency: the projector's or the mixer's", unit="s", smoothing=0),
)
_AUDIO_NAME = re.compile(r"audio(\d+)\.target")


def lfo_slots(registry) -> list[int]:
    """The LFO slot numbers a registry declares, in order (none for a registry built without LFOs)."""
    return sorted(int(m[1]) for name in registry if (m := _LFO_NAME.fullmatch(name)))


def audio_slots(registry) -> list[int]:
    """The audio slot numbers a registry declares, in order."""
    return sorted(int(m[1]) for name in registry if (m := _AUDIO_NAME.fullmatch(name)))


def build_registry(levels: int, lfo_slots: int = LFO_SLOTS, audio_slots: int = AUDIO_SLOTS) -> dict[str, Param]:
    """Every parameter for a model with ``levels`` hidden levels (so levels + 1 states), by name.

    ``lfo<k>.target`` chooses among "none" and every float or int parameter declared before the LFOs,
    in registry order (an LFO moving another LFO would make the result depend on slot order). Enum
    values are stored by index, but presets and OSC use the choice names, so a preset still finds its
    target in a model with a different number of levels."""
    reg = dict(picture_params(levels))
    targets = (LFO_NO_TARGET,) + tuple(name for name, p in reg.items() if p.kind in ("float", "int"))
    for k in range(1, lfo_slots + 1):
        for p in LFO_PARAMS:
            slot = replace(p, name=f"lfo{k}.{p.name}")
            if p.name == "target":
                slot = replace(slot, max=float(len(targets) - 1), choices=targets)
            reg[slot.name] = slot
    for k in range(1, audio_slots + 1):  # the same targets as the LFOs: the music moves the centre too
        for p in AUDIO_PARAMS:
            slot = replace(p, name=f"audio{k}.{p.name}")
            if p.name == "target":
                slot = replace(slot, max=float(len(targets) - 1), choices=targets)
            reg[slot.name] = slot
    if audio_slots:
        reg.update((p.name, p) for p in AUDIO_GLOBAL_PARAMS)
    reg.update((p.name, p) for p in TEMPO_PARAMS)
    return reg


@dataclass
class ParamStore:
    """Latest-value-wins parameter targets, smoothed once per frame by the render loop.

    ``set`` clamps out-of-range values (counting and logging them, rate-limited) and never raises
    for a bad value during a show: it returns False and keeps the old value instead.
    """

    registry: dict[str, Param]
    _targets: dict[str, float] = field(init=False)
    _current: dict[str, float] = field(init=False)
    _lock: threading.Lock = field(init=False, default_factory=threading.Lock)
    _listeners: list = field(init=False, default_factory=list)

    def __post_init__(self) -> None:
        self._targets = {n: p.default for n, p in self.registry.items()}
        self._current = dict(self._targets)
        self.advanced = dict(self._targets)  # the targets the last ``advance`` smoothed toward
        self._counts = Counts("rejected", "clamped")
        self._warn = RateLimitedLog(log)

    @property
    def rejected(self) -> int:
        """Sets refused: an unknown name, a value of the wrong kind, NaN or infinity."""
        return self._counts["rejected"]

    @property
    def clamped(self) -> int:
        """Float values brought into their parameter's range."""
        return self._counts["clamped"]

    def set(self, name: str, value, normalized: bool = False, source: str = "") -> bool:
        """Set a target (native units, or 0..1 when ``normalized``). Thread-safe; never blocks long."""
        param = self.registry.get(name)
        if param is None:
            self._counts.add("rejected")
            self._warn.warning(f"unknown:{name}", "unknown parameter %r from %s", name, source or "?")
            return False
        try:
            raw = param.from_normalized(param.parse(value)) if normalized else param.parse(value)
        except (TypeError, ValueError, OverflowError) as exc:  # OverflowError: an integer of 400 digits
            self._counts.add("rejected")
            self._warn.warning(f"bad:{name}", "ignored bad value for %s from %s: %s", name, source or "?", exc)
            return False
        if not math.isfinite(raw):
            self._counts.add("rejected")
            self._warn.warning(f"nan:{name}", "ignored non-finite value for %s from %s", name, source or "?")
            return False
        value = param.clamp(raw)
        if value != raw and param.kind == "float":
            self._counts.add("clamped")
            self._warn.warning(f"clamp:{name}", "clamped %s=%g to [%g, %g] (from %s)", name, raw, param.min,
                               param.max, source or "?")
        with self._lock:
            self._targets[name] = value
            listeners = list(self._listeners)
        for listener in listeners:
            listener(name, value, source)
        return True

    def get(self, name: str) -> float:
        with self._lock:
            return self._targets[name]

    def targets(self) -> dict[str, float]:
        with self._lock:
            return dict(self._targets)

    def add_listener(self, fn) -> None:
        """``fn(name, value, source)`` after every accepted set (for OSC feedback, LED echo)."""
        with self._lock:
            self._listeners.append(fn)

    def remove_listener(self, fn) -> None:
        with self._lock:
            if fn in self._listeners:
                self._listeners.remove(fn)

    def advance(self, dt: float) -> dict[str, float]:
        """Advance smoothing by ``dt`` seconds and return this frame's values (one snapshot). The targets it
        smoothed toward stay in ``advanced`` (a show file records them: what this frame was asked for)."""
        targets = self.targets()
        self.advanced = targets
        cur = self._current
        for name, target in targets.items():
            tau = self.registry[name].smoothing
            if tau <= 0 or dt <= 0:
                cur[name] = target
            else:
                a = 1.0 - math.exp(-dt / tau)
                v = cur[name] + (target - cur[name]) * a
                cur[name] = target if abs(v - target) < 1e-7 else v
        return dict(cur)
