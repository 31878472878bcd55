"""Ableton Link: ffvj in a Link session, its tempo and bar following the session's and leading it.

    link = LinkClock()                 # joins (or starts) the session on the local network
    bpm, beat = link.read(now)         # the session's tempo and beat at show time ``now`` (bars of 4)
    link.lead(bpm, now)                # the performer tapped or set a tempo: the session takes it

Link's own library is GPL (v2 or later), and ffvj is MIT, so it is not installed with ffvj: ``pip install
'ffvj[link]'`` brings LinkPython-extern, the Python binding Ableton's Link repository points to. Without
it, ``--link`` fails at start-up saying so.

Link keeps time on its own steady clock (microseconds); the show's clock is ``time.monotonic()``. Both
run at the same rate, so one offset, read at the start from the closest of a few paired readings, maps
one onto the other.
"""

from __future__ import annotations

import time

QUANTUM = 4.0  # beats in a bar: what the session aligns its peers' phase on
EXTRA = "pip install 'ffvj[link]' (LinkPython-extern: Ableton Link is GPL, so it is an optional extra of ffvj)"


class LinkUnavailable(RuntimeError):
    """``--link`` without the Link binding; the message says how to get it."""


class LinkClock:
    def __init__(self, bpm: float = 120.0, quantum: float = QUANTUM):
        try:
            import link
        except ImportError as exc:
            raise LinkUnavailable(f"--link: Ableton Link is not installed here ({exc}); {EXTRA}") from None
        self.quantum = quantum
        self._link = link.Link(float(bpm))
        self._link.enabled = True
        # The offset between Link's clock and the show's: the pair read closest together wins.
        pairs = []
        for _ in range(5):
            before = time.monotonic()
            micros = self._link.clock().micros()
            after = time.monotonic()
            pairs.append((after - before, micros / 1e6 - (before + after) / 2))
        self._offset = min(pairs)[1]

    @property
    def peers(self) -> int:
        return int(self._link.numPeers())

    def _micros(self, now: float) -> int:
        return int(round((now + self._offset) * 1e6))

    def read(self, now: float) -> tuple[float, float]:
        """The session's tempo and its beat at show time ``now`` (``beat`` mod ``quantum`` is the place in
        the bar every peer agrees on)."""
        state = self._link.captureAppSessionState()
        return float(state.tempo()), float(state.beatAtTime(self._micros(now), self.quantum))

    def time_of_beat(self, beat: float) -> float:
        """The show time at which the session reaches ``beat``."""
        state = self._link.captureAppSessionState()
        return state.timeAtBeat(beat, self.quantum) / 1e6 - self._offset

    def lead(self, bpm: float, now: float) -> None:
        """Set the session's tempo (every peer follows)."""
        state = self._link.captureAppSessionState()
        state.setTempo(float(bpm), self._micros(now))
        self._link.commitAppSessionState(state)

    def close(self) -> None:
        self._link.enabled = False
