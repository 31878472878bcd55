"""The show end to end: real clips made by ffmpeg, real H.264 files read back, real signals."""

import json
import math
import shutil
import signal
import subprocess
import sys
import threading
import time

import av
import numpy as np
import pytest
import torch

from ffvj.control.controls import Controls
from ffvj.control.service import Service
from ffvj.media.base import Sink, Source
from ffvj.media.sinks import SINKS, register_sink
from ffvj.media.sources import SOURCES, register_source
from ffvj.show import RunConfig, StartupError, run
from tests.helpers import free_udp_port, smooth_picture, wait_until

FFMPEG = shutil.which("ffmpeg")
FFPROBE = shutil.which("ffprobe")


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """A 2-second test pattern made by ffmpeg (the real thing a VJ would feed in)."""
    path = tmp_path_factory.mktemp("clips") / "clip.mp4"
    if FFMPEG:
        subprocess.run([FFMPEG, "-v", "error", "-f", "lavfi", "-i", "testsrc2=size=320x180:rate=30", "-t", "2",
                        "-pix_fmt", "yuv420p", "-c:v", "libx264", str(path)], check=True)
    else:  # same container and codec through PyAV when the ffmpeg binary is absent
        with av.open(str(path), "w") as out:
            stream = out.add_stream("libx264", rate=30)
            stream.width, stream.height, stream.pix_fmt = 320, 180, "yuv420p"
            for i in range(60):
                img = np.zeros((180, 320, 3), np.uint8)
                img[:, (i * 5) % 320:] = (200, 50, 30)
                out.mux(stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
            out.mux(stream.encode())
    return path


@pytest.fixture(autouse=True)
def _forget_test_sinks():
    """Sinks registered by a test are plugins of that test only."""
    before = dict(SINKS)
    yield
    SINKS.clear()
    SINKS.update(before)


def read_frames(path):
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
        return stream.codec_context.name, frames


def ffvj(*args, timeout=300, **kw):
    # No surfaces: these runs are about video (OSC gets its own end-to-end test below), and a show already
    # running on this machine must not meet them on its ports.
    return subprocess.run([sys.executable, "-m", "ffvj.cli", *args, "--no-osc", "--no-web", "--no-midi"],
                          capture_output=True, text=True, timeout=timeout, **kw)


@pytest.mark.slow
def test_video_to_h264_file_from_the_command_line(clip, tmp_path):
    out = tmp_path / "out.mp4"
    result = ffvj("run", "--source", f"video:{clip}", "--sink", f"file:{out}", "--size", "640x360", "--frames", "120")
    assert result.returncode == 0, result.stderr
    if FFPROBE:
        probe = json.loads(subprocess.run(
            [FFPROBE, "-v", "error", "-count_frames", "-select_streams", "v:0", "-show_entries",
             "stream=codec_name,width,height,nb_read_frames", "-of", "json", str(out)],
            check=True, capture_output=True, text=True).stdout)["streams"][0]
        assert (probe["codec_name"], probe["width"], probe["height"], int(probe["nb_read_frames"])) == \
            ("h264", 640, 360, 120)
    codec, frames = read_frames(out)
    assert codec == "h264" and len(frames) == 120 and frames[0].shape == (360, 640, 3)
    means = np.array([f.mean() for f in frames])
    changes = np.array([np.abs(a.astype(np.int16) - b).mean() for a, b in zip(frames, frames[1:])])
    assert means.min() > 10, "a black frame was shown"
    assert changes.min() > 0.2, "the picture froze"
    assert min(f.std() for f in frames) > 5, "the picture went flat"


@pytest.mark.slow
def test_virtualcam_without_a_device_fails_fast_naming_the_fix():
    if sys.platform != "linux":
        pytest.skip("the v4l2loopback message is Linux's")
    t = time.monotonic()
    result = ffvj("run", "--sink", "virtualcam", "--frames", "5", timeout=60)
    assert result.returncode != 0
    assert "v4l2loopback" in result.stderr and "Traceback" not in result.stderr
    assert time.monotonic() - t < 30


@pytest.mark.slow
def test_sigterm_finalises_the_recording(tmp_path):
    out = tmp_path / "live.mp4"
    proc = subprocess.Popen([sys.executable, "-m", "ffvj.cli", "run", "--source", "generator:rings", "--sink",
                             f"file:{out}", "--size", "160x96", "--pace", "realtime", "--no-osc", "--no-web",
                             "--no-midi"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and (not out.exists() or out.stat().st_size < 2000):
            time.sleep(0.2)
        time.sleep(1.0)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    codec, frames = read_frames(out)
    assert codec == "h264" and len(frames) >= 5 and frames[0].shape == (96, 160, 3)


class Recorder(Sink):
    """A live sink that remembers what arrived and when (registered like any plugin)."""

    live = True
    received: list = []

    def _send(self, frame):
        Recorder.received.append((time.perf_counter(), frame.copy()))


def test_realtime_pacing_and_parameters_reach_the_engine():
    register_sink("recorder", Recorder)
    Recorder.received = []
    controls = Controls.for_levels(3)
    controls.store.set("l0.zoom", 1.2)
    stop = threading.Event()
    cfg = RunConfig(source="generator", sinks=["recorder"], width=96, height=64, fps=20, frames=30, pace="realtime")
    stats = run(cfg, controls=controls, stop=stop)
    assert stats.frames == 30
    times = [t for t, _ in Recorder.received]
    assert len(times) >= 15  # a loaded machine may drop some: newest frame wins
    assert 1.0 < times[-1] - times[0] < 4.0  # ~1.45 s at 20 fps, not as fast as possible
    assert all(f.shape == (64, 96, 3) for _, f in Recorder.received)


def test_offline_mode_delivers_every_frame_in_order():
    register_sink("recorder", Recorder)
    Recorder.received = []
    cfg = RunConfig(source="generator:bars", sinks=["recorder", "null"], width=64, height=48, frames=12,
                    pace="offline")
    stats = run(cfg)
    assert stats.frames == 12 and len(Recorder.received) == 12


class NV12Recorder(Sink):
    """A sink whose own format is NV12: the runtime hands it frames converted by the engine."""

    live = False
    preferred_format = "nv12:bt709"
    received: list = []

    def _send(self, frame):
        NV12Recorder.received.append((self.frame_fmt, frame.copy()))


@pytest.mark.parametrize("device_formats", ["on", "off"])
def test_each_sink_gets_its_own_picture_format(device_formats):
    register_sink("nv12rec", NV12Recorder)
    register_sink("recorder", Recorder)
    NV12Recorder.received, Recorder.received = [], []
    cfg = RunConfig(source="generator:bars", sinks=["nv12rec", "recorder"], width=64, height=48, frames=4,
                    pace="offline", device_formats=device_formats)
    run(cfg)
    want = "nv12:bt709" if device_formats == "on" else "rgb24"
    assert [fmt for fmt, _ in NV12Recorder.received] == [want] * 4
    assert all(f.shape == ((72, 64) if want != "rgb24" else (48, 64, 3)) for _, f in NV12Recorder.received)
    assert all(f.shape == (48, 64, 3) for _, f in Recorder.received)  # the RGB sink beside it


def test_a_sink_that_fails_mid_show_is_dropped_and_the_show_goes_on():
    class Flaky(Sink):
        live = False
        sent = 0

        def _send(self, frame):
            Flaky.sent += 1
            if Flaky.sent == 3:
                raise OSError("disk full")

    register_sink("flaky", Flaky)
    register_sink("recorder", Recorder)
    Recorder.received = []
    lines = []
    stats = run(RunConfig(source="generator", sinks=["flaky", "recorder"], width=64, height=48, frames=8,
                          pace="offline", status_interval=0.0), on_status=lines.append)
    assert stats.frames == 8 and len(Recorder.received) == 8 and Flaky.sent == 3
    assert len(stats.sinks_failed) == 1 and "disk full" in stats.sinks_failed[0]  # the CLI then exits 1
    # Every status line from the failure on says so (a full disk was said once, then never again).
    assert len(lines) == 8 and not any("DOWN" in line for line in lines[:2])
    assert all("1 sink(s) DOWN: flaky" in line and "disk full" in line for line in lines[2:]), lines


def test_a_stop_event_ends_the_show():
    stop = threading.Event()
    threading.Timer(1.0, stop.set).start()
    stats = run(RunConfig(source="generator", sinks=["null"], width=64, height=48, fps=30, pace="realtime"), stop=stop)
    assert 0 < stats.frames < 200


@pytest.mark.slow
def test_start_up_errors_are_one_line(tmp_path):
    result = ffvj("run", "--source", f"video:{tmp_path}/missing.mp4", "--frames", "1", timeout=60)
    assert result.returncode == 2 and "missing.mp4" in result.stderr and "Traceback" not in result.stderr
    result = ffvj("run", "--sink", "smoke-machine", "--frames", "1", timeout=60)
    assert result.returncode == 2 and "null" in result.stderr  # lists the sinks there are
    result = ffvj("run", "--set", "l0.zoom=banana", "--frames", "1", timeout=60)
    assert result.returncode == 2 and "l0.zoom" in result.stderr
    result = ffvj("run", "--source", "image:/dev/zero", "--sink", "null", "--frames", "1", "--no-osc", timeout=60)
    assert result.returncode == 2 and "special file" in result.stderr and "directory" not in result.stderr
    result = ffvj("run", "--preset", "nothere", "--sink", "null", "--frames", "1", "--no-osc", timeout=60)
    assert result.returncode == 2 and result.stderr.count("nothere") == 1, result.stderr


@pytest.mark.slow
def test_a_hand_edited_or_special_preset_file_is_a_one_line_start_up_error(tmp_path):
    """A 10,000-deep array and a 3,000-digit integer crashed start-up with a traceback; a FIFO hung it."""
    import os

    (tmp_path / "deep.toml").write_text('[params]\n"l0.zoom" = ' + "[" * 10_000 + "]" * 10_000 + "\n")
    (tmp_path / "digits.toml").write_text('[params]\n"l0.zoom" = 1' + "0" * 3000 + "\n")
    os.mkfifo(tmp_path / "pipe.toml")
    for name, why in (("deep", "nested too deep"), ("digits", "far outside"), ("pipe", "is a FIFO")):
        result = ffvj("run", "--presets-dir", str(tmp_path), "--preset", name, "--sink", "null", "--frames", "1",
                      "--no-osc", "--no-web", "--no-midi", timeout=60)
        assert result.returncode == 2 and why in result.stderr, result.stderr
        assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_parameters_and_actions_reach_the_engine(tmp_path):
    """input.mix = 1 shows the source itself; a posted snapshot.store lands in the render loop."""
    import cv2

    picture = smooth_picture(np.random.default_rng(5), 48, 64)
    path = tmp_path / "still.png"
    cv2.imwrite(str(path), cv2.cvtColor(picture, cv2.COLOR_RGB2BGR))
    register_sink("recorder", Recorder)
    Recorder.received = []
    controls = Controls.for_levels(3, presets_dir=str(tmp_path / "presets"))
    controls.store.set("input.mix", 1.0)
    controls.store.advance(0)
    controls.fire("snapshot.store", slot=2)
    run(RunConfig(source=f"image:{path}", sinks=["recorder"], width=64, height=48, frames=3, pace="offline"),
        controls=controls)
    shown = Recorder.received[-1][1].astype(int)
    assert np.abs(shown - picture).mean() < 2
    assert 2 in controls.snapshots.occupied()


@pytest.mark.slow
@pytest.mark.skipif(not (shutil.which("oscsend") and shutil.which("oscdump")), reason="liblo-tools not installed")
def test_liblo_peers_drive_a_running_show():
    """Debian's oscsend sets a parameter of a running `ffvj run`; oscdump on the feedback port hears it."""
    osc_port, feedback_port = free_udp_port(), free_udp_port()
    dump = subprocess.Popen(["oscdump", "-L", str(feedback_port)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    show = subprocess.Popen([sys.executable, "-m", "ffvj.cli", "run", "--source", "generator", "--sink", "null",
                             "--size", "96x64", "--pace", "realtime", "--osc-port", str(osc_port),
                             "--osc-feedback", f"127.0.0.1:{feedback_port}", "--no-oscquery", "--no-web", "--no-midi"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    said = []  # the show's log, read as it comes (a pipe left unread would stall the show once full)
    threading.Thread(target=lambda: said.extend(iter(show.stderr.readline, "")), daemon=True).start()
    try:
        heard = []
        reader = threading.Thread(target=lambda: heard.extend(iter(dump.stdout.readline, "")), daemon=True)
        reader.start()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any("/ffvj/l0/zoom " in line for line in heard):
            # Resend until the show is up and listening (start-up takes seconds on a loaded machine).
            subprocess.run(["oscsend", "localhost", str(osc_port), "/ffvj/l0/zoom", "f", "1.1"], check=True)
            time.sleep(0.5)
        lines = [line for line in heard if "/ffvj/l0/zoom " in line]
        assert lines, f"no feedback; the show said: {''.join(said)[-4000:]}"
        assert lines[-1].split()[-2:] == ["f", "1.100000"]  # "<timetag> /ffvj/l0/zoom f 1.100000"
    finally:
        show.send_signal(signal.SIGTERM)
        dump.kill()
        try:
            show.wait(timeout=30)
        finally:
            show.kill()
    assert show.returncode == 0


class SleepySource(Source):
    """A source slower than the frame rate, so a realtime show must skip slots."""

    live = True

    def _read(self):
        time.sleep(0.1)
        return np.full((self.height, self.width, 3), 128, np.uint8)


def test_a_realtime_recording_keeps_real_time_when_slots_are_skipped(tmp_path):
    register_source("sleepy", SleepySource)
    try:
        out = tmp_path / "late.mp4"
        t = time.monotonic()
        stats = run(RunConfig(source="sleepy", sinks=[f"file:{out}"], width=64, height=48, fps=30, frames=10,
                              pace="realtime"))
        wall = time.monotonic() - t
    finally:
        SOURCES.pop("sleepy", None)
    assert stats.late >= 10  # each frame took ≥ 3 slots
    with av.open(str(out)) as container:
        stream = container.streams.video[0]
        pts = [f.pts for f in container.decode(stream)]
        seconds = float(pts[-1] * stream.time_base)
    assert len(pts) == 10 and pts == sorted(pts)
    assert seconds > 0.7  # 10 frames ≈ 1 s of show, not 10 / 30 s of a sped-up film
    assert seconds < wall + 0.5


def test_sinks_that_need_their_own_thread_stay_on_the_render_loop():
    class MainThreadOnly(Sink):
        live, own_thread, threads = True, False, set()

        def _send(self, frame):
            MainThreadOnly.threads.add(threading.current_thread().name)

    register_sink("gui", MainThreadOnly)
    run(RunConfig(source="generator", sinks=["gui"], width=64, height=48, fps=60, frames=5, pace="realtime"))
    assert MainThreadOnly.threads == {threading.current_thread().name}


def test_an_offline_render_with_a_tempo_synced_lfo_is_repeatable():
    register_sink("recorder", Recorder)
    renders = []
    for delay in (0.0, 0.4):
        controls = Controls.for_levels(3)
        for name, value in (("lfo1.target", "l0.zoom"), ("lfo1.shape", "sine"), ("lfo1.division", "1/4"),
                            ("lfo1.depth", 0.8)):
            assert controls.store.set(name, controls.store.registry[name].parse(value))
        controls.store.advance(0)
        time.sleep(delay)  # start-up takes however long it takes; beat 0 must still be frame 0
        Recorder.received = []
        run(RunConfig(source="generator", sinks=["recorder"], width=64, height=48, fps=30, frames=12,
                      pace="offline"), controls=controls)
        renders.append([f for _, f in Recorder.received])
    assert all(np.array_equal(a, b) for a, b in zip(*renders))


def test_an_offline_render_reckons_its_clock_from_0_so_the_music_and_the_beat_repeat(monkeypatch):
    """From the host's uptime (an arbitrary float) the clock's differences kept its rounding: at 30 fps every
    fourth frame falls exactly on an audio hop's end, and kick's picture took one hop or the other by
    chance (its picture hash failed in one full run of the suite in several). Offline, frame n's clock is
    n × period, exactly, and a tap lands on it."""
    controls = Controls.for_levels(3)
    seen = []
    original = controls.next_phi

    def spy(engine, dt, now, services):
        seen.append((now, controls.tempo.clock()))
        return original(engine, dt, now, services)

    monkeypatch.setattr(controls, "next_phi", spy)
    run(RunConfig(source="generator", sinks=["null"], width=64, height=48, fps=30, frames=9, pace="offline"),
        controls=controls)
    period = 1.0 / 30
    assert [now for now, _ in seen] == [n * period for n in range(9)]
    assert [tapped for _, tapped in seen] == [now for now, _ in seen]  # a tap lands on the frame under way


def test_services_are_polled_each_frame_and_join_the_status_line():
    class Surface(Service):
        polls = 0

        def _start(self):
            pass

        def poll(self):
            Surface.polls += 1

        def status(self):
            return "surface ok"

    lines = []
    run(RunConfig(source="generator", sinks=["null"], width=64, height=48, frames=6, pace="offline",
                  status_interval=0.0), services=[Surface()], on_status=lines.append)
    assert Surface.polls == 6
    assert lines and all(line.endswith("| surface ok") for line in lines)


def test_the_status_as_json_carries_the_run_s_and_the_surfaces_figures():
    """``--status-format json``: a monitor reads numbers (``RunStats.figures``), never a line's words."""
    import json

    class Surface(Service):
        def _start(self):
            pass

        def figures(self):
            return {"surface_messages": 7}

        def status(self):
            return "surface 7 msgs"

    lines = []
    stats = run(RunConfig(source="generator", sinks=["null"], width=64, height=48, frames=6, pace="offline",
                          status_interval=0.0, status_format="json"), services=[Surface()], on_status=lines.append)
    figures = [json.loads(line) for line in lines]
    assert [f["frame"] for f in figures] == [1, 2, 3, 4, 5, 6] and figures[-1]["surface_messages"] == 7
    assert stats.figures()["surface_messages"] == 7 and figures[-1]["sinks_failed"] == []


def test_presets_are_saved_and_recalled_off_the_render_loop(tmp_path):
    import cv2

    picture = smooth_picture(np.random.default_rng(9), 48, 64)
    path = tmp_path / "still.png"
    cv2.imwrite(str(path), cv2.cvtColor(picture, cv2.COLOR_RGB2BGR))
    presets = tmp_path / "presets"
    controls = Controls.for_levels(3, presets_dir=str(presets))
    controls.store.set("input.mix", 1.0)
    controls.fire("preset.save", name="full-source")
    run(RunConfig(source="generator", sinks=["null"], width=64, height=48, frames=3, pace="offline"),
        controls=controls)
    assert (presets / "full-source.toml").is_file()

    register_sink("recorder", Recorder)
    Recorder.received = []
    controls = Controls.for_levels(3, presets_dir=str(presets))
    assert controls.store.get("input.mix") != 1.0
    controls.fire("preset.recall", name="full-source", seconds=0)
    run(RunConfig(source=f"image:{path}", sinks=["recorder"], width=64, height=48, frames=150, pace="offline"),
        controls=controls)
    assert controls.store.get("input.mix") == 1.0
    assert np.abs(Recorder.received[-1][1].astype(int) - picture).mean() < 2


def test_controls_made_for_another_model_fail_at_start_up_naming_the_fix():
    controls = Controls.for_levels(2)  # the default model has 3 levels
    with pytest.raises(StartupError, match=r"made for a model with 2 levels.*has 3.*Controls\.for_levels\(3\)"):
        run(RunConfig(source="generator", sinks=["null"], width=64, height=48, frames=1), controls=controls)


def test_a_library_run_gets_the_surfaces_its_config_asks_for():
    """RunConfig(osc=...) starts OSC beside the show, as ffvj run does: the wiring is in one place."""
    from pythonosc.udp_client import SimpleUDPClient

    from ffvj.control.osc import OscConfig

    port = free_udp_port()
    controls = Controls.for_levels(3)
    stop = threading.Event()
    cfg = RunConfig(source="generator", sinks=["null"], width=64, height=48, fps=30, pace="realtime",
                    osc=OscConfig(port=port, query_port=None))
    show = threading.Thread(target=run, args=(cfg, controls, stop), daemon=True)
    show.start()
    try:
        client = SimpleUDPClient("127.0.0.1", port)
        deadline = time.monotonic() + 60
        while controls.store.get("l2.rotate") != 3.0 and time.monotonic() < deadline:
            client.send_message("/ffvj/l2/rotate", 3.0)  # resent until the show is up and listening
            client.send_message("/ffvj/snapshot/store", 5)
            time.sleep(0.2)
        assert controls.store.get("l2.rotate") == 3.0
        wait_until(lambda: 5 in controls.snapshots.occupied(), what="the snapshot stored by the loop")
    finally:
        stop.set()
        show.join(30)
    assert not show.is_alive()


def test_controls_for_a_deeper_model_are_refused_too():
    with pytest.raises(StartupError, match=r"made for a model with 5 levels.*l4\..*would move nothing"):
        run(RunConfig(source="generator", sinks=["null"], width=64, height=48, frames=1),
            controls=Controls.for_levels(5))


def test_a_surface_must_be_a_service_and_options_may_not_shadow_the_show():
    class NotAService:
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return None

    cfg = RunConfig(source="generator", sinks=["null"], width=64, height=48, frames=1)
    with pytest.raises(StartupError, match="not an ffvj.control.service.Service"):
        run(cfg, services=[NotAService()])
    with pytest.raises(StartupError, match="source option.*fps.*--size and --fps"):
        run(RunConfig(source="generator", sinks=["null"], width=64, height=48, frames=1, source_options={"fps": 60}))


class SceneChange(Source):
    """A source whose scene changes at frame 5 (as a late camera would): the show re-seeds from it."""

    live = False

    def __init__(self, arg=None, *, size=(64, 48), fps=30.0):
        super().__init__(arg, size=size, fps=fps)
        self.reads = 0
        picture = smooth_picture(np.random.default_rng(11), self.height, self.width)
        self.scenes = (picture // 4, 160 + picture // 4)  # dark, then bright (neither flat: flat seeds noise)

    def _read(self):
        self.reads += 1
        if self.reads == 6:
            self.epoch += 1
        return self.scenes[self.reads > 5].copy()


def test_the_first_source_frame_shows_at_once_and_a_new_scene_is_grown_out_of():
    register_source("scene", SceneChange)
    try:
        register_sink("recorder", Recorder)
        Recorder.received = []
        controls = Controls.for_levels(3)
        controls.store.set("input.mix", 0.0)  # no injection: what shows of the source is the seeding alone
        controls.store.advance(0)
        run(RunConfig(source="scene", sinks=["recorder"], width=64, height=48, fps=30, frames=30, pace="offline"),
            controls=controls)
    finally:
        SOURCES.pop("scene", None)
    frames = [f.astype(int) for _, f in Recorder.received]
    dark, bright = (s.astype(int) for s in SceneChange(size=(64, 48)).scenes)
    assert np.abs(frames[0] - dark).mean() < 12  # frame 0 already shows the source, not noise
    assert frames[8].mean() > frames[4].mean() + 20  # re-seeded from the new scene, fading in over ½ s
    assert np.abs(frames[22] - bright).mean() < np.abs(frames[22] - dark).mean()


def test_a_model_switch_mid_show_is_no_cut():
    """``model`` fired mid-show (as /ffvj/model s f would): the file worker loads the bundled model, the
    render loop switches and crossfades; no exception, no black frame, and no frame-to-frame change
    larger than the show's own before the switch."""
    from ffvj.model.checkpoint import bundled_models

    other = next(name for name in bundled_models() if name != "default")
    controls = Controls.for_levels(3)
    frames = []

    def on_frame(slot, picture, source, engine):
        frames.append(picture.astype(np.float32))
        if slot == 40:
            assert controls.fire("model", other, 1.0)

    run(RunConfig(source="generator", sinks=["null"], width=160, height=96, fps=30, frames=150, pace="offline",
                  status_interval=1e9), controls=controls, on_frame=on_frame)
    assert controls.models.current == other and controls.failed_actions == 0
    change = [np.abs(a - b).mean() for a, b in zip(frames, frames[1:])]
    assert max(change[41:]) <= 1.5 * max(change[10:40]) + 1.0, (max(change[10:40]), max(change[41:]))
    assert min(f.std() for f in frames) > 10 and min(f.mean() for f in frames) > 20  # never black, never flat


def test_a_level_view_reaches_a_file_sink(tmp_path):
    """``--sink l2:file:...``: level 2 through its card's projection, the real file sink, read back with
    PyAV: every frame there, at the show's size, a picture of its own (not the output's); a level the
    model lacks is refused at start-up with the levels it has."""
    from ffvj.media.outputs import split_level

    assert split_level("l2:ndi:ffvj-l2") == (2, "ndi:ffvj-l2") and split_level("file:l2.mp4") == (0, "file:l2.mp4")
    picture, level = tmp_path / "picture.mp4", tmp_path / "level2.mp4"
    run(RunConfig(source="generator", sinks=[f"file:{picture}", f"l2:file:{level}"], width=160, height=96,
                  frames=30, pace="offline", status_interval=1e9))
    frames = {}
    for path in (picture, level):
        with av.open(str(path)) as container:
            frames[path] = [f.to_ndarray(format="rgb24").astype(np.float32) for f in container.decode(video=0)]
    assert len(frames[level]) == len(frames[picture]) == 30
    assert frames[level][0].shape == (96, 160, 3)
    assert np.mean([np.abs(a - b).mean() for a, b in zip(frames[level], frames[picture])]) > 10
    assert min(f.std() for f in frames[level]) > 5
    with pytest.raises(StartupError, match=r"level 4 is not one of the model.s 0..3"):
        run(RunConfig(source="generator", sinks=["l4:null"], frames=2, pace="offline"))


def test_a_preset_made_for_another_model_switches_to_it(tmp_path):
    """``[meta] model = "crisp"``: --preset starts the show on that model (no --model given), and the same
    preset recalled mid-show switches a show on another model to it, crossfading; a name that is not a
    bundled model is refused at start-up."""
    preset = '[meta]\nname = "edges"\nbase = "default"\nmodel = "crisp"\n[params]\ndrive = 1.4\n'
    (tmp_path / "edges.toml").write_text(preset)
    seen = []
    run(RunConfig(source="generator", sinks=["null"], width=96, height=64, frames=3, pace="offline",
                  presets_dir=str(tmp_path), preset="edges", status_interval=1e9),
        on_frame=lambda slot, picture, source, engine: seen.append(engine.model.config.pooling))
    assert seen == ["max"] * 3

    controls = Controls.for_levels(3, presets_dir=str(tmp_path))
    pooling = []

    def on_frame(slot, picture, source, engine):
        pooling.append(engine.model.config.pooling)
        if slot == 5:
            controls.fire("preset.recall", "edges", 0.0)

    run(RunConfig(source="generator", sinks=["null"], width=96, height=64, frames=60, pace="offline",
                  status_interval=1e9), controls=controls, on_frame=on_frame)
    assert pooling[0] == "avg" and pooling[-1] == "max" and controls.models.current == "crisp"
    assert controls.failed_actions == 0

    (tmp_path / "bad.toml").write_text(preset.replace('"crisp"', '"../weights"'))
    with pytest.raises(StartupError, match=r"--preset bad: meta.model: no bundled model '../weights'"):
        run(RunConfig(source="generator", sinks=["null"], frames=2, pace="offline", presets_dir=str(tmp_path),
                      preset="bad"))


def test_a_second_show_hears_of_every_busy_port_at_once(caplog):
    """A second ffvj needed three tries: each busy port was reported one at a time. Ports asked for
    and busy are all named in one line; a default port that another show has is swapped for a free
    one, said once."""
    import logging
    import socket

    from ffvj.cli import _port_or_free

    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    tcps = []
    for _ in range(2):
        tcp = socket.socket()
        tcp.bind(("127.0.0.1", 0))
        tcp.listen()
        tcps.append(tcp)
    osc, query, web = udp.getsockname()[1], tcps[0].getsockname()[1], tcps[1].getsockname()[1]
    try:
        result = subprocess.run([sys.executable, "-m", "ffvj.cli", "run", "--sink", "null", "--frames", "1",
                                 "--no-midi", "--osc-port", str(osc), "--oscquery-port", str(query), "--web-port",
                                 str(web)], capture_output=True, text=True, timeout=120)
        assert result.returncode == 2, result.stderr
        error = result.stderr.strip().splitlines()[-1]
        for flag, port in (("--osc-port", osc), ("--oscquery-port", query), ("--web-port", web)):
            assert f"{flag} {port}" in error, error
        assert "Traceback" not in result.stderr
        with caplog.at_level(logging.WARNING, logger="ffvj"):
            assert _port_or_free("--web-port", None, web, "127.0.0.1") == 0  # the default taken: any free one
            assert _port_or_free("--osc-port", None, osc, "127.0.0.1", "udp") == 0
        assert "--web-port" in caplog.text and "in use" in caplog.text
        assert _port_or_free("--web-port", web, 9020, "127.0.0.1") == web  # asked for: kept (and checked at start)
    finally:
        udp.close()
        for tcp in tcps:
            tcp.close()
    assert _port_or_free("--web-port", None, web, "127.0.0.1") == web  # free again: the default stays


SLOW_FIRST_FRAME = """
import sys, time
import numpy as np
from ffvj.media.base import Source
from ffvj.media.sources import register_source
from ffvj.cli import main

class Glacial(Source):
    live = True  # a frame that takes a minute (what --size 8192x8192 does on a CPU)
    def _read(self):
        time.sleep(60)
        return np.zeros((self.height, self.width, 3), np.uint8)

register_source("glacial", Glacial)
sys.exit(main(["run", "--source", "glacial", "--sink", sys.argv[1], "--size", "64x48", "--no-osc", "--no-web",
               "--no-midi"]))
"""


@pytest.mark.slow
def test_a_show_whose_frame_takes_a_minute_says_so_and_still_stops_within_5_s(tmp_path):
    """`--size 8192x8192` rendered nothing for 90 s, silently, then took 53 s to stop."""
    show = subprocess.Popen([sys.executable, "-c", SLOW_FIRST_FRAME, f"file:{tmp_path / 'x.mp4'}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    said = []
    threading.Thread(target=lambda: said.extend(iter(show.stderr.readline, "")), daemon=True).start()
    try:
        wait_until(lambda: any("no frame yet after 5 s" in line for line in said), 60, "the show to say why")
        t = time.monotonic()
        show.send_signal(signal.SIGTERM)
        show.wait(timeout=30)
        stopped = time.monotonic() - t
    finally:
        show.kill()
    assert stopped < 6.0 and show.returncode == 1, (stopped, "".join(said))
    assert any("stopping without it" in line for line in said) and "Traceback" not in "".join(said)


@pytest.mark.slow
def test_a_live_show_far_below_its_rate_says_so(caplog):
    import logging

    register_source("sleepy", SleepySource)
    stop = threading.Event()
    threading.Timer(7.5, stop.set).start()
    with caplog.at_level(logging.WARNING, logger="ffvj.show"):
        run(RunConfig(source="sleepy", sinks=["null"], width=64, height=48, fps=60, pace="realtime",
                      status_interval=0.5), stop=stop)
    assert "of the 60 frames a second asked for" in caplog.text and "smaller --size" in caplog.text


def test_the_snapshot_slots_outlive_the_show(tmp_path):
    """--snapshots FILE: stored slots are written (atomically, off the loop) and the next show starts with
    them; a file that is not one fails at start-up in one line."""
    from ffvj.control.controls import Controls

    path = tmp_path / "slots.safetensors"
    controls = Controls.for_levels(3)

    def on_frame(slot, picture, source, engine):
        if slot == 10:
            controls.fire("snapshot.store", 2)
        if slot == 20:
            controls.fire("snapshot.store", 5)

    run(RunConfig(source="generator", sinks=["null"], width=64, height=48, frames=30, snapshots=str(path),
                  status_interval=math.inf), controls=controls, on_frame=on_frame)
    assert path.is_file() and not list(tmp_path.glob(".slots*"))  # no temporary file left behind
    stored = [s.clone() for s in controls.snapshots.get(5)]
    again = Controls.for_levels(3)
    run(RunConfig(source="generator", sinks=["null"], width=64, height=48, frames=2, snapshots=str(path),
                  status_interval=math.inf), controls=again)
    assert again.snapshots.occupied() == [2, 5]
    assert all(torch.equal(a.cpu(), b.cpu()) for a, b in zip(again.snapshots.get(5), stored))
    path.write_bytes(b"not a snapshot file")
    with pytest.raises(StartupError, match="not a snapshot file"):
        run(RunConfig(source="generator", sinks=["null"], width=64, height=48, frames=2, snapshots=str(path),
                      status_interval=math.inf))
