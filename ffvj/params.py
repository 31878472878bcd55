"""The one registry of controllable parameters (φ), and the thread-safe store the render loop reads.

Every parameter is declared once, here, in ``GLOBAL_PARAMS`` or ``LEVEL_PARAMS`` (the latter repeated
for every level of the model as ``l<N>.<name>``). OSC addresses, MIDI mappings, presets, the CLI,
TouchOSC layouts and ``ffvj params`` all read this table; nothing else declares a parameter.

Threads: control threads (OSC, MIDI, clock) call ``ParamStore.set``; the render loop calls
``ParamStore.frame(dt)`` once per frame, which returns a snapshot of smoothed values. Setting never
blocks on the render loop and never touches a tensor.
"""

from __future__ import annotations

import collections
import logging
import math
import threading
import time
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

ADDRESS_PREFIX = "/ffvj"

BOUNDS = ("tanh", "sigmoid", "sine", "wrap", "clamp", "magnitude")
COLOR_PERMS = ("rgb", "gbr", "brg", "rbg", "bgr", "grb")
INPUT_MODES = ("mix", "key")
MAP_KINDS = ("none", "radial", "linear", "luma", "image")


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


def _p(name, default, lo, hi, doc, **kw) -> Param:
    return Param(name, float(default), float(lo), float(hi), doc, **kw)


# The picture-wide parameters.
GLOBAL_PARAMS: tuple[Param, ...] = (
    _p("input.mix", 0.12, 0, 1, "how much of the source replaces the picture each frame", spatial=True),
    _p("input.mode", 0, 0, len(INPUT_MODES) - 1, "mix: blend everywhere; key: only where the source is brighter "
       "than input.threshold", kind="enum", choices=INPUT_MODES, smoothing=0),
    _p("input.threshold", 0.5, 0, 1, "key mode: source luminance above which it is keyed in"),
    _p("input.softness", 0.1, 0.001, 0.5, "key mode: width of the key's soft edge"),
    _p("bound", 0, 0, len(BOUNDS) - 1, "bounding nonlinearity applied to every level's new state",
       kind="enum", choices=BOUNDS, smoothing=0),
    _p("drive", 1.25, 0.25, 4.0, "gain into the bounding function (higher: harder saturation)", curve="exp"),
    _p("color.hue", 0.0, -30, 30, "hue rotation of the picture per frame", unit="deg/frame", curve="sym"),
    _p("color.saturation", 1.0, 0, 2, "saturation of the picture, applied per frame"),
    _p("color.perm", 0, 0, len(COLOR_PERMS) - 1, "colour channel permutation applied per frame",
       kind="enum", choices=COLOR_PERMS, smoothing=0),
    _p("color.contrast", 1.0, 0.5, 1.5, "contrast about mid-grey, per frame"),
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
)

# Level defaults that differ from the declaration above, by level: the embedded look.
# Level ℓ updates every 2^ℓ frames, as in the original experiment: deeper levels change slowly
# anyway, and it halves the arithmetic at every step up.
LEVEL_DEFAULTS: dict[int, dict[str, float]] = {
    0: {"zoom": 1.012, "rotate": 0.4, "warp": 0.004, "gain_self": 0.9},
    1: {"period": 2},
    2: {"period": 4},
    3: {"period": 8},
}


def map_spans() -> dict[str, float]:
    """Half the range of every quantity the modulation map reaches."""
    every = {p.name: p for p in GLOBAL_PARAMS + LEVEL_PARAMS}
    return {q: (every[q].max - every[q].min) / 2 for q in MAP_DEPTHS}


def level_param_name(level: int, name: str) -> str:
    return f"l{level}.{name}"


def build_registry(levels: int) -> dict[str, Param]:
    """Every parameter for a model with ``levels`` hidden levels (so levels + 1 states), by name."""
    reg = {p.name: p for p in GLOBAL_PARAMS}
    for lvl in range(levels + 1):
        for p in LEVEL_PARAMS:
            name = level_param_name(lvl, p.name)
            default = LEVEL_DEFAULTS.get(lvl, {}).get(p.name, p.default)
            if lvl == 0 and p.name == "gain_up":
                continue  # level 0 has no level below: the source is injected instead
            if lvl == levels and p.name == "gain_down":
                continue  # the top level has no level above
            reg[name] = Param(name, default, p.min, p.max, p.doc, unit=p.unit, kind=p.kind, curve=p.curve,
                              smoothing=p.smoothing, choices=p.choices, spatial=p.spatial, level=lvl)
    from .modulation import lfo_params  # late: modulation builds its Params from this module

    reg.update({p.name: p for p in lfo_params(reg)})
    return reg


class RateLimitedLog:
    """Log a recurring problem at most once per ``interval`` seconds, with how often it happened."""

    def __init__(self, logger: logging.Logger, interval: float = 2.0):
        self.logger, self.interval = logger, interval
        self._last: dict[str, float] = {}
        self._count: dict[str, int] = {}
        self._lock = threading.Lock()

    def warning(self, key: str, msg: str, *args) -> None:
        now = time.monotonic()
        with self._lock:
            self._count[key] = self._count.get(key, 0) + 1
            if now - self._last.get(key, -math.inf) < self.interval:
                return
            self._last[key] = now
            count, self._count[key] = self._count[key], 0
        self.logger.warning(msg + (f" ({count}× since last report)" if count > 1 else ""), *args)


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
    rejected: int = field(init=False, default=0)
    clamped: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        self._targets = {n: p.default for n, p in self.registry.items()}
        self._current = dict(self._targets)
        self._warn = RateLimitedLog(log)

    def set(self, name: str, value, normalized: bool = False, source: str = "") -> bool:
        """Set a target (native units, or 0..1 when ``normalized``). Thread-safe; never blocks long."""
        param = self.registry.get(name)
        if param is None:
            self.rejected += 1
            self._warn.warning(f"unknown:{name}", "unknown parameter %r from %s", name, source or "?")
            return False
        try:
            raw = param.from_normalized(param.parse(value)) if normalized else param.parse(value)
        except (TypeError, ValueError) as exc:
            self.rejected += 1
            self._warn.warning(f"bad:{name}", "ignored bad value for %s from %s: %s", name, source or "?", exc)
            return False
        if not math.isfinite(raw):
            self.rejected += 1
            self._warn.warning(f"nan:{name}", "ignored non-finite value for %s from %s", name, source or "?")
            return False
        value = param.clamp(raw)
        if value != raw and param.kind == "float":
            self.clamped += 1
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


class ActionQueue:
    """Discrete triggers from control threads (snapshot store/recall, preset recall, panic) for the
    render loop, which drains them once per frame. Bounded: a flood of triggers drops the oldest,
    counted, rather than growing without limit."""

    def __init__(self, maxlen: int = 64):
        self._items: collections.deque = collections.deque(maxlen=maxlen)
        self._lock = threading.Lock()
        self.dropped = 0

    def post(self, name: str, /, **args) -> None:
        with self._lock:
            if len(self._items) == self._items.maxlen:
                self.dropped += 1
            self._items.append((name, args))

    def drain(self) -> list[tuple[str, dict]]:
        with self._lock:
            items = list(self._items)
            self._items.clear()
        return items
