"""The show's tempo: BPM and beat phase from MIDI clock, the music's own beat, tap tempo or a set value.

One clock, several sources, in this order of precedence: an Ableton Link session (``follow("link", ...)``:
every peer shares tempo and bar), MIDI clock (an instrument or a DAW that sends it leads the room), the
beat heard in the audio input (``follow("audio", ...)``), then tap tempo and ``bpm``. A source leads while it keeps speaking; ``HOLD`` seconds after it last spoke, the next one down
may lead. Tap and a set BPM are the performer's word: they take effect at once, and the audio beat takes
over again only when it is sure of itself (the analysis says so).

Thread-safe: the MIDI callback calls ``clock_tick``/``start``/``stop``/``cont``; OSC handlers call
``tap``/``set_bpm``; the render loop reads ``beat(now)``. Times are ``time.monotonic()`` seconds (``clock``;
an offline render sets its own frame clock).
"""

from __future__ import annotations

import collections
import threading
import time

PPQN = 24  # MIDI clock pulses per quarter note
MIN_BPM, MAX_BPM = 20.0, 300.0
PRECEDENCE = ("link", "midi clock", "audio", "tap")  # who leads when several speak ("set" counts as "tap")
HOLD = 2.0  # seconds a source keeps the lead after it last spoke
MAX_PULL = 0.05  # beats a source may move the phase in one call (the beat stays continuous)
JOIN = 0.25  # beats: a source further off than this when it takes the lead sets the phase at once (a join)


class Tempo:
    def __init__(self, bpm: float = 120.0):
        self._lock = threading.Lock()
        self.clock = time.monotonic  # what "now" is when a caller does not say
        self._bpm = bpm
        self._anchor_time = time.monotonic()  # when beat ``_anchor_beat`` happened
        self._anchor_beat = 0.0
        self._ticks: collections.deque[float] = collections.deque(maxlen=PPQN * 2 + 1)
        self._taps: collections.deque[float] = collections.deque(maxlen=5)
        self._clock_ticks = 0
        self.running = True
        self.source = "internal"
        self._heard: dict[str, float] = {}  # source → when it last spoke
        self.performer_changes = 0  # taps and set tempos that changed the BPM (a Link session is told)

    @property
    def bpm(self) -> float:
        with self._lock:
            return self._bpm

    def _rebase(self, now: float, bpm: float) -> None:
        # Keep the beat continuous when the tempo changes: re-anchor at the current beat.
        self._anchor_beat = self._beat_locked(now)
        self._anchor_time = now
        self._bpm = min(max(bpm, MIN_BPM), MAX_BPM)

    def _beat_locked(self, now: float) -> float:
        if not self.running:
            return self._anchor_beat
        return self._anchor_beat + (now - self._anchor_time) * self._bpm / 60.0

    def beat(self, now: float | None = None) -> float:
        """Beats since the start (fractional); frozen while stopped."""
        with self._lock:
            return self._beat_locked(self.clock() if now is None else now)

    def set_bpm(self, bpm: float, now: float | None = None) -> None:
        with self._lock:
            self._rebase(self.clock() if now is None else now, float(bpm))
            self.source = "set"
            self.performer_changes += 1

    def tap(self, now: float | None = None) -> float:
        """One tap; two or more within 2 s of each other set the BPM from their mean interval,
        and the beat lands on the tap."""
        now = self.clock() if now is None else now
        with self._lock:
            if self._taps and now - self._taps[-1] > 2.0:
                self._taps.clear()
            self._taps.append(now)
            if len(self._taps) >= 2:
                taps = list(self._taps)
                interval = (taps[-1] - taps[0]) / (len(taps) - 1)
                if interval <= 0:  # two taps on one clock tick (a bundle, a coarse clock): no tempo in that
                    return self._bpm
                self._rebase(now, 60.0 / interval)
                self._anchor_beat = round(self._anchor_beat)  # the tap is on a beat
                self.source = "tap"
                self.performer_changes += 1
            return self._bpm

    def clock_tick(self, now: float | None = None) -> None:
        """One MIDI clock pulse (0xF8). The BPM follows the mean interval of the last two beats' pulses."""
        now = self.clock() if now is None else now
        with self._lock:
            if self._ticks and now - self._ticks[-1] > 1.0:
                self._ticks.clear()  # the clock paused: do not average across the gap
            self._ticks.append(now)
            self._clock_ticks += 1
            self._heard["midi clock"] = now
            if now - self._heard.get("link", -1e9) < HOLD:
                return  # a Link session leads: the clock is heard, not followed
            if len(self._ticks) >= 7:
                ticks = list(self._ticks)
                interval = (ticks[-1] - ticks[0]) / (len(ticks) - 1)
                if interval > 0:
                    self._rebase(now, 60.0 / (interval * PPQN))
                self.source = "midi clock"
            if self.running and self._clock_ticks % PPQN == 0:
                self._anchor_beat = round(self._beat_locked(now))  # lock the phase to the clock's beats
                self._anchor_time = now

    def follow(self, source: str, bpm: float, phase: float, now: float | None = None, period: float = 1.0) -> bool:
        """A clock source (``PRECEDENCE``; MIDI clock speaks through ``clock_tick``) reports its tempo and
        where it is within ``period`` beats (``phase``: 0..1 of a beat for the audio, 0..4 of a bar for
        Link). Unless a source above it spoke within ``HOLD`` seconds, the tempo takes its BPM and pulls
        the beat toward its phase by at most ``MAX_PULL`` beats (no jump), or, taking the lead more than
        ``JOIN`` beats off, sets it at once. Returns whether it led."""
        now = self.clock() if now is None else now
        rank = PRECEDENCE.index(source)
        with self._lock:
            if any(now - self._heard.get(above, -1e9) < HOLD for above in PRECEDENCE[:rank]):
                return False
            joining = self.source != source
            self._heard[source] = now
            self._rebase(now, float(bpm))
            error = ((self._anchor_beat - phase) % period + period / 2) % period - period / 2
            self._anchor_beat -= error if joining and abs(error) > JOIN else max(-MAX_PULL, min(MAX_PULL, error))
            self.source = source
            return True

    def start(self, now: float | None = None) -> None:
        """MIDI start (0xFA): beat 0 now."""
        with self._lock:
            self._anchor_time = self.clock() if now is None else now
            self._anchor_beat = 0.0
            self._clock_ticks = 0
            self.running = True

    def stop(self, now: float | None = None) -> None:
        """MIDI stop (0xFC): hold the beat where it is."""
        with self._lock:
            self._anchor_beat = self._beat_locked(self.clock() if now is None else now)
            self.running = False

    def cont(self, now: float | None = None) -> None:
        """MIDI continue (0xFB): run on from the held beat."""
        with self._lock:
            self._anchor_time = self.clock() if now is None else now
            self.running = True
