"""The one place where a show is wired: source → engine → sinks, and the control surfaces beside them.

    source.read() ──newest frame──▶ engine.step(φ) ──one readback per format──▶ every sink
                                         ▲
    OSC · OSCQuery · MIDI · web ──▶ Controls ──┘ φ once per frame (Controls.next_phi)
                                     the web page's preview ◀── a readback it already has, ≤ 15 fps

``run(RunConfig(...))`` reads the model once, makes or checks the controls, sets the starting values,
opens the source, the sinks and the surfaces (any problem there raises ``StartupError``, one line that
names it), then renders until ``stop`` is set or ``frames`` are done. Once running, problems are
logged and the show goes on; an error that still escapes the loop is a bug and says what it is.

One render loop owns the engine. Control threads only write the controls; the loop takes one
snapshot of φ per frame. Pacing is on an absolute schedule (start + n·period), so a slow frame is
caught up, not accumulated. Two modes:

* ``realtime``: paced to ``fps``; every sink gets its own thread behind a one-slot mailbox (newest
  frame wins), so a slow sink drops frames instead of stalling the show (``media.outputs``).
* ``offline``: as fast as possible, every frame handed to every sink in order (a render to a file).

What the sinks get is colour-graded (``engine.grade``, off by default: ``grade.mix``), then passes
the flash limiter (``engine.flashes``, on by default: ``output.flash_limit``), which keeps the output
within 3 flashes in any second.

``auto`` picks realtime when the source is a camera or any sink is live (virtual camera, NDI, a
window, Syphon, Spout), offline otherwise.
"""

from __future__ import annotations

import collections
import enum
import json
import logging
import math
import threading
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch

from . import __version__
from .audio.inputs import AudioError, open_audio
from .control.controls import Controls
from .control.link import LinkClock, LinkUnavailable
from .control.midi.learn import Learner, default_learn_file
from .control.midi.mapping import MappingError, default_mappings, resolve_mapping
from .control.midi.ports import MidiConfig, MidiError, MidiInput
from .control.model_switch import ModelSwitcher, check_model_name
from .control.osc import OscConfig, OscServer
from .control.oscquery import OscQueryServer
from .control.params import build_registry, close_matches
from .control.presets import PresetError
from .control.service import Service, check_ports
from .engine import pixfmt
from .engine.device import ThreadTuner, resolve_device, use_cpu_threads
from .engine.engine import PRECISIONS, FeedbackEngine
from .engine.flashes import FlashLimiter
from .engine.grade import grade
from .media.base import SinkUnavailable, SourceError
from .media.outputs import Outputs
from .media.sources import open_source
from .model import checkpoint
from .model.data import read_luminance
from .options import (
    check_choices,
    device_option,
    key_value,
    model_option,
    option,
    positive_int,
    settings_option,
    size,
)
from .phi import MAP_KINDS, Phi
from .reporting import RateLimitedLog
from .showfile import SNAPSHOTS, ShowRecorder
from .web import WebConfig, WebServer

log = logging.getLogger(__name__)

DEFAULT_SINK = "file:ffvj.mp4"


class Pace(str, enum.Enum):
    """How a show keeps time (see the module docstring)."""

    AUTO = "auto"
    REALTIME = "realtime"
    OFFLINE = "offline"


@dataclass
class RunConfig:
    """One show. The surfaces are off unless asked for (``osc``, ``midi``, ``web``): a library render opens
    no ports; the command line turns them on. Each field with an ``option`` is also ``ffvj run``'s flag
    (``ffvj.options``)."""

    source: str = option("auto", "auto (a camera when present, else the generator) or NAME[:ARG]: generator[:PATTERN], "
                                 "video:PATH, image:PATH, camera[:INDEX]", metavar="SPEC")
    source_options: dict = option(
        help="an option for the source, repeatable: camera width=1280 height=720 camera_fps=60 mjpg=1; generator "
             "seed=N speed=X; video loop=0", default_factory=dict, flag="--source-option", metavar="KEY=VALUE",
        parse=key_value, repeat=True, collect=dict)
    sinks: list[str] = option(help=f"NAME[:ARG]: file:PATH.mp4, virtualcam[:DEVICE], ndi[:NAME], window, syphon, spout, "
                                   f"null; lN:SPEC shows feature level N; repeatable (default: {DEFAULT_SINK})",
                              default_factory=lambda: [DEFAULT_SINK], flag="--sink", metavar="SPEC", repeat=True,
                              collect=list)
    width: int = option(640, "the picture's size", flag="--size", parse=size, joins=("width", "height"))
    height: int = 360
    fps: float = option(30.0, "frames per second")
    frames: int | None = option(None, "stop after N frames (default: run until stopped)", parse=positive_int)
    model: str | None = model_option()  # None: the default model
    device: str = device_option()
    seed: int = option(0, "the seed of the noise and the first picture")
    pace: Pace = option(Pace.AUTO, "realtime: paced to --fps, slow sinks drop frames; offline: as fast as possible, "
                                   "every frame to every sink; auto: realtime for cameras and live sinks")
    map_image: str | None = option(None, "picture for map.kind=image", metavar="PATH")
    presets_dir: str | None = option(None, "where presets live (default: ~/.config/ffvj/presets)", metavar="DIR")
    preset: str | None = option(None, "recall this preset at start, before --set", metavar="NAME")
    settings: dict = settings_option("set a parameter at start; strict: out of range is an error")
    compile: bool = option(False, "compile the engine's fused kernels with torch.compile (seconds at start-up, "
                                  "faster after)")
    # Sinks' own picture formats (4:2:0) made on the engine's device ("on"), or RGB for every sink,
    # which converts it itself on the CPU ("off": the file sink through libswscale, a 4:2:0 virtual
    # camera with the same arithmetic as pixfmt). On a GPU "on" halves the readback; on the 2-core CPU
    # it is still 0.75 ms a frame cheaper than RGB plus libswscale (docs/PERFORMANCE.md).
    device_formats: str = option("on", "on: make each sink's own picture format (4:2:0 for files and virtual "
                                       "cameras) on the engine's device; off: RGB to every sink, which converts it "
                                       "itself on the CPU", choices=("on", "off"))
    precision: str = option("fp32", "the engine's precision: fp16/bf16 halve its memory traffic on GPUs (slower on "
                                    "most CPUs); sampling grids stay fp32", choices=tuple(PRECISIONS))
    # CPU threads: a number fixes them; None lets a live show on the CPU find the fastest count as it
    # runs (engine.device.ThreadTuner: beside OBS, fewer threads than cores are faster). Offline
    # renders keep torch's count, so they stay repeatable frame for frame.
    threads: int | None = option(None, "fix the engine's CPU threads (default: a live show finds the fastest count "
                                       "as it runs, trying one per core and 1: beside OBS on 2 cores, 1 thread "
                                       "renders 55 fps and 2 only 23)", parse=positive_int)
    osc: OscConfig | None = None  # None: no OSC (and no OSCQuery)
    midi: MidiConfig | None = None  # None: no MIDI
    web: WebConfig | None = None  # None: no web page
    audio: str | None = option(None, "hear music: file:PATH (a track analysed in step with the frames: an offline "
                                     "render hears what a live show would), an input device by index or name ('ffvj "
                                     "devices' lists them) or jack:[PORT,...]; the audio<k>.* parameters let it move "
                                     "any parameter", metavar="SPEC")
    audio_bands: int = option(8, "how many bands the analysis splits the music into", parse=positive_int)
    snapshots: str | None = option(None, "keep the 8 snapshot slots in FILE: loaded at start when it exists, saved on "
                                         "every store and at the end (safetensors, written atomically)",
                                   metavar="FILE")
    record_show: str | None = option(None, "record the show as its inputs into this new folder (the model, the seed, "
                                           "every change and action by frame, the source frames, the music's "
                                           "features): ffvj render re-renders it at any size (docs/SHOWFILE.md)",
                                     metavar="PATH")
    link: bool = option(False, "join an Ableton Link session: its tempo and bar lead ffvj's, a tapped or set tempo "
                               "leads it (pip install 'ffvj[link]': Link is GPL, an optional extra)")
    status_interval: float = 2.0
    status_format: str = option("text", "the status the log gets every few seconds: a line to read, or json: "
                                        "RunStats.figures as one object a line (the surfaces' figures among them), "
                                        "for a monitor", choices=("text", "json"))

    def __post_init__(self) -> None:
        check_choices(self)


class StartupError(RuntimeError):
    """The show could not start; the message is one line naming the problem (and, mostly, the fix)."""


# What opening a show raises for a problem of the user's or the machine's (not a bug in ffvj).
_STARTUP_PROBLEMS = (AudioError, LinkUnavailable, SinkUnavailable, SourceError, MidiError, MappingError, PresetError, checkpoint.CheckpointError,
                     OSError, ValueError, ImportError)


RECENT_SECONDS = 2.0  # the window of RunStats.fps_now
FIRST_FRAME_WARNING = 5.0  # seconds without a first frame before the show says why
SLOW_AFTER = 5.0  # seconds into a live show before a rate far below --fps is said (rate-limited)


@dataclass
class RunStats:
    frames: int = 0
    slots: int = 0  # schedule slots that went by (realtime; offline every frame is a slot)
    late: int = 0  # slots skipped because the show was behind: no frame was made for them
    sink_dropped: int = 0  # frames a slow sink never got (newest frame won)
    reseeds: int = 0
    nudges: int = 0  # times the guard nudged a frozen picture back to life
    flash_limited: int = 0  # frames the flash limiter softened
    seconds: float = 0.0
    # The last few hundred frames only: a show runs for hours.
    engine_ms: collections.deque = field(default_factory=lambda: collections.deque(maxlen=300))
    threads: int | None = None  # the CPU threads a live show's tuner chose
    sinks_failed: list = field(default_factory=list)  # "spec: why" of each sink dropped mid-show
    latency_ms: collections.deque = field(default_factory=lambda: collections.deque(maxlen=300))
    frame_times: collections.deque = field(default_factory=lambda: collections.deque(maxlen=1024))  # perf_counter
    loop_ended: bool = False  # the render loop is done (the show is closing its outputs, or closed)
    surfaces: dict = field(default_factory=dict)  # the surfaces' own figures (Service.figures), as of the last status
    record_ms: float | None = None  # what recording the show (--record-show) cost the render loop a frame

    @property
    def fps(self) -> float:
        """Frames a second over the whole run."""
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    @property
    def fps_now(self) -> float:
        """Frames a second over the last ``RECENT_SECONDS`` (what the audience sees now; a show runs for hours)."""
        times = self.frame_times
        if len(times) < 2:
            return 0.0
        newest = times[-1]
        recent = [t for t in times if newest - t <= RECENT_SECONDS]
        return (len(recent) - 1) / (newest - recent[0]) if len(recent) > 1 and newest > recent[0] else 0.0

    def figures(self) -> dict:
        """The status line's figures as numbers (the web page's status panel, ``--status-format json``), the
        surfaces' own (``osc_packets``, ``midi_messages``, ``web_pages``, ...) among them."""
        eng = np.array(self.engine_ms or [0.0])
        return {"frame": self.frames, "fps": round(self.fps, 1), "fps_now": round(self.fps_now, 1),
                "engine_ms": round(float(np.median(eng)), 2), "engine_p99_ms": round(float(np.percentile(eng, 99)), 2),
                "late": self.late, "slots": self.slots, "sink_dropped": self.sink_dropped,
                "latency_ms": round(float(np.median(self.latency_ms or [0.0])), 1), "reseeds": self.reseeds,
                "nudges": self.nudges, "flash_limited": self.flash_limited, "threads": self.threads,
                "sinks_failed": list(self.sinks_failed), **self.surfaces}

    def summary(self) -> str:
        f = self.figures()
        return (f"frame {f['frame']} | {f['fps']:.1f} fps (now {f['fps_now']:.1f}) | engine {f['engine_ms']:.1f} ms "
                f"(p99 {f['engine_p99_ms']:.1f}) | late {f['late']} of {f['slots']} slots | "
                f"sink drops {f['sink_dropped']} | latency {f['latency_ms']:.0f} ms | reseeds {f['reseeds']}, "
                f"nudges {f['nudges']} | flash-limited {f['flash_limited']}"
                + (f" | threads {f['threads']}" if f['threads'] is not None else ""))


def run(cfg: RunConfig, controls: Controls | None = None, stop: threading.Event | None = None,
        on_status=None, services: list[Service] = (), on_frame=None, stats: RunStats | None = None) -> RunStats:
    """Run the show until ``stop`` is set or ``cfg.frames`` are rendered (see the module docstring).
    ``controls``: made for the model when None; ``services``: surfaces of the caller's own, run
    beside those ``cfg`` asks for. ``on_frame(slot, picture, source, engine)``, if given, sees every
    frame on the render loop once the sinks have it: the RGB picture the audience sees (the one
    readback), the source frame (RGB, or None) and the engine (its states); it must be quick.
    ``stats``: the RunStats to fill (the bench passes one that keeps every step's time)."""
    stop = stop or threading.Event()
    with ExitStack() as stack:
        try:
            show = _Show(cfg, controls, list(services), stack)
        except _STARTUP_PROBLEMS as exc:
            raise StartupError(str(exc)) from exc
        return show.render(stop, on_status, on_frame, stats or RunStats())


def surfaces(cfg: RunConfig, controls: Controls) -> list[Service]:
    """The control surfaces ``cfg`` asks for, in start order (they close in reverse)."""
    registry = controls.store.registry
    out: list[Service] = []
    if cfg.midi is not None:
        mappings = [resolve_mapping(m, registry) for m in cfg.midi.mappings] or default_mappings(registry)
        if controls.learner is None:  # (a learner of the caller's own saves where the caller says)
            controls.learner = Learner(registry, controls.store)
            controls.learner.save_each_time(cfg.midi.learn_file or default_learn_file())
        out.append(MidiInput(controls, mappings, ports=cfg.midi.ports, virtual_name=cfg.midi.virtual_name or None,
                             backend=cfg.midi.backend))
    osc = None
    if cfg.osc is not None:
        osc = OscServer(controls, cfg.osc)
        out.append(osc)
        if cfg.osc.query_port is not None:
            out.append(OscQueryServer(osc, port=cfg.osc.query_port, mdns=cfg.osc.mdns))
    if cfg.web is not None:  # the page admits whom OSC admits (--osc-allow), as OSCQuery does
        out.append(WebServer(controls, cfg.web, allow=osc.allow if osc is not None else None,
                             size=(cfg.width, cfg.height), fps=cfg.fps))
    return out


def resolve_pace(cfg: RunConfig, source, sinks) -> Pace:
    """``auto``: realtime when the source is a camera or any sink is live, offline otherwise."""
    if cfg.pace != Pace.AUTO:
        return cfg.pace
    live = getattr(source, "live", False) or any(getattr(s, "live", True) for s in sinks)
    return Pace.REALTIME if live else Pace.OFFLINE


class _Schedule:
    """When each frame is due. Live (``realtime``): an absolute schedule, slot n at start + n·period, so a
    slow frame is caught up, not accumulated, and whole slots missed are skipped (counted late). Offline:
    one slot per frame, as fast as it goes. ``dt`` is the time this frame moves the controls by: the
    slots it advanced, so morphs and smoothing keep real time even when slots were skipped."""

    def __init__(self, pace: Pace, fps: float, stop: threading.Event):
        self.pace, self.period, self.stop = pace, 1.0 / fps, stop
        self.start = time.perf_counter()
        # Offline, the clock starts at 0: every reading is then slot × period exactly, and what is reckoned
        # from it (the audio's position, the beat, the LFOs' steps) is the same in every render. From an
        # arbitrary start (the host's uptime) the differences kept its rounding, and a frame that falls
        # exactly on an audio hop's end (every fourth at 30 fps) took one hop or the other by chance.
        self.start_clock = time.monotonic() if pace == Pace.REALTIME else 0.0
        self.slot = 0  # the slot of the next frame (live)
        self.previous = -1
        self.dt = self.period

    def next_slot(self, stats: RunStats) -> int | None:
        """The next frame's slot, once it is due; None when stopped while waiting for it."""
        if self.pace == Pace.OFFLINE:
            slot = stats.frames
        else:
            due = self.start + self.slot * self.period
            wait = due - time.perf_counter()
            if wait > 0 and self.stop.wait(wait):
                return None
            behind = int((time.perf_counter() - due) / self.period)
            if behind > 0:  # we missed whole slots: skip them instead of rushing to catch up
                stats.late += behind
                self.slot += behind
            slot = self.slot
            self.slot += 1
        stats.slots = slot + 1
        self.dt = self.period * max(1, slot - self.previous)
        self.previous = slot
        return slot

    def clock(self, slot: int) -> float:
        """The frame clock: wall time when live, slot × period when rendering offline, so LFOs land on
        the same frames whatever the machine's speed."""
        return time.monotonic() if self.pace == Pace.REALTIME else self.start_clock + slot * self.period

    def now(self) -> float:
        """The clock now: the wall's when live, the frame under way's offline."""
        return self.clock(max(0, self.previous))


class _Show:
    """A show that has opened: everything ``render`` needs, closed by the ExitStack it was opened on."""

    def __init__(self, cfg: RunConfig, controls: Controls | None, services: list[Service], stack: ExitStack):
        self.cfg = cfg
        device = resolve_device(cfg.device)
        use_cpu_threads(cfg.threads)
        model, card = checkpoint.load(cfg.model, device)  # the card is read here, once
        self.controls = controls = controls or Controls.for_levels(model.levels, cfg.presets_dir, cfg.seed)
        _check_fit(controls, model.levels, cfg.model)
        stack.callback(controls.close)  # finishes preset files still being written
        _starting_values(cfg, controls)
        look_model = controls.presets.last_model if cfg.preset and controls.presets is not None else None
        if look_model is not None and cfg.model is None and look_model != checkpoint.DEFAULT_MODEL:
            try:  # the preset's look is made for another model: start on it (--model would override)
                check_model_name(look_model)
            except ValueError as exc:
                raise ValueError(f"--preset {cfg.preset}: meta.model: {exc}") from None
            model, card = checkpoint.load(look_model, device)
            _check_fit(controls, model.levels, look_model)
        map_image = read_luminance(cfg.map_image) if cfg.map_image else None
        self.engine = FeedbackEngine(model, cfg.width, cfg.height, device, seed=cfg.seed, map_image=map_image,
                                     compile=cfg.compile, precision=cfg.precision, scales=checkpoint.scales(card),
                                     views=checkpoint.views(card))
        if cfg.snapshots and controls.snapshots is not None:
            controls.snapshots_file = cfg.snapshots
            if Path(cfg.snapshots).expanduser().exists():
                controls.snapshots.load(cfg.snapshots, self.engine)  # a bad file: one line, at start-up
            # At the end (before the file worker is closed: callbacks run last first) the slots are saved.
            stack.callback(controls.save_snapshots)
        if controls.models is None:  # the model action: bundled models, loaded on this show's device
            controls.models = ModelSwitcher(model.levels, str(device))
        if controls.models.current is None:  # what the show started on (the web page shows it)
            controls.models.current = cfg.model or look_model or checkpoint.DEFAULT_MODEL
        self.recorder = None
        if cfg.record_show:  # (the folder checked now; written once everything else has opened)
            ShowRecorder.check_path(cfg.record_show)
        # The surfaces are made (mapping files read, OSC options checked) before anything opens, so a
        # typo there never opens a camera or an output first; they start once the outputs are open.
        services = surfaces(cfg, controls) + services
        for svc in services:
            if not isinstance(svc, Service):
                raise ValueError(f"{svc!r} is not an ffvj.control.service.Service: a surface needs its lifecycle "
                                 "and the render loop's hooks (poll, report, status)")
        check_ports(listen for svc in services if not svc.started for listen in svc.listens())  # every busy one
        reserved = {"size", "fps"} & set(cfg.source_options)
        if reserved:
            raise ValueError(f"source option(s) {', '.join(sorted(reserved))}: set them with --size and --fps")
        size = (cfg.width, cfg.height)
        if cfg.audio:  # (a missing file fails here; a missing device is said once and looked for)
            controls.audio = open_audio(cfg.audio, cfg.audio_bands)
            stack.callback(controls.audio.close)
        self.source = stack.enter_context(open_source(cfg.source, size, cfg.fps, **cfg.source_options))
        self.outputs = stack.enter_context(Outputs(cfg.sinks, size, cfg.fps, model.levels, cfg.device_formats == "on",
                                                   controls.audio))
        self.pace = resolve_pace(cfg, self.source, self.outputs.sinks)
        self.outputs.start(threaded=self.pace == Pace.REALTIME)
        if self.pace == Pace.REALTIME:
            self.source.follow_wall_clock()  # a video loop plays at its own rate, not one frame per frame
        if cfg.link and self.pace == Pace.REALTIME:
            controls.link = LinkClock(controls.tempo.bpm)
            stack.callback(controls.link.close)
            log.info("in an Ableton Link session (%d other peers now)", controls.link.peers)
        elif cfg.link:
            log.warning("--link: an offline render keeps its own clock (repeatable); Link is for a live show")
        self.services = [stack.enter_context(svc) for svc in services]
        if cfg.record_show:
            self._record(cfg, card, stack)
        # The sinks close first, whatever a service does while closing: a recording is finalised.
        stack.callback(self.outputs.__exit__, None, None, None)
        log.info("running %s → engine (%d levels, %s, %dx%d) → %s, %s", self.source.spec, model.levels, device,
                 cfg.width, cfg.height, ", ".join(cfg.sinks), self.pace.value)

    def _record(self, cfg: RunConfig, card: dict, stack: ExitStack) -> None:
        """The show file (``--record-show``): its header now, every frame as it is shown."""
        controls = self.controls
        self.recorder = controls.journal = ShowRecorder(cfg.record_show, self._show_header(card), cfg.fps)
        stack.callback(setattr, controls, "journal", None)
        stack.callback(self.recorder.close)
        if controls.snapshots is not None and controls.snapshots.occupied():  # slots the show began with
            controls.snapshots.save(self.recorder.path / SNAPSHOTS)
        if controls.audio is not None:  # (a tap is made before the input starts: the render loop starts it)
            self.recorder.hear(controls.audio.tap())

    def _show_header(self, card: dict) -> dict:
        """What a show file needs besides its frames to render the show again (``showfile``)."""
        cfg = self.cfg
        return {"ffvj": __version__, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "model": self.controls.models.current, "model_sha256": card.get("weights_sha256"),
                "levels": self.engine.model.levels, "seed": cfg.seed, "width": cfg.width, "height": cfg.height,
                "fps": cfg.fps, "precision": cfg.precision, "source": cfg.source, "audio": cfg.audio,
                "map_image": str(Path(cfg.map_image).resolve()) if cfg.map_image else None,
                "start": self.controls.store.targets()}

    def render(self, stop: threading.Event, on_status, on_frame, stats: RunStats) -> RunStats:
        """Frame after frame until ``stop`` or ``cfg.frames``: the source's newest frame, this frame's φ, one
        step of the engine, the pictures out (sinks, ``on_frame``, previews), the figures and status."""
        schedule = _Schedule(self.pace, self.cfg.fps, stop)
        self._begin(schedule, on_frame)
        first_frame = self._warn_if_no_first_frame(stats)
        while not stop.is_set() and (self.cfg.frames is None or stats.frames < self.cfg.frames):
            if (slot := schedule.next_slot(stats)) is None:
                break
            t_input = time.perf_counter()
            source = self._read_source()
            now = schedule.clock(slot)
            phi = self.controls.next_phi(self.engine, schedule.dt, now, self.services)
            if self.recorder is not None:
                self.recorder.frame(slot, schedule.dt, now, self.controls.beat, self.controls.store.advanced,
                                    self.controls.heard)
            pictures, shown = self._draw(phi, source, schedule.dt, stats)
            self._deliver(pictures, shown, phi, slot, t_input, on_frame, stats)
            self._report(stats, on_status)
        first_frame.cancel()
        stats.loop_ended = True
        if self.recorder is not None:
            stats.record_ms = round(self.recorder.loop_seconds / max(1, self.recorder.frames) * 1000, 3)
        stats.seconds = time.perf_counter() - schedule.start
        stats.sinks_failed = self.outputs.failed
        log.info("stopped: %s", stats.summary())
        return stats

    def _begin(self, schedule: _Schedule, on_frame) -> None:
        """What the loop keeps from frame to frame, and the clocks started on the schedule's first instant."""
        cfg, engine = self.cfg, self.engine
        # What the sinks get, (level, format): one conversion and copy per distinct pair a frame.
        self.wanted = sorted(set(self.outputs.formats) | ({(0, pixfmt.RGB24)} if on_frame else set()))
        self.warn = RateLimitedLog(log, interval=5.0)
        self.slow = RateLimitedLog(log, interval=60.0)  # a show that cannot keep up, said once a minute
        # What the sinks get is flash-limited, never the feedback itself; each level view on its own.
        self.limiters = {lvl: FlashLimiter(cfg.fps) for lvl in sorted({lvl for lvl, _ in self.wanted})}
        self.tuner = None
        if engine.device.type == "cpu" and self.pace == Pace.REALTIME and cfg.threads is None \
                and torch.get_num_threads() > 1:
            self.tuner = ThreadTuner((torch.get_num_threads(), 1))
        if self.pace == Pace.OFFLINE:
            self.controls.tempo.start(schedule.start_clock)  # beat 0 on frame 0: an offline render is repeatable
        self.controls.tempo.clock = schedule.now  # a tap or a set tempo lands on the show's clock
        if self.controls.audio is not None:  # a file's first sample: frame 0
            self.controls.audio.start(schedule.start_clock, patient=self.pace == Pace.OFFLINE)
        self.started = self.last_status = self.last_figures = schedule.start
        self.last_frame = None
        self.epoch = self.source.epoch

    def _warn_if_no_first_frame(self, stats: RunStats) -> threading.Timer:
        """A size this machine renders in seconds a frame shows nothing for a long while: say why at once."""
        cfg, engine = self.cfg, self.engine
        timer = threading.Timer(FIRST_FRAME_WARNING, lambda: stats.frames == 0 and log.warning(
            "no frame yet after %g s: one frame of %dx%d on %s takes longer than that here; a smaller --size "
            "(or a GPU) renders it live", FIRST_FRAME_WARNING, cfg.width, cfg.height, engine.device))
        timer.daemon = True
        timer.start()
        return timer

    def _read_source(self) -> torch.Tensor | None:
        """The source's newest frame on the engine's device (the last one again when none came or it
        failed); a new scene (a camera arrived or came back) re-seeds the loop, which grows out of it."""
        try:
            frame = self.source.read()
        except (OSError, RuntimeError, ValueError, cv2.error) as exc:
            self.warn.warning("source", "source %s failed (%s); showing the last frame", self.cfg.source, exc)
            frame = None
        if frame is not None:
            self.last_frame = frame
            if self.recorder is not None:
                self.recorder.source(frame)
        picture = pixfmt.from_rgb24(self.last_frame, self.engine.device) if self.last_frame is not None else None
        if self.source.epoch != self.epoch:
            self.epoch = self.source.epoch
            self.engine.reseed()
            if self.recorder is not None:
                self.recorder.reseed()
        return picture

    def _draw(self, phi: Phi, source: torch.Tensor | None, dt: float, stats: RunStats) -> tuple[dict, dict]:
        """One step of the engine, and what the outputs show of it: the picture graded (a level view
        ungraded), flash-limited, read back once per (level, format) wanted."""
        engine = self.engine
        t0 = time.perf_counter()
        engine.step(phi, source, dt)
        limit = phi.output.flash_limit
        shown = {lvl: self.limiters[lvl].limit(grade(engine.states[0], phi.grade) if lvl == 0 else engine.view(lvl),
                                               limit)
                 for lvl in self.limiters}
        pictures = {(lvl, fmt): engine.readback(fmt, shown[lvl]) for lvl, fmt in self.wanted}
        stats.flash_limited = sum(lim.limited for lim in self.limiters.values())
        stats.engine_ms.append((time.perf_counter() - t0) * 1000)
        if self.tuner is not None:
            self.tuner.record(stats.engine_ms[-1])
            stats.threads = self.tuner.threads
        stats.reseeds, stats.nudges = engine.guard.recoveries, engine.guard.nudges
        return pictures, shown

    def _deliver(self, pictures: dict, shown: dict, phi: Phi, slot: int, t_input: float, on_frame,
                 stats: RunStats) -> None:
        """The pictures to every sink, to ``on_frame``, and to the previews that asked for one."""
        self.outputs.send(pictures, slot, t_input)
        if on_frame is not None:
            on_frame(slot, pictures[0, pixfmt.RGB24], self.last_frame, self.engine)
        for svc in self.services:  # the web preview: a picture it asked for, handed off
            if levels := self._guarded_levels(svc):
                self._offer(svc, slot, levels, pictures, shown, phi)
        stats.sink_dropped = self.outputs.dropped
        stats.latency_ms.append(max(self.outputs.latencies() + [(time.perf_counter() - t_input) * 1000]))
        stats.frames += 1
        if self.pace == Pace.REALTIME and stats.frames % 30 == 0:  # what a quantised change starts ahead by
            self.controls.output_latency = float(np.median(stats.latency_ms)) / 1000

    def _report(self, stats: RunStats, on_status) -> None:
        """The figures for the surfaces (twice a second) and the status line (every ``status_interval``)."""
        cfg = self.cfg
        now = time.perf_counter()
        stats.frame_times.append(now)
        stats.seconds = now - self.started
        if now - self.last_figures >= FIGURES_INTERVAL and self.services:
            self.last_figures = now
            self._show_figures(stats)
        if now - self.last_status >= cfg.status_interval:
            self.last_status = now
            stats.sinks_failed = self.outputs.failed
            stats.surfaces = {k: v for svc in self.services for k, v in (self._guarded(svc.figures, {}) or {}).items()}
            if cfg.status_format == "json":  # one object a line, for a monitor
                (on_status or log.info)(json.dumps(stats.figures(), default=str))
            else:
                parts = [part for svc in (*self.services, self.controls) if (part := _status(self.warn, svc))]
                if down := self.outputs.failed:  # said in every status line while it lasts, not only once
                    parts.append(f"{len(down)} sink(s) DOWN: " + "; ".join(why[:160] for why in down))
                (on_status or log.info)(" | ".join([stats.summary()] + parts))
            if self.pace == Pace.REALTIME and stats.seconds > SLOW_AFTER and stats.fps_now < 0.5 * cfg.fps:
                self.slow.warning("slow", "rendering %.1f of the %g frames a second asked for: a frame takes %.0f ms "
                                  "at %dx%d on %s; a smaller --size or a lower --fps keeps up", stats.fps_now, cfg.fps,
                                  float(np.median(stats.engine_ms)), cfg.width, cfg.height, self.engine.device)

    def _guarded(self, fn, fallback):
        try:
            return fn()
        except Exception as exc:  # noqa: BLE001 — a surface's broken report must not stop the show
            self.warn.warning(f"figures:{fn.__qualname__}", "%s failed (%s: %s)", fn.__qualname__, type(exc).__name__,
                              exc)
            return fallback

    def _guarded_levels(self, svc: Service) -> tuple[int, ...]:
        try:
            return tuple(lvl for lvl in svc.picture_levels() if 0 <= lvl <= self.engine.model.levels)
        except Exception as exc:  # noqa: BLE001 — a broken preview must not stop the show
            self.warn.warning("picture_levels", "%s.picture_levels failed (%s: %s)", type(svc).__name__,
                         type(exc).__name__, exc)
            return ()

    def _offer(self, svc: Service, slot: int, levels, pictures: dict, shown: dict, phi: Phi) -> None:
        """The levels ``svc`` asked for, from the readback the sinks got where there is one (RGB first,
        else their 4:2:0), else one made for it: the graded picture, or the level's view (ungraded and,
        being the performer's monitor rather than the audience's output, not flash-limited)."""
        try:
            offered = {}
            for lvl in levels:
                have = sorted((fmt != pixfmt.RGB24, fmt) for level, fmt in pictures if level == lvl)
                if have:
                    fmt = have[0][1]
                    offered[lvl] = (fmt, pictures[lvl, fmt])
                else:
                    picture = shown.get(lvl)
                    if picture is None:
                        picture = grade(self.engine.states[0], phi.grade) if lvl == 0 else self.engine.view(lvl)
                    offered[lvl] = (pixfmt.RGB24, self.engine.readback(pixfmt.RGB24, picture))
            svc.picture(slot, offered)
        except Exception as exc:  # noqa: BLE001 — a preview (its own readback too) must not stop the show
            self.warn.warning("picture", "the picture for %s failed (%s: %s)", type(svc).__name__, type(exc).__name__,
                         exc)

    def _show_figures(self, stats: RunStats) -> None:
        figures = stats.figures()
        figures["surfaces"] = [part for svc in (*self.services, self.controls) if (part := _status(self.warn, svc))]
        figures["sinks"] = self.outputs.health()
        figures["target_fps"] = self.cfg.fps
        figures["bpm"] = round(self.controls.tempo.bpm, 1)
        figures["tempo_source"] = self.controls.tempo.source
        figures["waiting"] = self.controls.waiting()  # quantised changes and the beat each starts on
        if self.controls.snapshots is not None:
            figures["snapshots"] = {"slots": self.controls.snapshots.occupied(), "file": self.controls.snapshots_file}
        if self.controls.link is not None:
            figures["link_peers"] = self.controls.link.peers
        heard = self.controls.heard
        if heard is not None:
            figures["audio"] = {"level": round(heard.level, 3), "bass": round(heard.bass, 3), "mid": round(heard.mid, 3),
                                "high": round(heard.high, 3), "onset": round(heard.onset, 3), "bpm": round(heard.bpm, 1),
                                "confidence": round(heard.confidence, 2), "beat": round(heard.beat % 1.0, 3)}
        figures["model"] = self.controls.models.current if self.controls.models is not None else None
        for svc in self.services:
            try:
                svc.show_status(figures)
            except Exception as exc:  # noqa: BLE001
                self.warn.warning("show_status", "%s.show_status failed (%s: %s)", type(svc).__name__,
                             type(exc).__name__, exc)


FIGURES_INTERVAL = 0.5  # seconds between the figures the surfaces get (the web page's status panel)


def _status(warn: RateLimitedLog, svc: Service) -> str | None:
    try:
        return svc.status()
    except Exception as exc:  # noqa: BLE001 — a broken status line must not stop the show
        warn.warning("status", "status of %s failed (%s: %s)", type(svc).__name__, type(exc).__name__, exc)
        return "status ?"


def _check_fit(controls: Controls, levels: int, model: str | None) -> None:
    """Controls made for a model with another number of levels would fail on the first frame (too few)
    or have parameters that move nothing (too many)."""
    registry, expected = controls.store.registry, build_registry(levels)
    have = {name for name, p in registry.items() if p.level is not None}
    want = {name for name, p in expected.items() if p.level is not None}
    missing = sorted(want - have) + sorted(n for n, p in expected.items() if p.level is None and n not in registry
                                           and not n.startswith("lfo"))
    extra = sorted(have - want)
    if missing or extra:
        made_for = max((p.level for p in registry.values() if p.level is not None), default=0)
        odd = (f"they lack {', '.join(missing[:4])}" if missing else f"{', '.join(extra[:4])} would move nothing") + (
            "…" if len(missing or extra) > 4 else "")
        raise ValueError(f"the controls were made for a model with {made_for} levels, but model "
                         f"{model or checkpoint.DEFAULT_MODEL!r} has {levels} ({odd}); make them with "
                         f"Controls.for_levels({levels})")


def _starting_values(cfg: RunConfig, controls: Controls) -> None:
    """The preset, then each setting, strictly: at start-up a value out of range or of the wrong kind
    is an error, not something to clamp quietly (that is for the show)."""
    store = controls.store
    if cfg.preset:
        if controls.presets is None:
            raise ValueError(f"preset {cfg.preset!r} asked for, but these controls have no preset bank")
        try:
            controls.presets.load(cfg.preset)  # a bad or missing preset fails here, at start-up
        except PresetError as exc:
            raise PresetError(f"--preset: {exc}") from exc  # the message names the preset already
        controls.presets.recall(cfg.preset, 0.0)
    for name, raw in cfg.settings.items():
        param = store.registry.get(name)
        if param is None:
            raise ValueError(f"--set {name}: no such parameter{close_matches(name, store.registry)}; see 'ffvj params'")
        try:
            value = param.parse(float(raw) if isinstance(raw, bool) else raw)
        except ValueError as exc:
            raise ValueError(f"--set {name}={raw}: {exc}") from exc
        if not math.isfinite(value) or param.clamp(value) != value:
            raise ValueError(f"--set {name}={raw}: {name} takes {param.min:g}..{param.max:g}"
                             + (" (a whole number)" if param.kind in ("int", "enum", "bool") else ""))
        store.set(name, value, source="--set")
    store.advance(0)  # start at the values, not smoothed towards them
    if cfg.map_image is None and store.get("map.kind") == MAP_KINDS.index("image"):
        raise ValueError("map.kind=image needs --map-image PATH (the picture whose luminance is the map)")

