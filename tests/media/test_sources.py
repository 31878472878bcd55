"""Frame sources: registry and plugins, frame fitting, generator, image, video file and camera.

There is no camera here: the camera's failure paths run the real capture thread over
cv2.VideoCapture objects opened on a clip written at test time (substituted through
``capture_factory``), and the open-time error path runs against the missing /dev/video*.
"""

from __future__ import annotations

import importlib.metadata
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from ffvj.media import sources
from ffvj.media.base import BackendRegistry, Source, SourceError
from ffvj.media.generators import PATTERNS, GeneratorSource
from ffvj.media.sources import (SOURCES, CameraSource, ImageSource, VideoSource, devices, fit_frame, open_source,
                                register_source)
from tests.helpers import wait_until

CLIP_SIZE = (160, 90)


def level(i: int) -> int:
    """Grey level of clip frame i: far enough apart to survive MJPG compression."""
    return 10 + 20 * i


def make_clip(path: Path, frames: int, size=CLIP_SIZE) -> Path:
    """An MJPG .avi whose frame i is uniformly grey at level(i) (written with cv2.VideoWriter)."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30.0, size)
    assert writer.isOpened()
    for i in range(frames):
        writer.write(np.full((size[1], size[0], 3), level(i), np.uint8))
    writer.release()
    return path


def check_frame(frame, size) -> None:
    assert isinstance(frame, np.ndarray)
    assert frame.dtype == np.uint8
    assert frame.shape == (size[1], size[0], 3)
    assert frame.flags.c_contiguous


# --- registry -------------------------------------------------------------------------------------

def test_builtin_names_and_unknown_name_lists_them():
    assert {"generator", "video", "image", "camera"} <= set(SOURCES)
    assert [name for name in sorted(SOURCES) if SOURCES[name].live] == ["camera"]  # follows the wall clock
    with pytest.raises(ValueError, match="unknown source 'webcam'; available: .*camera.*generator"):
        open_source("webcam")


def test_bare_file_path_gets_a_hint(tmp_path):
    clip = make_clip(tmp_path / "clip.avi", 3)
    with pytest.raises(ValueError, match="video:"):
        open_source(str(clip))


def test_register_source_validates_and_names_the_class(monkeypatch):
    class NotASource:
        pass

    with pytest.raises(TypeError, match="NotASource.*not a subclass of ffvj.media.base.Source"):
        register_source("bogus", NotASource)
    with pytest.raises(ValueError, match="invalid source name"):
        register_source("a:b", GeneratorSource)

    class Flat(Source):
        kind = "flat"

        def _read(self):
            return np.full((self.height, self.width, 3), 42, np.uint8)

    monkeypatch.setitem(SOURCES, "flat", Flat)  # restored after the test
    register_source("flat", Flat)
    with open_source("flat", size=(8, 4)) as src:
        frame = src.read()
    assert frame.shape == (4, 8, 3) and frame[0, 0, 0] == 42


def test_plugins_load_lazily_and_errors_name_the_plugin(monkeypatch):
    group = "ffvj.sources"
    eps = [importlib.metadata.EntryPoint("gen2", "ffvj.media.generators:GeneratorSource", group),
           importlib.metadata.EntryPoint("notsource", "ffvj.media.base:split_spec", group),
           importlib.metadata.EntryPoint("broken", "ffvj_no_such_module:Thing", group)]
    calls = []

    def fake_entry_points(*, group):
        calls.append(group)
        return [ep for ep in eps if ep.group == group]

    monkeypatch.setattr(importlib.metadata, "entry_points", fake_entry_points)
    registry = BackendRegistry("source", Source, group)
    registry.register("generator", GeneratorSource)
    assert calls == []  # nothing listed until a lookup needs it
    assert registry.lookup("generator") is GeneratorSource
    assert registry.lookup("gen2") is GeneratorSource  # loaded and registered on first use
    assert "gen2" in registry.classes
    assert registry.names() == ["broken", "gen2", "generator", "notsource"]
    with pytest.raises(TypeError, match="'notsource'.*ffvj.media.base:split_spec.*not a subclass"):
        registry.lookup("notsource")
    with pytest.raises(RuntimeError, match="'broken'.*ffvj_no_such_module:Thing.*failed to load"):
        registry.lookup("broken")
    with pytest.raises(ValueError, match="unknown source 'nope'; available: broken, gen2, generator, notsource"):
        registry.lookup("nope")
    assert calls == [group]  # listed once, cached


# --- base contract ----------------------------------------------------------------------------------

def test_lifecycle_checks():
    src = GeneratorSource(size=(32, 18))
    with pytest.raises(RuntimeError, match="not open"):
        src.read()
    src.close()  # closing a never-opened source is fine
    src.close()
    with pytest.raises(RuntimeError, match="closed"):
        src.open()
    with GeneratorSource(size=(32, 18)) as live:
        check_frame(live.read(), (32, 18))
    assert live.closed
    with pytest.raises(RuntimeError, match="closed"):
        live.read()


def test_bad_size_and_fps():
    with pytest.raises(ValueError, match="size"):
        GeneratorSource(size=(0, 10))
    with pytest.raises(ValueError, match="fps"):
        GeneratorSource(fps=0)


# --- fitting --------------------------------------------------------------------------------------

def test_fit_frame_crops_to_fill_and_converts_bgr():
    # A wide BGR picture: blue left quarter, green middle half, red right quarter.
    wide = np.zeros((100, 400, 3), np.uint8)
    wide[:, :100] = (255, 0, 0)
    wide[:, 100:300] = (0, 255, 0)
    wide[:, 300:] = (0, 0, 255)
    out = fit_frame(wide, (50, 50))  # square target: only the middle half survives
    check_frame(out, (50, 50))
    assert np.all(out[:, :, 1] > 200) and np.all(out[:, :, [0, 2]] < 50)
    # A tall picture keeps its middle rows; RGB order after conversion.
    tall = np.zeros((400, 100, 3), np.uint8)
    tall[150:250] = (255, 0, 0)  # blue in BGR
    out = fit_frame(tall, (100, 100))
    assert out[50, 50].tolist() == [0, 0, 255]
    # Enlarging and identity, grey and BGRA inputs.
    check_frame(fit_frame(np.zeros((9, 16, 3), np.uint8), (640, 360)), (640, 360))
    check_frame(fit_frame(np.zeros((36, 64), np.uint8), (64, 36)), (64, 36))
    check_frame(fit_frame(np.zeros((36, 64, 4), np.uint8), (32, 18)), (32, 18))


# --- generator ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("pattern", PATTERNS)
def test_generator_patterns_move_and_are_colourful(pattern):
    size = (160, 90)
    with open_source(f"generator:{pattern}", size=size, fps=30) as src:
        frames = [src.read() for _ in range(16)]
    for frame in frames:
        check_frame(frame, size)
    first, last = frames[0].astype(np.int16), frames[-1].astype(np.int16)
    assert np.abs(first - last).mean() > 3, "the pattern should move within half a second"
    assert frames[-1].std() > 20, "the pattern should have contrast"
    channel_means = frames[-1].reshape(-1, 3).mean(axis=0)
    chroma = np.abs(frames[-1].astype(np.int16) - frames[-1].mean(axis=2, keepdims=True)).mean()
    assert chroma > 10, f"the pattern should be colourful, not grey (channel means {channel_means})"


def test_generator_is_deterministic_and_seedable():
    a = GeneratorSource("plasma", size=(64, 36), fps=25).open()
    b = GeneratorSource("plasma", size=(64, 36), fps=25).open()
    c = GeneratorSource("plasma", size=(64, 36), fps=25, seed=7).open()
    for i in range(5):
        fa, fb, fc = a.read(), b.read(), c.read()
        assert np.array_equal(fa, fb)
        assert not np.array_equal(fa, fc)
    assert np.array_equal(a.frame_at(2), GeneratorSource("plasma", size=(64, 36), fps=25).frame_at(2))
    # Time is frame index / fps: at twice the fps, frame 2n shows what frame n showed.
    fast = GeneratorSource("noise", size=(64, 36), fps=50)
    slow = GeneratorSource("noise", size=(64, 36), fps=25)
    assert np.array_equal(fast.frame_at(8), slow.frame_at(4))


def test_generator_unknown_pattern():
    with pytest.raises(ValueError, match="unknown generator pattern 'lava'; choose from plasma"):
        open_source("generator:lava")


# --- image -------------------------------------------------------------------------------------------

def test_image_source(tmp_path):
    bgr = np.zeros((60, 80, 3), np.uint8)
    bgr[..., 2] = 200  # red in BGR
    path = tmp_path / "pic.png"
    cv2.imwrite(str(path), bgr)
    with open_source(f"image:{path}", size=(40, 30)) as src:
        assert isinstance(src, ImageSource)
        first = src.read()
        check_frame(first, (40, 30))
        assert first[..., 0].min() > 190 and first[..., 1:].max() < 10
        first[:] = 0  # the caller owns its copy
        assert src.read()[..., 0].min() > 190


def test_image_errors_name_the_path(tmp_path):
    missing = tmp_path / "nope.png"
    with pytest.raises(FileNotFoundError, match="nope.png"):
        open_source(f"image:{missing}")
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"not a picture")
    with pytest.raises(SourceError, match="junk.png"):
        open_source(f"image:{junk}")
    with pytest.raises(ValueError, match="image:PATH"):
        open_source("image")


# --- video file --------------------------------------------------------------------------------------

def test_video_reads_every_frame_in_order_and_loops(tmp_path):
    clip = make_clip(tmp_path / "clip.avi", 6)
    with open_source(f"video:{clip}", size=(32, 18)) as src:
        assert isinstance(src, VideoSource)
        levels = [float(src.read().mean()) for _ in range(15)]
        assert src.loops == 2
    expected = [level(i % 6) for i in range(15)]
    assert np.allclose(levels, expected, atol=6), (levels, expected)


def test_video_without_loop_holds_last_frame(tmp_path):
    clip = make_clip(tmp_path / "clip.avi", 3)
    with open_source(f"video:{clip}", size=(32, 18), loop=False) as src:
        levels = [float(src.read().mean()) for _ in range(5)]
    assert np.allclose(levels, [level(0), level(1), level(2), level(2), level(2)], atol=6)


def test_video_errors_name_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.mp4"):
        open_source(f"video:{tmp_path / 'missing.mp4'}")
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\x00" * 1000)
    with pytest.raises(SourceError, match="cannot decode video .*junk.mp4"):
        open_source(f"video:{junk}")


def test_video_keeps_going_if_the_file_vanishes(tmp_path):
    clip = make_clip(tmp_path / "clip.avi", 2)
    with open_source(f"video:{clip}", size=(32, 18)) as src:
        src.read()
        src.read()
        clip.unlink()  # the next read hits the end and cannot re-open: hold the last frame
        for _ in range(3):
            assert abs(float(src.read().mean()) - level(1)) < 6


# --- camera ------------------------------------------------------------------------------------------

def test_camera_open_failure_is_clear():
    # There is no /dev/video57 on any sane machine (and no camera at all here).
    with pytest.raises(SourceError) as info:
        open_source("camera:57", size=(64, 36))
    msg = str(info.value)
    assert "camera 57" in msg and "--source generator" in msg
    if sources.sys.platform.startswith("linux"):
        assert "/dev/video57 does not exist" in msg and "video devices here:" in msg
    assert "\n" not in msg


class ClipCamera:
    """A capture factory for CameraSource: each successful open plays the clip once (a camera
    that then "vanishes" at end of file); once ``opens_left`` runs out it returns captures that
    fail to open, like an unplugged camera, until the test allows more opens."""

    def __init__(self, clip: Path, missing: Path, opens_left: int = 1) -> None:
        self.clip, self.missing, self.opens_left = clip, missing, opens_left
        self.calls = []

    def __call__(self, device, api):
        self.calls.append((device, api))
        if self.opens_left > 0:
            self.opens_left -= 1
            return cv2.VideoCapture(str(self.clip))
        return cv2.VideoCapture(str(self.missing))


def test_camera_survives_failure_mid_show_and_recovers(tmp_path):
    frames = 8
    factory = ClipCamera(make_clip(tmp_path / "cam.avi", frames), tmp_path / "unplugged.avi")
    cam = open_source("camera:3", size=(32, 18), capture_factory=factory, mjpg=True,
                      retry_delays=(0.01, 0.05), log_interval=0.5)
    try:
        assert isinstance(cam, CameraSource)
        assert factory.calls[0] == (3, cam.api)
        # The clip plays out, the "camera" stops delivering, and re-opening it fails for now.
        wait_until(lambda: cam.reopen_attempts >= 3)
        assert cam.frames_captured == frames
        assert cam.failures >= 3  # two failed reads plus failed re-opens
        assert not cam.connected
        # Meanwhile read() never blocks and shows the last good frame.
        for _ in range(5):
            start = time.monotonic()
            frame = cam.read()
            assert time.monotonic() - start < 0.5
            check_frame(frame, (32, 18))
            assert abs(float(frame.mean()) - level(frames - 1)) < 6
        # Plug it back in: the thread re-opens it and frames flow again.
        factory.opens_left = 1
        wait_until(lambda: cam.frames_captured >= 2 * frames)
        assert cam.reopens == 1
        stats = cam.stats()
        assert stats["frames_captured"] == cam.frames_captured and stats["reopens"] == 1
    finally:
        cam.close()
    assert not cam._thread.is_alive()
    cam.close()  # idempotent


def test_camera_frames_arrive_through_the_mailbox(tmp_path):
    clip = make_clip(tmp_path / "cam.avi", 4)
    # The factory can also be replaced per class, e.g. in a subclass.

    class FileCamera(CameraSource):
        capture_factory = staticmethod(lambda device, api: cv2.VideoCapture(str(clip)))

    cam = FileCamera("0", size=(32, 18), retry_delays=(0.05, 0.05)).open()
    try:
        wait_until(lambda: cam.frames_captured >= 8)  # the clip played at least twice
        check_frame(cam.read(), (32, 18))
        assert cam.reopens >= 1
    finally:
        cam.close()


def test_devices_probes_only_existing_nodes_on_linux(monkeypatch):
    if not sources.sys.platform.startswith("linux"):
        pytest.skip("Linux probing rule")
    found = devices()
    assert all(isinstance(i, int) for i in found)
    if not sources.video_device_nodes():
        assert found == []
    probed = []

    class FakeCapture:
        def __init__(self, index):
            self.index = index

        def isOpened(self):
            return self.index == 4

        def release(self):
            pass

    monkeypatch.setattr(sources, "video_device_nodes", lambda: ["/dev/video2", "/dev/video4"])
    monkeypatch.setattr(sources, "_default_capture_factory",
                        lambda index, api: probed.append(index) or FakeCapture(index))
    assert devices() == [4]
    assert probed == [2, 4]  # never 0, 1, 3, ... blindly


def test_a_video_in_a_live_show_keeps_its_own_rate(tmp_path):
    """Offline, one file frame per read. Live, a 20 fps file read by a 10 fps show skips every other
    frame to keep its own rate, and a long stall lets the clock slip instead of decoding a backlog."""
    path = tmp_path / "ramp.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 20, (32, 24))
    for i in range(60):
        writer.write(np.full((24, 32, 3), 4 * i, np.uint8))
    writer.release()
    with open_source(f"video:{path}", size=(32, 24), fps=10) as offline:
        means = [offline.read().mean() for _ in range(4)]
    assert means == sorted(means) and means[3] - means[0] < 16  # consecutive frames
    with open_source(f"video:{path}", size=(32, 24), fps=10) as live:
        live.follow_wall_clock()
        live.read()  # frame 0, and the clock starts here (not at open: start-up is not video time)
        for _ in range(10):
            time.sleep(0.1)
            frame = live.read()
        assert live.skipped >= 6  # ~1 s of a 20 fps file: about every other frame skipped
        assert frame.mean() > 4 * 12
        skipped = live.skipped
        time.sleep(1.5)  # a stall: 30 frames' time
        live.read()
        assert live.skipped - skipped <= 4  # at most 2 × 20 / 10 frames decoded to catch up


class _LiveStill(Source):
    """A camera stand-in: live, one colour."""

    live = True

    def _read(self):
        return np.full((self.height, self.width, 3), 200, np.uint8)


def test_auto_uses_the_generator_until_a_camera_arrives_and_then_the_camera(monkeypatch):
    found = {"camera": None}
    calls = []

    def find_camera(size, fps, options):
        calls.append(options)
        return found["camera"]

    auto = open_source("generator", size=(64, 48))  # (opened only to compare frames with)
    with auto:
        first = auto.read()
    src = sources.AutoSource(size=(64, 48), fps=30, probe_s=0.05, find_camera=find_camera, mjpg=True)
    with src:
        assert not src.live and src.spec == "auto (generator)" and src.epoch == 0
        assert np.array_equal(src.read(), first)  # the built-in generator, frame 0
        src.follow_wall_clock()  # a live show: now it looks for a camera
        camera = _LiveStill(size=(64, 48), fps=30).open()
        found["camera"] = camera
        wait_until(lambda: src.epoch == 1, what="the late camera to take over")
        assert src.live and (src.read() == 200).all() and calls[0] == {"mjpg": True}
    assert camera.closed


def test_auto_does_not_look_for_a_camera_in_an_offline_render():
    calls = []
    src = sources.AutoSource(size=(32, 24), fps=30, probe_s=0.01, find_camera=lambda *a: calls.append(a))
    with src:
        src.read()
        time.sleep(0.1)
    assert len(calls) == 1  # at open only
