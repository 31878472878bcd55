"""The show file: a live set captured as its inputs, so it can be rendered again later, at any size.

The loop is deterministic given the model, the seed, the source frames that entered it and, frame by frame,
what the controls made of the performer's playing. ``ShowRecorder`` writes exactly that, as the show runs;
``ShowFile`` reads it back (``ffvj render``: ``ffvj.render``). The format (docs/SHOWFILE.md) is a folder:

    show.json      the header, written once at the start (atomically): format version, ffvj's version,
                   the model (name and the SHA-256 of its weights), seed, size, fps, pace, the audio and
                   source specs, every parameter's starting target
    frames.jsonl   one JSON object a line, one line a frame, appended as the show runs: the frame's clock
                   (``dt``, ``t``), the tempo's beat, the source frame it used, the music's features, the
                   targets that changed since the frame before (from every surface, a preset's morph and
                   the music's triggers alike), the actions the render loop performed and the model it
                   switched to
    source.mkv     every new source frame as it entered the loop, lossless (H.264 4:4:4 RGB, crf 0), on
                   its own thread
    snapshots.safetensors  the snapshot slots the show began with (``--snapshots``), if any
    sound.f32      with ``--audio``: the music as heard, mono float32 samples, raw (``sound.json`` gives
                   the rate), from the show's first frame, on its own thread

A folder, not one container, because each part has a natural, append-only form that survives a crash
on its own: a JSON line is whole or is dropped by the reader, and Matroska written in one-second clusters
decodes up to its last whole one, and raw samples need no header that a crash leaves wrong. ``kill -9`` or a
full disk therefore leaves every frame up to the last second replayable. Parameters are recorded as their
targets (the store's, before smoothing), LFOs and audio slots as their inputs (the beat, the clock, the
music's features), never as their outputs.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from .files import write_atomically
from .reporting import RateLimitedLog

log = logging.getLogger(__name__)

FORMAT = "ffvj-show"
VERSION = 1  # bumped when a reader of this version could misread a newer file; every older one stays readable
HEADER, FRAMES, SOURCE, SOUND, SOUND_HEADER = "show.json", "frames.jsonl", "source.mkv", "sound.f32", "sound.json"
SNAPSHOTS = "snapshots.safetensors"
# Source frames waiting for the encoder at most (2 s at 30 fps, 41 MB at 640×360). The render loop never
# waits for the encoder: a frame that finds the queue full is dropped (counted, said), and its frames
# re-render on the frame before it (no longer bit for bit).
QUEUE_FRAMES = 60


class ShowFileError(ValueError):
    """A show file that cannot be read: the message names the problem and, where there is one, the fix."""


class _SourceWriter:
    """Source frames to ``source.mkv`` on a thread of its own: lossless H.264 in RGB (libx264rgb, crf 0,
    ultrafast: 1 ms a 640×360 frame here), one-second Matroska clusters. The render loop only queues."""

    def __init__(self, path: Path, fps: float):
        self.path, self.fps = path, fps
        self.frames = 0  # frames queued (the next frame's index)
        self.dropped = 0
        self.failed: str | None = None
        self._queue: queue.Queue = queue.Queue(maxsize=QUEUE_FRAMES)
        self._thread = threading.Thread(target=self._run, name="show file source", daemon=True)
        self._thread.start()

    def put(self, frame: np.ndarray) -> int | None:
        """Queue one frame; its index in the file, or None when it could not be kept (said by the caller)."""
        if self.failed:
            return None
        try:
            self._queue.put_nowait(frame)
        except queue.Full:
            self.dropped += 1
            return None
        self.frames += 1
        return self.frames - 1

    def _run(self) -> None:
        import av

        container = stream = None
        try:
            while (frame := self._queue.get()) is not None:
                if container is None:
                    container = av.open(str(self.path), "w", format="matroska",
                                        options={"cluster_time_limit": "1000", "flush_packets": "1"})
                    stream = container.add_stream("libx264rgb", rate=round(self.fps))
                    stream.width, stream.height = frame.shape[1], frame.shape[0]
                    stream.pix_fmt = "rgb24"
                    stream.options = {"crf": "0", "preset": "ultrafast", "g": str(max(1, round(self.fps)))}
                for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                    container.mux(packet)
        except Exception as exc:  # noqa: BLE001 — a full disk, a frame of another size, anything: never the show
            self.failed = str(exc)
            log.error("the show file's source video stopped: %s (the show goes on; the show file replays up to "
                      "here)", exc)
            while self._queue.get() is not None:  # let the render loop's puts go on until close
                pass
        finally:
            if container is not None:
                try:
                    for packet in stream.encode():
                        container.mux(packet)
                    container.close()
                except (OSError, ValueError, av.FFmpegError) as exc:
                    log.error("the show file's source video did not close cleanly: %s", exc)

    def close(self) -> None:
        try:
            self._queue.put(None, timeout=30 if self._thread.is_alive() else 0.01)  # the encoder finishes the queue
        except queue.Full:
            log.error("the show file's source video did not finish: its encoder is stuck")
            return
        self._thread.join(timeout=30)


class _SoundWriter:
    """The show's sound (an ``audio.inputs.AudioTap``) to ``sound.f32`` on a thread of its own, a few times
    a second: raw samples, so a crash leaves every sample written so far readable as it is."""

    INTERVAL = 0.25

    def __init__(self, folder: Path, tap, clock):
        self.folder, self.tap, self.clock = folder, tap, clock  # clock(): seconds of the show so far
        self.samples = 0
        self._stop = threading.Event()
        self._file = open(folder / SOUND, "ab")
        self._thread = threading.Thread(target=self._run, name="show file sound", daemon=True)
        self._thread.start()

    def _write(self) -> None:
        samples = self.tap.take(self.clock())
        if len(samples):
            if self.samples == 0:
                write_atomically(self.folder / SOUND_HEADER, json.dumps({"rate": self.tap.rate, "channels": 1,
                                                                          "format": "float32le"}))
            self._file.write(np.asarray(samples, "<f4").tobytes())
            self._file.flush()
            self.samples += len(samples)

    def _run(self) -> None:
        try:
            while not self._stop.wait(self.INTERVAL):
                self._write()
        except OSError as exc:
            log.error("the show file's sound stopped: %s (the show goes on)", exc)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        if self._thread.is_alive():  # stuck on a full disk: leave the file to it
            return
        try:
            self._write()
            self._file.close()
        except OSError as exc:
            log.error("the show file's sound did not close cleanly: %s", exc)


class ShowRecorder:
    """Writes a show file as the show runs (see the module docstring). The render loop calls ``source``
    for every new source frame, ``action``/``model`` as the controls perform them, and ``frame`` once a
    frame; each costs the loop a queue put or a line write. A failure (a full disk) is said once and ends
    the recording, never the show."""

    @staticmethod
    def check_path(path: str | Path) -> Path:
        """``path`` as a new show file's folder, or a ValueError in one line (at start-up, before anything opens)."""
        path = Path(path).expanduser()
        if path.exists() and (not path.is_dir() or any(path.iterdir())):
            raise ValueError(f"--record-show {path}: not an empty folder; a show file is never written over "
                             "(name a new folder)")
        return path

    def __init__(self, path: str | Path, header: dict, fps: float):
        self.path = self.check_path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        write_atomically(self.path / HEADER, json.dumps({"format": FORMAT, "version": VERSION, **header}, indent=1))
        self._lines = open(self.path / FRAMES, "a", encoding="utf-8", buffering=1 << 16)
        self._video = _SourceWriter(self.path / SOURCE, fps)
        self._targets = dict(header.get("start", {}))
        self._events: dict = {}
        self._source: int | None = None  # the index of the source frame the loop uses now
        self._warn = RateLimitedLog(log, interval=10.0)
        self.frames = 0
        self.failed = False
        self.loop_seconds = 0.0  # what recording cost the render loop, in all (the bench reports it a frame)
        self._sound: _SoundWriter | None = None
        self._first_t: float | None = None
        self._show_seconds = 0.0
        self._last_flush = time.monotonic()

    def hear(self, tap) -> None:
        """Record the show's sound from ``tap`` (an ``AudioTap``, made before the input starts)."""
        self._sound = _SoundWriter(self.path, tap, lambda: self._show_seconds)

    def source(self, frame: np.ndarray) -> None:
        """A new source frame entered the loop (copied: a source may reuse its buffer for the next one)."""
        started = time.perf_counter()
        index = self._video.put(frame.copy())
        self.loop_seconds += time.perf_counter() - started
        if index is None:
            self._warn.warning("source", "the show file kept up with the source too slowly: a frame was dropped "
                               "(%d so far); a re-render holds the frame before", self._video.dropped)
        else:
            self._source = index

    def action(self, name: str, args: dict) -> None:
        """An action the render loop performed (it changes the picture: a re-render performs it again)."""
        self._events.setdefault("do", []).append([name, dict(args)])

    def model(self, name: str, seconds: float) -> None:
        """The engine switched to model ``name`` this frame, crossfading over ``seconds``."""
        self._events["model"] = [name, seconds]

    def reseed(self) -> None:
        """The loop re-seeded from a new scene (a camera came back)."""
        self._events["reseed"] = True

    def frame(self, slot: int, dt: float, now: float, beat: float, targets: dict, heard) -> None:
        """One frame's line: its clock, the tempo's beat, its source frame, the music, the changed targets."""
        if self.failed:
            self._events = {}
            return
        started = time.perf_counter()
        if self._first_t is None:
            self._first_t = now
        self._show_seconds = now - self._first_t + dt  # the sound heard up to this frame's end
        changed = {name: value for name, value in targets.items() if self._targets.get(name) != value}
        self._targets = targets
        line = {"f": self.frames, "slot": slot, "dt": dt, "t": now, "beat": beat, "src": self._source,
                **({"set": changed} if changed else {}), **self._events}
        if heard is not None:
            line["heard"] = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(heard).items()}
        self._events = {}
        try:
            self._lines.write(json.dumps(line, separators=(",", ":")) + "\n")
            now_wall = time.monotonic()
            if now_wall - self._last_flush >= 1.0:  # the kernel has it: kill -9 loses at most this second
                self._lines.flush()
                self._last_flush = now_wall
        except OSError as exc:
            self.failed = True
            log.error("the show file stopped at frame %d: %s (the show goes on; it replays up to here)",
                      self.frames, exc)
        self.frames += 1
        self.loop_seconds += time.perf_counter() - started

    @property
    def dropped(self) -> int:
        return self._video.dropped

    def close(self) -> None:
        try:
            self._lines.close()
        except OSError as exc:
            log.error("the show file's frames did not close cleanly: %s", exc)
        self._video.close()
        if self._sound is not None:
            self._sound.close()
        log.info("show file %s: %d frames, %d source frames%s", self.path, self.frames, self._video.frames,
                 f", {self._video.dropped} dropped" if self._video.dropped else "")


class ShowFile:
    """A show file read back: ``header``, ``frames`` (one dict a frame, up to the last whole line) and
    ``source_frames()`` (the source video's frames in order, RGB uint8)."""

    def __init__(self, path: str | Path):
        self.path = Path(path).expanduser()
        head = self.path / HEADER
        if not head.is_file():
            raise ShowFileError(f"{self.path}: not a show file (no {HEADER}); record one with ffvj run --record-show "
                                "PATH")
        try:
            self.header = json.loads(head.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ShowFileError(f"{head}: unreadable ({exc})") from exc
        if self.header.get("format") != FORMAT:
            raise ShowFileError(f"{head}: not an ffvj show file")
        version = self.header.get("version")
        if not isinstance(version, int) or version > VERSION:
            raise ShowFileError(f"{self.path} is a show file of version {version}, newer than this ffvj reads "
                                f"({VERSION}): update ffvj (pip install -U ffvj) to render it")
        self.frames = self._read_frames()

    def _read_frames(self) -> list[dict]:
        frames = []
        try:
            with open(self.path / FRAMES, encoding="utf-8") as f:
                for number, line in enumerate(f):
                    try:
                        record = json.loads(line)
                    except ValueError:
                        break  # the last line of a show that stopped mid-write: everything before it is whole
                    if record.get("f") != number:
                        raise ShowFileError(f"{self.path / FRAMES}: line {number + 1} is frame {record.get('f')}")
                    frames.append(record)
        except FileNotFoundError:
            pass
        return frames

    def sound(self) -> tuple[np.ndarray, int] | None:
        """The show's sound as heard (mono float32) and its rate, or None when it heard none."""
        head = self.path / SOUND_HEADER
        if not head.is_file():
            return None
        try:
            rate = int(json.loads(head.read_text(encoding="utf-8"))["rate"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ShowFileError(f"{head}: unreadable ({exc})") from exc
        path = self.path / SOUND
        count = path.stat().st_size // 4 if path.is_file() else 0
        if count == 0:
            return None
        return np.memmap(path, "<f4", "r", shape=(count,)), rate

    def source_frames(self):
        """Every recorded source frame, in order (what a live loop saw); stops where the video does."""
        import av

        path = self.path / SOURCE
        if not path.is_file():
            return
        try:
            with av.open(str(path)) as container:
                for frame in container.decode(video=0):
                    yield frame.to_ndarray(format="rgb24")
        except av.FFmpegError as exc:  # a file cut short: everything before the cut
            log.info("the show's source video ends early (%s): the frames after it hold the last one", exc)
