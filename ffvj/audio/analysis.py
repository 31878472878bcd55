"""What the music is doing, from its samples alone: band energies, auto-gained levels, onsets, tempo and beat.

    analyser = Analyser(sample_rate=48000)
    analyser.feed(samples)            # mono float32, any block size: the result does not depend on it
    features = analyser.features()    # the latest AudioFeatures (a frozen snapshot)

Everything runs on the audio's own clock: one short-time spectrum every ``HOP`` samples (5.3 ms at 48 kHz,
a ``FRAME``-sample Hann window), so the envelopes' attack and release are seconds of audio whatever the
frame rate of the picture, and a file analysed offline gives the same numbers as the same file live.

* **Bands**: ``bands`` log-spaced bands from 40 Hz to 16 kHz, and bass (20–250 Hz), mid (250 Hz–2 kHz)
  and high (2–16 kHz), in dB, each through an attack/release envelope follower.
* **Auto-gain**: every band's level against its own running average (``average`` seconds): 0.5 at the
  average, 0 and 1 at ``RANGE_DB``/2 below and above it, and 0 under the silence gate. A quiet bar and
  a loud club drive the picture alike.
* **Onsets**: spectral flux of the log-compressed magnitude (the sum of the bins' rises, Dixon 2006),
  peak-picked against a moving median plus a margin that scales with the flux's running mean, at most
  one per ``MIN_ONSET_GAP``. ``onset`` is a pulse: 1 at an onset, falling with the release.
* **Tempo and beat**: the autocorrelation of the last ``TEMPO_WINDOW`` seconds of flux, summed over four
  multiples of each candidate period and weighted by a log-Gaussian prior around 120 BPM (the usual
  guard against octave errors, Ellis 2007), gives the tempo (read from the flux of each band weighted
  alike, so the kick's few low bins count as much as a hi-hat's hundreds); a comb over the same flux gives where the
  beats fall, and a phase-locked loop keeps ``beat`` continuous (it never jumps back) while pulling it
  onto them. ``confidence`` (0–1) is how much of the flux's energy the beat comb explains.

Why not a library: aubio does all of this but is GPL (ffvj is MIT); librosa's beat tracker works on a
whole recording at once, not a live stream; madmom's models are licensed for non-commercial use. The
methods here are the textbook ones, small enough to read in one sitting.
"""

from __future__ import annotations

import collections
import math
from dataclasses import dataclass

import numpy as np

SAMPLE_RATE = 48000  # what every input is resampled to
FRAME = 1024  # samples per spectrum (21 ms at 48 kHz)
HOP = 256  # samples between spectra (5.3 ms)
RANGE_DB = 24.0  # the auto-gained level spans ±12 dB around the running average
GATE_DB = -70.0  # below this (dBFS, a full-scale sine reads 0) there is no music: levels rest at 0
MIN_ONSET_GAP = 0.05  # seconds: two onsets closer than this are one
RECENT_ONSETS = 16  # onset times the features carry (a surface sampling them once a frame misses none)
ONSET_MEDIAN = 0.25  # seconds of flux the adaptive threshold's median looks back over
ONSET_MARGIN = 1.0  # × the flux's running mean above the median
TEMPO_WINDOW = 6.0  # seconds of flux the tempo is read from
TEMPO_EVERY = 0.1  # seconds between tempo readings
MIN_BPM, MAX_BPM, PRIOR_BPM = 60.0, 200.0, 120.0
MIN_CONFIDENCE = 0.25  # below it the beat is not trusted (the tempo clock ignores it)
BASS, MID, HIGH = (20.0, 250.0), (250.0, 2000.0), (2000.0, 16000.0)
# An onset peaks in the flux this long after the sound began: the window must take in the rise before the
# log magnitude jumps. Measured on clicks and drum hits (tests/audio/test_analysis.py): 9–12 ms; the
# reported onset and beat times are corrected by it.
FLUX_DELAY = 0.008


@dataclass(frozen=True)
class AudioFeatures:
    """The music at one moment, as the modulation and the surfaces read it."""

    time: float = 0.0  # seconds of audio analysed so far
    level: float = 0.0  # every band together, auto-gained 0..1 (0.5: as loud as lately)
    bass: float = 0.0
    mid: float = 0.0
    high: float = 0.0
    bands: tuple[float, ...] = ()
    onset: float = 0.0  # 1 at an onset, falling to 0 with the release
    onsets: int = 0  # onsets so far
    recent_onsets: tuple[float, ...] = ()  # when the last few onsets began (seconds of audio), oldest first
    bpm: float = PRIOR_BPM
    beat: float = 0.0  # beats since the analysis began, continuous; whole numbers on the beats
    confidence: float = 0.0  # 0..1: how sure the beat is
    active: bool = False  # there is a signal above the silence gate
    clock: float | None = None  # the show clock's reading when ``time`` was heard (the input sets it)

    def beat_at(self, now: float) -> float:
        """``beat`` carried on to the show clock's ``now`` at the tempo: what the analysis heard a few
        milliseconds ago (the device's latency, the hop, the queue), compensated."""
        return self.beat + (now - self.clock) * self.bpm / 60.0 if self.clock is not None else self.beat

    @property
    def beat_pulse(self) -> float:
        """1 on each beat, falling linearly to 0 over the beat (a saw down: what a kick on every beat does)."""
        return 1.0 - (self.beat - math.floor(self.beat)) if self.confidence >= MIN_CONFIDENCE else 0.0

    def value(self, name: str) -> float:
        """One feature by its modulation name (``FEATURES``), 0..1."""
        if name == "beat":
            return self.beat_pulse
        if name.startswith("band"):
            index = int(name[4:]) - 1
            return self.bands[index] if 0 <= index < len(self.bands) else 0.0
        return float(getattr(self, name))


BAND_FEATURES = 8  # band1..band8 are in the modulation's choices (an analyser may have fewer bands)
FEATURES = ("level", "bass", "mid", "high", "onset", "beat") + tuple(f"band{k}" for k in range(1, BAND_FEATURES + 1))


class _Follower:
    """An attack/release envelope follower on a vector, advanced once per hop."""

    def __init__(self, size: int, attack: float, release: float, hop_seconds: float, start: float):
        self.up = 1.0 - math.exp(-hop_seconds / max(attack, 1e-4))
        self.down = 1.0 - math.exp(-hop_seconds / max(release, 1e-4))
        self.value = np.full(size, start, dtype=np.float64)

    def step(self, x: np.ndarray) -> np.ndarray:
        rate = np.where(x > self.value, self.up, self.down)
        self.value += (x - self.value) * rate
        return self.value


class Analyser:
    """Feed it samples; read ``features()``. One thread at a time (the audio input's)."""

    def __init__(self, sample_rate: int = SAMPLE_RATE, bands: int = 8, attack: float = 0.01, release: float = 0.25,
                 average: float = 8.0):
        if not 1 <= bands <= 32:
            raise ValueError(f"bands must be 1..32, not {bands}")
        self.sample_rate, self.release = sample_rate, release
        self.hop_seconds = HOP / sample_rate
        self._window = np.hanning(FRAME).astype(np.float32)
        # Power of a full-scale sine through this window: 0 dBFS.
        self._full_scale = (self._window.sum() / 2) ** 2 * 2
        freqs = np.fft.rfftfreq(FRAME, 1.0 / sample_rate)
        top = min(16000.0, sample_rate / 2 * 0.95)
        edges = np.geomspace(40.0, top, bands + 1)
        named = [BASS, MID, (HIGH[0], min(HIGH[1], top))]
        ranges = [(a, b) for a, b in zip(edges[:-1], edges[1:])] + named
        # Each group of bins as a 0/1 matrix: one matrix product gives every band's power per hop.
        self._groups = np.stack([(freqs >= lo) & (freqs < hi) for lo, hi in ranges]).astype(np.float64)
        self._groups[self._groups.sum(1) == 0, np.argmin(np.abs(freqs - edges[0]))] = 1  # a band narrower than a bin
        self._band_share = self._groups[:bands] / self._groups[:bands].sum(1, keepdims=True)
        self._level_row = np.ones(len(freqs))[None] * ((freqs >= 20) & (freqs < top))
        self.bands = bands
        self._envelope = _Follower(len(ranges) + 1, attack, release, self.hop_seconds, GATE_DB)
        self._average = np.full(len(ranges) + 1, GATE_DB)  # each level's running average, dB
        self._average_rate = 1.0 - math.exp(-self.hop_seconds / average)
        self._loud_hops = 0
        self._gate = _Follower(1, attack, release, self.hop_seconds, 0.0)
        self._buffer = np.zeros(FRAME, dtype=np.float32)
        self._pending = np.zeros(0, dtype=np.float32)
        self._hops = 0
        self._history = (None, None)  # the log magnitudes of the last two hops, oldest first
        # Flux history (for the onset threshold and the tempo), one value per hop, newest last.
        self._flux = np.zeros(int(round(TEMPO_WINDOW / self.hop_seconds)), dtype=np.float64)
        self._flux_mean = 0.0
        self._pulse = np.zeros_like(self._flux)  # the band-weighted flux: what the tempo is read from
        self._peak = (0.0, 0.0)  # the flux one and two hops ago, for the peak test
        self._onsets = 0
        self._recent_onsets: collections.deque = collections.deque(maxlen=RECENT_ONSETS)
        self._onset_pulse = 0.0
        self._tempo_every = max(1, int(round(TEMPO_EVERY / self.hop_seconds)))
        self._bpm, self._confidence = PRIOR_BPM, 0.0
        self._beat = 0.0
        self._pull = 0.0  # the phase correction still to be spread over the next hops
        self._tempo_lags = 60.0 / np.arange(MIN_BPM, MAX_BPM + 0.05, 0.1) / self.hop_seconds  # hops per beat
        bpms = 60.0 / (self._tempo_lags * self.hop_seconds)
        self._prior = np.exp(-0.5 * (np.log2(bpms / PRIOR_BPM) / 0.9) ** 2)
        self._levels = np.zeros(len(ranges) + 1)
        self._active = False
        self._heard = False  # the last hop was above the silence gate

    @property
    def pending(self) -> int:
        """Samples fed but not yet analysed (less than a hop)."""
        return len(self._pending)

    @property
    def time(self) -> float:
        """Seconds of audio analysed (the end of the last whole hop)."""
        return self._hops * self.hop_seconds

    def feed(self, samples, each_hop=None) -> int:
        """Analyse ``samples`` (mono, float, −1..1; any length). Returns the hops completed. ``each_hop()``,
        if given, is called after every hop (a file's input keeps every hop's features)."""
        samples = np.asarray(samples, dtype=np.float32).reshape(-1)
        if not np.all(np.isfinite(samples)):
            samples = np.nan_to_num(samples, nan=0.0, posinf=0.0, neginf=0.0)  # a broken driver: silence, not NaN
        data = np.concatenate([self._pending, samples]) if len(self._pending) else samples
        hops = len(data) // HOP
        if hops:
            # Every hop's spectrum at once (the Python per hop is what a busy show feels, not the FFTs):
            # the windows end at each hop's last sample and reach back FRAME samples.
            signal = np.concatenate([self._buffer[HOP:], data[:hops * HOP]])
            frames = np.lib.stride_tricks.sliding_window_view(signal, FRAME)[::HOP]
            spectrum = np.fft.rfft(frames * self._window, axis=1)
            power = spectrum.real ** 2 + spectrum.imag ** 2
            # Levels: every band, bass/mid/high and the whole, in dBFS; log magnitudes for the flux.
            band_power = np.concatenate([power @ self._groups.T, power @ self._level_row.T], axis=1)
            db = 10.0 * np.log10(band_power / self._full_scale + 1e-12)
            magnitude = np.log1p(np.sqrt(power) * (1000.0 / self._window.sum()))
            self._buffer = signal[-FRAME:].copy()
            for i in range(hops):
                self._hop(db[i], magnitude[i])
                if each_hop is not None:
                    each_hop()
        self._pending = data[hops * HOP:].copy()
        return hops

    def _hop(self, db: np.ndarray, magnitude: np.ndarray) -> None:
        self._hops += 1
        env = self._envelope.step(db)
        loud = env[-1] > GATE_DB
        if loud:  # (silence does not drag the average down: the music's level is what it is compared with)
            # Over every hop heard so far at first, then over the last ``average`` seconds.
            self._loud_hops += 1
            self._average += (env - self._average) * max(self._average_rate, 1.0 / self._loud_hops)
        self._active = bool(loud)
        avg = self._average
        gate = self._gate.step(np.array([1.0 if loud else 0.0]))[0]
        self._levels = np.clip(0.5 + (env - avg) / RANGE_DB, 0.0, 1.0) * gate
        # Onsets: spectral flux of the log magnitude.
        # Two fluxes: over every bin for onsets (a hi-hat is an onset as much as a kick), and each band's mean
        # rise, the bands weighted alike, for the tempo (a kick moves a few low bins, a hi-hat hundreds: the
        # beat is in the kick).
        # SuperFlux (Böck and Widmer 2013): the rise over the magnitude two hops back, max-filtered across
        # three bins, so a noisy tail (a snare's) wobbling from bin to bin is no new onset.
        reference = self._history[0]
        self._history = (self._history[1], magnitude)
        if reference is None:
            rise = np.zeros_like(magnitude)
        else:
            spread = reference.copy()
            np.maximum(spread[1:], reference[:-1], out=spread[1:])
            np.maximum(spread[:-1], reference[1:], out=spread[:-1])
            rise = np.maximum(magnitude - spread, 0)
        flux = float(rise.mean())
        self._pulse[:-1] = self._pulse[1:]
        self._pulse[-1] = float((self._band_share @ rise).mean())
        self._flux[:-1] = self._flux[1:]
        self._flux[-1] = flux
        # The flux's running mean: over every hop of music so far at first, then over the last few seconds
        # (silence before the music does not count: it would leave the threshold at nothing when it starts).
        if loud:
            self._flux_mean += (flux - self._flux_mean) * max(0.002, 1.0 / self._loud_hops)
        previous, before = self._peak
        self._peak = (flux, previous)
        self._onset_pulse *= math.exp(-self.hop_seconds / max(self.release, 1e-3))
        span = int(round(ONSET_MEDIAN / self.hop_seconds))
        recent = self._flux[-span - 2:-2]
        threshold = float(np.partition(recent, len(recent) // 2)[len(recent) // 2]) + ONSET_MARGIN * self._flux_mean
        # (the gate on this hop's own level, not its envelope: a short, quiet click is still an onset)
        heard, self._heard = self._heard, bool(db[-1] > GATE_DB)
        if previous > before and previous >= flux and previous > threshold and (heard or self._heard):
            began = self.time - self.hop_seconds - FLUX_DELAY  # the peak was a hop ago
            if not self._recent_onsets or began - self._recent_onsets[-1] >= MIN_ONSET_GAP:
                self._onsets += 1
                self._recent_onsets.append(began)
                self._onset_pulse = 1.0
        # The beat runs on at the tempo; every TEMPO_EVERY the tempo is read and the phase pulled in.
        advance = self.hop_seconds * self._bpm / 60.0
        pull = max(-0.5 * advance, min(0.5 * advance, self._pull))  # never backwards, never a jump
        self._beat += advance + pull
        self._pull -= pull
        if self._hops % self._tempo_every == 0:
            self._read_tempo()

    def _read_tempo(self) -> None:
        filled = min(self._hops, len(self._flux))
        if filled * self.hop_seconds < 2.0:
            return  # two seconds at least: four beats at 120 BPM
        flux = self._pulse[-filled:]
        x = flux - flux.mean()
        n = 1 << int(math.ceil(math.log2(2 * len(x))))
        spectrum = np.fft.rfft(x, n)
        acf = np.fft.irfft(spectrum.real ** 2 + spectrum.imag ** 2, n)[:len(x)]
        if acf[0] <= 1e-12:
            self._confidence *= 0.9
            return
        acf = acf / acf[0]
        lags = np.arange(len(acf))
        score = np.zeros_like(self._tempo_lags)
        for k in (1, 2, 3, 4):
            at = self._tempo_lags * k
            score += np.where(at < len(acf) - 1, np.interp(at, lags, acf), 0.0) / k
        index = int(np.argmax(score * self._prior))
        period = self._tempo_lags[index]  # hops per beat
        ratio, offset = self._comb(flux, period)
        # How much more flux falls on the beats than on average: 1 for noise, far more for a beat.
        confidence = float(np.clip((ratio - 1.0) / 2.0, 0.0, 1.0))
        bpm = 60.0 / (period * self.hop_seconds)
        if self._confidence < MIN_CONFIDENCE or abs(bpm - self._bpm) > 0.04 * self._bpm:
            self._bpm = bpm  # a new tempo: take it at once
        else:
            self._bpm += (bpm - self._bpm) * 0.3
        self._confidence = confidence
        # The phase: the last beat began ``offset`` hops (and the flux's delay) ago. ``beat`` is pulled toward
        # it over the next hops (a phase-locked loop: it never jumps, never runs backwards).
        observed = (offset * self.hop_seconds + FLUX_DELAY) * self._bpm / 60.0  # beats since the last beat
        error = ((self._beat - math.floor(self._beat)) - observed + 0.5) % 1.0 - 0.5
        self._pull = -0.5 * error if confidence >= MIN_CONFIDENCE else 0.0

    @staticmethod
    def _comb(flux: np.ndarray, period: float) -> tuple[float, float]:
        """The comb of beats ``period`` hops apart that gathers the most flux: how much more flux it gathers
        than the average (its ratio) and how many hops back from the newest its last tooth is."""
        offsets = np.arange(0.0, period, 0.25)
        count = max(1, int(len(flux) // period))
        ends = len(flux) - 1 - offsets[:, None] - period * np.arange(count)[None, :]
        comb = np.interp(ends, np.arange(len(flux)), flux).sum(1)
        best = int(np.argmax(comb))
        return float(comb[best] / count / max(float(flux.mean()), 1e-12)), float(offsets[best])

    def features(self) -> AudioFeatures:
        lv = self._levels
        b = self.bands
        return AudioFeatures(
            time=self.time, level=float(lv[-1]), bass=float(lv[b]), mid=float(lv[b + 1]), high=float(lv[b + 2]),
            bands=tuple(float(v) for v in lv[:b]), onset=float(self._onset_pulse), onsets=self._onsets,
            recent_onsets=tuple(self._recent_onsets), bpm=float(self._bpm), beat=float(self._beat),
            confidence=float(self._confidence), active=self._active)
