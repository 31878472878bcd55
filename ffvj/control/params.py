"""The one registry of controllable parameters (φ), and the thread-safe store the render loop reads.

Every parameter is declared once, here: ``GLOBAL_PARAMS`` (picture-wide), ``LEVEL_PARAMS`` (repeated for
every level of the model as ``l<N>.<name>``) and ``LFO_PARAMS`` (repeated for every LFO slot as
``lfo<k>.<name>``). OSC addresses, MIDI mappings, presets, the CLI, TouchOSC layouts, OSCQuery and
``ffvj params`` all read ``build_registry``'s table; nothing else declares a parameter. (The discrete
triggers, such as the panic button, are actions: ``actions.ACTIONS``.)

Threads: control threads (OSC, MIDI, clock) call ``ParamStore.set``; the render loop calls
``ParamStore.frame(dt)`` once per frame, which returns a snapshot of smoothed values. Setting never
blocks on the render loop and never touches a tensor.
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
from ..tally import Counts, RateLimitedLog

log = logging.getLogger(__name__)

ADDRESS_PREFIX = "/ffvj"

BOUNDS = ("tanh", "sigmoid", "sine", "wrap", "clamp", "magnitude")
COLOR_PERMS = ("rgb", "gbr", "brg", "rbg", "bgr", "grb")
COLOR_BOUNDS = ("luma", "rgb")
INPUT_MODES = ("mix", "key")
MAP_KINDS = ("none", "radial", "linear", "luma", "image")
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
DEFAULT_LEVELS = 3  # the bundled default model's hidden levels (a test holds it against the model's card)


@dataclass(frozen=True)
class Param:
    """One controllable parameter.

    ``kind`` is float, int, bool or enum (an enum's value is its index into ``choices``; OSC and
    presets may also use the choice's name). ``curve`` maps a normalised 0..1 control to the range:
    ``linear``, ``exp`` (equal ratios per step: for zoom-like and time-like values) or ``sym``
    (centred, finer near the default: for signed rates like rotation). ``smoothing`` is a time
    constant in seconds (0: jump). ``spatial`` parameters can be modulated by the modulation map.
    """

    name: str
    default: float
    min: float
    max: float
    doc: str
    unit: str = ""
    kind: str = "float"
    curve: str = "linear"
    smoothing: float = 0.05
    choices: tuple[str, ...] = ()
    spatial: bool = False
    level: int | None = None

    @property
    def address(self) -> str:
        return f"{ADDRESS_PREFIX}/{self.name.replace('.', '/')}"

    def clamp(self, value: float) -> float:
        v = min(max(float(value), self.min), self.max)
        if self.kind in ("int", "enum"):
            return float(round(v))
        if self.kind == "bool":
            return 1.0 if v >= 0.5 else 0.0
        return v

    def from_normalized(self, x: float) -> float:
        """A 0..1 control value (TouchOSC, a MIDI fader) in this parameter's native units."""
        x = min(max(float(x), 0.0), 1.0)
        if self.curve == "exp" and self.min > 0:
            return self.clamp(self.min * (self.max / self.min) ** x)
        if self.curve == "sym":
            centre = (self.min + self.max) / 2
            half = (self.max - self.min) / 2
            s = 2 * x - 1
            return self.clamp(centre + half * s * abs(s))
        return self.clamp(self.min + x * (self.max - self.min))

    def to_normalized(self, value: float) -> float:
        v = self.clamp(value)
        if self.max == self.min:
            return 0.0
        if self.curve == "exp" and self.min > 0:
            return math.log(v / self.min) / math.log(self.max / self.min)
        if self.curve == "sym":
            centre = (self.min + self.max) / 2
            half = (self.max - self.min) / 2
            s = (v - centre) / half
            return (math.copysign(math.sqrt(abs(s)), s) + 1) / 2
        return (v - self.min) / (self.max - self.min)

    def parse(self, value) -> float:
        """A value from a surface or preset: a number, a bool, or an enum's choice name."""
        if self.kind == "enum" and isinstance(value, str):
            if value not in self.choices:
                raise ValueError(f"{self.name}: {value!r} is not one of {', '.join(self.choices)}")
            return float(self.choices.index(value))
        if isinstance(value, str):
            raise ValueError(f"{self.name}: expected a number, got {value!r}")
        return float(value)

    def describe(self) -> dict:
        d = {"name": self.name, "address": self.address, "type": self.kind, "min": self.min, "max": self.max,
             "default": self.default, "unit": self.unit, "curve": self.curve, "smoothing": self.smoothing,
             "level": self.level, "spatial": self.spatial, "doc": self.doc}
        if self.choices:
            d["choices"] = list(self.choices)
        return d


def close_matches(word: str, choices: Iterable[str]) -> str:
    """" (did you mean l0.zoom, l1.zoom?)" for a misspelled name among ``choices``, or ""."""
    near = difflib.get_close_matches(word, list(choices), n=4, cutoff=0.5)
    return f" (did you mean {', '.join(near)}?)" if near else ""


def _p(name, default, lo, hi, doc, **kw) -> Param:
    return Param(name, float(default), float(lo), float(hi), doc, **kw)


# The picture-wide parameters.
GLOBAL_PARAMS: tuple[Param, ...] = (
    _p("input.mix", 0.15, 0, 1, "how much of the source replaces the picture each frame", spatial=True),
    _p("input.mode", 0, 0, len(INPUT_MODES) - 1, "mix: blend everywhere; key: only where the source is brighter "
       "than input.threshold", kind="enum", choices=INPUT_MODES, smoothing=0),
    _p("input.threshold", 0.5, 0, 1, "key mode: source luminance above which it is keyed in"),
    _p("input.softness", 0.1, 0.001, 0.5, "key mode: width of the key's soft edge"),
    _p("bound", 0, 0, len(BOUNDS) - 1, "bounding nonlinearity applied to every level's new state",
       kind="enum", choices=BOUNDS, smoothing=0),
    _p("drive", 1.5, 0.25, 4.0, "gain into the bounding function (higher: harder saturation)", curve="exp"),
    _p("color.hue", 0.0, -30, 30, "hue rotation of the picture per frame", unit="deg/frame", curve="sym"),
    _p("color.saturation", 1.0, 0, 2, "saturation of the picture, applied per frame"),
    _p("color.perm", 0, 0, len(COLOR_PERMS) - 1, "colour channel permutation applied per frame",
       kind="enum", choices=COLOR_PERMS, smoothing=0),
    _p("color.contrast", 1.0, 0.5, 1.5, "contrast about mid-grey, per frame"),
    _p("color.bound", 0, 0, len(COLOR_BOUNDS) - 1, "how the picture is bounded: luma (its brightness, by the bound "
       "and drive; its colour kept as it is, within the gamut: no hue takes over by itself) or rgb (each "
       "channel on its own: drive saturates colour too)", kind="enum", choices=COLOR_BOUNDS, smoothing=0),
    _p("grade.mix", 0, 0, 1, "colour grade of the output (a gradient map: black, then the shadow colour at mid-grey, "
       "then the highlight colour at white) blended over the picture; never fed back, so it cannot burn; 0: off"),
    _p("grade.shadows", 240, 0, 360, "hue of the grade's deep shadow colour", unit="deg"),
    _p("grade.highlights", 45, 0, 360, "hue of the grade's light highlight colour", unit="deg"),
    _p("grade.invert", 0, 0, 1, "grade a negative: bright parts take the shadow colour", kind="bool", smoothing=0),
    _p("map.kind", 0, 0, len(MAP_KINDS) - 1, "modulation map over the picture: none, radial (centre 0, corners "
       "1), linear (along map.angle), luma (the source's luminance), image (--map-image)",
       kind="enum", choices=MAP_KINDS, smoothing=0),
    _p("map.angle", 0, -180, 180, "direction of the linear map", unit="deg"),
    _p("map.invert", 0, 0, 1, "use 1 - map", kind="bool", smoothing=0),
    _p("map.zoom", 0, -1, 1, "how far the map moves every level's zoom (± half its range)", curve="sym"),
    _p("map.rotate", 0, -1, 1, "how far the map moves every level's rotation", curve="sym"),
    _p("map.warp", 0, -1, 1, "how far the map moves every level's warp", curve="sym"),
    _p("map.blur", 0, -1, 1, "how far the map moves every level's blur/sharpen", curve="sym"),
    _p("map.noise", 0, -1, 1, "how far the map moves every level's noise", curve="sym"),
    _p("map.mix", 0, -1, 1, "how far the map moves input.mix", curve="sym"),
    _p("amplify.depth", 1, 1, 4, "layer amplification: how many encoders up the amplified features are (capped "
       "at the top level)", kind="int", smoothing=0),
    _p("amplify.l1", 1.0, 0, 1, "layer amplification: weight of the features' mean magnitude (amplifies every "
       "active feature)"),
    _p("amplify.l2", 0.5, 0, 1, "layer amplification: weight of the features' clipped energy (amplifies the "
       "weaker ones most)"),
    _p("amplify.clip", 0.5, 0.05, 1, "layer amplification: where the clipped energy stops growing, in units of "
       "the features' scale"),
    _p("amplify.tv", 0.4, 0, 1, "layer amplification: total-variation smoothing of the nudge (against "
       "high-frequency noise)"),
    _p("amplify.pull", 0.5, 0, 1, "layer amplification: 6-norm pull toward the un-amplified state (limits the "
       "nudge's outliers)"),
    _p("output.flash_limit", 1, 0, 1, "keep the output within 3 flashes a second (ITU-R BT.1702, WCAG 2.3.1): "
       "a frame that would flash more is softened toward the one before", kind="bool", smoothing=0),
)

# Which quantity each map depth reaches: the map adds depth · M(x, y) · (max − min) / 2.
MAP_DEPTHS = {"zoom": "map.zoom", "rotate": "map.rotate", "warp": "map.warp", "blur": "map.blur",
              "noise": "map.noise", "input.mix": "map.mix"}

# Declared once, instantiated for every level ℓ as "l<ℓ>.<name>".
LEVEL_PARAMS: tuple[Param, ...] = (
    _p("gain_self", 1.0, 0, 2, "weight of the level's own previous state (warped)"),
    _p("gain_up", 0.35, 0, 2, "weight of the encoding of the level below (bottom-up)"),
    _p("gain_down", 0.35, 0, 2, "weight of the decoding of the level above (top-down)"),
    _p("zoom", 1.0, 0.8, 1.25, "zoom per update (>1 zooms in)", unit="x", curve="exp", spatial=True),
    _p("rotate", 0.0, -10, 10, "rotation per update", unit="deg", curve="sym", spatial=True),
    _p("translate_x", 0.0, -0.05, 0.05, "horizontal drift per update", unit="frame widths", curve="sym"),
    _p("translate_y", 0.0, -0.05, 0.05, "vertical drift per update", unit="frame heights", curve="sym"),
    _p("warp", 0.0, 0, 0.05, "displacement along the picture's hue, scaled by its saturation", unit="frame",
       spatial=True),
    _p("blur", 0.0, -1, 1, "spatial blur (>0) or sharpen (<0) per update", spatial=True),
    _p("noise", 0.0, 0, 0.3, "Gaussian noise added per update", spatial=True),
    _p("temporal", 0.0, 0, 0.98, "temporal blur: mix of the previous state kept"),
    _p("period", 1, 1, 16, "update this level every N frames", kind="int", smoothing=0),
    _p("freeze", 0, 0, 1, "hold this level's state", kind="bool", smoothing=0),
    _p("amplify", 0.0, 0, 0.1, "layer amplification: step per update toward what excites the features above "
       "this level (DeepDream in the loop; 0: off)"),
    _p("drive", 1.0, 0.25, 4.0, "this level's own gain into its bound, times drive: above 1 its features "
       "saturate into sharp, posterised structure that the decoders hand down; below 1 they fade", curve="exp"),
    _p("turn", 0.0, -45, 45, "turns the level's feature vectors within their own space each update (a fixed "
       "rotation, the same in every show), so the decoder renders other learned features: texture of the "
       "model's own", unit="deg", curve="sym"),
)

# Level defaults that differ from the declaration above, by level: the embedded look.
# Level ℓ updates every 2^ℓ frames, as in the original experiment: deeper levels change slowly
# anyway, and it halves the arithmetic at every step up. The look (issue 22, chosen with ffvj look's
# hierarchy measure and by eye; docs/LOOKS.md): the picture and level 1 hear the level above strongly
# (gain_down 0.9), level 2 is amplified (DeepDream in the loop), driven into its bound and turned in
# feature space, so it renders the model's own features, and level 3 rotates against the picture; with
# the hierarchy cut it is plain zoom-and-rotate feedback.
LEVEL_DEFAULTS: dict[int, dict[str, float]] = {
    0: {"zoom": 1.012, "rotate": 0.4, "warp": 0.004, "gain_self": 0.7, "gain_down": 0.9},
    1: {"period": 2, "gain_down": 0.9},
    2: {"period": 4, "amplify": 0.1, "drive": 1.3, "turn": 10},
    3: {"period": 8, "rotate": 3},
}


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


def map_spans() -> dict[str, float]:
    """Half the range of every quantity the modulation map reaches."""
    every = {p.name: p for p in GLOBAL_PARAMS + LEVEL_PARAMS}
    return {q: (every[q].max - every[q].min) / 2 for q in MAP_DEPTHS}


def level_param_name(level: int, name: str) -> str:
    return f"l{level}.{name}"


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
    reg = {p.name: p for p in GLOBAL_PARAMS}
    for lvl in range(levels + 1):
        for p in LEVEL_PARAMS:
            if lvl == 0 and p.name == "gain_up":
                continue  # level 0 has no level below: the source is injected instead
            if lvl == levels and p.name in ("gain_down", "amplify"):
                continue  # the top level has no level above (nothing to decode, no features to amplify)
            if lvl == 0 and p.name == "turn":
                continue  # the picture's three channels are colour: color.hue turns them
            name = level_param_name(lvl, p.name)
            reg[name] = replace(p, name=name, default=LEVEL_DEFAULTS.get(lvl, {}).get(p.name, p.default), level=lvl)
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

    def frame(self, dt: float) -> dict[str, float]:
        """Advance smoothing by ``dt`` seconds and return this frame's values (one snapshot)."""
        targets = self.targets()
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
