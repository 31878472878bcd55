"""LFOs: periodic modulation of any numeric parameter, synced to the show's tempo or free-running.

Each LFO slot is a set of ordinary parameters, declared once in ``params.LFO_PARAMS`` and repeated for
every slot in the one registry, so OSC, MIDI, presets and TouchOSC reach it like everything else::

    lfo<k>.target    enum: "none" or the name of a float/int parameter it moves
    lfo<k>.shape     enum: sine, triangle, saw, square, random (sample-and-hold, one value per cycle)
    lfo<k>.division  enum: cycle length in beats ("1bar" = 4 beats, "1/4" = 1 beat, "1/8t" = 1/3 beat…),
                     or "free" to run at lfo<k>.rate Hz
    lfo<k>.rate      float, Hz, used when division is "free"
    lfo<k>.depth     float -1..1: ± depth × half the target's range
    lfo<k>.phase     float 0..1: offset in cycles

The render loop calls ``Modulation.apply(values, beat, seconds)`` once per frame on the smoothed
snapshot from ``ParamStore.frame``. It returns a new dict and never writes the store's targets, so an
LFO never fights the performer's fader: the fader sets the centre, the LFO swings around it::

    value' = clamp(value + Σ_k depth_k · lfo_k(cycles_k) · (max − min) / 2)

Every LFO output is bipolar, in [-1, 1], as a function of its position in cycles ``c``
(``f = c − floor(c)``):

    sine      sin(2π f)                          0 at the start, +1 at ¼, −1 at ¾
    triangle  4f (f<¼), 2−4f (f<¾), 4f−4          same landmarks as sine, straight lines between
    saw       2f − 1                              rises from −1, jumps back at the end of the cycle
    square    +1 (f<½), −1                        high for the first half
    random    uniform in [-1, 1), held for the whole cycle, a pure function of (seed, slot, floor(c))

**Audio slots** (``params.AUDIO_PARAMS``, ``audio<k>.target/feature/depth/curve/smooth``) add the music
the same way, unipolar: the fader is where the target rests in silence, and the music pushes it::

    value' = clamp(value + Σ_k depth_k · smooth_k(feature_k ** curve_k) · (max − min) / 2)

The features come from ``audio.analysis`` (0..1, auto-gained); ``smooth`` is a one-pole filter in
seconds on the render clock. Without an audio input, or in silence, every feature is 0 and the target
rests where the fader put it.

A synced LFO's position is ``beat / beats_per_cycle + phase``, so it follows ``Tempo.beat`` (which stays
continuous when the tempo changes) and two machines on the same clock agree. A free LFO integrates its
rate over time, so changing the rate never makes it jump.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping

from ..phi import Param
from ..reporting import RateLimitedLog
from .params import LFO_DIVISIONS, LFO_NO_TARGET, LFO_SHAPES, audio_slots, lfo_slots

log = logging.getLogger(__name__)

_MASK64 = (1 << 64) - 1


def _splitmix64(x: int) -> int:
    # A well-mixed 64-bit hash (SplitMix64's finaliser): cheap, stateless, identical on every machine,
    # unlike Python's hash() (salted per process) or a shared random.Random (order-dependent).
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def held_random(seed: int, slot: int, cycle: int) -> float:
    """The random shape's value for one cycle: uniform in [-1, 1), a pure function of its arguments."""
    x = _splitmix64((seed & _MASK64) ^ _splitmix64((slot << 40) ^ (cycle & _MASK64)))
    return (x >> 11) / float(1 << 53) * 2.0 - 1.0


def lfo_value(shape: str, cycles: float, seed: int = 0, slot: int = 0) -> float:
    """One LFO's output in [-1, 1] at position ``cycles`` (phase offset included). See the module
    docstring for each shape. Raises ValueError for an unknown shape."""
    n = math.floor(cycles)
    f = cycles - n
    if shape == "sine":
        return math.sin(2.0 * math.pi * f)
    if shape == "triangle":
        if f < 0.25:
            return 4.0 * f
        if f < 0.75:
            return 2.0 - 4.0 * f
        return 4.0 * f - 4.0
    if shape == "saw":
        return 2.0 * f - 1.0
    if shape == "square":
        return 1.0 if f < 0.5 else -1.0
    if shape == "random":
        return held_random(seed, slot, n)
    raise ValueError(f"unknown LFO shape {shape!r}; choose from {', '.join(LFO_SHAPES)}")


def synced_cycles(beat: float, division: str, phase: float = 0.0) -> float:
    """Position in cycles of an LFO synced to the beat (``division`` must not be "free")."""
    beats = LFO_DIVISIONS[division]
    if beats is None:
        raise ValueError("a free-running LFO has no beat position; use Modulation")
    return beat / beats + phase


class Modulation:
    """Applies the registry's LFO slots to one frame's values. Render thread only (keeps free phases).

    After each ``apply``: ``modulated`` maps every parameter an LFO moved this frame to its modulated
    value, and ``released``
    holds the parameters moved last frame but not this one (their value is plain again), so OSC
    feedback can send exactly what changed.
    """

    def __init__(self, registry: Mapping[str, Param], seed: int = 0):
        self.registry = registry
        self.seed = seed
        self.slots = lfo_slots(registry)  # none when the registry was built without LFOs
        self.audio_slots = audio_slots(registry)
        self._smoothed = {k: 0.0 for k in self.audio_slots}  # each audio slot's feature, after its smoothing
        self._free_cycles = {k: 0.0 for k in self.slots}
        self._last_seconds: float | None = None
        self.modulated: dict[str, float] = {}
        self.released: set[str] = set()
        self._warn = RateLimitedLog(log, interval=5.0)

    def cycles(self, slot: int, values: Mapping[str, float], beat: float) -> float:
        """Slot ``slot``'s current position in cycles, phase offset included."""
        division = tuple(LFO_DIVISIONS)[int(values[f"lfo{slot}.division"])]
        phase = values[f"lfo{slot}.phase"]
        if LFO_DIVISIONS[division] is None:
            return self._free_cycles[slot] + phase
        return synced_cycles(beat, division, phase)

    def apply(self, values: Mapping[str, float], beat: float, seconds: float, audio=None) -> dict[str, float]:
        """This frame's values with every active LFO and audio slot added (clamped to each target's range).

        ``beat`` is ``Tempo.beat(now)``; ``seconds`` is the same moment on a clock in seconds (free
        LFOs advance by its difference from the previous call; the first call starts them at 0).
        ``audio`` is this frame's ``AudioFeatures`` (None: no audio input, every feature 0).
        ``values`` is not changed; the store is not touched.
        """
        dt = 0.0 if self._last_seconds is None else max(0.0, seconds - self._last_seconds)
        self._last_seconds = seconds
        offsets: dict[str, float] = {}
        for k in self.slots:
            # Integrate the free rate every frame, even while the slot is off or synced, so switching
            # to free continues from a well-defined place instead of jumping to seconds × rate.
            self._free_cycles[k] += values[f"lfo{k}.rate"] * dt
            shape = LFO_SHAPES[int(values[f"lfo{k}.shape"])]
            self._push(f"lfo{k}", values, lfo_value(shape, self.cycles(k, values, beat), self.seed, k), offsets)
        for k in self.audio_slots:
            self._audio_slot(k, values, audio, dt, offsets)
        result = dict(values)
        for name, offset in offsets.items():
            result[name] = self.registry[name].clamp(values[name] + offset)
        previous = self.modulated
        self.modulated = {name: result[name] for name in offsets}
        self.released = set(previous) - set(self.modulated)
        return result

    def _audio_slot(self, k: int, values: Mapping[str, float], audio, dt: float, offsets: dict) -> None:
        feature = self.registry[f"audio{k}.feature"].choices[int(values[f"audio{k}.feature"])]
        x = 0.0 if audio is None else min(max(audio.value(feature), 0.0), 1.0) ** values[f"audio{k}.curve"]
        smooth = values[f"audio{k}.smooth"]
        # (smoothed even while the slot is off, so turning it on starts from where the music is)
        self._smoothed[k] = x if smooth <= 0 else self._smoothed[k] + (x - self._smoothed[k]) * (1.0 - math.exp(-dt / smooth))
        self._push(f"audio{k}", values, self._smoothed[k], offsets)

    def _push(self, slot: str, values: Mapping[str, float], out: float, offsets: dict) -> None:
        """Slot ``slot`` (``lfo2``, ``audio1``) moves its target by depth × ``out`` × half the target's range.
        Several slots on one target add up; the clamp comes once, after the sum (in ``apply``)."""
        target = self.registry[f"{slot}.target"].choices[int(values[f"{slot}.target"])]
        depth = values[f"{slot}.depth"]
        if target == LFO_NO_TARGET or depth == 0.0:
            return
        param = self.registry.get(target)
        if param is None or target not in values:
            self._warn.warning(f"target:{target}", "%s target %r is not in this frame's values", slot, target)
            return
        offsets[target] = offsets.get(target, 0.0) + depth * out * (param.max - param.min) / 2.0
