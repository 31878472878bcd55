"""Frame sources: where the pictures that seed and steer the feedback loop come from.

Contract
--------
A :class:`Source` is made from a spec string ``NAME[:ARG]`` and hands out RGB frames::

    with open_source("camera:0", size=(640, 360), fps=30) as src:
        frame = src.read()      # np.uint8, shape (360, 640, 3), RGB, C-contiguous

- ``open()`` starts it; ``open_source`` returns an opened source, and ``with`` opens too.
  Problems at start-up raise right here, with one line that names the problem and the fix:
  ValueError (bad spec or option), FileNotFoundError (missing file), :class:`SourceError`
  (a file that cannot be decoded, a camera that cannot be opened).
- ``read()`` returns the newest frame at exactly the requested ``size`` and never blocks on a
  device. It returns None only when nothing was ever available. The caller owns the array.
- ``close()`` is idempotent. The public methods take a lock and do the state checks once;
  backends implement only ``_open``, ``_read`` and ``_close`` (template methods).
- ``live`` (class attribute) is True for sources that follow the wall clock (camera).

Frames are fitted to ``size`` by **centre-crop-to-fill**: scale so the picture covers the
whole frame, keep its aspect ratio, and cut the overhang equally from both sides (no black
bars, no stretching). INTER_AREA is used when shrinking, INTER_LINEAR when enlarging.

Backends (``SOURCES``; more through :func:`register_source` or the entry-point group
``ffvj.sources``)::

    generator[:PATTERN]  built-in animation: plasma (default), bars, rings, noise, gradient, shapes;
                         options seed=0, speed=1.0; time advances 1/fps per read()
    video:PATH           a file through OpenCV, one frame per read() (deterministic), loops
    image:PATH           a still picture
    camera[:INDEX]       a camera through OpenCV on a capture thread; options width, height, camera_fps,
                         mjpg, api; never stops the show when the camera fails mid-way

:func:`devices` lists the camera indices that open, for ``ffvj devices``.
"""

from __future__ import annotations

import abc
import glob
import importlib.metadata
import logging
import math
import os
import re
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from .params import RateLimitedLog

from .mailbox import Mailbox

log = logging.getLogger(__name__)

Size = tuple[int, int]  # (width, height), the order cv2.resize and every video tool use


class SourceError(RuntimeError):
    """A source that cannot start. The message is one line: what failed and what to do."""


# --- registries (sinks use the same class) ------------------------------------------------------

class BackendRegistry:
    """A name → class table for one kind of backend, plus plugins from an entry-point group.

    Plugins are looked up lazily: the entry points are listed on the first lookup, and one is
    imported only when its name is asked for, so a broken plugin cannot break other backends.
    Whatever goes wrong with a plugin is reported under the plugin's name.
    """

    def __init__(self, kind: str, base: type, group: str) -> None:
        self.kind = kind  # "source" or "sink", for messages
        self.base = base
        self.group = group
        self.classes: dict[str, type] = {}
        self._plugins: dict[str, importlib.metadata.EntryPoint] | None = None

    def register(self, name: str, cls: type, *, origin: str | None = None) -> None:
        where = f" ({origin})" if origin else ""
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_.+-]+", name):
            raise ValueError(f"invalid {self.kind} name {name!r}{where}: use letters, digits, '_', '-', '.' "
                             "(no ':', which separates the name from its argument)")
        if not (isinstance(cls, type) and issubclass(cls, self.base)):
            raise TypeError(f"cannot register {self.kind} {name!r}{where}: {cls!r} is not a subclass of "
                            f"{self.base.__module__}.{self.base.__qualname__}")
        self.classes[name] = cls

    def plugins(self) -> dict[str, importlib.metadata.EntryPoint]:
        if self._plugins is None:
            self._plugins = {ep.name: ep for ep in importlib.metadata.entry_points(group=self.group)}
        return self._plugins

    def names(self) -> list[str]:
        return sorted(set(self.classes) | set(self.plugins()))

    def lookup(self, name: str) -> type:
        cls = self.classes.get(name)
        if cls is not None:
            return cls
        ep = self.plugins().get(name)
        if ep is None:
            raise ValueError(f"unknown {self.kind} {name!r}; available: {', '.join(self.names())}")
        dist = getattr(ep, "dist", None)
        origin = f"plugin {ep.value!r} from entry-point group {self.group!r}" + (
            f" of package {dist.name!r}" if dist is not None else "")
        try:
            obj = ep.load()
        except Exception as exc:  # any import-time failure of third-party code: re-raise naming the plugin
            raise RuntimeError(f"{self.kind} {name!r}: {origin} failed to load: "
                               f"{type(exc).__name__}: {exc}") from exc
        self.register(name, obj, origin=origin)
        return obj


def split_spec(spec: str) -> tuple[str, str | None]:
    """``"video:clip.mp4"`` → ``("video", "clip.mp4")``; ``"generator"`` → ``("generator", None)``."""
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"empty backend spec {spec!r}; expected NAME or NAME:ARG")
    name, _, arg = spec.strip().partition(":")
    return name, (arg or None)


# --- frame fitting -------------------------------------------------------------------------------

def check_size(size: Any) -> Size:
    """Validate a (width, height) pair of positive ints."""
    try:
        width, height = (int(v) for v in size)
    except (TypeError, ValueError):
        raise ValueError(f"size must be (width, height), got {size!r}") from None
    if width < 1 or height < 1:
        raise ValueError(f"size must be positive, got {width}x{height}")
    return width, height


def fit_frame(image: np.ndarray, size: Size, *, bgr: bool = True) -> np.ndarray:
    """Return ``image`` as an RGB uint8 (H, W, 3) C-contiguous array of exactly ``size``.

    Centre-crop-to-fill: the picture is scaled to cover the frame with its aspect ratio kept,
    and the overhang is cut equally on both sides. Cropping first means we resize only the
    pixels we keep. OpenCV decodes BGR, so ``bgr=True`` (the default) swaps to RGB.
    """
    width, height = size
    if image.ndim == 2:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR if bgr else cv2.COLOR_GRAY2RGB)
    elif image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2BGR if bgr else cv2.COLOR_RGBA2RGB)
    if image.dtype != np.uint8:
        raise ValueError(f"expected 8-bit frames, got {image.dtype}")
    ih, iw = image.shape[:2]
    # Crop the source to the target aspect ratio (keep the middle).
    if iw * height > width * ih:  # source wider than target
        cw = max(1, round(ih * width / height))
        x0 = (iw - cw) // 2
        image = image[:, x0:x0 + cw]
    elif iw * height < width * ih:  # source taller than target
        ch = max(1, round(iw * height / width))
        y0 = (ih - ch) // 2
        image = image[y0:y0 + ch]
    ih, iw = image.shape[:2]
    if (iw, ih) != (width, height):
        shrinking = iw * ih > width * height
        image = cv2.resize(image, (width, height),
                           interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)
    if bgr:
        return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)  # a new, contiguous array
    return np.ascontiguousarray(image)  # may be `image` itself when nothing had to change


# --- the contract ----------------------------------------------------------------------------------

class Endpoint:
    """What sources and sinks share: a spec, a size and a rate, a new → open → closed lifecycle
    under one re-entrant lock, and a context manager. Subclasses override ``_open`` and ``_close``.

    ``__init__(arg, *, size, fps, **options)``: ``arg`` is the part of the spec after the colon
    (None if absent). Constructing does no I/O; ``open()`` does.
    """

    kind = "endpoint"  # the registry name, for messages; built-ins override it
    role = "endpoint"  # "source" or "sink", for messages

    def __init__(self, arg: str | None = None, *, size: Size = (640, 360), fps: float = 30.0) -> None:
        self.arg = arg
        self.size = check_size(size)
        if not (isinstance(fps, (int, float)) and math.isfinite(fps) and fps > 0):
            raise ValueError(f"fps must be a positive number, got {fps!r}")
        self.fps = float(fps)
        self._state = "new"  # new → open → closed; never back
        # Re-entrant so that close() from a signal handler on the working thread cannot deadlock.
        self._lock = threading.RLock()

    @property
    def width(self) -> int:
        return self.size[0]

    @property
    def height(self) -> int:
        return self.size[1]

    @property
    def spec(self) -> str:
        return self.kind if self.arg is None else f"{self.kind}:{self.arg}"

    @property
    def closed(self) -> bool:
        return self._state == "closed"

    def open(self):
        """Start (idempotent); raises at once if it cannot start."""
        with self._lock:
            if self._state == "closed":
                raise RuntimeError(f"{self.role} {self.spec!r} is closed; open a new one")
            if self._state == "new":
                self._open()
                self._state = "open"
        return self

    def _require_open(self) -> None:
        if self._state != "open":
            raise RuntimeError(f"{self.role} {self.spec!r} is "
                               f"{'closed' if self.closed else 'not open; call open()'}")

    def close(self) -> None:
        """Stop and release everything. Safe to call more than once, and before ``open``."""
        with self._lock:
            if self._state == "closed":
                return
            was_open = self._state == "open"
            self._state = "closed"
            if was_open:
                self._close()

    def __enter__(self):
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.spec!r} {self.width}x{self.height} {self._state}>"

    # Backends implement these; the base has already done the locking and state checks.
    def _open(self) -> None:
        pass

    def _close(self) -> None:
        pass


class Source(Endpoint, abc.ABC):
    """Base class for frame sources. Subclasses implement ``_read`` and may override ``_open`` and
    ``_close``; a plugin without ``_read`` fails when it is made, naming the method."""

    kind = "source"
    role = "source"
    #: True if frames follow the wall clock (a camera), so the show must run in real time;
    #: False if any rate will do (files, generators), which allows offline rendering.
    live = False

    def __init__(self, arg: str | None = None, *, size: Size = (640, 360), fps: float = 30.0) -> None:
        super().__init__(arg, size=size, fps=fps)
        self.frames_read = 0

    def read(self) -> np.ndarray | None:
        """The newest frame, RGB uint8 (H, W, 3); None only if nothing was ever available."""
        with self._lock:
            self._require_open()
            frame = self._read()
            if frame is None:
                return None
            if frame.shape != (self.height, self.width, 3) or frame.dtype != np.uint8:
                raise ValueError(f"source {self.spec!r} returned {frame.dtype} {frame.shape}; the contract is "
                                 f"uint8 {(self.height, self.width, 3)} (a bug in the backend)")
            self.frames_read += 1
            return frame

    def follow_wall_clock(self) -> None:
        """A live show calls this: sources with a rate of their own (video files) keep real time from
        now on instead of giving one frame per read. Others have nothing to do."""

    @abc.abstractmethod
    def _read(self) -> np.ndarray | None:
        """The newest frame at ``size``, RGB uint8 (H, W, 3), or None if none was ever available."""


# --- generator ---------------------------------------------------------------------------------------

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


# --- still image and video file ------------------------------------------------------------------

def _existing_file(arg: str | None, kind: str) -> Path:
    if not arg:
        raise ValueError(f"the {kind} source needs a file: {kind}:PATH")
    path = Path(arg).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"{kind} file not found: {path}")
    if not path.is_file():
        raise ValueError(f"{kind} source needs a file, but {path} is a directory")
    return path


class ImageSource(Source):
    """A still picture, fitted once at open; every read returns a fresh copy of it."""

    kind = "image"

    def _open(self) -> None:
        path = _existing_file(self.arg, "image")
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:  # cv2.imread reports failure by returning None, not by raising
            raise SourceError(f"cannot read image {path}: not a picture format OpenCV can decode "
                              "(png, jpg, bmp, tiff, webp, ...)")
        self.path = path
        self._frame = fit_frame(image, self.size)

    def _read(self) -> np.ndarray:
        return self._frame.copy()


class VideoSource(Source):
    """A video file read synchronously: one decoded frame per ``read()``, whatever its own rate.

    That makes offline renders deterministic (frame n of the output always sees frame n of the
    file). In a live show (``follow_wall_clock``) it keeps the file's own rate instead: a read that
    comes late skips the frames whose time has passed (``grab`` only, no colour conversion), and one
    that comes early repeats the last frame. At the end it starts again (``loop=True``) or holds the
    last frame (``loop=False``).
    """

    kind = "video"

    def __init__(self, arg: str | None = None, *, size: Size = (640, 360), fps: float = 30.0,
                 loop: bool = True) -> None:
        super().__init__(arg, size=size, fps=fps)
        self.loop = bool(loop)
        self.loops = 0  # times we went back to the start
        self.skipped = 0  # frames passed over to keep real time
        self._cap: Any = None
        self._pending: np.ndarray | None = None  # the frame decoded at open, served by the first read
        self._last: np.ndarray | None = None
        self._follow = False  # set by follow_wall_clock
        self._clock_start: float | None = None  # when frame 0 was shown, in a live show
        self._file_fps = fps
        self._position = 0  # frames taken from the file since the clock started
        self._warn = RateLimitedLog(log, interval=5.0)

    def follow_wall_clock(self) -> None:
        with self._lock:
            self._follow = True  # the clock starts at the first read: start-up time is not video time

    def _capture(self) -> Any:
        cap = cv2.VideoCapture(str(self.path))
        if not cap.isOpened():
            cap.release()
            raise SourceError(f"cannot decode video {self.path}: OpenCV could not open it "
                              f"(check it with: ffprobe '{self.path}')")
        return cap

    def _open(self) -> None:
        self.path = _existing_file(self.arg, "video")
        self._cap = self._capture()
        rate = self._cap.get(cv2.CAP_PROP_FPS)
        self._file_fps = rate if rate and 1 <= rate <= 1000 else self.fps  # containers may not say
        ok, frame = self._cap.read()
        if not ok or frame is None:
            self._cap.release()
            raise SourceError(f"cannot decode video {self.path}: it opened but no frame could be read "
                              f"(check it with: ffprobe '{self.path}')")
        self._pending = self._last = fit_frame(frame, self.size)

    def _next(self, decode: bool = True) -> np.ndarray | None:
        """The file's next frame (BGR; None after ``grab`` only, or when nothing could be read),
        starting again at the end when looping."""
        if decode:
            ok, frame = self._cap.read()
        else:
            ok, frame = self._cap.grab(), None
        if ok:
            return frame
        if not self.loop:
            return None
        # Re-open rather than seek: cap.set(CAP_PROP_POS_FRAMES, 0) may return False on file
        # captures (or seek to a keyframe near 0), while re-opening a file always lands on frame 0.
        self._cap.release()
        self.loops += 1
        try:
            self._cap = self._capture()
        except SourceError as exc:  # the file vanished mid-show: hold the last frame, keep going
            self._cap = cv2.VideoCapture()
            self._warn.warning("vanished", "%s; holding the last frame", exc)
            return None
        if decode:
            ok, frame = self._cap.read()
            return frame if ok else None
        self._cap.grab()
        return None

    def _read(self) -> np.ndarray:
        if self._follow and self._clock_start is None:
            self._clock_start, self._position = time.monotonic(), 0
        if self._pending is not None:
            frame, self._pending = self._pending, None
            self._position += 1
            return frame
        if self._clock_start is not None:
            due = int((time.monotonic() - self._clock_start) * self._file_fps) + 1  # frames by now
            if due <= self._position:
                return self._last.copy()  # early: this frame's time is not over yet
            # grab() still decodes: skip at most a few frames per read, and let the clock slip past
            # a longer stall, so a file that decodes slower than its own rate cannot snowball.
            most = max(2, round(2 * self._file_fps / self.fps))
            skip = due - self._position - 1
            if skip > most:
                self._clock_start += (skip - most) / self._file_fps
                skip = most
            for _ in range(skip):
                self._next(decode=False)
                self.skipped += 1
            self._position += skip + 1
        frame = self._next()
        if frame is None:
            return self._last.copy()
        self._last = fit_frame(frame, self.size)
        return self._last.copy()

    def _close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None


# --- camera ------------------------------------------------------------------------------------------

_CAPTURE_APIS = {
    "any": cv2.CAP_ANY,
    "v4l2": cv2.CAP_V4L2,
    "dshow": cv2.CAP_DSHOW,
    "msmf": cv2.CAP_MSMF,
    "avfoundation": cv2.CAP_AVFOUNDATION,
    "gstreamer": cv2.CAP_GSTREAMER,
}


def _default_api() -> str:
    # On Linux ask V4L2 directly: CAP_ANY would first try GStreamer, which is slower to open and
    # prints its own warnings. Elsewhere OpenCV's default order is the sensible one.
    return "v4l2" if sys.platform.startswith("linux") else "any"


def video_device_nodes() -> list[str]:
    """``/dev/video*`` on Linux, in numeric order (empty elsewhere)."""
    if not sys.platform.startswith("linux"):
        return []
    nodes = [n for n in glob.glob("/dev/video*") if re.fullmatch(r"/dev/video\d+", n)]
    return sorted(nodes, key=lambda n: int(n[len("/dev/video"):]))


def _parse_device(arg: str | None) -> int | str:
    if arg is None or arg == "":
        return 0
    if arg.isdigit():
        return int(arg)
    return arg  # a device path (/dev/video2) or anything else cv2.VideoCapture accepts


def _default_capture_factory(device: int | str, api: str = "any") -> Any:
    # OpenCV prints a WARN line for every camera it cannot open, and the capture thread retries
    # a lost camera for as long as the show runs: our own (rate-limited) messages say it better.
    level = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
    try:
        return cv2.VideoCapture(device, _CAPTURE_APIS[api])
    finally:
        cv2.utils.logging.setLogLevel(level)


class CameraSource(Source):
    """A camera through OpenCV, read on its own thread into a :class:`Mailbox`.

    ``read()`` never waits: it returns the newest captured frame. If the camera fails during
    the show (unplugged, driver hiccup), ``read()`` keeps returning the last good frame while
    the thread re-opens the camera with exponential backoff (``retry_delays=(first, max)`` in
    seconds), logging at most once every ``log_interval`` seconds. Counters:
    ``frames_captured``, ``failures`` (failed reads and opens), ``reopen_attempts``,
    ``reopens`` (successful), plus ``stats()``.

    ``capture_factory(device, api) -> capture`` makes the cv2.VideoCapture-like object (methods
    isOpened, read, set, release); tests substitute it to drive the real thread with a file.
    """

    kind = "camera"
    live = True
    #: Makes the capture object; replace per instance (constructor argument) or per class.
    capture_factory: Callable[..., Any] = staticmethod(_default_capture_factory)
    #: Consecutive failed reads before the camera is considered gone and re-opened.
    reopen_after_failed_reads = 2

    def __init__(self, arg: str | None = None, *, size: Size = (640, 360), fps: float = 30.0,
                 width: int | None = None, height: int | None = None, camera_fps: float | None = None,
                 mjpg: bool = False, api: str | None = None,
                 capture_factory: Callable[..., Any] | None = None,
                 retry_delays: tuple[float, float] = (0.5, 5.0), log_interval: float = 5.0,
                 stop_timeout: float = 3.0) -> None:
        super().__init__(arg, size=size, fps=fps)
        self.device = _parse_device(arg)
        # What to ask of the camera; frames are fitted to `size` whatever it delivers.
        self.capture_width = int(width) if width else self.width
        self.capture_height = int(height) if height else self.height
        self.capture_fps = float(camera_fps) if camera_fps else self.fps
        self.mjpg = bool(mjpg)
        self.api = api or _default_api()
        if self.api not in _CAPTURE_APIS:
            raise ValueError(f"unknown capture api {self.api!r}; choose from {', '.join(_CAPTURE_APIS)}")
        if capture_factory is not None:
            self.capture_factory = capture_factory
        self.retry_delays = (float(retry_delays[0]), float(retry_delays[1]))
        self.stop_timeout = float(stop_timeout)
        self.frames_captured = 0
        self.failures = 0
        self.reopen_attempts = 0
        self.reopens = 0
        self.connected = False
        self._box: Mailbox[np.ndarray] = Mailbox()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._cap: Any = None
        self._fallback: GeneratorSource | None = None
        self._warn = RateLimitedLog(log, interval=log_interval)

    def stats(self) -> dict[str, Any]:
        return {"frames_captured": self.frames_captured, "failures": self.failures,
                "reopen_attempts": self.reopen_attempts, "reopens": self.reopens,
                "dropped": self._box.dropped, "connected": self.connected}

    def _try_open(self) -> Any:
        """An opened, configured capture, or None. Never raises for a missing device."""
        cap = self.capture_factory(self.device, self.api)
        if not cap.isOpened():
            cap.release()
            return None
        # Each set() may be refused (it returns False, e.g. on file captures or fixed-mode
        # cameras); the frames get fitted to `size` anyway, so a refusal is not an error.
        # FOURCC goes first: V4L2 drivers list the sizes they offer per pixel format.
        if self.mjpg:
            cap.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter_fourcc(*"MJPG"))
        cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.capture_width)
        cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.capture_height)
        cap.set(cv2.CAP_PROP_FPS, self.capture_fps)
        cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # fewer queued frames in the driver: less latency
        return cap

    def _open_error(self) -> str:
        name = f"camera {self.device}"
        if sys.platform.startswith("linux"):
            nodes = video_device_nodes()
            found = ", ".join(nodes) if nodes else "none"
            node = f"/dev/video{self.device}" if isinstance(self.device, int) else str(self.device)
            if node in nodes and not os.access(node, os.R_OK | os.W_OK):
                why = f"{node} exists but this user may not open it (add yourself to the 'video' group)"
            elif node in nodes:
                why = f"{node} exists but did not open (in use by another program, or not a capture device)"
            else:
                why = f"{node} does not exist"
            where = f"{why}; video devices here: {found}"
        else:
            where = "run `ffvj devices` to list the cameras that open"
        return (f"cannot open {name}: {where}. Plug in a camera or choose another index, "
                "or run without one: --source generator (or --source video:FILE)")

    def _open(self) -> None:
        try:
            cap = self._try_open()
        except cv2.error as exc:  # e.g. a device string OpenCV cannot parse
            raise SourceError(f"{self._open_error()} (OpenCV: {exc})") from exc
        if cap is None:
            raise SourceError(self._open_error())
        ok, frame = cap.read()
        if not ok or frame is None:
            cap.release()
            raise SourceError(f"camera {self.device} opened but delivered no frame; it may be in use by "
                              "another program. Try another index, or --source generator")
        self._box.put(fit_frame(frame, self.size))
        self.frames_captured = 1
        self.connected = True
        self._cap = cap
        self._stop.clear()
        # A daemon thread, so a read stuck in a driver can never keep the process alive.
        self._thread = threading.Thread(target=self._run, name=f"ffvj-camera-{self.device}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        cap, self._cap = self._cap, None  # the thread owns the capture from here on
        first, longest = self.retry_delays
        delay = first
        failed_reads = 0
        while not self._stop.is_set():
            try:
                if cap is None:
                    self.reopen_attempts += 1
                    cap = self._try_open()
                    if cap is None:
                        self.failures += 1
                        self._warn.warning("unavailable", "camera %s unavailable; retrying (every %.1f s at most)",
                                   self.device, longest)
                        if self._stop.wait(delay):  # sleeps, but wakes at once on close()
                            break
                        delay = min(2 * delay, longest)
                        continue
                    self.reopens += 1
                    delay = first
                    log.info("camera %s is back", self.device)
                ok, frame = cap.read()
                if not ok or frame is None:
                    self.failures += 1
                    failed_reads += 1
                    if failed_reads >= self.reopen_after_failed_reads:
                        self.connected = False
                        self._warn.warning("stopped", "camera %s stopped delivering frames; showing the last "
                                   "good frame while re-opening it", self.device)
                        cap.release()
                        cap = None
                        failed_reads = 0
                    continue
                failed_reads = 0
                self.connected = True
                self._box.put(fit_frame(frame, self.size))
                self.frames_captured += 1
            except Exception as exc:  # whatever a driver or factory throws, the show goes on
                self.failures += 1
                self.connected = False
                self._warn.warning("failed", "camera %s failed (%s: %s); re-opening", self.device,
                           type(exc).__name__, exc)
                if cap is not None:
                    cap.release()
                    cap = None
                if self._stop.wait(delay):
                    break
                delay = min(2 * delay, longest)
        if cap is not None:
            cap.release()

    def _read(self) -> np.ndarray:
        frame = self._box.peek_latest()
        if frame is None:  # nothing captured yet: a moving picture beats a frozen black one
            if self._fallback is None:
                self._fallback = GeneratorSource(size=self.size, fps=self.fps).open()
            return self._fallback.read()
        return frame.copy()  # the mailbox keeps its frame; the caller gets its own

    def _close(self) -> None:
        self._stop.set()
        self._box.close()
        if self._thread is not None:
            self._thread.join(self.stop_timeout)
            if self._thread.is_alive():
                log.warning("camera %s: capture thread still blocked in the driver after %.1f s; "
                            "leaving it (daemon) to finish on its own", self.device, self.stop_timeout)
        if self._cap is not None:  # opened but the thread never took it over
            self._cap.release()
            self._cap = None
        if self._fallback is not None:
            self._fallback.close()


def devices(max_index: int = 8, api: str | None = None) -> list[int]:
    """Camera indices that open, for ``ffvj devices``.

    On Linux only the existing ``/dev/videoN`` nodes are tried (many are metadata nodes of the
    same camera and do not open as captures); elsewhere indices ``0 .. max_index-1``.
    """
    api = api or _default_api()
    if sys.platform.startswith("linux"):
        candidates = [int(n[len("/dev/video"):]) for n in video_device_nodes()]
    else:
        candidates = list(range(max_index))
    found = []
    for index in candidates:
        cap = _default_capture_factory(index, api)
        try:
            if cap.isOpened():
                found.append(index)
        finally:
            cap.release()
    return found


# --- registry ----------------------------------------------------------------------------------------

_registry = BackendRegistry("source", Source, "ffvj.sources")
SOURCES: dict[str, type] = _registry.classes
for _cls in (GeneratorSource, VideoSource, ImageSource, CameraSource):
    _registry.register(_cls.kind, _cls)


def register_source(name: str, cls: type) -> None:
    """Make ``cls`` (a :class:`Source` subclass) available as ``name`` in specs."""
    _registry.register(name, cls)


def source_names() -> list[str]:
    """Registered and plugin source names."""
    return _registry.names()


def open_source(spec: str, size: Size = (640, 360), fps: float = 30.0, **options: Any) -> Source:
    """Build the source named by ``spec`` (``NAME[:ARG]``) and open it."""
    name, arg = split_spec(spec)
    try:
        cls = _registry.lookup(name)
    except ValueError as exc:
        if arg is None and Path(spec).expanduser().is_file():  # a bare path: say how to spell it
            raise ValueError(f"{exc}. For a file, write video:{spec} or image:{spec}") from None
        raise
    return build_and_open(cls, name, arg, size, fps, options)


def build_and_open(cls: type, name: str, arg: str | None, size: Size, fps: float, options: dict):
    """Make a source or sink from its registry class and open it; if opening fails, close what was
    half-opened before the error goes on."""
    endpoint = cls(arg, size=size, fps=fps, **options)
    endpoint.kind = name  # messages then use the name the user wrote (plugins, aliases)
    try:
        return endpoint.open()
    except BaseException:
        endpoint.close()
        raise
