"""Frame sources: where the pictures that seed and steer the feedback loop come from.

Frames are fitted to ``size`` by **centre-crop-to-fill**: scale so the picture covers the
whole frame, keep its aspect ratio, and cut the overhang equally from both sides (no black
bars, no stretching). INTER_AREA is used when shrinking, INTER_LINEAR when enlarging.

Backends (``SOURCES``; more through :func:`register_source` or the entry-point group
``ffvj.sources``; the contract is ``base.Source``)::

    auto                 the first camera that opens, else the generator (a show always has a picture)
    generator[:PATTERN]  built-in animation (``generators``): plasma (default), bars, rings, noise,
                         gradient, shapes; options seed=0, speed=1.0; time advances 1/fps per read()
    video:PATH           a file through OpenCV, one frame per read() (deterministic), loops
    image:PATH           a still picture; option pan=SECONDS drifts slowly over it (zoom=1.25)
    camera[:INDEX]       a camera through OpenCV on a capture thread; options width, height, camera_fps,
                         mjpg, api; never stops the show when the camera fails mid-way

:func:`devices` lists the camera indices that open, for ``ffvj devices``.
"""

from __future__ import annotations

import glob
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

from ..reporting import RateLimitedLog
from .base import BackendRegistry, Size, Source, SourceError, build_and_open, split_spec
from .generators import GeneratorSource
from .mailbox import Mailbox

log = logging.getLogger(__name__)


# --- frame fitting -------------------------------------------------------------------------------

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


# --- still image and video file ------------------------------------------------------------------

def _existing_file(arg: str | None, kind: str) -> Path:
    if not arg:
        raise ValueError(f"the {kind} source needs a file: {kind}:PATH")
    path = Path(arg).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"{kind} file not found: {path}")
    if path.is_dir():
        raise ValueError(f"{kind} source needs a file, but {path} is a directory")
    if not path.is_file():
        raise ValueError(f"{kind} source needs a file, but {path} is a device or other special file")
    return path


class ImageSource(Source):
    """A still picture, fitted once at open; every read returns a fresh copy of it.

    ``pan=SECONDS`` (0: a still) drifts a window slowly over the picture instead, a "Ken Burns"
    move: the picture is fitted to ``zoom`` times the frame (default 1.25) and the window sweeps
    across it and back every ``pan`` seconds, diagonally, easing at the ends, at sub-pixel
    positions (no stepping on slow moves). Like the generator, time advances 1/fps per read, so a
    render is repeatable.
    """

    kind = "image"

    def __init__(self, arg: str | None = None, *, size: Size = (640, 360), fps: float = 30.0,
                 pan: float = 0.0, zoom: float = 1.25) -> None:
        super().__init__(arg, size=size, fps=fps)
        if not (isinstance(pan, (int, float)) and math.isfinite(pan) and pan >= 0):
            raise ValueError(f"image pan must be a period in seconds ≥ 0 (0: a still), not {pan!r}")
        if not (isinstance(zoom, (int, float)) and 1.0 <= zoom <= 4.0):
            raise ValueError(f"image zoom must be 1..4 (how much larger than the frame the picture is), not {zoom!r}")
        self.pan, self.zoom = float(pan), float(zoom)
        self.index = 0  # the next frame's number

    def _open(self) -> None:
        path = _existing_file(self.arg, "image")
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:  # cv2.imread reports failure by returning None, not by raising
            raise SourceError(f"cannot read image {path}: not a picture format OpenCV can decode "
                              "(png, jpg, bmp, tiff, webp, ...)")
        self.path = path
        if self.pan:
            big = (round(self.width * self.zoom), round(self.height * self.zoom))
            self._picture = fit_frame(image, big)
        else:
            self._frame = fit_frame(image, self.size)

    def frame_at(self, index: int) -> np.ndarray:
        """The frame with number ``index`` (a pure function of it, the picture and the options)."""
        if not self.pan:
            return self._frame.copy()
        t = index / self.fps / self.pan  # sweeps so far
        big_h, big_w = self._picture.shape[:2]
        # Cosine easing: no jolt where the window turns; y on a slower phase, so the path is a loop.
        fx = 0.5 - 0.5 * math.cos(2 * math.pi * t)
        fy = 0.5 - 0.5 * math.cos(2 * math.pi * t * 0.61 + 0.9)
        centre = (self.width / 2 - 0.5 + fx * (big_w - self.width), self.height / 2 - 0.5 + fy * (big_h - self.height))
        return cv2.getRectSubPix(self._picture, self.size, centre)

    def _read(self) -> np.ndarray:
        frame = self.frame_at(self.index)
        self.index += 1
        return frame


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
                    self.epoch += 1  # a new scene: the show re-seeds from it
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


# --- auto: a camera when there is one ----------------------------------------------------------------

def _first_camera(size: Size, fps: float, options: dict) -> Source | None:
    """The first camera that opens with ``options``, opened; None when none does."""
    for index in devices():
        try:
            return build_and_open(CameraSource, "camera", str(index), size, fps, options)
        except SourceError as exc:
            log.warning("camera %d did not open (%s); trying the next", index, exc)
    return None


class AutoSource(Source):
    """``auto``: the first camera that opens (with the options given), else the built-in generator,
    so a show always has a picture. In a live show (``follow_wall_clock``) without a camera it looks
    for one every ``probe_s`` seconds on a thread of its own, and a camera that arrives late takes
    over (``epoch`` moves on, and the show re-seeds from it). ``find_camera(size, fps, options)`` finds
    and opens one (tests substitute it)."""

    kind = "auto"

    def __init__(self, arg: str | None = None, *, size: Size = (640, 360), fps: float = 30.0, probe_s: float = 3.0,
                 find_camera: Callable | None = None, **camera_options: Any) -> None:
        super().__init__(arg, size=size, fps=fps)
        self.probe_s = float(probe_s)
        self.camera_options = camera_options
        self._find = find_camera or _first_camera
        self._current: Source | None = None
        self._swap = threading.Lock()
        self._stop = threading.Event()
        self._prober: threading.Thread | None = None

    @property
    def live(self) -> bool:  # a camera: realtime; the generator: any rate will do (an offline render)
        return bool(self._current is not None and self._current.live)

    @property
    def spec(self) -> str:
        return f"auto ({self._current.spec})" if self._current is not None else "auto"

    def _open(self) -> None:
        self._current = self._find(self.size, self.fps, self.camera_options)
        if self._current is None:
            log.info("no camera found: using the built-in generator")
            self._current = build_and_open(GeneratorSource, "generator", None, self.size, self.fps, {})

    def follow_wall_clock(self) -> None:
        with self._lock:
            self._current.follow_wall_clock()
            if not self._current.live and self._prober is None and self.probe_s > 0:
                self._prober = threading.Thread(target=self._probe, name="ffvj-camera-probe", daemon=True)
                self._prober.start()

    def _probe(self) -> None:
        while not self._stop.wait(self.probe_s):
            try:
                camera = self._find(self.size, self.fps, self.camera_options)
            except Exception as exc:  # noqa: BLE001 — a broken driver must not end the search
                log.warning("looking for a camera failed (%s: %s)", type(exc).__name__, exc)
                continue
            if camera is None:
                continue
            with self._swap:
                if self._stop.is_set():
                    camera.close()
                    return
                previous, self._current = self._current, camera
                self.epoch += 1
            log.info("a camera arrived: %s takes over from the generator", camera.spec)
            previous.close()
            return

    def _read(self) -> np.ndarray | None:
        with self._swap:
            return self._current.read()

    def _close(self) -> None:
        self._stop.set()
        if self._prober is not None:
            self._prober.join(timeout=10)
        with self._swap:
            if self._current is not None:
                self._current.close()


# --- registry ----------------------------------------------------------------------------------------

_registry = BackendRegistry("source", Source, "ffvj.sources")
SOURCES: dict[str, type] = _registry.classes
for _cls in (GeneratorSource, VideoSource, ImageSource, CameraSource):
    _registry.register(_cls.kind, _cls)


def register_source(name: str, cls: type) -> None:
    """Make ``cls`` (a :class:`Source` subclass) available as ``name`` in specs."""
    _registry.register(name, cls)


def source_names() -> list[str]:
    """Registered and plugin source names (for help texts)."""
    return _registry.names()


def open_source(spec: str, size: Size = (640, 360), fps: float = 30.0, **options: Any) -> Source:
    """Build the source named by ``spec`` (``NAME[:ARG]``, or ``auto``) and open it. ``auto``: the first
    camera that opens (with ``options``), else the built-in generator: a show always has a picture."""
    if spec == "auto":
        return build_and_open(AutoSource, "auto", None, size, fps, options)
    name, arg = split_spec(spec)
    try:
        cls = _registry.lookup(name)
    except ValueError as exc:
        if arg is None and Path(spec).expanduser().is_file():  # a bare path: say how to spell it
            raise ValueError(f"{exc}. For a file, write video:{spec} or image:{spec}") from None
        raise
    return build_and_open(cls, name, arg, size, fps, options)


