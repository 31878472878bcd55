"""Audio inputs, each analysed on its own thread (never on the render loop).

    audio = open_audio("file:track.wav")     # a file, analysed in step with the frames (offline renders repeat)
    audio = open_audio("system")             # a PortAudio input device by name or index
    audio = open_audio("jack:player:out")    # JACK itself: its capture ports, or the ones named
    audio.start(t0)                          # t0: the show clock's time of frame 0
    features = audio.features_at(now)        # the render loop, once a frame: the music at that moment
    audio.close()

``file:PATH`` is decoded by PyAV (any format FFmpeg reads) to mono at ``SAMPLE_RATE``. Its thread
analyses ahead of the show by at most ``AHEAD`` seconds and keeps every hop's features, so the
features for frame n are those of the audio's first n / fps seconds, whatever the pace: an offline
render and the tests hear exactly what a live show would (``features_at`` waits, bounded, for the
analysis to get there). After the end of the file it is silence: the modulation eases to rest.

A device is read through sounddevice (PortAudio: ALSA, CoreAudio, WASAPI, JACK...), and JACK also
directly through JACK-Client (``jack:``), which survives its server restarting. Their callbacks only
copy the block into a bounded queue (full: the oldest block goes, counted); the analysis thread takes
them from there. When no block comes for ``LOST_AFTER`` seconds (unplugged, the JACK
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

from ..reporting import Counts, RateLimitedLog
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
    """``file:PATH``, ``jack:[PORT,...]``, or a PortAudio device (name, part of a name, or index; ``default``:
    the system's default input)."""
    if spec.startswith("file:"):
        return FileAudio(spec[5:], bands)
    if spec == "jack" or spec.startswith("jack:"):
        return JackAudio(spec[5:], bands)
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
    aligned = False  # its samples are in step with the show's clock (a file), not on a device's own

    def __init__(self, bands: int):
        self.analyser: Analyser | None = None
        self.bands = bands
        self._t0: float | None = None
        self._closed = threading.Event()
        self._thread: threading.Thread | None = None
        self._warn = RateLimitedLog(log, interval=5.0)
        self.counts = Counts("dropped_blocks", "late")
        self._taps: list[AudioTap] = []  # one per recording that carries the sound (a film, a show file)
        self._wait = WAIT

    def tap(self) -> AudioTap:
        """The samples as they come, for a recording (made before ``start``): each call a tap of its own,
        so a film and a show file both get every sample."""
        tap = AudioTap(self.analyser.sample_rate if self.analyser is not None else SAMPLE_RATE, aligned=self.aligned)
        self._taps.append(tap)
        return tap

    def start(self, t0: float, patient: bool = True) -> None:
        """Begin at show time ``t0`` (the clock ``features_at`` is given). ``patient``: an offline render
        waits (``WAIT`` at most) for a file's analysis to reach each frame, so it repeats exactly; a live
        show takes what is there after a millisecond at most, never stalling the picture."""
        self._t0 = t0
        self._wait = WAIT if patient else 0.001
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

    aligned = True

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
        chunk = 16 * HOP  # analysed 16 hops at a time (one FFT call for all), every hop's features kept
        pending = np.zeros(0, dtype=np.float32)

        def keep_hop():
            features = self.analyser.features()
            with self._cond:
                self._times.append(features.time)
                self._features.append(features)
                while len(self._times) > keep:
                    self._times.popleft()
                    self._features.popleft()

        for block in self._samples():
            pending = np.concatenate([pending, block])
            while len(pending) >= chunk:
                with self._cond:
                    while self._analysed > self._wanted + AHEAD and not self._closed.is_set():
                        self._cond.wait(0.1)
                if self._closed.is_set():
                    return
                self.analyser.feed(pending[:chunk], keep_hop)
                for tap in self._taps:
                    tap.push(pending[:chunk])
                pending = pending[chunk:]
                with self._cond:
                    self._analysed = self.analyser.time
                    self._cond.notify_all()

    def features_at(self, now: float) -> AudioFeatures:
        """The features of the file's first ``now − t0`` seconds: the hop that ended last by then."""
        t = max(0.0, now - (self._t0 or 0.0))
        deadline = time.monotonic() + self._wait
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


class LiveAudio(AudioInput):
    """A live input on its own clock: a backend's callback ``_deliver``s blocks into a bounded queue, the
    analysis thread takes them, and a lost input is analysed as silence and looked for again. Backends:
    ``DeviceAudio`` (PortAudio) and ``JackAudio`` (JACK itself)."""

    def __init__(self, device: str, bands: int = 8):
        super().__init__(bands)
        self.device = device
        self.name = f"audio:{device}"
        # Deep enough (512 blocks: 2.7 s at 256) that a starved analysis thread catches up instead of losing
        # samples: a lost block is a beat that came early, and the tempo would run fast.
        self._queue: queue.Queue = queue.Queue(maxsize=512)
        self._latest = AudioFeatures()
        self._lock = threading.Lock()
        self._gone = threading.Event()  # the backend said its input went away (a JACK server shut down)
        self.connected = False
        self.given_up: str | None = None  # why the input is no longer looked for (a backend that cannot let go)
        self.analyser = Analyser(SAMPLE_RATE, bands)  # (an input of another rate gets its own when it opens)
        self._clock = _SampleClock(SAMPLE_RATE)

    # -- a backend's part --

    def _open(self):
        """Open the input; return what ``_close`` takes. Raise anything to say it is not there (yet)."""
        raise NotImplementedError

    def _close(self, handle) -> None:
        raise NotImplementedError

    def _rescan(self) -> None:
        """Before looking again for an input that went away."""

    def _maintain(self, handle) -> None:
        """Once a second while the input is open (JACK: connect sources that appeared since)."""

    def _started(self, rate: int) -> None:
        """The backend opened at ``rate``: the analysis (and a recording's sound) at that rate."""
        self._clock = _SampleClock(rate)
        if self.analyser.sample_rate != rate:
            self.analyser = Analyser(rate, self.bands)
            for tap in self._taps:
                tap.rate = rate  # (the recording resamples what it takes)

    def _deliver(self, block: np.ndarray, arrived: float, count: int) -> None:
        """From the backend's audio thread: a block whose last sample arrived at ``arrived`` (show clock)
        and was the stream's ``count``-th. Never blocks: a full queue loses its oldest block, counted."""
        item = (block, arrived, count)
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            self.counts.add("dropped_blocks")
            try:
                self._queue.get_nowait()
                self._queue.put_nowait(item)
            except (queue.Empty, queue.Full):
                pass

    # -- the analysis thread --

    def _run(self) -> None:
        handle = None
        last_block = last_try = time.monotonic()
        first = True
        heard_at = None  # the show clock's reading for the latest analysed sample
        last_kept = time.monotonic()
        while not self._closed.is_set():
            if handle is None and self.given_up is None and \
                    time.monotonic() - last_try >= (0.0 if first else RETRY_EVERY):
                last_try = time.monotonic()
                try:
                    if not first:
                        self._rescan()
                    handle = self._open()
                    self.connected, last_block = True, time.monotonic()
                    self._gone.clear()
                    if not first:
                        log.warning("audio input %s is back", self.device)
                except Exception as exc:  # noqa: BLE001 — the backends' errors vary by host; the show goes on
                    if first:
                        log.warning("audio input %s: %s; the show runs without it and looks for it every %.0f s",
                                    self.device, exc, RETRY_EVERY)
                first = False
            try:
                block, arrived, count = self._queue.get(timeout=0.05)
            except queue.Empty:
                block = None
            now = time.monotonic()
            if handle is not None and now - last_kept >= 1.0:
                last_kept = now
                self._maintain(handle)
            if block is not None:
                last_block = now
                self.analyser.feed(block)
                for tap in self._taps:
                    tap.push(block)
                # The analysis has heard up to the last whole hop: the samples left over came after it.
                heard_at = self._clock.time_of(count - self.analyser.pending, arrived, count)
            elif handle is None or self._gone.is_set() or now - last_block > LOST_AFTER:
                if handle is not None:  # it stopped delivering: unplugged, or its server went
                    log.warning("audio input %s lost; the modulation eases to rest, and it is looked for every "
                                "%.0f s", self.device, RETRY_EVERY)
                    handle = self._let_go(handle)
                    self.connected = False
                    last_try = now
                self.analyser.feed(np.zeros(int(0.05 * self.analyser.sample_rate), dtype=np.float32))  # silence
                heard_at = now  # silence made up here is heard now
            if heard_at is not None:
                with self._lock:
                    self._latest = replace(self.analyser.features(), clock=heard_at)
        if handle is not None:
            self._let_go(handle)

    def _let_go(self, handle) -> None:
        """Close the backend's handle on a thread of its own, waiting a second at most: a backend that
        cannot let go of an input that vanished (PortAudio's JACK host, when the server dies) must not
        take the analysis with it. It is then not looked for again (said once)."""
        closer = threading.Thread(target=self._close, args=(handle,), name="ffvj audio close", daemon=True)
        closer.start()
        closer.join(1.0)
        if closer.is_alive():
            self.given_up = (f"{type(self).__name__} could not close the lost input {self.device}; it is not looked "
                             "for again in this show" + (" (for JACK, --audio jack: recovers)"
                                                         if isinstance(self, DeviceAudio) else ""))
            log.error("%s", self.given_up)
        return None

    def features_at(self, now: float) -> AudioFeatures:
        """The latest features (a live input runs on its own clock: there is no waiting for it)."""
        with self._lock:
            return self._latest

    def status(self) -> str | None:
        dropped = self.counts["dropped_blocks"]
        parts = [] if self.connected else [f"audio {self.device} " + ("given up" if self.given_up else "absent")]
        return ", ".join(parts + [f"{dropped} audio blocks dropped"] * bool(dropped)) or None


class DeviceAudio(LiveAudio):
    """An input device through PortAudio (sounddevice): ALSA, CoreAudio, WASAPI, JACK's too. (PortAudio's
    JACK host cannot let go of a server that died: close hangs and re-initialising aborts, measured with
    jackd2 1.9.21; ``JackAudio`` reads JACK itself and survives it.)"""

    def __init__(self, device: str, bands: int = 8, block: int = HOP):
        try:
            import sounddevice  # noqa: F401 (at start-up: a missing library is said now, not mid-show)
        except (ImportError, OSError) as exc:
            raise AudioError(f"--audio {device}: no PortAudio here ({exc}); {EXTRA}") from exc
        super().__init__(device, bands)
        self.block = block

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

        def callback(indata, frames, time_info, status):  # PortAudio's thread: copy, stamp and go
            block = indata.mean(axis=1) if indata.shape[1] > 1 else indata[:, 0].copy()
            # When its last sample reached the input, on the show's clock: now, less what PortAudio says
            # passed since (its capture time of the first sample, plus the block), or its stated latency.
            lag = time_info.currentTime - time_info.inputBufferAdcTime - frames / rate \
                if time_info.inputBufferAdcTime > 0 else stream_latency[0]
            received[0] += frames
            self._deliver(block, time.monotonic() - max(0.0, lag), received[0])

        stream = sd.InputStream(device=index, channels=channels, samplerate=rate, blocksize=self.block,
                                dtype="float32", callback=callback, finished_callback=self._gone.set)
        stream_latency[0] = float(stream.latency)
        self._started(rate)
        stream.start()
        log.info("audio input: %s (%d channel(s), %d Hz)", info["name"], channels, rate)
        return stream

    def _close(self, stream) -> None:
        stream.abort()
        stream.close()

    def _rescan(self) -> None:
        """Let PortAudio see the devices as they are now (one plugged back in): it lists them from its
        initialisation, so sounddevice's own way to look again is to terminate and initialise it."""
        import sounddevice as sd

        sd._terminate()
        sd._initialize()


class JackAudio(LiveAudio):
    """JACK itself, through JACK-Client: ``jack:`` (the physical capture ports) or ``jack:PORT,PORT...``
    (any output ports, e.g. a player's). A client "ffvj" with one input port ``in``; when the server
    shuts down it is closed and a new one made once the server is back."""

    def __init__(self, spec: str, bands: int = 8):
        try:
            import jack  # noqa: F401
        except (ImportError, OSError) as exc:
            raise AudioError(f"--audio jack: needs JACK-Client ({exc}): pip install JACK-Client") from exc
        super().__init__(spec or "jack", bands)
        self.sources = [p for p in spec.split(",") if p] if spec else []

    def _open(self):
        import jack

        client = jack.Client("ffvj", no_start_server=True)
        port = client.inports.register("in")
        rate = client.samplerate
        received = [0]

        @client.set_process_callback
        def process(frames):  # JACK's thread: copy, stamp and go
            received[0] += frames
            # This cycle's input ends at the cycle's start, on the show's clock.
            self._deliver(port.get_array().copy(), time.monotonic() - client.frames_since_cycle_start / rate,
                          received[0])

        client.set_shutdown_callback(lambda status, reason: self._gone.set())
        self._started(rate)
        client.activate()
        log.info("audio input: JACK client %s at %d Hz, %s", client.name, rate,
                 f"hearing {', '.join(self.sources)} (as they appear)" if self.sources else "hearing the capture ports")
        self._maintain(client)
        return client

    def _maintain(self, client) -> None:
        """Connect the sources asked for (or the physical capture ports) that are there and not yet
        connected: a player started after ffvj, or again after the server came back."""
        import jack

        port = client.inports[0]
        have = {p.name for p in client.get_all_connections(port)}
        wanted = self.sources or [p.name for p in client.get_ports(is_physical=True, is_output=True, is_audio=True)]
        present = {p.name for p in client.get_ports(is_output=True, is_audio=True)}
        for source in wanted:
            if source in present and source not in have:
                try:
                    client.connect(source, port)
                except jack.JackError as exc:
                    self._warn.warning(f"connect:{source}", "audio input jack: cannot connect %s (%s)", source, exc)

    def _close(self, client) -> None:
        if not self._gone.is_set():  # (after the server shut down there is nothing to deactivate: just close)
            client.deactivate()
        client.close()


def list_inputs() -> list[str]:
    """The inputs ``--audio`` can name, as ``ffvj devices`` prints them: PortAudio's input devices, and a
    running JACK server's output ports (``jack:PORT``). Empty where neither library is here."""
    found = []
    try:
        import sounddevice as sd

        found += [f"{i}: {d['name']} ({d['max_input_channels']} in, {int(d['default_samplerate'])} Hz)"
                  for i, d in enumerate(sd.query_devices()) if d["max_input_channels"] > 0]
    except (ImportError, OSError):
        pass
    try:
        import jack
    except (ImportError, OSError):
        return found
    try:
        with jack.Client("ffvj-devices", no_start_server=True) as client:
            found += [f"jack:{p.name}" for p in client.get_ports(is_output=True, is_audio=True)]
    except jack.JackError:
        pass  # no JACK server running
    return found


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
