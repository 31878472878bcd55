"""Frame sinks: contract, registry, and each backend as far as this machine allows.

- file: a real H.264 MP4 through PyAV, read back with PyAV and counted with ffprobe.
- virtualcam: pyvirtualcam's real Camera facade over a recording backend registered with
  pyvirtualcam.register_backend (v4l2loopback cannot load here), plus the no-device error.
- ndi: a real sender → receiver round trip over loopback in a subprocess (see test_ndi_round_trip).
- window, syphon, spout: their platform/display checks, and the adapter logic with fakes.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import types
from pathlib import Path

import numpy as np
import pytest

from ffvj.media import sinks
from ffvj.media.base import Sink, SinkError, SinkUnavailable
from ffvj.media.sinks import SINKS, FileSink, NullSink, open_sink, register_sink, sink_availability
from tests.helpers import REPO



def colour_frame(size, rgb) -> np.ndarray:
    return np.full((size[1], size[0], 3), rgb, np.uint8)


# --- contract and registry ---------------------------------------------------------------------------

def test_registry_names_and_unknown_sink():
    assert {"null", "file", "virtualcam", "window", "ndi", "syphon", "spout"} <= set(SINKS)
    # Outputs watched as they happen need real time; null and file can render offline.
    assert [name for name in sorted(SINKS) if not SINKS[name].live] == ["file", "null"]
    with pytest.raises(ValueError, match="unknown sink 'hdmi'; available: .*file.*null"):
        open_sink("hdmi")


def test_register_sink_validates():
    with pytest.raises(TypeError, match="not a subclass of ffvj.media.base.Sink"):
        register_sink("nope", dict)


def test_every_sink_reports_availability():
    report = sink_availability()
    assert set(SINKS) <= set(report)
    for name, (ok, why) in report.items():
        assert isinstance(ok, bool) and isinstance(why, str) and why, name
    assert report["null"][0] and report["file"][0]
    if sys.platform.startswith("linux"):
        assert not report["syphon"][0] and "macOS" in report["syphon"][1]
        assert not report["spout"][0] and "Windows" in report["spout"][1]


def test_send_checks_frames_once_in_the_base():
    with open_sink("null", size=(8, 6)) as sink:
        assert isinstance(sink, NullSink)
        sink.send(colour_frame((8, 6), (1, 2, 3)))
        sink.send(colour_frame((12, 6), (1, 2, 3))[:, ::-1][:, :8])  # a non-contiguous view is fine
        with pytest.raises(ValueError, match=r"\(6, 8, 3\).*got uint8 array of shape \(8, 6, 3\)"):
            sink.send(np.zeros((8, 6, 3), np.uint8))
        with pytest.raises(ValueError, match="float32"):
            sink.send(np.zeros((6, 8, 3), np.float32))
        with pytest.raises(ValueError, match="list"):
            sink.send([[0]])
        assert sink.frames_sent == 2
    with pytest.raises(RuntimeError, match="closed"):
        sink.send(colour_frame((8, 6), (0, 0, 0)))
    sink.close()  # idempotent
    fresh = NullSink(size=(8, 6))
    with pytest.raises(RuntimeError, match="not open"):
        fresh.send(colour_frame((8, 6), (0, 0, 0)))


def test_failures_mid_show_become_sink_errors(monkeypatch):
    class Flaky(Sink):
        kind = "flaky"

        def _send(self, frame):
            raise OSError("cable pulled")

    monkeypatch.setitem(SINKS, "flaky", Flaky)
    with open_sink("flaky", size=(4, 4)) as sink:
        with pytest.raises(SinkError, match="'flaky' failed: OSError: cable pulled") as info:
            sink.send(colour_frame((4, 4), (0, 0, 0)))
    assert isinstance(info.value.__cause__, OSError)
    assert sink.frames_sent == 0


# --- file ----------------------------------------------------------------------------------------------

def ramp_colour(i: int) -> tuple[int, int, int]:
    return (40 + 8 * i, 200 - 6 * i, 90)


def write_clip(path: Path, n: int, size=(160, 90), fps=24.0) -> None:
    with open_sink(f"file:{path}", size=size, fps=fps) as sink:
        for i in range(n):
            sink.send(colour_frame(size, ramp_colour(i)))


def test_file_sink_writes_a_valid_h264_mp4(tmp_path):
    av = pytest.importorskip("av")
    path = tmp_path / "out" / "show.mp4"  # the directory gets created
    n, size = 20, (160, 90)
    write_clip(path, n, size, fps=24.0)
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        assert stream.average_rate == 24
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
    assert len(frames) == n
    assert frames[0].shape == (size[1], size[0], 3)
    for i in (0, n // 2, n - 1):
        mean = frames[i].reshape(-1, 3).mean(axis=0)
        assert np.allclose(mean, ramp_colour(i), atol=6), (i, mean, ramp_colour(i))

    if shutil.which("ffprobe") is None:
        pytest.skip("ffprobe not on PATH; PyAV read-back passed")
    probe = subprocess.run(["ffprobe", "-v", "error", "-count_frames", "-select_streams", "v:0",
                            "-show_entries", "stream=codec_name,width,height,nb_read_frames,pix_fmt,color_space",
                            "-of", "json", str(path)], capture_output=True, text=True, timeout=60, check=True)
    info = json.loads(probe.stdout)["streams"][0]
    assert info["codec_name"] == "h264" and info["pix_fmt"] == "yuv420p"
    assert (info["width"], info["height"]) == size
    assert int(info["nb_read_frames"]) == n
    assert info["color_space"] == "bt709"


def test_file_sink_takes_the_engines_own_4_2_0_frames(tmp_path):
    """Frames converted on the engine's device (its preferred format) are muxed as they are and
    decode back to the picture; RGB frames still work in the same file."""
    av = pytest.importorskip("av")
    import torch

    from ffvj.engine import pixfmt

    size, path = (64, 36), tmp_path / "native.mp4"
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, size[1]), torch.linspace(-1, 1, size[0]), indexing="ij")
    smooth = torch.stack([xx, yy, -xx])[None] * 0.8
    with open_sink(f"file:{path}", size=size, fps=24) as sink:
        assert sink.preferred_format == "i420:bt709"
        for _ in range(5):
            sink.send(pixfmt.convert(smooth, sink.preferred_format).numpy(), fmt=sink.preferred_format)
        sink.send(pixfmt.convert(smooth, "rgb24").numpy())
        with pytest.raises(ValueError, match=r"takes uint8 i420:bt709 frames of shape \(54, 64\)"):
            sink.send(np.zeros((36, 64), np.uint8), fmt="i420:bt709")
        with pytest.raises(ValueError, match="takes rgb24 or i420:bt709 frames, not nv12:bt601"):
            sink.send(np.zeros((54, 64), np.uint8), fmt="nv12:bt601")
    with av.open(str(path)) as container:
        frames = [f.to_ndarray(format="rgb24").astype(int) for f in container.decode(container.streams.video[0])]
    expected = pixfmt.convert(smooth, "rgb24").numpy().astype(int)
    assert len(frames) == 6
    for frame in frames:  # H.264 at CRF 18 and 4:2:0 on a smooth picture: a few codes at most
        assert np.abs(frame - expected).mean() < 3


def test_file_sink_finalises_when_the_show_is_interrupted(tmp_path):
    av = pytest.importorskip("av")
    path = tmp_path / "partial.mp4"
    with pytest.raises(KeyboardInterrupt):
        with open_sink(f"file:{path}", size=(64, 36), fps=29.97) as sink:
            assert isinstance(sink, FileSink)
            for i in range(7):
                sink.send(colour_frame((64, 36), ramp_colour(i)))
            raise KeyboardInterrupt  # like Ctrl-C in the middle of a show
    sink.close()  # a second close (e.g. from a signal handler) is harmless
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert stream.average_rate == sinks.Fraction(30000, 1001)
        assert sum(1 for _ in container.decode(stream)) == 7


def test_file_sink_refuses_odd_sizes_and_missing_path():
    with pytest.raises(ValueError, match="even width and height, got 641x360; use a size like 640x360"):
        open_sink("file:odd.mp4", size=(641, 360))
    with pytest.raises(ValueError, match="file:PATH"):
        open_sink("file", size=(64, 36))
    assert not Path("odd.mp4").exists()


def test_file_sink_unwritable_location(tmp_path):
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, not a directory")
    with pytest.raises(SinkUnavailable, match="blocker"):
        open_sink(f"file:{blocker / 'show.mp4'}", size=(64, 36))


# --- virtual camera -----------------------------------------------------------------------------------

class RecordingBackend:
    """A pyvirtualcam backend (its documented protocol) that records what the Camera facade sends."""

    instances: list[RecordingBackend] = []

    def __init__(self, *, width, height, fps, fourcc, device, **kw):
        self.width, self.height, self.fps, self.fourcc = width, height, fps, fourcc
        self._device = device or "/dev/video-recorder"
        self.kw = kw
        self.frames: list[np.ndarray] = []
        self.times: list[float] = []
        self.closed = False
        RecordingBackend.instances.append(self)

    def device(self):
        return self._device

    def native_fourcc(self):
        return None

    def send(self, frame):
        self.times.append(time.perf_counter())
        self.frames.append(frame.copy())

    def close(self):
        self.closed = True


@pytest.fixture
def recording_backend():
    pyvirtualcam = pytest.importorskip("pyvirtualcam")
    name = "ffvj-recorder"
    RecordingBackend.instances.clear()
    pyvirtualcam.register_backend(name, RecordingBackend)
    yield name
    pyvirtualcam.camera.BACKENDS.pop(name, None)


def test_virtualcam_sends_through_the_real_camera_facade(recording_backend):
    size = (32, 24)
    with open_sink("virtualcam", size=size, fps=30, backend=recording_backend, label="ffvj") as sink:
        assert sink.device == "/dev/video-recorder"
        for i in range(3):
            sink.send(colour_frame(size, ramp_colour(i)))
    (backend,) = RecordingBackend.instances
    assert backend.closed
    assert (backend.width, backend.height) == size and backend.kw == {"label": "ffvj"}
    assert len(backend.frames) == 3
    for i, flat in enumerate(backend.frames):  # pyvirtualcam hands backends a flat RGB buffer
        frame = flat.reshape(size[1], size[0], 3)
        assert frame[0, 0].tolist() == list(ramp_colour(i))


class I420Backend(RecordingBackend):
    """A backend whose native format is I420, as pyvirtualcam's v4l2loopback backend's is."""

    def native_fourcc(self):
        import pyvirtualcam.util

        return pyvirtualcam.util.encode_fourcc("I420")


def test_virtualcam_takes_4_2_0_when_the_camera_stores_it():
    """The sink reopens the camera in its native I420, and the engine's BT.601 frames go straight
    through pyvirtualcam; an RGB frame from a script is converted with the same arithmetic."""
    pyvirtualcam = pytest.importorskip("pyvirtualcam")
    import torch

    from ffvj.engine import pixfmt

    RecordingBackend.instances.clear()
    pyvirtualcam.register_backend("ffvj-i420", I420Backend)
    try:
        size = (32, 24)
        p = torch.rand(1, 3, size[1], size[0]) * 2 - 1
        with open_sink("virtualcam", size=size, fps=30, backend="ffvj-i420") as sink:
            assert sink.preferred_format == "i420:bt601"
            native = pixfmt.convert(p, "i420:bt601").numpy()
            sink.send(native, fmt="i420:bt601")
            sink.send(pixfmt.convert(p, "rgb24").numpy())
        first, second = RecordingBackend.instances  # the RGB probe, then the camera in I420
        assert first.closed and second.closed and first.fourcc != second.fourcc
        assert len(second.frames) == 2
        assert np.array_equal(second.frames[0].reshape(native.shape), native)
        assert np.abs(second.frames[1].reshape(native.shape).astype(int) - native).max() <= 1
    finally:
        pyvirtualcam.camera.BACKENDS.pop("ffvj-i420", None)


class RefusesI420(I420Backend):
    """Says it stores I420, then refuses to be opened in it (a driver with a fixed format)."""

    def __init__(self, *, fourcc, **kw):
        import pyvirtualcam.util

        if fourcc == pyvirtualcam.util.encode_fourcc("I420"):
            raise RuntimeError("format not accepted")
        super().__init__(fourcc=fourcc, **kw)


def test_virtualcam_keeps_rgb_when_the_camera_refuses_its_native_format(caplog):
    pyvirtualcam = pytest.importorskip("pyvirtualcam")
    RecordingBackend.instances.clear()
    pyvirtualcam.register_backend("ffvj-refuses", RefusesI420)
    try:
        with caplog.at_level("WARNING", logger="ffvj.media.sinks"):
            with open_sink("virtualcam", size=(32, 24), fps=30, backend="ffvj-refuses") as sink:
                assert sink.preferred_format == "rgb24"
                sink.send(colour_frame((32, 24), (10, 20, 30)))
        assert any("sending RGB" in r.getMessage() for r in caplog.records)
        assert len(RecordingBackend.instances[-1].frames) == 1
    finally:
        pyvirtualcam.camera.BACKENDS.pop("ffvj-refuses", None)


def test_virtualcam_pacing_follows_fps(recording_backend):
    fps, n = 20.0, 8
    with open_sink("virtualcam:/dev/video9", size=(16, 16), fps=fps, backend=recording_backend,
                   pace=True) as sink:
        assert sink.device == "/dev/video9"
        for _ in range(n):
            sink.send(colour_frame((16, 16), (0, 0, 0)))
    gaps = np.diff(RecordingBackend.instances[0].times)
    # sleep_until_next_frame() aims at 1/fps = 50 ms after the previous send. A loaded machine
    # can only make gaps longer, so the lower bound is tight-ish and the upper bound loose.
    assert np.median(gaps) > 0.8 / fps, gaps
    assert np.median(gaps) < 4.0 / fps, gaps


def test_virtualcam_without_a_device_names_the_fix():
    pytest.importorskip("pyvirtualcam")
    ok, why = sinks.VirtualCamSink.available()
    if ok:
        pytest.skip("this machine has a virtual camera device")
    with pytest.raises(SinkUnavailable) as info:
        open_sink("virtualcam", size=(64, 36))
    msg = str(info.value)
    assert "\n" not in msg
    if sys.platform.startswith("linux"):
        assert "v4l2loopback" in msg and "sudo modprobe v4l2loopback devices=1 exclusive_caps=1" in msg
        assert "v4l2loopback" in why


def test_virtualcam_unknown_backend_is_not_a_key_error():
    pytest.importorskip("pyvirtualcam")
    with pytest.raises(SinkUnavailable, match="backend 'no-such-backend' does not exist"):
        open_sink("virtualcam", size=(64, 36), backend="no-such-backend")


# --- window -------------------------------------------------------------------------------------------

def test_window_needs_a_display(monkeypatch):
    if not sys.platform.startswith("linux"):
        pytest.skip("the DISPLAY rule is Linux's")
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    ok, why = sinks.WindowSink.available()
    assert not ok and "DISPLAY" in why
    with pytest.raises(SinkUnavailable, match="window preview unavailable: no display: DISPLAY is not set"):
        open_sink("window", size=(64, 36))


def test_window_adapter_with_fake_gui(monkeypatch):
    # Every OpenCV GUI call the sink makes is replaced: a real one would need an X server.
    cv2 = sinks.cv2
    calls = []
    visible = {"value": 1.0}
    monkeypatch.setenv("DISPLAY", ":99")
    monkeypatch.setattr(sinks, "_opencv_gui", lambda: "QT5")
    monkeypatch.setattr(cv2, "namedWindow", lambda title, flags: calls.append(("named", title)))
    monkeypatch.setattr(cv2, "resizeWindow", lambda title, w, h: calls.append(("resize", w, h)))
    monkeypatch.setattr(cv2, "setWindowProperty", lambda *a: calls.append(("fullscreen",)))
    monkeypatch.setattr(cv2, "imshow", lambda title, img: calls.append(("show", title, img.copy())))
    monkeypatch.setattr(cv2, "waitKey", lambda ms: calls.append(("key", ms)) or 27)
    monkeypatch.setattr(cv2, "getWindowProperty", lambda title, prop: visible["value"])
    monkeypatch.setattr(cv2, "destroyWindow", lambda title: calls.append(("destroy", title)))
    with open_sink("window:Preview", size=(8, 6), fullscreen=True) as sink:
        sink.send(colour_frame((8, 6), (255, 0, 0)))
        assert ("key", 1) in calls  # the GUI's event loop ran: without it nothing is drawn
        shown = [c for c in calls if c[0] == "show"]
        assert shown[0][1] == "Preview" and shown[0][2][0, 0].tolist() == [0, 0, 255]  # BGR for imshow
        visible["value"] = 0.0  # the user closed the window
        with pytest.raises(SinkError, match="'Preview' was closed"):
            sink.send(colour_frame((8, 6), (255, 0, 0)))
    assert calls[0] == ("named", "Preview") and ("fullscreen",) in calls and ("destroy", "Preview") in calls


# --- Syphon and Spout (fakes of the real packages' APIs) ----------------------------------------------

def test_syphon_and_spout_unavailable_here():
    if "syphon" in sys.modules or "SpoutGL" in sys.modules:
        pytest.skip("a real or fake package is loaded")
    if sys.platform != "darwin":
        with pytest.raises(SinkUnavailable, match=r"Syphon output works on macOS only.*ffvj\[syphon\]"):
            open_sink("syphon", size=(64, 36))
    if sys.platform != "win32":
        with pytest.raises(SinkUnavailable, match=r"Spout output works on Windows only.*ffvj\[spout\]"):
            open_sink("spout", size=(64, 36))


@pytest.fixture
def fake_syphon(monkeypatch):
    """Modules shaped like syphon-python: SyphonMetalServer, utils.raw.create_mtl_texture,
    utils.numpy.copy_image_to_mtl_texture (which requires (h, w, 4) images)."""

    class Texture:
        def __init__(self, device, width, height):
            self.device, self.width, self.height, self.data = device, width, height, None

    class SyphonMetalServer:
        instances = []

        def __init__(self, name):
            self.name, self.device, self.published, self.stopped = name, "mtl-device", [], False
            SyphonMetalServer.instances.append(self)

        def publish_frame_texture(self, texture, region=None, size=None, is_flipped=False):
            self.published.append((texture.data.copy(), is_flipped))

        def stop(self):
            self.stopped = True

    def copy_image_to_mtl_texture(image, texture):
        assert image.shape == (texture.height, texture.width, 4) and image.dtype == np.uint8
        texture.data = image.copy()

    syphon = types.ModuleType("syphon")
    syphon.SyphonMetalServer = SyphonMetalServer
    utils = types.ModuleType("syphon.utils")
    numpy_mod = types.ModuleType("syphon.utils.numpy")
    numpy_mod.copy_image_to_mtl_texture = copy_image_to_mtl_texture
    raw = types.ModuleType("syphon.utils.raw")
    raw.create_mtl_texture = lambda device, width, height: Texture(device, width, height)
    syphon.utils, utils.numpy, utils.raw = utils, numpy_mod, raw
    for mod in (syphon, utils, numpy_mod, raw):
        monkeypatch.setitem(sys.modules, mod.__name__, mod)
    return SyphonMetalServer


def test_syphon_adapter(fake_syphon):
    frame = colour_frame((6, 4), (10, 20, 30))
    frame[0] = (250, 0, 0)  # top row red, to check that rows go out top-down with a flip flag
    with open_sink("syphon:Show", size=(6, 4)) as sink:
        sink.send(frame)
    (server,) = fake_syphon.instances
    assert server.name == "Show" and server.stopped
    data, flipped = server.published[0]
    assert flipped is True  # Syphon clients expect bottom-up rows; the server flips on the GPU
    assert data.shape == (4, 6, 4) and np.all(data[..., 3] == 255)
    assert np.array_equal(data[..., :3], frame)
    with open_sink("syphon", size=(6, 4), flip=False) as sink:
        sink.send(frame)
    assert fake_syphon.instances[-1].name == "ffvj" and fake_syphon.instances[-1].published[0][1] is False


@pytest.fixture
def fake_spout(monkeypatch):
    """A module shaped like SpoutGL: SpoutSender with setSenderName, sendImage(buffer, width,
    height, glFormat, invert, hostFbo) -> bool, setFrameSync, releaseSender; enums.GL_RGBA."""

    class SpoutSender:
        instances = []
        result = True

        def __init__(self):
            self.name, self.images, self.synced, self.released = None, [], [], False
            SpoutSender.instances.append(self)

        def setSenderName(self, name):
            self.name = name

        def sendImage(self, buffer, width, height, gl_format, invert, host_fbo):
            view = memoryview(buffer)
            assert view.c_contiguous and view.nbytes >= width * height * 4
            self.images.append((np.array(buffer, copy=True), width, height, gl_format, invert, host_fbo))
            return SpoutSender.result

        def setFrameSync(self, name):
            self.synced.append(name)

        def releaseSender(self):
            self.released = True

    spout = types.ModuleType("SpoutGL")
    spout.SpoutSender = SpoutSender
    spout.enums = types.SimpleNamespace(GL_RGBA=0x1908)
    monkeypatch.setitem(sys.modules, "SpoutGL", spout)
    return SpoutSender


def test_spout_adapter(fake_spout):
    frame = colour_frame((6, 4), (10, 20, 30))
    with open_sink("spout:Show", size=(6, 4)) as sink:
        sink.send(frame)
    (sender,) = fake_spout.instances
    assert sender.name == "Show" and sender.released and sender.synced == ["Show"]
    pixels, width, height, gl_format, invert, fbo = sender.images[0]
    assert (width, height, gl_format, invert, fbo) == (6, 4, 0x1908, False, 0)
    assert pixels.shape == (4, 6, 4) and np.all(pixels[..., 3] == 255)
    assert np.array_equal(pixels[..., :3], frame)


def test_spout_tolerates_a_few_failed_sends_then_raises(fake_spout):
    fake_spout.result = False
    with open_sink("spout", size=(6, 4), max_failures=3) as sink:
        sink.send(colour_frame((6, 4), (0, 0, 0)))
        sink.send(colour_frame((6, 4), (0, 0, 0)))
        with pytest.raises(SinkError, match="sendImage failed 3 times"):
            sink.send(colour_frame((6, 4), (0, 0, 0)))
    assert fake_spout.instances[0].synced == []


# --- NDI ---------------------------------------------------------------------------------------------

# mDNS discovery does not reach this sandbox's loopback, so the receiver side finds the sender
# through NDI's own config file: ndi-config.v1.json in $NDI_CONFIG_DIR with networks.ips =
# 127.0.0.1 makes every Finder also ask that address directly. The NDI runtime reads that file
# once per process, on first use, so the round trip runs in a fresh interpreter where nothing
# else can have initialised NDI first.
NDI_ROUND_TRIP = r"""
import json, sys, time
import numpy as np
from cyndilib.finder import Finder
from cyndilib.receiver import Receiver, ReceiveFrameType
from cyndilib.video_frame import VideoRecvFrame
from cyndilib.wrapper.ndi_recv import RecvBandwidth, RecvColorFormat
from ffvj.media.sinks import open_sink

W, H = 64, 48
frame = np.zeros((H, W, 3), np.uint8)
frame[:, : W // 2] = (200, 60, 120)   # left half
frame[:, W // 2 :] = (20, 180, 40)    # right half
result = {"discovered": False, "received": False}
deadline = time.monotonic() + 30
with open_sink("ndi:" + sys.argv[1], size=(W, H), fps=30) as sink, Finder() as finder:
    result["source_name"] = sink.source_name
    source = None
    while source is None and time.monotonic() < deadline:
        finder.wait_for_sources(0.5)
        if sink.source_name in finder.get_source_names():
            source = finder.get_source(sink.source_name)
    result["discovered"] = source is not None
    if source is not None:
        receiver = Receiver(color_format=RecvColorFormat.RGBX_RGBA, bandwidth=RecvBandwidth.highest)
        video = VideoRecvFrame()
        receiver.set_video_frame(video)
        receiver.set_source(source)
        while time.monotonic() < deadline:
            sink.send(frame)
            if receiver.receive(ReceiveFrameType.recv_video, 100) & ReceiveFrameType.recv_video:
                xres, yres = video.get_resolution()
                buf = np.empty(video.get_buffer_size(), np.uint8)
                video.fill_p_data(buf)
                got = buf.reshape(yres, -1)[:, : xres * 4].reshape(yres, xres, 4)
                result.update(received=True, resolution=[xres, yres], frames_sent=sink.frames_sent,
                              left=got[:, : xres // 2 - 2, :3].reshape(-1, 3).mean(0).tolist(),
                              right=got[:, xres // 2 + 2 :, :3].reshape(-1, 3).mean(0).tolist())
                break
        receiver.disconnect()
print(json.dumps(result))
"""


def test_ndi_round_trip_on_loopback(tmp_path):
    pytest.importorskip("cyndilib")
    (tmp_path / "ndi-config.v1.json").write_text(json.dumps({"ndi": {"networks": {"ips": "127.0.0.1"}}}))
    env = {**os.environ, "NDI_CONFIG_DIR": str(tmp_path)}
    name = f"ffvj-test-{os.getpid()}"
    proc = subprocess.run([sys.executable, "-c", NDI_ROUND_TRIP, name], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=90)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["source_name"].endswith(f"({name})")
    assert result["discovered"], "the Finder did not see the sender via NDI_CONFIG_DIR's 127.0.0.1"
    assert result["received"], "no video frame arrived within 30 s"
    assert result["resolution"] == [64, 48]
    # NDI compresses (SpeedHQ, 4:2:2), so colours come back close, not exact.
    assert np.allclose(result["left"], (200, 60, 120), atol=12), result
    assert np.allclose(result["right"], (20, 180, 40), atol=12), result


def test_ndi_sink_in_process():
    pytest.importorskip("cyndilib")
    ok, why = sinks.NDISink.available()
    assert ok and "cyndilib" in why
    with open_sink(f"ndi:ffvj-inproc-{os.getpid()}", size=(32, 16), fps=25) as sink:
        assert sink.source_name.endswith(f"(ffvj-inproc-{os.getpid()})")
        for _ in range(3):
            sink.send(colour_frame((32, 16), (1, 2, 3)))
        assert sink.frames_sent == 3
