"""Frame sinks: where the rendered frames go (files, virtual cameras, NDI, Syphon, Spout, a window).

Backends (``SINKS``; more through :func:`register_sink` or the entry-point group ``ffvj.sinks``; the
contract is ``base.Sink``); optional packages are imported inside the backend only::

    null                  counts frames
    file:PATH             H.264 MP4 via PyAV; options crf=18, preset="veryfast", codec="libx264"
    virtualcam[:DEVICE]   pyvirtualcam (v4l2loopback / OBS); options backend, pace=False
    window[:TITLE]        OpenCV preview window; option fullscreen=False
    ndi[:NAME]            NDI sender via cyndilib (extra ``ndi``); options groups, clock=False
    syphon[:NAME]         macOS, syphon-python (extra ``syphon``)
    spout[:NAME]          Windows, SpoutGL (extra ``spout``)
"""

from __future__ import annotations

import glob
import importlib
import importlib.metadata
import importlib.util
import logging
import os
import sys
from fractions import Fraction
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ..engine import pixfmt
from .base import BackendRegistry, Sink, SinkError, SinkUnavailable, Size, build_and_open, split_spec

log = logging.getLogger(__name__)


def _platform_name() -> str:
    return {"linux": "Linux", "darwin": "macOS", "win32": "Windows"}.get(sys.platform, sys.platform)


def _frame_rate(fps: float) -> Fraction:
    """An exact rational rate, as encoders and NDI want: 25 → 25, 12.5 → 25/2, and the
    NTSC family written as decimals (23.976, 29.97, 59.94) → 24000/1001, 30000/1001, 60000/1001."""
    for base in (24, 30, 48, 60, 120):
        ntsc = Fraction(base * 1000, 1001)
        if abs(fps - float(ntsc)) < 0.01:
            return ntsc
    return Fraction(fps).limit_denominator(1000)


def _import_optional(module: str, what: str, install: str) -> Any:
    """Import an optional dependency, or raise SinkUnavailable saying how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise SinkUnavailable(f"{what} needs the Python package {module!r} ({exc}); "
                              f"install it with: {install}") from exc


def _import_platform_module(module: str, what: str, platform_label: str, extra: str) -> Any:
    """Import a platform-bound optional package, or say which platform and extra it needs."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        if _platform_name() != platform_label:
            raise SinkUnavailable(f"{what} works on {platform_label} only (this is {_platform_name()}); there, "
                                  f"install it with pip install 'ffvj[{extra}]'. Here, use ndi or virtualcam") from exc
        raise SinkUnavailable(f"{what} needs the Python package {module!r} ({exc}); "
                              f"install it with: pip install 'ffvj[{extra}]'") from exc


# --- null and file -------------------------------------------------------------------------------------

class NullSink(Sink):
    """Discards frames (counting them in ``frames_sent``): for benchmarks and tests."""

    kind = "null"
    live = False

    def _send(self, frame: np.ndarray) -> None:
        pass


class FileSink(Sink):
    """An H.264 MP4 (or MKV/MOV, by extension) written with PyAV.

    A frame in schedule slot n gets pts n in time base 1/fps, so the file plays in real time
    whatever the wall clock did: slots a live show skipped are held frames, not a faster film.
    Pixels are converted RGB → yuv420p with the BT.709 matrix (limited range) and the stream is
    tagged BT.709 so players decode the colours we meant. yuv420p needs an even width and height:
    odd sizes are **refused at open** (padding would silently change the picture size).

    Crash-safe: an MP4/MOV is written fragmented (``movflags=frag_keyframe+empty_moov+
    default_base_moof``, a keyframe and so a fragment every second), so a show killed with
    ``kill -9``, a full disk or a pulled cable keeps everything up to the last second; an ordinary
    MP4 writes its index only at the end, and without it 35 s of show were 0 readable frames. A
    fragmented MP4 is still an MP4 to players and editors (ffprobe, VLC, browsers, Resolve). MKV is
    written as it goes anyway.

    Parent directories are created. An existing file is never overwritten: the new recording gets the
    next free name (``show-1.mp4``, ``show-2.mp4``, ...; logged), unless ``overwrite=True``. A file
    whose folder is deleted while recording is logged (its frames then go nowhere).
    """

    kind = "file"
    live = False

    def __init__(self, arg: str | None = None, *, size: Size = (640, 360), fps: float = 30.0,
                 codec: str = "libx264", crf: int = 18, preset: str = "veryfast",
                 pix_fmt: str = "yuv420p", codec_options: dict[str, str] | None = None,
                 overwrite: bool = False, audio=None) -> None:
        super().__init__(arg, size=size, fps=fps)
        if not arg:
            raise ValueError("the file sink needs a path: file:PATH (e.g. file:show.mp4)")
        self.path = Path(arg).expanduser()
        self.overwrite = overwrite
        self.codec = codec
        self.pix_fmt = pix_fmt
        # The engine makes 4:2:0 pictures itself (BT.709, as the stream is tagged): the encoder
        # thread then skips libswscale's conversion.
        self.preferred_format = {"yuv420p": "i420:bt709", "nv12": "nv12:bt709"}.get(pix_fmt, pixfmt.RGB24)
        self.codec_options = {"crf": str(crf), "preset": str(preset), **(codec_options or {})}
        self._container: Any = None
        self._stream: Any = None
        self.audio = audio  # an audio.inputs.AudioTap: the show's sound, muxed beside the picture (AAC)
        self._audio_stream: Any = None

    @classmethod
    def available(cls) -> tuple[bool, str]:
        try:
            import av
        except ImportError:
            return False, "PyAV is not installed: pip install av"
        if "libx264" not in av.codecs_available:
            return False, f"this PyAV ({av.__version__}) has no libx264 encoder"
        return True, f"PyAV {av.__version__} with libx264"

    def _open(self) -> None:
        self._last_pts = -1
        self._frames_sent, self._gone_logged = 0, False
        if self.pix_fmt in ("yuv420p", "nv12") and (self.width % 2 or self.height % 2):
            even = f"{self.width - self.width % 2}x{self.height - self.height % 2}"
            raise ValueError(f"file sink: {self.pix_fmt} video needs an even width and height, got "
                             f"{self.width}x{self.height}; use a size like {even}")
        av = _import_optional("av", "the file sink", "pip install av")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SinkUnavailable(f"cannot create the directory for {self.path}: {exc}") from exc
        if not self.overwrite:
            self.path = _free_name(self.path)
        fragmented = self.path.suffix.lower() in (".mp4", ".mov", ".m4v")
        try:
            # flush_packets: each packet goes to the disk as it is muxed, not when a 32 KB buffer fills.
            options = {"flush_packets": "1", **({"movflags": FRAGMENTED} if fragmented else {})}
            container = av.open(str(self.path), mode="w", options=options)
        except (OSError, ValueError, av.FFmpegError) as exc:
            raise SinkUnavailable(f"cannot write {self.path}: {exc} "
                                  "(use a .mp4, .mkv or .mov name in a writable directory)") from exc
        try:
            rate = _frame_rate(self.fps)
            stream = container.add_stream(self.codec, rate=rate, options=self.codec_options)
            stream.width, stream.height = self.size
            stream.pix_fmt = self.pix_fmt
            cc = stream.codec_context
            cc.time_base = 1 / rate  # pts = frame index
            cc.gop_size = max(1, round(self.fps))  # a keyframe, and so a fragment, every second
            # Tag what _send converts to (values from FFmpeg's pixfmt.h: 1 = BT.709, range 1 = limited).
            cc.colorspace, cc.color_primaries, cc.color_trc, cc.color_range = 1, 1, 1, 1
        except (ValueError, av.FFmpegError) as exc:
            container.close()
            raise SinkUnavailable(f"cannot set up the {self.codec} encoder for {self.path}: {exc}") from exc
        self._container, self._stream = container, stream
        if self.audio is not None:
            self._open_audio(av)

    AUDIO_RATE = 48000
    AAC_PRIMING = 1024

    def _open_audio(self, av) -> None:
        """The sound beside the picture: AAC, mono, 48 kHz; pts in samples, so it stays in step."""
        self._audio_stream = self._container.add_stream("aac", rate=self.AUDIO_RATE)
        self._audio_stream.layout = "mono"
        self._audio_pending = np.zeros(0, np.float32)
        self._audio_pts = 0
        # FFmpeg's AAC encoder begins with 1024 samples of priming, which a player would play before the
        # sound (a fragmented MP4 has no edit list to hide them): the sound's first 1024 samples give way
        # to them, and every later sample plays at its time, in step with the picture.
        self._audio_skip = self.AAC_PRIMING
        self._resampler, self._resampler_rate = None, None

    def _send_audio(self, until: float, last: bool = False) -> None:
        """The sound up to ``until`` seconds of the show, in whole AAC frames (the rest waits; ``last``:
        padded with silence)."""
        import av

        samples = self.audio.take(until)
        if len(samples) and self.audio.rate != self.AUDIO_RATE:
            if self._resampler_rate != self.audio.rate:
                self._resampler = av.AudioResampler(format="flt", layout="mono", rate=self.AUDIO_RATE)
                self._resampler_rate = self.audio.rate
            frame = av.AudioFrame.from_ndarray(samples[None], format="flt", layout="mono")
            frame.sample_rate = self.audio.rate
            samples = np.concatenate([f.to_ndarray().reshape(-1) for f in self._resampler.resample(frame)] or
                                     [np.zeros(0, np.float32)])
        if self._audio_skip:
            skipped = min(self._audio_skip, len(samples))
            samples, self._audio_skip = samples[skipped:], self._audio_skip - skipped
        pending = np.concatenate([self._audio_pending, samples])
        size = self._audio_stream.codec_context.frame_size or 1024
        if last and len(pending) % size:
            pending = np.concatenate([pending, np.zeros(size - len(pending) % size, np.float32)])
        whole = len(pending) // size * size
        for start in range(0, whole, size):
            frame = av.AudioFrame.from_ndarray(pending[None, start:start + size], format="fltp", layout="mono")
            frame.sample_rate, frame.pts = self.AUDIO_RATE, self._audio_pts
            self._audio_pts += size
            for packet in self._audio_stream.encode(frame):
                self._container.mux(packet)
        self._audio_pending = pending[whole:]

    def _send(self, frame: np.ndarray) -> None:
        import av

        if self.frame_fmt == pixfmt.RGB24:
            vf = av.VideoFrame.from_ndarray(frame, format="rgb24")
            vf = vf.reformat(format=self.pix_fmt, dst_colorspace="ITU709", dst_color_range="MPEG")
        else:  # already this stream's pix_fmt, converted by the engine
            vf = av.VideoFrame.from_ndarray(frame, format=self.pix_fmt)
        if self.frame_index <= self._last_pts:  # pts must grow; a caller repeating a slot gets the next
            self.frame_index = self._last_pts + 1
        vf.pts = self._last_pts = self.frame_index
        for packet in self._stream.encode(vf):
            self._container.mux(packet)
        if self._audio_stream is not None:
            self._send_audio((self.frame_index + 1) / self.fps)
        self._frames_sent += 1
        if self._frames_sent % max(1, round(self.fps)) == 0 and not self._gone_logged and not self.path.exists():
            self._gone_logged = True  # once a second at most, a stat() call: nothing on the hot path
            log.error("the recording %s was deleted while recording (was its folder removed?): what follows is "
                      "lost; the show goes on", self.path)

    def _close(self) -> None:
        container, self._container = self._container, None
        try:
            for packet in self._stream.encode(None):  # flush the frames the encoder still holds
                container.mux(packet)
            if self._audio_stream is not None:
                self._container = container
                self._send_audio((self._last_pts + 1) / self.fps, last=True)
                for packet in self._audio_stream.encode(None):
                    container.mux(packet)
        finally:
            container.close()  # the last fragment and the fragment index (mfra), for seeking


FRAGMENTED = "frag_keyframe+empty_moov+default_base_moof"  # FFmpeg's mov muxer flags


def _free_name(path: Path) -> Path:
    """``path`` if nothing is there, else the first free ``stem-N.suffix`` (logged): a recording is
    never silently overwritten."""
    if not path.exists():
        return path
    for n in range(1, 10000):
        candidate = path.with_name(f"{path.stem}-{n}{path.suffix}")
        if not candidate.exists():
            log.warning("%s exists and is kept: recording to %s", path, candidate.name)
            return candidate
    raise SinkUnavailable(f"{path} and 9,999 numbered files beside it exist; choose another name")


# --- virtual camera ----------------------------------------------------------------------------------

def _rgb_to(frame: np.ndarray, fmt: str) -> np.ndarray:
    """An RGB uint8 frame in ``fmt``, on the CPU, with the same arithmetic the engine uses."""
    import torch

    picture = torch.from_numpy(frame).permute(2, 0, 1)[None].float().div_(127.5).sub_(1)
    return pixfmt.convert(picture, fmt).numpy()


_VIRTUALCAM_FIX = {
    "Linux": "load the v4l2loopback kernel module: sudo modprobe v4l2loopback devices=1 exclusive_caps=1 "
             "card_label=ffvj",
    "macOS": "install OBS Studio and start its virtual camera once (Start Virtual Camera), then stop it",
    "Windows": "install OBS Studio 26 or newer (its virtual camera), or Unity Capture",
}


def _virtualcam_fix() -> str:
    return _VIRTUALCAM_FIX.get(_platform_name(), "see pyvirtualcam's documentation for this platform")


class VirtualCamSink(Sink):
    """A virtual webcam through pyvirtualcam (v4l2loopback on Linux, OBS on macOS/Windows).

    ``arg`` names the device (``/dev/video10``, ``OBS Virtual Camera``); none means the first
    free one. ``backend`` picks a pyvirtualcam backend by name (None tries all). With
    ``pace=True`` each send ends with ``sleep_until_next_frame()``, so a loop without its own
    clock runs at ``fps``; leave it off when the show paces (it does by default).
    """

    kind = "virtualcam"

    def __init__(self, arg: str | None = None, *, size: Size = (640, 360), fps: float = 30.0,
                 backend: str | None = None, pace: bool = False, **backend_options: Any) -> None:
        super().__init__(arg, size=size, fps=fps)
        self.device = arg
        self.backend = backend
        self.pace = bool(pace)
        self.backend_options = backend_options  # passed through to the pyvirtualcam backend
        self._cam: Any = None

    @classmethod
    def available(cls) -> tuple[bool, str]:
        if importlib.util.find_spec("pyvirtualcam") is None:
            return False, "pyvirtualcam is not installed: pip install pyvirtualcam"
        if sys.platform.startswith("linux"):
            # v4l2loopback devices are virtual, so they live under /sys/devices/virtual.
            if not glob.glob("/sys/devices/virtual/video4linux/video*"):
                return False, f"no v4l2loopback device; {_virtualcam_fix()}"
            return True, "v4l2loopback device present"
        return True, f"pyvirtualcam; needs a virtual camera driver ({_virtualcam_fix()})"

    def _open(self) -> None:
        pyvirtualcam = _import_optional("pyvirtualcam", "the virtualcam sink", "pip install pyvirtualcam")
        known = getattr(getattr(pyvirtualcam, "camera", None), "BACKENDS", None)
        if self.backend is not None and known is not None and self.backend not in known:
            # Checked here because pyvirtualcam raises a bare KeyError for it (and warns from __del__).
            raise SinkUnavailable(f"pyvirtualcam backend {self.backend!r} does not exist on {_platform_name()}; "
                                  f"available here: {', '.join(known) or 'none'}")
        try:
            self._cam = pyvirtualcam.Camera(self.width, self.height, self.fps,
                                            fmt=pyvirtualcam.PixelFormat.RGB, device=self.device,
                                            backend=self.backend, **self.backend_options)
        except KeyError as exc:  # pyvirtualcam's answer to a backend unknown on this platform
            raise SinkUnavailable(f"pyvirtualcam backend {exc.args[0]!r} does not exist on "
                                  f"{_platform_name()}") from exc
        except RuntimeError as exc:
            # pyvirtualcam joins each backend's failure with newlines; keep it to one line.
            detail = "; ".join(line.strip() for line in str(exc).splitlines() if line.strip())
            raise SinkUnavailable(f"no virtual camera device ({detail}). Fix: {_virtualcam_fix()}") from exc
        self.device = self._cam.device
        # A camera whose backend stores 4:2:0 (v4l2loopback: I420, OBS on Windows: NV12) takes it
        # directly: the engine converts on its device, half the bytes, and pyvirtualcam skips its own
        # conversion. BT.601, what readers of a webcam assume.
        native = self._cam.native_fmt
        formats = {pyvirtualcam.PixelFormat.I420: "i420:bt601", pyvirtualcam.PixelFormat.NV12: "nv12:bt601"}
        if native in formats and not (self.width % 2 or self.height % 2):
            backend = self._cam.backend
            self._cam.close()
            try:
                self._cam = pyvirtualcam.Camera(self.width, self.height, self.fps, fmt=native, device=self.device,
                                                backend=backend, **self.backend_options)
                self.preferred_format = formats[native]
            except RuntimeError as exc:  # keep the RGB camera that worked
                log.warning("virtual camera %s refused %s frames (%s); sending RGB", self.device, native.name, exc)
                try:
                    self._cam = pyvirtualcam.Camera(self.width, self.height, self.fps,
                                                    fmt=pyvirtualcam.PixelFormat.RGB, device=self.device,
                                                    backend=backend, **self.backend_options)
                except RuntimeError as again:
                    raise SinkUnavailable(f"the virtual camera {self.device} went away while opening: {again}. "
                                          f"Fix: {_virtualcam_fix()}") from again

    def _send(self, frame: np.ndarray) -> None:
        if self.frame_fmt == pixfmt.RGB24 and self.preferred_format != pixfmt.RGB24:
            frame = _rgb_to(frame, self.preferred_format)  # a caller with RGB frames (tests, scripts)
        self._cam.send(frame)
        if self.pace:
            self._cam.sleep_until_next_frame()

    def _close(self) -> None:
        cam, self._cam = self._cam, None
        cam.close()


# --- preview window ----------------------------------------------------------------------------------

def _opencv_gui() -> str:
    """The GUI backend OpenCV was built with ("NONE" for opencv-python-headless)."""
    for line in cv2.getBuildInformation().splitlines():
        if line.strip().startswith("GUI:"):
            return line.split(":", 1)[1].strip()
    return "unknown"


class WindowSink(Sink):
    """A preview window (``cv2.imshow``). Closing the window ends this sink (SinkError)."""

    kind = "window"
    # GUI toolkits want one thread for a window's whole life (Cocoa: the main thread), so the show
    # calls this sink from the render loop instead of a sink thread of its own.
    own_thread = False

    def __init__(self, arg: str | None = None, *, size: Size = (640, 360), fps: float = 30.0,
                 fullscreen: bool = False) -> None:
        super().__init__(arg, size=size, fps=fps)
        self.title = arg or "ffvj"
        self.fullscreen = bool(fullscreen)

    @classmethod
    def available(cls) -> tuple[bool, str]:
        if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
            return False, "no display: DISPLAY is not set (a headless machine, or ssh without -X)"
        gui = _opencv_gui()
        if gui.upper() == "NONE":
            return False, "this OpenCV has no GUI (opencv-python-headless?); pip install opencv-python"
        return True, f"OpenCV window ({gui})"

    def _open(self) -> None:
        ok, why = self.available()
        if not ok:
            raise SinkUnavailable(f"window preview unavailable: {why}")
        cv2.namedWindow(self.title, cv2.WINDOW_NORMAL | cv2.WINDOW_KEEPRATIO)
        cv2.resizeWindow(self.title, self.width, self.height)
        if self.fullscreen:
            cv2.setWindowProperty(self.title, cv2.WND_PROP_FULLSCREEN, cv2.WINDOW_FULLSCREEN)

    def _send(self, frame: np.ndarray) -> None:
        if self.frames_sent > 0 and cv2.getWindowProperty(self.title, cv2.WND_PROP_VISIBLE) < 1:
            raise SinkError(f"preview window {self.title!r} was closed")
        cv2.imshow(self.title, cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
        cv2.waitKey(1)  # runs the GUI event loop; without it nothing is drawn

    def _close(self) -> None:
        cv2.destroyWindow(self.title)
        cv2.waitKey(1)


# --- NDI ---------------------------------------------------------------------------------------------

class NDISink(Sink):
    """An NDI sender through cyndilib (``pip install 'ffvj[ndi]'``; the wheel bundles the runtime).

    Receivers see it as ``HOST (NAME)``; ``source_name`` holds the full name after open.
    Frames go out as RGBX. ``clock=True`` lets NDI pace sends to ``fps`` (off by default: the
    show paces). Where mDNS discovery is blocked, point receivers at this machine with an NDI
    config file (``ndi-config.v1.json`` with ``{"ndi": {"networks": {"ips": "HOST"}}}`` in the
    directory named by ``NDI_CONFIG_DIR``), as the tests do with 127.0.0.1.
    """

    kind = "ndi"

    def __init__(self, arg: str | None = None, *, size: Size = (640, 360), fps: float = 30.0,
                 groups: str | None = None, clock: bool = False) -> None:
        super().__init__(arg, size=size, fps=fps)
        self.name = arg or "ffvj"
        self.groups = groups or ""
        self.clock = bool(clock)
        self.source_name: str | None = None
        self._sender: Any = None
        self._rgbx = np.empty((self.height, self.width, 4), np.uint8)

    @classmethod
    def available(cls) -> tuple[bool, str]:
        if importlib.util.find_spec("cyndilib") is None:
            return False, "cyndilib is not installed: pip install 'ffvj[ndi]'"
        return True, f"cyndilib {importlib.metadata.version('cyndilib')}"

    def _open(self) -> None:
        install = "pip install 'ffvj[ndi]'"
        _import_optional("cyndilib", "the ndi sink", install)
        from cyndilib.sender import Sender
        from cyndilib.video_frame import VideoSendFrame
        from cyndilib.wrapper.ndi_structs import FourCC

        video = VideoSendFrame()
        video.set_resolution(self.width, self.height)
        video.set_frame_rate(_frame_rate(self.fps))
        video.set_fourcc(FourCC.RGBX)  # opaque RGB with a padding byte; NDI has no 3-byte format
        sender = Sender(self.name, ndi_groups=self.groups, clock_video=self.clock, clock_audio=False)
        sender.set_video_frame(video)
        try:
            sender.open()
        except (MemoryError, RuntimeError) as exc:  # cyndilib reports a failed NDIlib_send_create as MemoryError
            raise SinkUnavailable(f"cannot start the NDI sender {self.name!r}: {type(exc).__name__} {exc} "
                                  "(the NDI runtime needs a CPU with SSE4.2 and a working network stack)") from exc
        self._sender = sender
        self.source_name = sender.name
        self._rgbx[..., 3] = 255

    def _send(self, frame: np.ndarray) -> None:
        self._rgbx[..., :3] = frame
        if not self._sender.write_video(self._rgbx.reshape(-1)):
            raise SinkError(f"NDI sender {self.name!r} is not running")

    def _close(self) -> None:
        sender, self._sender = self._sender, None
        sender.close()


# --- Syphon (macOS) and Spout (Windows) --------------------------------------------------------------

def _platform_sink_available(what: str, platform: str, module: str, package: str, extra: str,
                             ok: str) -> tuple[bool, str]:
    """``available()`` of a sink bound to one platform and one optional package."""
    if sys.platform != platform:
        label = {"darwin": "macOS", "win32": "Windows"}[platform]
        return False, f"{what} is {label}-only (this is {_platform_name()}); use ndi or virtualcam"
    if importlib.util.find_spec(module) is None:
        return False, f"{package} is not installed: pip install 'ffvj[{extra}]'"
    return True, ok


class SyphonSink(Sink):
    """A Syphon server on macOS through syphon-python's Metal server (extra ``syphon``).

    Frames are expanded to RGBA, copied into one Metal texture made at open, and published
    with ``is_flipped=True``: numpy rows run top-down while Syphon clients expect OpenGL's
    bottom-up order, and letting Syphon flip on the GPU is free (``flip=False`` to turn off).
    """

    kind = "syphon"

    def __init__(self, arg: str | None = None, *, size: Size = (640, 360), fps: float = 30.0,
                 flip: bool = True) -> None:
        super().__init__(arg, size=size, fps=fps)
        self.name = arg or "ffvj"
        self.flip = bool(flip)
        self._server: Any = None
        self._texture: Any = None
        self._rgba = np.empty((self.height, self.width, 4), np.uint8)

    @classmethod
    def available(cls) -> tuple[bool, str]:
        return _platform_sink_available("Syphon", "darwin", "syphon", "syphon-python", "syphon", "syphon-python (Metal)")

    def _open(self) -> None:
        # Off macOS the import fails (syphon-python is built on PyObjC), and the message says so.
        syphon = _import_platform_module("syphon", "Syphon output", "macOS", "syphon")
        from syphon.utils.numpy import copy_image_to_mtl_texture
        from syphon.utils.raw import create_mtl_texture

        self._server = syphon.SyphonMetalServer(self.name)
        self._texture = create_mtl_texture(self._server.device, self.width, self.height)
        self._copy = copy_image_to_mtl_texture
        self._rgba[..., 3] = 255

    def _send(self, frame: np.ndarray) -> None:
        self._rgba[..., :3] = frame
        self._copy(self._rgba, self._texture)
        self._server.publish_frame_texture(self._texture, is_flipped=self.flip)

    def _close(self) -> None:
        server, self._server = self._server, None
        server.stop()


class SpoutSink(Sink):
    """A Spout sender on Windows through SpoutGL (extra ``spout``).

    Frames go out as RGBA via ``sendImage`` (Spout's native texture format; RGB would make Spout
    convert on the CPU), top row first; ``invert=True`` flips them for receivers that need it.
    A few failed sends in a row are tolerated (Spout may need a frame or two to set up its
    shared texture); ``max_failures`` consecutive failures raise SinkError.
    """

    kind = "spout"

    # An OpenGL context belongs to one thread: open, send and release all on the render loop.
    own_thread = False

    def __init__(self, arg: str | None = None, *, size: Size = (640, 360), fps: float = 30.0,
                 invert: bool = False, max_failures: int = 30) -> None:
        super().__init__(arg, size=size, fps=fps)
        self.name = arg or "ffvj"
        self.invert = bool(invert)
        self.max_failures = int(max_failures)
        self.failures = 0
        self._sender: Any = None
        self._rgba = np.empty((self.height, self.width, 4), np.uint8)

    @classmethod
    def available(cls) -> tuple[bool, str]:
        return _platform_sink_available("Spout", "win32", "SpoutGL", "SpoutGL", "spout", "SpoutGL")

    def _open(self) -> None:
        spout = _import_platform_module("SpoutGL", "Spout output", "Windows", "spout")
        self._gl_rgba = spout.enums.GL_RGBA  # SpoutGL re-exports the GL enums: no PyOpenGL needed
        self._sender = spout.SpoutSender()
        self._sender.setSenderName(self.name)
        self._rgba[..., 3] = 255

    def _send(self, frame: np.ndarray) -> None:
        self._rgba[..., :3] = frame
        # sendImage(pixels, width, height, GL format, invert, host FBO)
        if self._sender.sendImage(self._rgba, self.width, self.height, self._gl_rgba, self.invert, 0):
            self.failures = 0
            self._sender.setFrameSync(self.name)  # wakes receivers waiting for a new frame
            return
        self.failures += 1
        if self.failures >= self.max_failures:
            raise SinkError(f"Spout sender {self.name!r}: sendImage failed {self.failures} times in a row "
                            "(no OpenGL/DirectX texture sharing on this GPU?)")

    def _close(self) -> None:
        sender, self._sender = self._sender, None
        sender.releaseSender()


# --- registry ----------------------------------------------------------------------------------------

_registry = BackendRegistry("sink", Sink, "ffvj.sinks")
SINKS: dict[str, type] = _registry.classes
for _cls in (NullSink, FileSink, VirtualCamSink, WindowSink, NDISink, SyphonSink, SpoutSink):
    _registry.register(_cls.kind, _cls)


def register_sink(name: str, cls: type) -> None:
    """Make ``cls`` (a :class:`Sink` subclass) available as ``name`` in specs."""
    _registry.register(name, cls)


def sink_names() -> list[str]:
    """Registered and plugin sink names (for help texts)."""
    return _registry.names()


def sink_availability() -> dict[str, tuple[bool, str]]:
    """``{name: (usable here, why)}`` for every registered sink (plugins are loaded), for ``ffvj devices``."""
    report = {}
    for name in _registry.names():
        try:
            report[name] = _registry.lookup(name).available()
        except (RuntimeError, TypeError, ValueError) as exc:  # a broken plugin: report it, list the rest
            report[name] = (False, str(exc))
    return report


def takes_audio(spec: str) -> bool:
    """Whether the sink ``spec`` names records the show's sound (its constructor takes ``audio``)."""
    import inspect

    return "audio" in inspect.signature(_registry.lookup(split_spec(spec)[0])).parameters


def open_sink(spec: str, size: Size = (640, 360), fps: float = 30.0, **options: Any) -> Sink:
    """Build the sink named by ``spec`` (``NAME[:ARG]``) and open it."""
    name, arg = split_spec(spec)
    return build_and_open(_registry.lookup(name), name, arg, size, fps, options)
