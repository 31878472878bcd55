"""The built-in generator source: animated patterns, no device, cheap and deterministic.

``generator[:PATTERN]``: plasma (default), bars, rings, noise, gradient, shapes; options seed=0,
speed=1.0. Frame n shows time n / fps (times ``speed``), so offline renders are reproducible.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import cv2
import numpy as np

from .base import Size, Source

# Each pattern maps (coordinate grid, time in seconds, per-seed parameters) to a picture.
# Smooth patterns are computed at 1/4 resolution and enlarged with cv2.resize: they have no
# detail to lose and the feedback loop blurs anyway. Measured per 640x360 frame (mean of 200
# reads, process pinned to one core with taskset while a training job loaded the 2-core machine):
# plasma 1.5-2.2 ms, bars 1.4-1.6 ms, rings 1.4-2.0 ms, noise 0.6-0.9 ms, gradient 0.6 ms,
# shapes 0.9-1.1 ms; budget 3 ms (tests/test_sources.py keeps a 10x looser bound).

_TAU = 2 * math.pi


class _Grid:
    """Coordinates on a reduced-resolution grid: y in [-1, 1], x in [-aspect, aspect]."""

    def __init__(self, width: int, height: int, factor: int) -> None:
        self.full = (width, height)
        self.w = max(2, -(-width // factor))
        self.h = max(2, -(-height // factor))
        aspect = width / height
        self.x = np.linspace(-aspect, aspect, self.w, dtype=np.float32)[None, :]
        self.y = np.linspace(-1.0, 1.0, self.h, dtype=np.float32)[:, None]
        self.r = np.sqrt(self.x * self.x + self.y * self.y)


def _palette(v: np.ndarray, phases: np.ndarray) -> np.ndarray:
    """Cosine palette: a scalar field → RGB in [0, 1], colours cycling as v grows by 1."""
    return 0.5 + 0.5 * np.cos(_TAU * (v[..., None] + phases))


def _to_frame(rgb01: np.ndarray, size: Size) -> np.ndarray:
    small = (np.clip(rgb01, 0.0, 1.0) * 255.0).astype(np.uint8)
    if small.shape[1::-1] == size:
        return small
    return cv2.resize(small, size, interpolation=cv2.INTER_LINEAR)


class _Params:
    """Random but fixed per seed: phases, speeds and colours, so seeds give different shows."""

    def __init__(self, seed: int) -> None:
        rng = np.random.default_rng(seed)
        self.seed = seed
        self.phases = (np.array([0.0, 0.33, 0.67]) + rng.uniform(0, 1)).astype(np.float32)
        self.freq = rng.uniform(0.7, 1.4, size=8)
        self.offset = rng.uniform(0, _TAU, size=8)
        self.turn = rng.choice([-1.0, 1.0])


def _plasma(g: _Grid, t: float, p: _Params) -> np.ndarray:
    f, o = p.freq, p.offset
    cx, cy = 0.6 * math.sin(0.31 * t + o[0]), 0.5 * math.cos(0.23 * t + o[1])
    r = np.sqrt((g.x - cx) ** 2 + (g.y - cy) ** 2)
    v = (np.sin(g.x * 3.1 * f[0] + 1.3 * t + o[2]) + np.sin(g.y * 4.3 * f[1] - 0.9 * t + o[3])
         + np.sin((g.x + g.y) * 2.7 * f[2] + 0.7 * t + o[4]) + np.sin(r * 7.0 * f[3] - 2.0 * t))
    return _palette(v * 0.25 + 0.05 * t, p.phases)


def _bars(g: _Grid, t: float, p: _Params) -> np.ndarray:
    # Diagonal bands that scroll and slowly turn, each band its own saturated colour,
    # with a soft dark edge so the feedback loop has hard-ish structure to chew on.
    angle = p.offset[0] + p.turn * 0.15 * t
    v = (g.x * math.cos(angle) + g.y * math.sin(angle)) * 4.0 * p.freq[0] - 0.6 * t
    band = np.floor(v)
    edge = np.abs(v - band - 0.5) * 2.0  # 0 in the middle of a band, 1 at its edges
    shade = 1.0 - edge ** 6
    return _palette(band * 0.17 + 0.03 * t, p.phases) * shade[..., None]


def _rings(g: _Grid, t: float, p: _Params) -> np.ndarray:
    cx = 0.7 * math.sin(0.4 * t * p.freq[0] + p.offset[0])
    cy = 0.5 * math.sin(0.5 * t * p.freq[1] + p.offset[1])
    r = np.sqrt((g.x - cx) ** 2 + (g.y - cy) ** 2)
    v = r * 5.0 * p.freq[2] - 1.2 * t
    shade = 0.55 + 0.45 * np.cos(_TAU * v)
    twist = 0.1 * np.sin(2.0 * g.x - 1.5 * g.y + 0.5 * t)  # a slow wash of colour breaks the symmetry
    return _palette(0.25 * v + twist, p.phases) * shade[..., None]


def _gradient(g: _Grid, t: float, p: _Params) -> np.ndarray:
    angle = p.offset[0] + p.turn * 0.2 * t
    v = (g.x * math.cos(angle) + g.y * math.sin(angle)) * 0.35 + 0.08 * t
    return _palette(v + 0.15 * np.sin(g.r * 2.0 - 0.5 * t), p.phases)


class _Noise:
    """Colourful value noise drifting through time: random lattices, smoothly interpolated.

    Lattice k of an octave is drawn from ``default_rng((seed, octave, k))``, so any frame can be
    computed from its index alone; the two lattices in use are cached.
    """

    octaves = ((6, 0.6, 0.5), (12, 0.3, 1.0), (24, 0.15, 2.0))  # (lattice rows, weight, changes per s)

    def __init__(self) -> None:
        self._cache: dict[tuple[int, int, int], np.ndarray] = {}

    def _lattice(self, seed: int, octave: int, k: int, rows: int, cols: int) -> np.ndarray:
        key = (seed, octave, k)
        lat = self._cache.get(key)
        if lat is None:
            if len(self._cache) > 12:
                self._cache.clear()
            lat = np.random.default_rng((seed, octave, k)).random((rows, cols, 3), dtype=np.float32)
            self._cache[key] = lat
        return lat

    def __call__(self, g: _Grid, t: float, p: _Params) -> np.ndarray:
        out = np.zeros((g.h, g.w, 3), np.float32)
        aspect = g.full[0] / g.full[1]
        for i, (rows, weight, rate) in enumerate(self.octaves):
            cols = max(2, round(rows * aspect))
            s = t * rate * p.freq[i]
            k = math.floor(s)
            u = s - k
            u = u * u * (3.0 - 2.0 * u)  # smoothstep: no kinks in brightness at lattice changes
            a = self._lattice(p.seed, i, k, rows, cols)
            b = self._lattice(p.seed, i, k + 1, rows, cols)
            out += weight * cv2.resize((1.0 - u) * a + u * b, (g.w, g.h), interpolation=cv2.INTER_CUBIC)
        # Stretch contrast around mid-grey: averaged noise clusters near 0.5 and looks dull.
        return (out / 1.05 - 0.5) * 2.2 + 0.5


def _shapes_frame(grid: _Grid, t: float, p: _Params) -> np.ndarray:
    """Bouncing discs and spinning squares over a dim gradient; shapes drawn at full resolution."""
    size = width, height = grid.full
    rng = np.random.default_rng(p.seed)  # the same shapes every frame; only time moves them
    frame = _to_frame(0.25 * _gradient(grid, t, p), size)
    unit = min(width, height)
    for i in range(7):
        speed = rng.uniform(0.05, 0.2, size=2)
        start = rng.uniform(0, 2, size=2)
        # Triangle wave in [0, 1]: position bouncing between the walls, a pure function of t.
        pos = np.abs((start + speed * t) % 2.0 - 1.0)
        radius = rng.uniform(0.06, 0.18) * unit
        cx = int(radius + pos[0] * (width - 2 * radius))
        cy = int(radius + pos[1] * (height - 2 * radius))
        color = (255 * _palette(np.array(0.13 * i + 0.04 * t, np.float32), p.phases)).astype(int).tolist()
        if i % 2 == 0:
            cv2.circle(frame, (cx, cy), int(radius), color, -1, cv2.LINE_AA)
        else:
            box = cv2.boxPoints(((cx, cy), (1.6 * radius, 1.6 * radius), (40.0 * t * p.turn + 30 * i) % 360))
            cv2.fillConvexPoly(frame, box.astype(np.int32), color, cv2.LINE_AA)
    return frame


_SMOOTH_PATTERNS: dict[str, Callable[[_Grid, float, _Params], np.ndarray]] = {
    "plasma": _plasma,
    "bars": _bars,
    "rings": _rings,
    "gradient": _gradient,
}
PATTERNS = ("plasma", "bars", "rings", "noise", "gradient", "shapes")


class GeneratorSource(Source):
    """Animated test patterns: no device, cheap, deterministic.

    Frame n shows time n / fps (times ``speed``), whatever the wall clock says, so offline
    renders are reproducible; ``seed`` changes colours, speeds and layouts.
    """

    kind = "generator"

    def __init__(self, arg: str | None = None, *, size: Size = (640, 360), fps: float = 30.0,
                 seed: int = 0, speed: float = 1.0) -> None:
        super().__init__(arg, size=size, fps=fps)
        self.pattern = arg or "plasma"
        if self.pattern not in PATTERNS:
            raise ValueError(f"unknown generator pattern {self.pattern!r}; choose from {', '.join(PATTERNS)}")
        self.seed = int(seed)
        self.speed = float(speed)
        self.index = 0  # the next frame's number
        self._params = _Params(self.seed)
        self._grid = _Grid(self.width, self.height, 4)
        self._noise = _Noise()

    def frame_at(self, index: int) -> np.ndarray:
        """The frame with number ``index`` (pure function of index, seed and size)."""
        t = index / self.fps * self.speed
        if self.pattern == "shapes":
            return _shapes_frame(self._grid, t, self._params)
        fn = self._noise if self.pattern == "noise" else _SMOOTH_PATTERNS[self.pattern]
        return _to_frame(fn(self._grid, t, self._params), self.size)

    def _read(self) -> np.ndarray:
        frame = self.frame_at(self.index)
        self.index += 1
        return frame


