"""What sources and sinks share: the endpoint contract, backend registries, specs and opening.

An endpoint is made from a spec string ``NAME[:ARG]`` (``split_spec``) by a ``BackendRegistry`` of
small backends (plugins come from an entry-point group) and opened by ``build_and_open``, which
checks the options against the backend's signature and closes what was half-opened when opening
fails. ``Endpoint`` is the lifecycle: new → open → closed under one re-entrant lock, a context
manager, an idempotent close; backends override ``_open`` and ``_close`` and, for a ``Source``,
``_read``, for a ``Sink``, ``_send`` (template methods).

Sources
~~~~~~~
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

Sinks
~~~~~
A :class:`Sink` is made from a spec string ``NAME[:ARG]`` and takes RGB frames::

    with open_sink("file:show.mp4", size=(640, 360), fps=30) as sink:
        sink.send(frame)        # np.uint8, shape (360, 640, 3), RGB

- ``open()`` starts it; ``open_sink`` returns an opened sink, and ``with`` opens too.
  Start-up problems raise here as one line naming the problem and the fix: ValueError (bad
  spec, option or size) or :class:`SinkUnavailable` (no device, missing optional package,
  wrong platform). Callers print the message; no traceback is needed.
- ``send(frame)`` checks the frame once in the base class (ValueError unless uint8 of shape
  (H, W, 3)). A sink whose output stores another layout sets ``preferred_format`` (a ``pixfmt``
  format such as ``i420:bt709``); the show then has the engine convert on its device and calls
  ``send(frame, index, fmt)``, and ``_send`` reads ``self.frame_fmt`` to know which it got (RGB
  frames from other callers still work). A sink that fails *during the show* raises
  :class:`SinkError` (the backend's own exception is chained as ``__cause__``): the show logs it,
  drops that sink and keeps rendering to the others.
- ``close()`` is idempotent and finalises the output (a file sink flushes its encoder and
  writes a valid file even after a partial show). It may be called from a shutdown path at
  any time; the public methods share a re-entrant lock.
- ``Sink.available() -> (usable_here, why)`` is a cheap class-level check for ``ffvj devices``
  (it imports nothing heavy and opens no device). ``live`` (class attribute) is False for
  sinks where any rate will do (null, file), True for those watched as they happen.
"""

from __future__ import annotations

import abc
import importlib.metadata
import inspect
import math
import re
import threading
from typing import Any

import numpy as np

from ..engine import pixfmt

Size = tuple[int, int]  # (width, height), the order cv2.resize and every video tool use


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


def check_size(size: Any) -> Size:
    """Validate a (width, height) pair of positive ints."""
    try:
        width, height = (int(v) for v in size)
    except (TypeError, ValueError):
        raise ValueError(f"size must be (width, height), got {size!r}") from None
    if width < 1 or height < 1:
        raise ValueError(f"size must be positive, got {width}x{height}")
    return width, height


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


# --- sources and sinks -------------------------------------------------------------------------

class SourceError(RuntimeError):
    """A source that cannot start. The message is one line: what failed and what to do."""


class SinkUnavailable(RuntimeError):
    """A sink that cannot start here. The message is one line: why, and how to fix it."""


class SinkError(RuntimeError):
    """A sink that failed during the show. The show logs it, drops the sink and carries on."""


class Source(Endpoint, abc.ABC):
    """Base class for frame sources. Subclasses implement ``_read`` and may override ``_open`` and
    ``_close``; a plugin without ``_read`` fails when it is made, naming the method."""

    kind = "source"
    role = "source"
    #: True if frames follow the wall clock (a camera), so the show must run in real time;
    #: False if any rate will do (files, generators), which allows offline rendering.
    live = False
    #: Counts the times the picture changed to another scene at once (a camera that arrived late, or
    #: came back after a dropout): the show re-seeds the feedback from the new one when it moves.
    epoch = 0

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
            return frame

    def follow_wall_clock(self) -> None:
        """A live show calls this: sources with a rate of their own (video files) keep real time from
        now on instead of giving one frame per read. Others have nothing to do."""

    @abc.abstractmethod
    def _read(self) -> np.ndarray | None:
        """The newest frame at ``size``, RGB uint8 (H, W, 3), or None if none was ever available."""


def _describe(frame: Any) -> str:
    if isinstance(frame, np.ndarray):
        return f"{frame.dtype} array of shape {frame.shape}"
    return type(frame).__name__


class Sink(Endpoint, abc.ABC):
    """Base class for frame sinks. Subclasses implement ``_send`` and may override ``_open`` and
    ``_close``; a plugin without ``_send`` fails when it is made, naming the method."""

    kind = "sink"
    role = "sink"
    #: True if something watches the output as it happens (virtual camera, window, NDI...),
    #: so the show must run in real time; False for outputs where any rate will do (files).
    live = True
    #: In real time, whether this sink gets its own thread behind a newest-wins mailbox (so it can
    #: never stall the render loop). False for sinks that must stay on the opening thread.
    own_thread = True
    #: The ``pixfmt`` format the show should hand this sink (the engine converts on its device).
    #: ``send`` takes RGB (``rgb24``) always, and this one too; ``_send`` reads ``frame_fmt``.
    preferred_format = pixfmt.RGB24

    def __init__(self, arg: str | None = None, *, size: Size = (640, 360), fps: float = 30.0) -> None:
        super().__init__(arg, size=size, fps=fps)
        self.frames_sent = 0
        self.frame_index = 0  # the schedule slot of the frame being sent (see send)
        self.frame_fmt = pixfmt.RGB24  # the format of the frame being sent (see send)

    @classmethod
    def available(cls) -> tuple[bool, str]:
        """Whether this sink can work on this machine, and a short reason. Opens nothing."""
        return True, "always available"

    def send(self, frame: np.ndarray, index: int | None = None, fmt: str = pixfmt.RGB24) -> None:
        """Send one frame: RGB uint8 (H, W, 3), or a frame of this sink's ``preferred_format`` when
        ``fmt`` says so. ``index`` is the frame's slot in the show's schedule (slot n is at n / fps
        seconds); a live show that skipped slots passes it so recordings keep real time. Default: the
        count of frames sent. Raises SinkError if the output fails mid-show."""
        with self._lock:
            self._require_open()
            if fmt not in (pixfmt.RGB24, self.preferred_format):
                raise ValueError(f"sink {self.spec!r} takes {pixfmt.RGB24} or {self.preferred_format} frames, "
                                 f"not {fmt}")
            shape = pixfmt.frame_shape(fmt, self.width, self.height)
            if not isinstance(frame, np.ndarray) or frame.dtype != np.uint8 or frame.shape != shape:
                kind = "RGB" if fmt == pixfmt.RGB24 else fmt
                raise ValueError(f"sink {self.spec!r} takes uint8 {kind} frames of shape {shape}, "
                                 f"got {_describe(frame)}")
            self.frame_index = self.frames_sent if index is None else int(index)
            self.frame_fmt = fmt
            try:
                self._send(np.ascontiguousarray(frame))
            except SinkError:
                raise
            except Exception as exc:  # any backend failure mid-show becomes the one type the show handles
                raise SinkError(f"sink {self.spec!r} failed: {type(exc).__name__}: {exc}") from exc
            self.frames_sent += 1

    def close(self) -> None:
        """Finish and release the output (idempotent). A backend failure while finishing (a full
        disk flushing a file) is raised as SinkError, the one type the show handles."""
        try:
            super().close()
        except SinkError:
            raise
        except Exception as exc:  # any backend failure at close becomes the show's one type
            raise SinkError(f"sink {self.spec!r} did not close cleanly: {type(exc).__name__}: {exc}") from exc

    @abc.abstractmethod
    def _send(self, frame: np.ndarray) -> None:
        """Deliver one checked frame (RGB uint8, C-contiguous); ``self.frame_index`` is its slot."""


def build_and_open(cls: type, name: str, arg: str | None, size: Size, fps: float, options: dict):
    """Make a source or sink from its registry class and open it; if opening fails, close what was
    half-opened before the error goes on. Options the backend does not take are a ValueError that
    lists the ones it does (checked against its signature, so a TypeError from inside a backend
    stays the bug it is)."""
    try:
        inspect.signature(cls).bind(arg, size=size, fps=fps, **options)
    except TypeError:
        takes = [p.name for p in inspect.signature(cls).parameters.values()
                 if p.kind == p.KEYWORD_ONLY and p.name not in ("size", "fps")]
        unknown = ", ".join(sorted(set(options) - set(takes))) or ", ".join(sorted(options))
        raise ValueError(f"{cls.role} {name!r} does not take the option(s) {unknown}; it takes: "
                         f"{', '.join(takes) or 'none'}") from None
    endpoint = cls(arg, size=size, fps=fps, **options)
    endpoint.kind = name  # messages then use the name the user wrote (plugins, aliases)
    try:
        return endpoint.open()
    except BaseException:
        endpoint.close()
        raise
