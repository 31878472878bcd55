"""What every control surface shares with the render loop, and the loop's control work once per frame.

    surfaces (OSC, MIDI, web, ...)                         render loop, once per frame
    ─────────────────────────────                          ──────────────────────────────
    controls.store.set("l0.zoom", 1.03)   ──targets──▶      phi = controls.next_phi(engine, dt, now, services)
    controls.fire("snapshot.recall", 2, 4.0) ─queue─▶         polls, actions, preset morph,
    controls.tempo.clock_tick()                                smoothing, LFOs → this frame's φ

Control threads only write the store, fire actions and move the tempo; everything that touches the
engine happens on the render loop, inside ``next_phi``.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
from dataclasses import dataclass, field, replace

from ..phi import Phi
from ..reporting import Counts, RateLimitedLog
from .actions import ACTIONS, FILES, LOOP, NOW, ActionQueue, perform
from .model_switch import ModelSwitcher
from .modulation import Modulation
from .params import AUDIO_TRIGGERS, QUANTA, ParamStore, build_registry
from .presets import PresetBank, factory_presets_dir
from .readings import read_all
from .snapshots import SnapshotBank
from .tempo import Tempo

log = logging.getLogger(__name__)


@dataclass
class Controls:
    """The store of parameter targets, the action queue, the tempo, presets, LFOs, snapshots and MIDI
    learn of one show. ``for_levels`` makes the usual set for a model."""

    store: ParamStore
    actions: ActionQueue = field(default_factory=ActionQueue)
    tempo: Tempo = field(default_factory=Tempo)
    presets: PresetBank | None = None
    modulation: Modulation | None = None
    snapshots: SnapshotBank | None = field(default_factory=SnapshotBank)
    learner: object | None = None  # a midi.Learner, set where MIDI learn runs
    models: ModelSwitcher | None = None  # the ``model`` action's (the show sets it)
    audio: object | None = None  # an audio.inputs.AudioInput, set where the show hears music
    link: object | None = None  # a link.LinkClock, set where the show is in an Ableton Link session
    snapshots_file: str | None = None  # where the snapshot slots are kept between shows (--snapshots)
    journal: object | None = None  # a showfile.ShowRecorder, where the show is recorded (--record-show)

    def __post_init__(self) -> None:
        self._warn = RateLimitedLog(log, interval=5.0)
        self._files: _FileWorker | None = None
        self._counts = Counts("failed_actions")  # from the render loop and the file worker alike
        self.heard = None  # this frame's AudioFeatures (None: no audio input)
        self.beat = 0.0  # this frame's beat on the tempo clock
        self._onsets = 0  # the music's onsets and beats already acted on
        self._beat: int | None = None
        self._next_snapshot = self._next_preset = 0
        self._readings: dict[str, float] = {}  # the readings last reported to the surfaces
        self._told_link = 0  # the tempo's performer_changes the Link session has been told of
        self._waiting: dict[str, tuple] = {}  # quantised actions waiting for their beat, by action name
        self.output_latency = 0.0  # seconds from a frame's render to its output (the show measures it)

    @classmethod
    def for_levels(cls, levels: int, presets_dir: str | None = None, seed: int = 0) -> Controls:
        store = ParamStore(build_registry(levels))
        return cls(store=store, presets=PresetBank(store, presets_dir, factory=factory_presets_dir()),
                   modulation=Modulation(store.registry, seed=seed))

    # -- any thread --

    def fire(self, name: str, /, *values, **named) -> bool:
        """Fire action ``name`` (``actions.ACTIONS``) with positional ``values`` (a surface's) or
        ``named`` arguments. Raises ValueError for an unknown action or a bad argument; returns False
        for a button's release (nothing to do), else True once it ran (NOW) or was queued."""
        action = ACTIONS.get(name)
        if action is None:
            raise ValueError(f"unknown action {name!r}; known: {', '.join(ACTIONS)}")
        args = action.bind(values, named)
        if args is None:
            return False
        if action.thread == NOW:
            perform(action, args, self)
        else:
            self.actions.post(action, args)
        return True

    # -- the render loop --

    def next_phi(self, engine, dt: float, now: float, services=()) -> Phi:
        """This frame's φ, typed (``ffvj.phi``): due OSC bundles (``poll``), queued actions, the preset
        morph, smoothing, then LFOs and the music on top; what the LFOs moved (or just released) is reported to the services, which cap
        their rates themselves. Each stage is guarded on its own: one failing surface or action does
        not hold up the others, and the show goes on."""
        for svc in services:
            self._guarded("OSC/MIDI poll", svc.poll)
        for action, args in self.actions.drain():
            if action.quantized and (args := self._quantize(action, args, now)) is None:
                continue  # it waits for its beat
            self._run(action, args, engine)
        for action, args in self._due(now, dt):
            self._run(action, args, engine)
        if self.models is not None and engine is not None:
            if self._guarded("model switch", self.models.apply, engine) and self.journal is not None:
                self.journal.model(*self.models.switched)
        if self.presets is not None:
            self._guarded("preset morph", self.presets.update, dt)
        if self.link is not None:
            self._guarded("Link", self._follow_link, now)
        if self.audio is not None:
            self.heard = self._guarded("audio", self.audio.features_at, now)
            if self.heard is not None:
                self._guarded("audio events", self._hear, self.heard, now)
        phi = self.store.advance(dt)
        self.beat = self.tempo.beat(now)  # what the LFOs follow this frame (a show file records it)
        if self.audio is not None or self.link is not None:  # what the music and the clock do, for the surfaces
            self._report_readings(now, services)
        if self.modulation is not None:
            modulated = self._guarded("LFOs", self.modulation.apply, phi, self.beat, now, self.heard)
            if modulated is not None:
                phi = modulated
                # A released parameter reports its target (where it is going), not a half-smoothed value.
                changed = {**{n: self.store.get(n) for n in self.modulation.released}, **self.modulation.modulated}
                for svc in services:
                    for name, value in changed.items():
                        self._guarded("feedback", svc.report, name, value)
        return Phi.of(phi)

    def _report_readings(self, now: float, services) -> None:
        readings = self._guarded("readings", read_all, self, now) or {}
        for name, value in readings.items():
            if abs(value - self._readings.get(name, float("nan"))) < 1e-3:  # (NaN: never reported yet)
                continue
            self._readings[name] = value
            for svc in services:
                self._guarded("feedback", svc.report, name, value)

    def save_snapshots(self) -> None:
        """Write the snapshot slots to ``snapshots_file``: copied here (the render loop), written on the
        file worker (atomically: a crash mid-write keeps the last whole file)."""
        tensors = self.snapshots.snapshot_for_saving()
        self._file_worker().submit(self._write_snapshots, tensors)

    def _write_snapshots(self, tensors) -> None:
        try:
            self.snapshots.write(self.snapshots_file, tensors)
        except OSError as exc:
            self._warn.warning("snapshots", "the snapshots could not be saved to %s: %s", self.snapshots_file, exc)

    def _run(self, action, args, engine) -> None:
        if action.thread == FILES:  # file work off the render loop (a preset's morph itself runs here)
            self._file_worker().submit(self._perform, action, args)
        else:
            # It changes the picture on this frame: a re-render performs it again. (A preset recall read ahead
            # runs here too, but what it does is in the targets the show file records: not performed twice.)
            if self.journal is not None and ACTIONS[action.name].thread == LOOP:
                self.journal.action(action.name, args)
            self._guarded(f"action {action.name}", self._perform, action, args, engine)

    def _quantize(self, action, args: dict, now: float) -> dict | None:
        """A quantised action's arguments to run it now, or None when it waits for the next multiple of its
        quantum (its own, else ``tempo.quantum``) on the tempo's beat. One waits per action: a second
        preset recall before the bar replaces the first (the performer changed their mind)."""
        args = dict(args)
        quantum = args.pop("quantum")
        if quantum < 0:
            quantum = QUANTA[self.store.registry["tempo.quantum"].choices[int(self.store.get("tempo.quantum"))]]
        if quantum <= 0:
            return args
        beat = self.tempo.beat(now)
        due = math.ceil(beat / quantum - 1e-9) * quantum
        if due - beat <= 1e-9:
            return args  # right on the line
        self._waiting[action.name] = (due, action, args)
        if action.name == "preset.recall" and self.presets is not None:  # read it now: on the bar, no disk
            self._file_worker().submit(self.presets.prefetch, args["name"])
        return None

    def _due(self, now: float, dt: float) -> list:
        """The waiting actions whose beat comes before the frame after this one would show: each starts in
        the frame nearest its line, as the audience sees it (ffvj's output latency and ``tempo.lookahead``
        ahead). A preset was read when it was asked for, so it too starts in that frame; a model's weights
        load on the file worker and crossfade in from the frame they are ready."""
        if not self._waiting:
            return []
        ahead = self.output_latency + self.store.get("tempo.lookahead") + dt / 2
        out = []
        for name, (due, action, args) in list(self._waiting.items()):
            if self.tempo.beat(now + ahead) >= due - 1e-9:
                del self._waiting[name]
                if action.name == "preset.recall" and self.presets is not None and self.presets.ready(args["name"]):
                    action = replace(action, thread=LOOP)  # read ahead: its morph starts in this very frame
                out.append((action, args))
        return out

    def waiting(self) -> dict[str, float]:
        """The quantised actions waiting, by name: the beat each starts on (for the page)."""
        return {name: due for name, (due, _, _) in self._waiting.items()}

    def _follow_link(self, now: float) -> None:
        """The Link session leads the tempo and the bar; a tempo the performer tapped or set leads the session."""
        if self.tempo.performer_changes != self._told_link:
            self._told_link = self.tempo.performer_changes
            self.link.lead(self.tempo.bpm, now)
        bpm, beat = self.link.read(now)
        self.tempo.follow("link", bpm, beat % self.link.quantum, now, period=self.link.quantum)

    def _hear(self, heard, now: float) -> None:
        """The music's events: its beat leads the tempo (unless a clock above it does), and its onsets and
        beats fire what ``audio.on_onset`` and ``audio.on_beat`` say (at most once each a frame)."""
        from ..audio.analysis import MIN_CONFIDENCE

        sure = heard.active and heard.confidence >= MIN_CONFIDENCE
        if sure:
            self.tempo.follow("audio", heard.bpm, heard.beat_at(now) % 1.0, now)
        if heard.onsets > self._onsets:
            self._onsets = heard.onsets
            self._trigger(self.store.get("audio.on_onset"))
        beat = int(heard.beat // 1) if sure else None
        if beat is not None and self._beat is not None and beat > self._beat:
            every = max(1, int(self.store.get("audio.beat_every")))
            if any(b % every == 0 for b in range(self._beat + 1, beat + 1)):
                self._trigger(self.store.get("audio.on_beat"))
        self._beat = beat

    def _trigger(self, choice: float) -> None:
        """Fire one of ``params.AUDIO_TRIGGERS`` (by its index): a re-seed nudge, the next stored snapshot,
        the next preset."""
        kind = AUDIO_TRIGGERS[int(choice)]
        if kind == "reset":
            self.fire("reset")
        elif kind == "snapshot.next" and self.snapshots is not None and (stored := self.snapshots.occupied()):
            self._next_snapshot = (self._next_snapshot + 1) % len(stored)
            self.fire("snapshot.recall", stored[self._next_snapshot], 0.25, 0)  # (on the music: no quantum)
        elif kind == "preset.next" and self.presets is not None:
            self._file_worker().submit(self._preset_next)  # the preset folder is read off the render loop

    def _preset_next(self) -> None:
        names = self.presets.names()
        if names:
            self._next_preset = (self._next_preset + 1) % len(names)
            self.fire("preset.recall", names[self._next_preset], 0.5, 0)

    def _perform(self, action, args, engine=None) -> bool:
        """Run a queued action; one that fails (an unknown preset, a slot never stored) is counted in
        ``failed_actions`` for the status line: perform() has logged why, rate-limited."""
        done = perform(action, args, self, engine)
        if not done:
            self._counts.add("failed_actions")
        return done

    @property
    def failed_actions(self) -> int:
        return self._counts.snapshot()["failed_actions"]

    def status(self) -> str | None:
        """The status line's part for actions: only once one has failed, or a file operation is stuck."""
        stuck = self._files.stuck if self._files is not None else 0
        audio = self.audio.status() if self.audio is not None else None
        parts = [f"{self.failed_actions} actions failed"] * bool(self.failed_actions) + \
            [f"{stuck} file operations stuck"] * bool(stuck) + [audio] * bool(audio)
        return ", ".join(parts) or None

    def close(self) -> None:
        """Stop the file worker (a later FILES action starts a new one)."""
        files, self._files = self._files, None
        if files is not None:
            files.close()

    def _file_worker(self) -> _FileWorker:
        if self._files is None:
            self._files = _FileWorker()
        return self._files

    def _guarded(self, what: str, fn, *args):
        """One stage of the per-frame control work: a failure is logged (rate-limited) and that stage is
        skipped this frame. Returns the stage's result, or None when it failed."""
        try:
            return fn(*args)
        except Exception as exc:  # noqa: BLE001 — a bug in one control stage must not stop the show
            self._warn.warning(what, "%s failed this frame (%s: %s); the show goes on", what, type(exc).__name__, exc)
            return None


class _FileWorker:
    """Preset files (and model weights) are read and written here, not on the render loop: a slow disk
    (a USB stick) must not stall the picture. Jobs run one at a time, in order, on a worker thread.

    Bounded three ways: at most ``maxsize`` jobs wait (a flood drops the newest, logged); a job still
    running after ``job_timeout`` seconds (a hung network mount) is abandoned: its thread is left to
    its fate and a fresh one takes the jobs behind it, so one stuck file never holds the others; and
    after ``max_stuck`` abandoned threads the worker refuses new jobs (the disk is gone), logged.
    ``close`` lets the jobs in progress and waiting finish, waiting at most ``close_timeout`` seconds."""

    def __init__(self, maxsize: int = 16, job_timeout: float = 10.0, max_stuck: int = 4, close_timeout: float = 2.0):
        self._queue: queue.Queue = queue.Queue(maxsize)
        self.job_timeout, self.max_stuck, self.close_timeout = job_timeout, max_stuck, close_timeout
        self._warn = RateLimitedLog(log, interval=5.0)
        self._lock = threading.Condition()
        self._busy: dict[threading.Thread, tuple[float, str]] = {}  # a worker → when its job began, and what
        self._stuck: list[threading.Thread] = []
        self._closed = False
        self._worker = self._spawn()
        self._watchdog = threading.Thread(target=self._watch, name="ffvj files watchdog", daemon=True)
        self._watchdog.start()

    @property
    def stuck(self) -> int:
        """Jobs abandoned so far (threads still stuck in a file operation, or that came back late)."""
        with self._lock:
            return len(self._stuck)

    def submit(self, fn, *args) -> None:
        with self._lock:
            if len(self._stuck) >= self.max_stuck:
                self._warn.warning("stuck", "preset request refused: %d file operations are stuck (a hung disk "
                                   "or network mount?); restart the show once the disk is back", len(self._stuck))
                return
        try:
            self._queue.put_nowait((fn, args))
        except queue.Full:
            self._warn.warning("full", "preset request dropped: %d still waiting for the disk", self._queue.qsize())

    def _spawn(self) -> threading.Thread:
        thread = threading.Thread(target=self._loop, name="ffvj files", daemon=True)
        thread.start()
        return thread

    def _loop(self) -> None:
        me = threading.current_thread()
        while (item := self._queue.get()) is not None:
            fn, args = item
            what = getattr(args[0], "name", str(args[0])) if args else getattr(fn, "__name__", "job")
            with self._lock:
                self._busy[me] = (time.monotonic(), what)
                self._lock.notify_all()
            try:
                fn(*args)  # perform() logs a failed action itself; this catches the unforeseen
            except Exception:  # noqa: BLE001 — one failed request must not end the worker
                log.exception("preset request %s failed", what)
            finally:
                with self._lock:
                    self._busy.pop(me, None)
                    abandoned = me is not self._worker
                    self._lock.notify_all()
            if abandoned:  # it came back late; the new worker has the queue now
                log.warning("the %s file operation came back after it was abandoned", what)
                return

    def _watch(self) -> None:
        """Abandon a job that runs past ``job_timeout`` and start a fresh worker for the rest."""
        with self._lock:
            while not self._closed:
                began = self._busy.get(self._worker)
                if began is None:
                    self._lock.wait()
                    continue
                overdue = began[0] + self.job_timeout - time.monotonic()
                if overdue > 0:
                    self._lock.wait(overdue)
                    continue
                log.error("the %s file operation has taken over %.0f s (a hung disk or network mount?): "
                          "abandoned, the next preset requests go on", began[1], self.job_timeout)
                self._stuck.append(self._worker)
                self._worker = self._spawn()

    def close(self) -> None:
        """Let the jobs in progress and waiting (a save just asked for) finish, within ``close_timeout``
        seconds in all; a stuck one is left behind (the threads are daemons, they end with the process)."""
        with self._lock:
            self._closed = True
            self._lock.notify_all()
            worker = self._worker
        try:
            self._queue.put_nowait(None)
        except queue.Full:
            pass  # the worker is stuck or far behind: the wait below is bounded anyway
        worker.join(timeout=self.close_timeout)
