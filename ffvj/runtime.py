"""The live runtime: where source → engine → sinks is wired, paced and measured.

    source.read() ──newest frame──▶ engine.step(φ snapshot) ──one readback──▶ every sink

One render loop owns the engine. Control threads (OSC, MIDI, clock) only write the ParamStore; the
loop takes one snapshot per frame. Pacing is on an absolute schedule (start + n·period), so a slow
frame is caught up, not accumulated. Two modes:

* ``realtime``: paced to ``fps``; every sink gets its own thread behind a one-slot mailbox (newest
  frame wins), so a slow sink drops frames instead of stalling the show.
* ``offline``: as fast as possible, every frame handed to every sink in order (a render to a file).

``auto`` picks realtime when the source is a camera or any sink is live (virtual camera, NDI, a
window, Syphon, Spout), offline otherwise.
"""

from __future__ import annotations

import collections
import logging
import queue
import threading
import time
from contextlib import ExitStack
from dataclasses import dataclass, field

import cv2
import numpy as np
import torch

from . import checkpoint, pixfmt
from .device import resolve_device
from .engine import FeedbackEngine
from .mailbox import Mailbox
from .modulation import Modulation
from .params import ActionQueue, ParamStore, RateLimitedLog, build_registry
from .presets import PresetBank, SnapshotBank, factory_presets_dir, handle_action
from .sinks import SinkError, open_sink
from .sources import SourceError, devices, open_source
from .tempo import Tempo

log = logging.getLogger(__name__)

DEFAULT_SINK = "file:ffvj.mp4"


@dataclass
class RunConfig:
    source: str = "auto"  # a camera when one is present, else the built-in generator
    source_options: dict = field(default_factory=dict)  # e.g. camera: width, height, camera_fps, mjpg
    sinks: list[str] = field(default_factory=lambda: [DEFAULT_SINK])
    width: int = 640
    height: int = 360
    fps: float = 30.0
    frames: int | None = None  # stop after this many frames (None: until stopped)
    model: str | None = None  # bundled name or checkpoint path; None: the default model
    device: str = "auto"
    seed: int = 0
    pace: str = "auto"  # auto | realtime | offline
    map_image: str | None = None
    presets_dir: str | None = None  # None: ~/.config/ffvj/presets
    compile: bool = False  # torch.compile the fused kernels (a few seconds at start-up, faster after)
    # Sinks' own picture formats (4:2:0) made on the engine's device ("on"), or RGB for every sink,
    # which converts it itself on the CPU ("off": the file sink through libswscale, a 4:2:0 virtual
    # camera with the same arithmetic as pixfmt). On a GPU "on" halves the readback; on the 2-core CPU
    # it is still 0.75 ms a frame cheaper than RGB plus libswscale (docs/PERFORMANCE.md).
    device_formats: str = "on"
    precision: str = "fp32"  # the engine's: fp32, or fp16 / bf16 (for GPUs; see engine.PRECISIONS)
    status_interval: float = 2.0


@dataclass
class Controls:
    """What the control surfaces (OSC, MIDI, clock) share with the render loop. Control threads
    write ``store``, post to ``actions`` and tap ``tempo``; everything else is the loop's own."""

    store: ParamStore
    actions: ActionQueue = field(default_factory=ActionQueue)
    tempo: Tempo = field(default_factory=Tempo)
    presets: PresetBank | None = None
    modulation: Modulation | None = None
    snapshots: SnapshotBank = field(default_factory=SnapshotBank)

    @classmethod
    def for_levels(cls, levels: int, presets_dir: str | None = None, seed: int = 0) -> "Controls":
        store = ParamStore(build_registry(levels))
        return cls(store=store, presets=PresetBank(store, presets_dir, factory=factory_presets_dir()),
                   modulation=Modulation(store.registry, seed=seed))


@dataclass
class RunStats:
    frames: int = 0
    late: int = 0  # frames whose deadline passed before they were rendered (realtime only)
    sink_dropped: int = 0  # frames a slow sink never got (newest frame won)
    reseeds: int = 0
    seconds: float = 0.0
    # The last few hundred frames only: a show runs for hours.
    engine_ms: collections.deque = field(default_factory=lambda: collections.deque(maxlen=300))
    latency_ms: collections.deque = field(default_factory=lambda: collections.deque(maxlen=300))

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        eng = np.array(self.engine_ms or [0.0])
        lat = np.array(self.latency_ms or [0.0])
        return (f"frame {self.frames} | {self.fps:.1f} fps | engine {np.median(eng):.1f} ms "
                f"(p99 {np.percentile(eng, 99):.1f}) | late {self.late} | sink drops {self.sink_dropped} | "
                f"latency {np.median(lat):.0f} ms | reseeds {self.reseeds}")


def device_formats(cfg: RunConfig) -> bool:
    """Whether sinks get their preferred picture format from the engine (see ``RunConfig``)."""
    if cfg.device_formats not in ("on", "off"):
        raise ValueError(f"device_formats must be on or off, not {cfg.device_formats!r}")
    return cfg.device_formats == "on"


class SinkWorker:
    """A sink on its own thread behind a newest-wins mailbox (realtime mode)."""

    def __init__(self, sink, spec: str):
        self.sink, self.spec = sink, spec
        self.mailbox: Mailbox = Mailbox()
        self.failed: str | None = None
        self.sent_at: float = 0.0
        self.latency_ms: float = 0.0
        self._thread = threading.Thread(target=self._loop, name=f"sink {spec}", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while True:
            item = self.mailbox.get()
            if item is None:
                return
            frame, index, t_input, fmt = item
            try:
                self.sink.send(frame, index, fmt)
            except SinkError as exc:
                self.failed = str(exc)
                log.error("sink %s failed and was dropped: %s", self.spec, exc)
                return
            self.latency_ms = (time.perf_counter() - t_input) * 1000

    def send(self, frame: np.ndarray, index: int, t_input: float, fmt: str) -> None:
        self.mailbox.put((frame, index, t_input, fmt))

    @property
    def dropped(self) -> int:
        return self.mailbox.dropped

    def close(self) -> None:
        self.mailbox.close()
        self._thread.join(timeout=5)


class FileWorker:
    """Preset files are read and written on this thread, not the render loop: a slow disk (a USB
    stick) must not stall the picture. Bounded: a flood of requests drops the newest, logged."""

    def __init__(self, maxsize: int = 16):
        self._queue: queue.Queue = queue.Queue(maxsize)
        self._warn = RateLimitedLog(log, interval=5.0)
        self._thread = threading.Thread(target=self._loop, name="ffvj files", daemon=True)
        self._thread.start()

    def submit(self, fn, *args) -> None:
        try:
            self._queue.put_nowait((fn, args))
        except queue.Full:
            self._warn.warning("full", "preset request dropped: %d still waiting for the disk", self._queue.qsize())

    def _loop(self) -> None:
        while (item := self._queue.get()) is not None:
            fn, args = item
            try:
                fn(*args)  # handle_action logs a bad request itself; this catches the unforeseen
            except Exception:  # noqa: BLE001 — one failed request must not end the worker
                log.exception("preset request %r failed", args[0] if args else fn)

    def close(self) -> None:
        try:
            self._queue.put(None, timeout=5)
        except queue.Full:
            return  # the disk is stuck; the thread is a daemon and dies with the process
        self._thread.join(timeout=5)


def frame_to_tensor(frame: np.ndarray, device: torch.device) -> torch.Tensor:
    """RGB uint8 (H, W, 3) → (1, 3, H, W) float in [-1, 1] on the device (uploaded as bytes)."""
    t = torch.from_numpy(frame).to(device, non_blocking=True)
    return t.permute(2, 0, 1)[None].float().mul_(2 / 255).sub_(1)


def open_show_source(spec: str, size: tuple[int, int], fps: float, options: dict | None = None):
    """``auto``: the first camera that opens, else the built-in generator (a show always has a picture)."""
    options = options or {}
    if spec != "auto":
        return open_source(spec, size=size, fps=fps, **options)
    for index in devices():
        try:
            return open_source(f"camera:{index}", size=size, fps=fps, **options)
        except SourceError as exc:
            log.warning("camera %d did not open (%s); trying the next", index, exc)
    log.info("no camera found: using the built-in generator")
    return open_source("generator", size=size, fps=fps)


def _close_quietly(spec: str, sink) -> None:
    # A sink that already failed may fail again while flushing (a full disk): say so, close the rest.
    # (Sink.close turns any backend failure into SinkError.)
    try:
        sink.close()
    except SinkError as exc:
        log.error("sink %s did not close cleanly: %s", spec, exc)


def _guarded(warn: RateLimitedLog, what: str, fn, *args):
    """One stage of the per-frame control work: a failure is logged (rate-limited) and the show goes
    on with that stage skipped this frame. Returns the stage's result, or None when it failed."""
    try:
        return fn(*args)
    except Exception as exc:  # noqa: BLE001 — a bug in one control stage must not stop the show
        warn.warning(what, "%s failed this frame (%s: %s); the show goes on", what, type(exc).__name__, exc)
        return None


def _control_frame(controls: Controls, engine: FeedbackEngine, files: FileWorker, pollers, reporters,
                   source_tensor, dt: float, now: float, warn: RateLimitedLog) -> dict[str, float]:
    """This frame's φ: due OSC bundles, queued actions, preset morphs, smoothing, then LFOs on top.
    Values the LFOs moved (or just released) are reported to the surfaces, rate-capped there. Each
    stage is guarded on its own, so one failing surface does not hold up the others."""
    for poll in pollers:
        _guarded(warn, "OSC/MIDI poll", poll)
    for name, args in controls.actions.drain():
        if name.startswith("preset."):  # file work: off the render loop (the morph itself runs here)
            files.submit(handle_action, name, args, None, controls.presets, None)
        else:
            _guarded(warn, f"action {name}", handle_action, name, args, engine, controls.presets,
                     controls.snapshots, source_tensor)
    if controls.presets is not None:
        _guarded(warn, "preset morph", controls.presets.update, dt)
    phi = controls.store.frame(dt)
    if controls.modulation is not None:
        modulated = _guarded(warn, "LFOs", controls.modulation.apply, phi, controls.tempo.beat(now), now)
        if modulated is not None:
            phi = modulated
            # A released parameter reports its target (where it is going), not a half-smoothed value.
            changed = {**{n: controls.store.get(n) for n in controls.modulation.released},
                       **controls.modulation.modulated}
            for report in reporters:
                for name, value in changed.items():
                    _guarded(warn, "feedback", report, name, value)
    return phi


def resolve_pace(cfg: RunConfig, source, sinks) -> str:
    if cfg.pace != "auto":
        return cfg.pace
    live = getattr(source, "live", False) or any(getattr(s, "live", True) for s in sinks)
    return "realtime" if live else "offline"


def run(cfg: RunConfig, controls: Controls | None = None, stop: threading.Event | None = None,
        on_status=None, services=()) -> RunStats:
    """Run the show until ``stop`` is set or ``cfg.frames`` are rendered. Start-up errors raise
    (checkpoint, source, sink, device); once running, problems are logged and the show goes on.

    ``services`` are control surfaces (OSC server, MIDI input, …): context managers entered after the
    outputs open; any with a ``poll()`` method is polled once per frame (timetagged OSC bundles, which
    are due by the wall clock)."""
    stop = stop or threading.Event()
    device = resolve_device(cfg.device)
    model, _card = checkpoint.load(cfg.model, device)
    controls = controls or Controls.for_levels(model.levels, cfg.presets_dir, cfg.seed)
    map_image = None
    if cfg.map_image:
        from .data import read_image
        grey = read_image(cfg.map_image).mean(axis=2, dtype=np.float32) / 255
        map_image = torch.from_numpy(grey)[None, None]
    engine = FeedbackEngine(model, cfg.width, cfg.height, device, seed=cfg.seed, map_image=map_image,
                            compile=cfg.compile, precision=cfg.precision)
    size = (cfg.width, cfg.height)
    warn = RateLimitedLog(log, interval=5.0)
    stats = RunStats()

    native = device_formats(cfg)
    with ExitStack() as stack:
        source = stack.enter_context(open_show_source(cfg.source, size, cfg.fps, cfg.source_options))
        sinks = []
        for spec in cfg.sinks:
            sink = open_sink(spec, size=size, fps=cfg.fps)
            stack.callback(_close_quietly, spec, sink)
            sinks.append((spec, sink))
        pace = resolve_pace(cfg, source, [s for _, s in sinks])
        threaded = pace == "realtime"
        if threaded:
            source.follow_wall_clock()  # a video loop plays at its own rate, not one frame per frame
        workers = [SinkWorker(s, spec) for spec, s in sinks if threaded and s.own_thread]
        for w in workers:
            stack.callback(w.close)  # runs before the sinks close (ExitStack is LIFO)
        inline = [(spec, s) for spec, s in sinks if not (threaded and s.own_thread)]
        # The picture format each sink gets: its own (4:2:0 for H.264 files and most virtual
        # cameras), converted on the engine's device (see RunConfig.device_formats).
        wanted = {id(s): s.preferred_format if native else pixfmt.RGB24 for _, s in sinks}
        formats = sorted(set(wanted.values())) or [pixfmt.RGB24]
        files = FileWorker()
        stack.callback(files.close)
        entered = [stack.enter_context(svc) for svc in services]
        pollers = [svc.poll for svc in entered if hasattr(svc, "poll")]
        reporters = [svc.report for svc in entered if hasattr(svc, "report")]
        statuses = [svc.status for svc in entered if hasattr(svc, "status")]
        log.info("running %s → engine (%d levels, %s, %dx%d) → %s, %s", source.spec, model.levels, device,
                 cfg.width, cfg.height, ", ".join(cfg.sinks), pace)

        period = 1.0 / cfg.fps
        start = time.perf_counter()
        start_clock = time.monotonic()
        if pace == "offline":
            controls.tempo.start(start_clock)  # beat 0 on frame 0: an offline render is repeatable
        last_status = start
        last_frame = None
        slot = 0  # the schedule slot of the next frame: slot n is due at start + n·period
        prev_slot = -1
        while not stop.is_set() and (cfg.frames is None or stats.frames < cfg.frames):
            if pace == "offline":
                frame_slot = stats.frames
            else:
                due = start + slot * period
                wait = due - time.perf_counter()
                if wait > 0 and stop.wait(wait):
                    break
                behind = int((time.perf_counter() - due) / period)
                if behind > 0:  # we missed whole slots: skip them instead of rushing to catch up
                    stats.late += behind
                    slot += behind
                frame_slot = slot
                slot += 1
            # Time moves by the slots this frame advanced, so morphs and smoothing keep real time
            # even when slots were skipped.
            dt = period * max(1, frame_slot - prev_slot)
            prev_slot = frame_slot

            t_input = time.perf_counter()
            try:
                frame = source.read()
            except (OSError, RuntimeError, ValueError, cv2.error) as exc:
                warn.warning("source", "source %s failed (%s); showing the last frame", cfg.source, exc)
                frame = None
            if frame is not None:
                last_frame = frame
            source_tensor = frame_to_tensor(last_frame, device) if last_frame is not None else None

            # The frame clock: wall time when live, slot × period when rendering offline, so LFOs
            # land on the same frames whatever the machine's speed.
            now = time.monotonic() if pace == "realtime" else start_clock + frame_slot * period
            phi = _control_frame(controls, engine, files, pollers, reporters, source_tensor, dt, now, warn)

            t0 = time.perf_counter()
            engine.step(phi, source_tensor)
            controls.snapshots.update(engine, dt)
            pictures = {fmt: engine.readback(fmt) for fmt in formats}  # one conversion + copy per format
            stats.engine_ms.append((time.perf_counter() - t0) * 1000)
            stats.reseeds = engine.guard.recoveries

            for w in workers:
                if not w.failed:
                    w.send(pictures[wanted[id(w.sink)]], frame_slot, t_input, wanted[id(w.sink)])
            for spec, sink in list(inline):
                try:
                    sink.send(pictures[wanted[id(sink)]], frame_slot, wanted[id(sink)])
                except SinkError as exc:
                    log.error("sink %s failed and was dropped: %s", spec, exc)
                    inline.remove((spec, sink))
            stats.sink_dropped = sum(w.dropped for w in workers)
            stats.latency_ms.append(max([w.latency_ms for w in workers] + [(time.perf_counter() - t_input) * 1000]))
            stats.frames += 1

            now = time.perf_counter()
            stats.seconds = now - start
            if now - last_status >= cfg.status_interval:
                last_status = now
                parts = [_guarded(warn, "status", status) or "status ?" for status in statuses]
                (on_status or log.info)(" | ".join([stats.summary()] + parts))
        stats.seconds = time.perf_counter() - start
    log.info("stopped: %s", stats.summary())
    return stats

