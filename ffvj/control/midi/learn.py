"""MIDI learn: bind controls by moving them, and write what was learned as a mapping file.

``Learner`` binds the next control moved while it is armed (during a show: to the parameter last
changed over OSC, when the ``learn`` action fires); ``learn_session`` is ``ffvj learn``, one parameter
after another. Both write files that ``load_mapping`` reads back.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import tomllib
from collections.abc import Callable, Sequence
from pathlib import Path

from ...phi import DEFAULT_LEVELS, Param
from ..params import build_registry
from ..presets import default_presets_dir
from .mapper import DATA_LSB, DATA_MSB, NRPN_LSB, NRPN_MSB
from .mapping import (
    Device,
    MapEntry,
    Mapping,
    dump_mapping,
    parse_entry,
    parse_mapping,
    parse_target,
)
from .ports import MidiError, backend_errors, load_backend, retrying

log = logging.getLogger(__name__)


def default_learn_file() -> Path:
    """Where controls learned during a show are saved: ``~/.config/ffvj/mappings/learned-DATE.toml``."""
    return default_presets_dir().parent / "mappings" / time.strftime("learned-%Y%m%d-%H%M%S.toml")


def _guess_cc_mode(values: list[int]) -> str:
    """absolute, a relative mode, or "button", from a few values of one CC.

    Relative encoders repeat small steps around their zero (1/127, 65/63, 1/65); buttons send only
    0 and 127; anything else moving is a fader or knob."""
    s = set(values)
    if s <= {0, 127}:
        return "button"
    if len(values) >= 3 and len(s) <= 2:
        if s <= set(range(1, 8)) | set(range(121, 128)):
            return "relative-twos"
        if s <= set(range(57, 72)) - {64}:
            return "relative-binary"
        if s <= set(range(1, 8)) | set(range(65, 72)):
            return "relative-signmag"
    return "absolute"


class Learner:
    """MIDI learn: the next control moved while armed binds to the selected target.

    ``arm(name)`` selects a parameter (or an action such as ``"snapshot.recall:2"``); ``arm()`` with
    no name selects the parameter last changed via OSC (any store source starting with "osc"), so
    a VJ can touch a fader on the tablet, press learn, and move the hardware control. Learned
    entries go to ``on_learned`` callbacks (``MidiMapper.bind`` is one: the binding works at once)
    and ``save(path)`` writes them as a mapping file.

    A CC is watched for ``window`` seconds (or four messages) to tell a fader from a relative
    encoder or a button, and a CC n < 32 followed by CC n + 32 becomes a 14-bit control. A control
    just learned is ignored for ``settle`` seconds, so the end of its movement does not bind the
    next parameter too.
    """

    def __init__(self, registry: dict[str, Param], store=None, *, name: str = "learned",
                 window: float = 0.4, settle: float = 1.0, auto_flush: bool = True):
        self.registry, self.name = registry, name
        self.window, self.settle, self.auto_flush = window, settle, auto_flush
        self.on_learned: list[Callable[[MapEntry], None]] = []
        self._lock = threading.RLock()
        self._armed: str | None = None
        self._pending: dict | None = None  # the CC being watched: {"key", "t0", "values"}
        self._nrpn_sel: dict[int, list] = {}
        self._recent: dict[tuple, float] = {}
        self._raw: list[dict] = []
        self._count = 0  # learned so far: numbers the entries' source tags uniquely
        self._last_osc: str | None = None
        self._timer: threading.Timer | None = None
        if store is not None:
            store.add_listener(self._on_param)

    def _on_param(self, name: str, value: float, source: str) -> None:
        if source.startswith("osc"):
            self._last_osc = name

    @property
    def armed(self) -> str | None:
        return self._armed

    @property
    def last_osc(self) -> str | None:
        return self._last_osc

    def arm(self, name: str | None = None) -> str | None:
        """Select what the next moved control binds to. None: the last parameter changed via OSC
        (returns None, and stays unarmed, when there is none). Raises ValueError for an unknown name."""
        target = self._last_osc if name is None else name
        if target is None:
            return None
        parse_target(target, self.registry)  # fail now, with close matches, not when a control moves
        with self._lock:
            self._armed, self._pending = target, None
        log.info("MIDI learn: move a control for %s", target)
        return target

    def cancel(self) -> None:
        with self._lock:
            self._armed, self._pending = None, None

    def feed(self, msg, now: float | None = None) -> bool:
        """Offer a message; True when learn mode consumed it (the mapper then ignores it)."""
        now = time.monotonic() if now is None else now
        with self._lock:
            if self._armed is None:
                return False
            t = msg.type
            if t == "control_change":
                ch, n, v = msg.channel + 1, msg.control, msg.value
                if n in (NRPN_MSB, NRPN_LSB):
                    sel = self._nrpn_sel.setdefault(ch, [None, None])
                    sel[0 if n == NRPN_MSB else 1] = v
                    return True
                sel = self._nrpn_sel.get(ch)
                if n in (DATA_MSB, DATA_LSB) and sel and None not in sel:
                    number = (sel[0] << 7) | sel[1]
                    if not self._is_recent(("nrpn", ch, number), now):
                        self._finalize({"type": "nrpn", "channel": ch, "number": number}, now)
                    return True
                p = self._pending
                if p is not None and 32 <= n < 64 and p["key"] == ("cc", ch, n - 32):
                    self._finalize({"type": "cc14", "channel": ch, "number": n - 32}, now)
                    return True
                key = ("cc", ch, n)
                if self._is_recent(key, now) or (32 <= n < 64 and self._is_recent(("cc14", ch, n - 32), now)):
                    return True
                if p is None:
                    self._pending = {"key": key, "t0": now, "values": [v]}
                    if self.auto_flush:
                        self._timer = threading.Timer(self.window, self.flush)
                        self._timer.daemon = True
                        self._timer.start()
                elif p["key"] == key:
                    p["values"].append(v)
                    if len(p["values"]) >= 4 or now - p["t0"] >= self.window:
                        self._finalize_cc(now)
                return True
            if t == "note_on" and msg.velocity > 0:
                key = ("note", msg.channel + 1, msg.note)
                if not self._is_recent(key, now):
                    self._finalize({"type": "note", "channel": msg.channel + 1, "number": msg.note}, now)
                return True
            if t == "pitchwheel":
                if not self._is_recent(("pitchbend", msg.channel + 1, 0), now):
                    self._finalize({"type": "pitchbend", "channel": msg.channel + 1}, now)
                return True
            return t in ("note_on", "note_off")  # releases while learning: swallow them too

    def flush(self, now: float | None = None) -> None:
        """Bind a pending CC whose watching window has passed (a timer calls this when auto_flush)."""
        now = time.monotonic() if now is None else now
        with self._lock:
            p = self._pending
            if p is not None and self._armed is not None and now - p["t0"] >= self.window - 1e-3:
                self._finalize_cc(now)

    def _is_recent(self, key: tuple, now: float) -> bool:
        return now - self._recent.get(key, -math.inf) < self.settle

    def _finalize_cc(self, now: float) -> None:
        p = self._pending
        _, ch, n = p["key"]
        mode = _guess_cc_mode(p["values"])
        spec = {"type": "cc", "channel": ch, "number": n}
        if self._is_action():
            spec["mode"] = "trigger"  # an action fires on a press, whatever the control is
        elif mode == "button":
            spec["mode"] = "toggle"
        elif mode != "absolute":
            spec["mode"] = mode
        self._finalize(spec, now)

    def _is_action(self) -> bool:
        return parse_target(self._armed, self.registry)[1] is not None

    def _finalize(self, spec: dict, now: float) -> None:
        target = self._armed
        raw = {"param": target, **spec}
        if spec["type"] == "note" and self._is_action():
            raw["mode"] = "trigger"
        self._count += 1
        try:
            entry = parse_entry(raw, self._count, self.registry, {}, self.name)
        except ValueError as exc:  # e.g. a control kind this target cannot take: say so, keep running
            log.warning("MIDI learn: cannot bind %s to %s: %s", spec, target, exc)
            self._armed, self._pending = None, None
            return
        self._raw = [r for r in self._raw if (r["type"], r.get("channel"), r.get("number", 0)) != entry.control]
        self._raw.append(raw)
        self._recent[(spec["type"], spec["channel"], spec.get("number", 0))] = now
        if spec["type"] == "cc14":
            self._recent[("cc", spec["channel"], spec["number"])] = now
        self._armed, self._pending = None, None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        log.info("MIDI learn: %s", entry.describe())
        for fn in list(self.on_learned):
            fn(entry)

    @property
    def entries(self) -> list[dict]:
        """What was learned, as raw ``[[map]]`` tables."""
        with self._lock:
            return [dict(r) for r in self._raw]

    def mapping(self, match: Sequence[str] = ()) -> Mapping:
        return parse_mapping({"device": {"name": self.name, **({"match": list(match)} if match else {})},
                              "map": self.entries}, self.registry, f"<learned {self.name}>")

    def save_each_time(self, path: str | Path) -> None:
        """Save what was learned to ``path`` after every binding, on a thread of its own (the binding,
        made in a MIDI callback, must not wait for the disk). A failed save is logged; the show and
        the binding go on."""
        path = Path(path)
        lock = threading.Lock()  # two quick bindings: one write after the other, the later one last

        def save(entry: MapEntry) -> None:
            try:
                with lock:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    self.save(path)
            except (OSError, ValueError) as exc:
                log.error("could not save the learned MIDI mapping to %s: %s", path, exc)
                return
            log.info("learned MIDI controls saved in %s (next time: --midi-mapping %s)", path, path)

        self.on_learned.append(lambda entry: threading.Thread(target=save, args=(entry,), name="ffvj learn save",
                                                              daemon=True).start())

    def save(self, path: str | Path, match: Sequence[str] = (), output: Sequence[str] = ()) -> Path:
        """Write what was learned as a mapping file (checked by reading it back)."""
        if not self._raw:
            raise ValueError("nothing learned yet: nothing to save")
        path = Path(path)
        header = (f"ffvj MIDI mapping learned with 'ffvj learn' on {time.strftime('%Y-%m-%d %H:%M')}.\n"
                  "Edit freely: mappings/generic.toml lists every key. For LED echo, add to [device]\n"
                  "output = [\"<substring of the controller's output port>\"].")
        text = dump_mapping(Device(self.name, tuple(match), tuple(output)), self.entries, header)
        parse_mapping(tomllib.loads(text), self.registry, str(path))  # never write a file we cannot load
        path.write_text(text, encoding="utf-8")
        return path


def learn_session(param_names: Sequence[str], port: str | None, out_path: str | Path, timeout: float = 30.0, *,
                  registry: dict[str, Param] | None = None, backend=None, virtual_name: str = "ffvj",
                  device_name: str | None = None, print_fn: Callable[[str], None] = print) -> Mapping | None:
    """Interactive MIDI learn for ``ffvj learn``: for each name in ``param_names`` (parameters or
    actions such as ``"snapshot.recall:1"``) print "move a control for NAME…" and bind the next
    control moved, waiting up to ``timeout`` seconds each (then skip it). Listens on the input
    matching ``port`` (substring), or, when None, on a virtual input ``virtual_name``. Writes the
    learned entries to ``out_path`` (a mapping file ``load_mapping`` reads back) and returns them as
    a Mapping, or None when nothing was learned.

    Raises ValueError for an unknown parameter name, MidiError when the port cannot be opened."""
    registry = build_registry(DEFAULT_LEVELS) if registry is None else registry
    for name in param_names:
        parse_target(name, registry)  # all names checked before the first question
    errors = backend_errors()
    try:
        b = load_backend(backend)
        inputs = list(retrying(errors, b.get_input_names)) if port is not None else []
    except errors as exc:
        raise MidiError(f"cannot learn: no usable MIDI API here ({exc})") from exc
    learner = Learner(registry, name=device_name or (port or "learned"))
    done = threading.Event()
    learned: list[MapEntry] = []
    learner.on_learned.append(lambda entry: (learned.append(entry), done.set()))
    if port is not None:
        hits = [p for p in inputs if port.lower() in p.lower()]
        if not hits:
            raise MidiError(f"unknown MIDI port {port!r}; available inputs: {', '.join(inputs) or 'none'}")
    midi_in = None
    try:
        for name in param_names:
            done.clear()
            learner.arm(name)  # armed before the port opens, so the very first message counts
            if midi_in is None:
                try:
                    midi_in = (retrying(errors, b.open_input, virtual_name, virtual=True, client_name=virtual_name,
                                         callback=learner.feed)
                               if port is None else retrying(errors, b.open_input, hits[0], callback=learner.feed))
                except errors as exc:
                    raise MidiError(f"cannot open MIDI input for learning: {exc}") from exc
                print_fn(f"listening on {midi_in.name!r}")
            print_fn(f"move a control for {name}…")
            if done.wait(timeout):
                print_fn(f"  bound {learned[-1].describe()}")
            else:
                learner.cancel()
                print_fn(f"  nothing moved for {name} in {timeout:g} s: skipped")
    finally:
        if midi_in is not None:
            midi_in.close()
    if not learner.entries:
        print_fn("nothing learned; no file written")
        return None
    match = [port] if port else []
    path = learner.save(out_path, match=match)
    print_fn(f"wrote {path}")
    return learner.mapping(match)
