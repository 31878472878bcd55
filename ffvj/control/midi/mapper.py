"""The MIDI mapper: mido messages in, parameter sets, actions and tempo events out, and LED echo back.

Pure: no ports and no threads of its own (but the echo sender), so tests feed it messages directly.
Conventions handled (what VJs expect from their controllers): 7-bit CC; 14-bit CC (MSB on CC n < 32,
LSB on n + 32); NRPN (CC 99/98 select, 6/38 data entry, 96/97 increment/decrement); relative
encoders (two's complement, binary offset around 64, sign-magnitude); notes as trigger, toggle or
momentary with note-on velocity 0 as note-off (mido does not convert it); 14-bit pitch bend; soft
takeover; MIDI clock (24 per quarter note) with start/continue/stop.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence

import mido

from ...reporting import Counts, RateLimitedLog
from ..service import LatestValueSender
from .mapping import BUTTON_MODES, RELATIVE_MODES, MapEntry, Mapping

log = logging.getLogger(__name__)

# Soft takeover: a control re-engages once it comes this close to the parameter (in 0..1 control
# units, about three steps of a 7-bit fader) or crosses it.
TAKEOVER_TOLERANCE = 3 / 127
# CC numbers the NRPN protocol uses; plain CC mappings on them only see them when no NRPN is selected.
NRPN_MSB, NRPN_LSB, RPN_MSB, RPN_LSB = 99, 98, 101, 100
DATA_MSB, DATA_LSB, DATA_INC, DATA_DEC = 6, 38, 96, 97


def _relative_ticks(mode: str, v: int) -> int:
    """Signed encoder steps from one relative CC value."""
    if mode == "relative-twos":  # 1..63 up, 127..65 down (127 = -1)
        return v - 128 if v >= 64 else v
    if mode == "relative-binary":  # offset 64: 65 = +1, 63 = -1
        return v - 64
    return -(v - 64) if v >= 64 else v  # sign-magnitude: bit 6 is the sign, 65 = -1


class MidiMapper:
    """Turns mido messages into parameter sets, actions and tempo events for one show's ``controls``.
    Thread-safe.

    ``handle(msg)`` never raises during a show: malformed or unmapped input is counted
    (``stats()``: messages, unmapped, malformed, errors, takeover_held, echo_sent) and logged
    rate-limited. ``output`` (anything with ``send(msg)``, e.g. a mido output port) enables LED echo:
    when a mapped parameter changes from any source, the controller gets the matching CC/note value
    back, from a sender thread. ``controls.learner`` (a ``Learner``), when there is one, sees every
    message first while it is armed. ``clock=False`` ignores MIDI clock (another input has it).
    """

    def __init__(self, mapping: Mapping | Sequence[Mapping], controls, *, output=None, clock: bool = True,
                 echo_interval: float = 0.01):
        self.mappings = [mapping] if isinstance(mapping, Mapping) else list(mapping)
        self.controls, self.store, self.tempo = controls, controls.store, controls.tempo
        self.learner, self.clock = controls.learner, clock
        self.counts = Counts("messages", "unmapped", "malformed", "errors", "takeover_held", "echo_sent",
                             "echo_errors")
        self._warn = RateLimitedLog(log)
        self._lock = threading.RLock()
        self._closed = False
        self._engaged: dict[str, bool] = {}  # soft takeover, per entry source
        self._last_x: dict[str, float] = {}  # last control position, per entry source
        self._rel: dict[str, tuple[float, float]] = {}  # relative: (position x, value we set)
        self._seen_channel: dict[str, int] = {}  # for echo on "any"-channel entries
        self._cc14: dict[tuple[int, int], list] = {}  # (ch, msb cc) -> [msb, lsb seen]
        self._nrpn_sel: dict[int, list] = {}  # ch -> [msb, lsb] of the selected NRPN
        self._nrpn: dict[tuple[int, int], list] = {}  # (ch, nrpn) -> [data msb, lsb seen]
        entries = [e for m in self.mappings for e in m.entries]
        self._rebuild(entries)
        # LED echo: the latest messages per control, from a thread of its own, at most one batch per
        # control every echo_interval (a rate limit the controller's firmware appreciates).
        self.output = output
        self._echo = (LatestValueSender(self._send_echo, echo_interval, "ffvj-midi-echo")
                      if output is not None else None)
        self.store.add_listener(self._on_param)
        if self.learner is not None:
            self.learner.on_learned.append(self.bind)

    # -- tables ------------------------------------------------------------------------------------
    def _rebuild(self, entries: list[MapEntry]) -> None:
        # Built aside and swapped in whole: callback threads read these tables without the lock.
        table: dict[tuple, list[MapEntry]] = {}
        by_param: dict[str, list[MapEntry]] = {}
        for e in entries:
            table.setdefault(e.control, []).append(e)
            if e.param is not None:
                by_param.setdefault(e.param.name, []).append(e)
        with self._lock:
            self.entries, self._table, self._by_param = entries, table, by_param
            self._has_nrpn = any(e.type == "nrpn" for e in entries)

    def bind(self, entry: MapEntry) -> None:
        """Add an entry live (MIDI learn); it replaces the entries that the same messages reach."""
        def same(e: MapEntry) -> bool:
            return (e.type, e.number) == (entry.type, entry.number) and \
                (e.channel is None or entry.channel is None or e.channel == entry.channel)

        with self._lock:
            self._rebuild([e for e in self.entries if not same(e)] + [entry])

    def _lookup(self, typ: str, ch: int, number: int) -> list[MapEntry]:
        return self._table.get((typ, ch, number), []) + self._table.get((typ, None, number), [])

    # -- input -------------------------------------------------------------------------------------
    def handle(self, msg) -> None:
        """Apply one message (a ``mido.Message``, or raw bytes). Never raises."""
        if not isinstance(msg, mido.Message):
            try:
                msg = mido.Message.from_bytes(list(msg))
            except (TypeError, ValueError) as exc:
                self.counts.add("malformed")
                self._warn.warning("malformed", "ignored malformed MIDI input %r: %s", msg, exc)
                return
        try:
            self._handle(msg)
        except Exception as exc:  # noqa: BLE001 — last resort in a callback thread: the show goes on
            self.counts.add("errors")
            self._warn.warning("error", "MIDI message %s could not be applied: %r", msg, exc)

    def _handle(self, msg) -> None:
        self.counts.add("messages")
        t = msg.type
        if t in ("clock", "start", "continue", "stop"):
            if self.clock and self.tempo is not None:
                {"clock": self.tempo.clock_tick, "start": self.tempo.start, "continue": self.tempo.cont,
                 "stop": self.tempo.stop}[t]()
            return
        if self.learner is not None and self.learner.armed and self.learner.feed(msg):
            return
        if t == "control_change":
            self._on_cc(msg.channel + 1, msg.control, msg.value)
        elif t in ("note_on", "note_off"):
            pressed = t == "note_on" and msg.velocity > 0  # velocity 0 is a note-off (mido keeps it note_on)
            self._on_button(self._lookup("note", msg.channel + 1, msg.note), pressed, msg.channel + 1,
                            f"note {msg.note}")
        elif t == "pitchwheel":
            entries = self._lookup("pitchbend", msg.channel + 1, 0)
            self._on_absolute(entries, (msg.pitch + 8192) / 16383, msg.channel + 1, "pitchbend")
        # Everything else (sysex replies, aftertouch, program change, song position) is not ours.

    def _unmapped(self, what: str, ch: int) -> None:
        self.counts.add("unmapped")
        # One rate-limit key for all of them: random input has thousands of distinct (message, channel)
        # pairs, and a key each let 615 lines a second through.
        self._warn.warning("unmapped", "unmapped MIDI %s on channel %d (add it to a mapping, "
                           "or bind it with 'ffvj learn')", what, ch)

    def _on_cc(self, ch: int, n: int, v: int) -> None:
        if self._has_nrpn and self._on_nrpn_cc(ch, n, v):
            return
        plain = self._lookup("cc", ch, n)
        if n < 32 and self._lookup("cc14", ch, n):
            # MSB. Per the MIDI spec a new MSB resets the LSB; until a controller has sent any LSB,
            # treat it as a 7-bit control so 127 still reaches the top of the range.
            state = self._cc14.setdefault((ch, n), [0, False])
            state[0] = v
            x = (v << 7) / 16383 if state[1] else v / 127
            self._on_absolute(self._lookup("cc14", ch, n), x, ch, f"cc14 {n}")
        elif 32 <= n < 64 and self._lookup("cc14", ch, n - 32):
            state = self._cc14.setdefault((ch, n - 32), [0, False])
            state[1] = True
            self._on_absolute(self._lookup("cc14", ch, n - 32), ((state[0] << 7) | v) / 16383, ch, f"cc14 {n - 32}")
        elif not plain:
            self._unmapped(f"cc {n}", ch)
        for e in plain:
            if e.mode in BUTTON_MODES:
                self._on_button([e], v >= 64, ch, f"cc {n}")
            elif e.mode in RELATIVE_MODES:
                self._relative(e, _relative_ticks(e.mode, v), ch)
            else:
                self._on_absolute([e], v / 127, ch, f"cc {n}")

    def _on_nrpn_cc(self, ch: int, n: int, v: int) -> bool:
        """NRPN parameter select and data entry; True when the CC was part of an NRPN exchange."""
        if n in (NRPN_MSB, NRPN_LSB):
            sel = self._nrpn_sel.setdefault(ch, [None, None])
            sel[0 if n == NRPN_MSB else 1] = v
            if sel == [127, 127]:  # the "null" NRPN deselects
                self._nrpn_sel.pop(ch, None)
            return True
        if n in (RPN_MSB, RPN_LSB):  # an RPN exchange: data entry is not for an NRPN now
            self._nrpn_sel.pop(ch, None)
            return False
        sel = self._nrpn_sel.get(ch)
        if n not in (DATA_MSB, DATA_LSB, DATA_INC, DATA_DEC) or sel is None or None in sel:
            return False
        number = (sel[0] << 7) | sel[1]
        entries = self._lookup("nrpn", ch, number)
        if not entries:
            self._unmapped(f"nrpn {number}", ch)
            return True
        state = self._nrpn.setdefault((ch, number), [0, False])
        if n == DATA_MSB:
            state[0] = v
            x = (v << 7) / 16383 if state[1] else v / 127
            self._on_absolute(entries, x, ch, f"nrpn {number}")
        elif n == DATA_LSB:
            state[1] = True
            self._on_absolute(entries, ((state[0] << 7) | v) / 16383, ch, f"nrpn {number}")
        else:
            # Increment/decrement: the value byte is the step count (0 still means one step).
            ticks = max(1, v) * (1 if n == DATA_INC else -1)
            for e in entries:
                if e.continuous:
                    self._relative(e, ticks, ch)
        return True

    def _on_absolute(self, entries: list[MapEntry], x: float, ch: int, what: str) -> None:
        if not entries:
            self._unmapped(what, ch)
            return
        for e in entries:
            if e.mode in BUTTON_MODES:
                self._on_button([e], x >= 0.5, ch, what)
                continue
            x_e = 1.0 - x if e.invert else x
            self._seen_channel[e.source] = ch
            with self._lock:
                prev = self._last_x.get(e.source)
                self._last_x[e.source] = x_e
                # A control's first move: where the knob sits is unknown. If the value was set
                # before it connected (a start-up preset, OSC, another controller), it waits for the
                # crossing too instead of jumping (CC16=127 took l0.zoom from 1.004 to 1.25); a
                # parameter still at its default has nothing to protect.
                engaged = self._engaged.get(e.source)
                if engaged is None:
                    engaged = self.store.get(e.param.name) == e.param.default
                if e.takeover == "soft" and not engaged:
                    cur = e.to_x(self.store.get(e.param.name))
                    crossed = prev is not None and (prev - cur) * (x_e - cur) <= 0
                    if abs(x_e - cur) > TAKEOVER_TOLERANCE and not crossed:
                        self.counts.add("takeover_held")
                        continue  # the control is away from the value: wait until it gets there
                self._engaged[e.source] = True  # it moves the value now, until someone else does
            self.store.set(e.param.name, e.to_value(x_e), source=e.source)

    def _relative(self, e: MapEntry, ticks: int, ch: int) -> None:
        if ticks == 0:
            return
        self._seen_channel[e.source] = ch
        name = e.param.name
        with self._lock:
            current = self.store.get(name)
            x, ours = self._rel.get(e.source, (None, None))
            if x is None or ours != current:
                x = e.to_x(current)  # someone else moved it: continue from where it is now
            # An accumulated position, so slow turns still move coarse (int, enum) parameters.
            x = min(max(x + (-ticks if e.invert else ticks) * e.step / 127, 0.0), 1.0)
            value = e.param.clamp(e.to_value(x))
            self._rel[e.source] = (x, value)
        self.store.set(name, value, source=e.source)

    def _on_button(self, entries: list[MapEntry], pressed: bool, ch: int, what: str) -> None:
        if not entries:
            if pressed:  # a release of an unmapped button is not worth a second warning
                self._unmapped(what, ch)
            return
        for e in entries:
            self._seen_channel[e.source] = ch
            if e.action is not None:
                if pressed:
                    self._fire(e)
            elif e.mode == "trigger":
                if pressed:
                    self.store.set(e.param.name, e.on, source=e.source)
            elif e.mode == "momentary":
                self.store.set(e.param.name, e.on if pressed else e.off, source=e.source)
            elif pressed:  # toggle
                current = self.store.get(e.param.name)
                lit = abs(current - e.on) < abs(current - e.off)
                self.store.set(e.param.name, e.off if lit else e.on, source=e.source)

    def _fire(self, e: MapEntry) -> None:
        try:
            self.controls.fire(e.action.name, *e.values)
        except ValueError as exc:  # checked when the mapping was loaded; say so if it ever is not
            self.counts.add("errors")
            self._warn.warning(f"fire:{e.source}", "MIDI %s: %s", e.describe(), exc)

    # -- parameter changes: soft takeover and LED echo ---------------------------------------------
    def _on_param(self, name: str, value: float, source: str) -> None:
        if self._closed:
            return  # a change racing close(): the listener is being removed
        entries = self._by_param.get(name)
        if not entries:
            return
        for e in entries:
            if source != e.source and e.takeover == "soft" and e.mode == "absolute":
                self._engaged[e.source] = False
            if self._echo is not None and e.echo and not (source == e.source and e.mode == "absolute"):
                # (an absolute control's own move needs no echo: it is already there). The store's
                # value, not the listener's argument: listeners of two racing sets may run in either
                # order, but whichever runs last reads the value that won.
                self._echo.put(e.source, self.echo_messages(e, self.store.get(name)))

    def echo_messages(self, e: MapEntry, value: float) -> list:
        """The messages that show ``value`` on the control of entry ``e`` (LEDs, rings)."""
        ch = (e.channel or self._seen_channel.get(e.source, 1)) - 1
        if e.mode in BUTTON_MODES:
            lit = abs(value - e.on) < 1e-9 if e.mode == "trigger" else abs(value - e.on) < abs(value - e.off)
            v = e.led_on if lit else e.led_off
            if e.type == "note":
                return [mido.Message("note_on", channel=ch, note=e.number, velocity=v)]
            if e.type == "cc":
                return [mido.Message("control_change", channel=ch, control=e.number, value=v)]
            return []
        x = e.to_x(value)
        if e.invert:
            x = 1.0 - x
        if e.type == "cc":
            return [mido.Message("control_change", channel=ch, control=e.number, value=round(x * 127))]
        v14 = round(x * 16383)
        if e.type == "cc14":
            return [mido.Message("control_change", channel=ch, control=e.number, value=v14 >> 7),
                    mido.Message("control_change", channel=ch, control=e.number + 32, value=v14 & 127)]
        if e.type == "nrpn":
            return [mido.Message("control_change", channel=ch, control=c, value=v) for c, v in
                    ((NRPN_MSB, e.number >> 7), (NRPN_LSB, e.number & 127), (DATA_MSB, v14 >> 7),
                     (DATA_LSB, v14 & 127))]
        if e.type == "pitchbend":
            return [mido.Message("pitchwheel", channel=ch, pitch=v14 - 8192)]
        return []

    def refresh_leds(self) -> None:
        """Send every echoed control its parameter's current value (at start-up)."""
        if self._echo is None:
            return
        for e in self.entries:
            if e.echo and e.param is not None:
                self._echo.put(e.source, self.echo_messages(e, self.store.get(e.param.name)))

    def _send_echo(self, ready: dict) -> None:
        """The echo thread: one batch of controls' messages to the controller."""
        for messages in ready.values():
            for msg in messages:
                try:
                    self.output.send(msg)
                    self.counts.add("echo_sent")
                except Exception as exc:  # noqa: BLE001 — a vanished port must not end the show
                    # (mido/rtmidi raise backend-specific types for an unplugged device)
                    self.counts.add("echo_errors")
                    self._warn.warning("echo", "LED echo to %s failed: %s", getattr(self.output, "name", "?"), exc)

    def stats(self) -> dict:
        return self.counts.snapshot()

    def close(self) -> None:
        self._closed = True
        self.store.remove_listener(self._on_param)
        if self._echo is not None:
            self._echo.close()
        if self.learner is not None and self.bind in self.learner.on_learned:
            self.learner.on_learned.remove(self.bind)
