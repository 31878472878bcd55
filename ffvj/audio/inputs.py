"""Audio inputs, each analysed on its own thread (never on the render loop).

    audio = open_audio("file:track.wav")     # a file, analysed in step with the frames (offline renders repeat)
    audio = open_audio("system")             # a PortAudio input device by name or index (JACK included)
    audio.start(t0)                          # t0: the show clock's time of frame 0
    features = audio.features_at(now)        # the render loop, once a frame: the music at that moment
    audio.close()

``file:PATH`` is decoded by PyAV (any format FFmpeg reads) to mono at ``SAMPLE_RATE``. Its thread
analyses ahead of the show by at most ``AHEAD`` seconds and keeps every hop's features, so the
features for frame n are those of the audio's first n / fps seconds, whatever the pace: an offline
render and the tests hear exactly what a live show would (``features_at`` waits, bounded, for the
analysis to get there). After the end of the file it is silence: the modulation eases to rest.

A device is read through sounddevice (PortAudio: ALSA, JACK, CoreAudio, WASAPI...). Its callback
only copies the block into a bounded queue (full: the oldest block goes, counted); the analysis
thread takes them from there. When no block comes for ``LOST_AFTER`` seconds (unplugged, the JACK
server gone) the input says so once, analyses silence so every feature eases to rest, and tries the
device again every ``RETRY_EVERY`` seconds: the picture never waits for it.
"""

from __future__ import annotations

import bisect
import collections
import logging
import queue
import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from ..tally import Counts, RateLimitedLog
from .analysis import HOP, SAMPLE_RATE, Analyser, AudioFeatures

log = logging.getLogger(__name__)

AHEAD = 1.0  # seconds a file's analysis may run ahead of the show
WAIT = 2.0  # seconds the render loop waits at most for a file's analysis to reach a frame (offline)
LOST_AFTER = 0.5  # seconds without a block before a device counts as lost
RETRY_EVERY = 2.0  # seconds between tries to open a lost (or absent) device again
EXTRA = "pip install 'ffvj[audio]' (sounddevice; on Linux also the PortAudio library: apt-get install libportaudio2)"


class AudioError(RuntimeError):
    """An audio input that cannot start; the message says what failed and what to do."""


def open_audio(spec: str, bands: int = 8) -> AudioInput:
    """``file:PATH`` or a device (name, part of a name, or index; ``default``: the system's default input)."""
    if spec.startswith("file:"):
        return FileAudio(spec[5:], bands)
    return DeviceAudio(spec, bands)


class AudioTap:
    """The input's samples for a recording: the analysis thread ``push``es them, the file sink's encoder
    ``take``s them as it writes frames. Thread-safe and bounded: samples nobody takes for ``MAX_HELD``
    seconds are dropped (a stalled recording never grows the show's memory), counted.

    ``aligned`` (a file): ``take(until)`` gives exactly the samples up to ``until`` seconds of the show,
    so a rendered film's sound is sample-exact with its frames. Otherwise (a device, on its own clock)
    it gives whatever has arrived."""

    MAX_HELD = 10.0

    def __init__(self, rate: int, aligned: bool):
        self.rate, self.aligned = rate, aligned
        self._chunks: collections.deque = collections.deque()
        self._held = 0  # samples in _chunks
        self._taken = 0  # samples handed out so far (aligned: the next sample's index)
        self._lock = threading.Lock()
        self.dropped = 0

    def push(self, samples: np.ndarray) -> None:
        with self._lock:
            self._chunks.append(np.asarray(samples, dtype=np.float32))
            self._held += len(samples)
            while self._held > self.MAX_HELD * self.rate and self._chunks:
                gone = self._chunks.popleft()
                self._held -= len(gone)
                self._taken += len(gone)
                self.dropped += len(gone)

    def take(self, until: float) -> np.ndarray:
        with self._lock:
            want = max(0, int(round(until * self.rate)) - self._taken) if self.aligned else self._held
            out, n = [], 0
            while self._chunks and n < want:
                chunk = self._chunks.popleft()
                if n + len(chunk) > want:
                    self._chunks.appendleft(chunk[want - n:])
                    chunk = chunk[:want - n]
                out.append(chunk)
                n += len(chunk)
            self._held -= n
            self._taken += n
        return np.concatenate(out) if out else np.zeros(0, np.float32)


class AudioInput:
    """What the show sees of an audio input: ``start``, ``features_at``, ``status``, ``close``, and
    ``tap()`` for a recording that carries the sound."""

    name = "audio"

    def __init__(self, bands: int):
        self.analyser: Analyser | None = None
        self.bands = bands
        self._t0: float | None = None
        self._closed = threading.Event()
        self._thread: threading.Thread | None = None
        self._warn = RateLimitedLog(log, interval=5.0)
        self.counts = Counts("dropped_blocks", "late")
        self._tap: AudioTap | None = None

    def tap(self) -> AudioTap:
        """The samples as they come, for a recording (made before ``start``; one tap an input)."""
        if self._tap is None:
            self._tap = AudioTap(self.analyser.sample_rate if self.analyser is not None else SAMPLE_RATE,
                                 aligned=isinstance(self, FileAudio))
        return self._tap

    def start(self, t0: float) -> None:
        """Begin at show time ``t0`` (the clock ``features_at`` is given)."""
        self._t0 = t0
        self._thread = threading.Thread(target=self._run, name=f"ffvj {self.name}", daemon=True)
        self._thread.start()

    def features_at(self, now: float) -> AudioFeatures:
        raise NotImplementedError

    def status(self) -> str | None:
        return None

    def close(self) -> None:
        self._closed.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)

    def _run(self) -> None:
        raise NotImplementedError


class FileAudio(AudioInput):
    """A sound file, analysed in step with the show's clock."""

    def __init__(self, path: str, bands: int = 8):
        super().__init__(bands)
        import av

        self.path = Path(path).expanduser()
        self.name = f"file:{self.path.name}"
        try:
            self._container = av.open(str(self.path))
            self._stream = self._container.streams.audio[0]
        except (OSError, av.FFmpegError) as exc:
            raise AudioError(f"--audio file:{path}: cannot read it ({exc}); give a sound file FFmpeg reads "
                             "(wav, flac, mp3, m4a...)") from exc
        except IndexError:
            raise AudioError(f"--audio file:{path}: it has no audio stream") from None
        self.duration = float(self._stream.duration * self._stream.time_base) if self._stream.duration else None
        self.analyser = Analyser(SAMPLE_RATE, bands)
        self._cond = threading.Condition()
        self._wanted = 0.0  # show seconds the render loop has asked for
        self._times: collections.deque = collections.deque()  # every hop's end, seconds of audio
        self._features: collections.deque = collections.deque()
        self._analysed = 0.0
        self._ended = False

    def _samples(self):
        """The file as mono float32 blocks at SAMPLE_RATE, then silence forever."""
        import av

        resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
        try:
            for frame in self._container.decode(self._stream):
                for out in resampler.resample(frame):
                    yield out.to_ndarray().reshape(-1)
            for out in resampler.resample(None):
                yield out.to_ndarray().reshape(-1)
        except av.FFmpegError as exc:  # a damaged file: what was read stays, the rest is silence
            log.warning("audio file %s: %s; silence from here", self.path, exc)
        finally:
            self._container.close()
        self._ended = True
        log.info("audio file %s ended: silence from here", self.path.name)
        silence = np.zeros(HOP * 16, dtype=np.float32)
        while True:
            yield silence

    def _run(self) -> None:
        keep = int((AHEAD + 2.0) * SAMPLE_RATE / HOP)  # hops of features kept (behind the show and ahead)
        pending = np.zeros(0, dtype=np.float32)
        for block in self._samples():
            pending = np.concatenate([pending, block])
            while len(pending) >= HOP:
                with self._cond:
                    while self._analysed > self._wanted + AHEAD and not self._closed.is_set():
                        self._cond.wait(0.1)
                if self._closed.is_set():
                    return
                self.analyser.feed(pending[:HOP])
                if self._tap is not None:
                    self._tap.push(pending[:HOP])
                pending = pending[HOP:]
                features = self.analyser.features()
                with self._cond:
                    self._times.append(features.time)
                    self._features.append(features)
                    while len(self._times) > keep:
                        self._times.popleft()
                        self._features.popleft()
                    self._analysed = features.time
                    self._cond.notify_all()

    def features_at(self, now: float, wait: float = WAIT) -> AudioFeatures:
        """The features of the file's first ``now − t0`` seconds: the hop that ended last by then."""
        t = max(0.0, now - (self._t0 or 0.0))
        deadline = time.monotonic() + wait
        with self._cond:
            self._wanted = max(self._wanted, t)
            self._cond.notify_all()
            while self._analysed < t and not self._closed.is_set():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    self.counts.add("late")
                    self._warn.warning("late", "the audio analysis is behind the picture (%.2f s of %.2f s); "
                                       "the show goes on with the latest", self._analysed, t)
                    break
                self._cond.wait(remaining)
            i = bisect.bisect_right(self._times, t) - 1
            heard = self._features[i] if i >= 0 else AudioFeatures()
        return replace(heard, clock=(self._t0 or 0.0) + heard.time)

    def status(self) -> str | None:
        late = self.counts["late"]
        return f"audio behind {late}×" if late else None


class DeviceAudio(AudioInput):
    """A live input through PortAudio (sounddevice)."""

    def __init__(self, device: str, bands: int = 8, block: int = HOP):
        super().__init__(bands)
        try:
            import sounddevice  # noqa: F401 (at start-up: a missing library is said now, not mid-show)
        except (ImportError, OSError) as exc:
            raise AudioError(f"--audio {device}: no PortAudio here ({exc}); {EXTRA}") from exc
        self.device = device
        self.name = f"audio:{device}"
        self.block = block
        # Deep enough (512 blocks: 2.7 s at 256) that a starved analysis thread catches up instead of losing
        # samples: a lost block is a beat that came early, and the tempo would run fast.
        self._queue: queue.Queue = queue.Queue(maxsize=512)
        self._latest = AudioFeatures()
        self._lock = threading.Lock()
        self.connected = False
        self.losses = 0
        self.analyser = Analyser(SAMPLE_RATE, bands)  # (a device of another rate gets its own when it opens)

    def _resolve(self):
        """The device index for ``device`` (an index, or part of a name), or raise AudioError."""
        import sounddevice as sd

        inputs = [(i, d) for i, d in enumerate(sd.query_devices()) if d["max_input_channels"] > 0]
        if not inputs:
            raise AudioError("no audio input devices here")
        if self.device == "default":
            index = sd.default.device[0]
            if index is None or index < 0:
                return inputs[0][0]
            return index
        if self.device.isdigit():
            if any(i == int(self.device) for i, _ in inputs):
                return int(self.device)
        else:
            for i, d in inputs:
                if self.device.lower() in d["name"].lower():
                    return i
        names = ", ".join(f"{i}: {d['name']}" for i, d in inputs)
        raise AudioError(f"no audio input {self.device!r}; inputs here: {names}")

    def _open(self):
        import sounddevice as sd

        index = self._resolve()
        info = sd.query_devices(index)
        rate = int(info["default_samplerate"]) or SAMPLE_RATE
        channels = max(1, min(2, int(info["max_input_channels"])))
        stream_latency = [0.0]  # (set once the stream is open; read by the callback)
        received = [0]  # samples this stream has delivered, dropped ones included
        self._clock = _SampleClock(rate)

        def callback(indata, frames, time_info, status):  # PortAudio's thread: copy, stamp and go
            block = indata.mean(axis=1) if indata.shape[1] > 1 else indata[:, 0].copy()
            # When its last sample reached the input, on the show's clock: now, less what PortAudio says
            # passed since (its capture time of the first sample, plus the block), or its stated latency.
            lag = time_info.currentTime - time_info.inputBufferAdcTime - frames / rate \
                if time_info.inputBufferAdcTime > 0 else stream_latency[0]
            received[0] += frames
            item = (block, time.monotonic() - max(0.0, lag), received[0])
            try:
                self._queue.put_nowait(item)
            except queue.Full:
                self.counts.add("dropped_blocks")
                try:
                    self._queue.get_nowait()
                    self._queue.put_nowait(item)
                except (queue.Empty, queue.Full):
                    pass

        stream = sd.InputStream(device=index, channels=channels, samplerate=rate, blocksize=self.block,
                                dtype="float32", callback=callback)
        stream_latency[0] = float(stream.latency)
        stream.start()
        if self.analyser.sample_rate != rate:
            self.analyser = Analyser(rate, self.bands)
            if self._tap is not None:
                self._tap.rate = rate  # (the recording resamples what it takes)
        log.info("audio input: %s (%d channel(s), %d Hz)", info["name"], channels, rate)
        return stream

    def _run(self) -> None:
        stream = None
        last_block = last_try = time.monotonic()
        first = True
        heard_at = None  # the show clock's reading for the latest analysed sample
        while not self._closed.is_set():
            if stream is None and time.monotonic() - last_try >= (0.0 if first else RETRY_EVERY):
                last_try = time.monotonic()
                try:
                    stream = self._open()
                    self.connected, last_block = True, time.monotonic()
                    if not first:
                        log.warning("audio input %s is back", self.device)
                except Exception as exc:  # noqa: BLE001 — PortAudio's errors vary by host; the show goes on
                    if first:
                        log.warning("audio input %s: %s; the show runs without it and looks for it every %.0f s",
                                    self.device, exc, RETRY_EVERY)
                first = False
            try:
                block, arrived, count = self._queue.get(timeout=0.05)
            except queue.Empty:
                block = None
            now = time.monotonic()
            if block is not None:
                last_block = now
                self.analyser.feed(block)
                if self._tap is not None:
                    self._tap.push(block)
                # The analysis has heard up to the last whole hop: the samples left over came after it.
                heard_at = self._clock.time_of(count - self.analyser.pending, arrived, count)
            elif stream is None or now - last_block > LOST_AFTER:
                if stream is not None:  # it stopped delivering: unplugged, or its server went
                    self.losses += 1
                    log.warning("audio input %s lost; the modulation eases to rest, and it is looked for every "
                                "%.0f s", self.device, RETRY_EVERY)
                    stream = self._close_stream(stream)
                    self.connected = False
                    last_try = now
                self.analyser.feed(np.zeros(int(0.05 * self.analyser.sample_rate), dtype=np.float32))  # silence
                heard_at = now  # silence made up here is heard now
            if heard_at is not None:
                with self._lock:
                    self._latest = replace(self.analyser.features(), clock=heard_at)
        self._close_stream(stream)

    @staticmethod
    def _close_stream(stream):
        if stream is not None:
            try:
                stream.abort()
                stream.close()
            except Exception:  # noqa: BLE001 — a device already gone may fail to close; nothing to save
                pass
        return None

    def features_at(self, now: float, wait: float = 0.0) -> AudioFeatures:
        """The latest features (a device runs on its own clock: there is no waiting for it)."""
        with self._lock:
            return self._latest

    def status(self) -> str | None:
        dropped = self.counts["dropped_blocks"]
        parts = [] if self.connected else [f"audio {self.device} absent"]
        return ", ".join(parts + [f"{dropped} audio blocks dropped"] * bool(dropped)) or None


def list_inputs() -> list[str]:
    """PortAudio's input devices, as ``ffvj devices`` prints them ('' when PortAudio is not here)."""
    try:
        import sounddevice as sd

        return [f"{i}: {d['name']} ({d['max_input_channels']} in, {int(d['default_samplerate'])} Hz)"
                for i, d in enumerate(sd.query_devices()) if d["max_input_channels"] > 0]
    except (ImportError, OSError):
        return []


class _SampleClock:
    """When a device's samples were heard, on the show's clock, from the sample count rather than from when
    each block happened to reach Python: a callback delayed by a busy CPU arrives late, never early, so
    the earliest arrival over the last ``window`` seconds, less the samples since, is the stream's start.
    (The window lets it follow a sound card's clock drifting from the computer's.)"""

    def __init__(self, rate: int, window: float = 5.0):
        self.rate, self.window = rate, window
        self._starts: collections.deque = collections.deque()  # (arrived, start) with rising starts

    def time_of(self, sample: int, arrived: float, count: int) -> float:
        """The show-clock time of ``sample``, given that sample ``count`` arrived at ``arrived``."""
        start = arrived - count / self.rate
        while self._starts and self._starts[-1][1] >= start:  # a sliding minimum: the latest lowest wins
            self._starts.pop()
        self._starts.append((arrived, start))
        while self._starts[0][0] < arrived - self.window:
            self._starts.popleft()
        return self._starts[0][1] + sample / self.rate
