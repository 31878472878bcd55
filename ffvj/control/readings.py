"""The show's read-only figures that other tools follow: what the music is doing and where the tempo clock is.

Parameters are what a surface sets (``params``), actions what it fires (``actions``); readings are what
it can only read. Each is declared once, in ``READINGS``, and every surface is made from the table:
OSC feedback and ``/ffvj/dump`` send them (``/ffvj/audio/level 0.62``), OSCQuery lists them read-only
(``ACCESS`` 1, with their ``VALUE``) and the web page draws them as meters. ``Controls.frame`` reads
them once a frame and reports those that moved, as it reports what the LFOs move.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..phi import ADDRESS_PREFIX


@dataclass(frozen=True)
class Reading:
    name: str
    doc: str
    read: Callable[..., float]  # read(controls, now) → the value now
    min: float = 0.0
    max: float = 1.0
    unit: str = ""

    @property
    def address(self) -> str:
        return f"{ADDRESS_PREFIX}/{self.name.replace('.', '/')}"


def _heard(feature: str) -> Callable[..., float]:
    return lambda controls, now: controls.heard.value(feature) if controls.heard is not None else 0.0


READINGS: dict[str, Reading] = {r.name: r for r in (
    Reading("audio.level", "the music's level, auto-gained (0.5: as loud as lately; 0: silence)", _heard("level")),
    Reading("audio.bass", "bass (20-250 Hz), auto-gained", _heard("bass")),
    Reading("audio.mid", "mids (250 Hz-2 kHz), auto-gained", _heard("mid")),
    Reading("audio.high", "highs (2-16 kHz), auto-gained", _heard("high")),
    Reading("audio.onset", "1 at a hit, falling to 0", _heard("onset")),
    Reading("audio.beat", "1 on the heard beat, falling to 0 over it", _heard("beat")),
    Reading("audio.bpm", "the tempo heard in the music", lambda c, now: c.heard.bpm if c.heard is not None else 0.0,
            0.0, 300.0, "bpm"),
    Reading("audio.confidence", "how sure the heard beat is (below 0.25 it leads nothing)",
            lambda c, now: c.heard.confidence if c.heard is not None else 0.0),
    Reading("tempo.bar", "where the tempo clock is in the bar, in beats (0 on the downbeat)",
            lambda c, now: c.tempo.beat(now) % 4.0, 0.0, 4.0, "beats"),
)}


def read_all(controls, now: float) -> dict[str, float]:
    """Every reading's value now."""
    return {name: float(r.read(controls, now)) for name, r in READINGS.items()}
