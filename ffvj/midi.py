"""MIDI control: mapping files, a pure message mapper, LED echo, ports, and MIDI learn.

Three layers, each usable alone:

* ``load_mapping(path, registry) -> Mapping`` reads a TOML mapping file (see ``mappings/*.toml``)
  and checks every entry against the one parameter registry. A bad file raises ``MappingError``
  naming the file, the entry and what is wrong — at setup, never during the show.
* ``MidiMapper(mapping, store, actions, tempo)`` turns mido messages into parameter sets, actions
  and tempo events (``handle(msg)``). It is pure: no ports, no threads (except the optional LED
  echo sender), so tests feed it messages directly. During a show it never raises: unmapped or
  malformed input is counted and logged, rate-limited.
* ``MidiInput(store, actions, tempo, mappings, ports=[...])`` opens the ports (a virtual ``ffvj``
  input where the backend allows, named hardware ports, ports matching a mapping's ``match``) and
  wires each to a mapper through mido callbacks (no polling loop). No usable MIDI API: one warning,
  the show runs on.

``Learner`` and ``learn_session`` bind controls by moving them ("MIDI learn") and write a mapping
file that ``load_mapping`` reads back. ``bundled_mappings()``, ``resolve_mapping(name_or_path)`` and
``default_mappings()`` serve the CLI's ``--midi-mapping``; ``midi_ports()`` lists ports.

Conventions handled (what VJs expect from their controllers): 7-bit CC; 14-bit CC (MSB on CC n < 32,
LSB on n + 32); NRPN (CC 99/98 select, 6/38 data entry, 96/97 increment/decrement); relative
encoders (two's complement, binary offset around 64, sign-magnitude); notes as trigger, toggle or
momentary with note-on velocity 0 as note-off (mido does not convert it); 14-bit pitch bend; soft
takeover; MIDI clock (24 per quarter note) with start/continue/stop; tap tempo.
"""

from __future__ import annotations

import difflib
import json
import logging
import math
import re
import threading
import time
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Callable, Iterable, Sequence

import mido

from .params import LEVEL_PARAMS, Param, RateLimitedLog, build_registry

log = logging.getLogger(__name__)

TYPES = ("cc", "cc14", "nrpn", "note", "pitchbend")
CONTINUOUS_MODES = ("absolute", "relative-twos", "relative-binary", "relative-signmag")
RELATIVE_MODES = CONTINUOUS_MODES[1:]
BUTTON_MODES = ("trigger", "toggle", "momentary")
CURVES = ("param", "linear", "exp")
TAKEOVERS = ("soft", "jump")
# Targets that are not parameters. "NAME"/"N" after a colon is the preset name or snapshot slot.
ACTIONS = ("reset", "tap", "learn", "preset.recall", "preset.save", "snapshot.store", "snapshot.recall")
ACTIONS_WITH_ARG = ("preset.recall", "preset.save", "snapshot.store", "snapshot.recall")

ENTRY_KEYS = ("param", "type", "channel", "number", "mode", "min", "max", "curve", "invert", "step",
              "takeover", "value", "seconds", "led_on", "led_off", "echo", "label")
DEVICE_KEYS = ("name", "match", "output", "channel", "takeover")

NUMBER_RANGES = {"cc": (0, 127), "cc14": (0, 31), "nrpn": (0, 16383), "note": (0, 127)}

# Soft takeover: a control re-engages once it comes this close to the parameter (in 0..1 control
# units, about three steps of a 7-bit fader) or crosses it.
TAKEOVER_TOLERANCE = 3 / 127
# CC numbers the NRPN protocol uses; plain CC mappings on them only see them when no NRPN is selected.
NRPN_MSB, NRPN_LSB, RPN_MSB, RPN_LSB = 99, 98, 101, 100
DATA_MSB, DATA_LSB, DATA_INC, DATA_DEC = 6, 38, 96, 97


class MappingError(ValueError):
    """A mapping file that cannot be used; the message names the file, the entry and the problem."""


class MidiError(RuntimeError):
    """MIDI setup failed in a way the user asked for explicitly (an unknown ``--midi`` port)."""


# --------------------------------------------------------------------------------------------------
# Mapping files
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Device:
    """The ``[device]`` table: which ports a mapping belongs to."""

    name: str
    match: tuple[str, ...] = ()  # substrings (case-insensitive) of input port names to auto-connect
    output: tuple[str, ...] = ()  # substrings of output port names for LED echo; () = no echo

    def matches(self, port_name: str) -> bool:
        return any(m.lower() in port_name.lower() for m in self.match)

    def matches_output(self, port_name: str) -> bool:
        return any(m.lower() in port_name.lower() for m in self.output)


@dataclass(frozen=True)
class MapEntry:
    """One ``[[map]]`` entry, checked and resolved against the registry.

    ``lo``/``hi`` are the sub-range in the parameter's units (the whole range when the file gives
    no ``min``/``max``). ``on``/``off`` are what a button sets. ``source`` is the tag the mapper
    passes to ``ParamStore.set``, unique per entry, so soft takeover can tell this control's own
    changes from everyone else's.
    """

    index: int  # 1-based position among the file's [[map]] entries
    target: str  # as written: "l0.zoom", "snapshot.recall:3"
    type: str
    channel: int | None  # 1..16; None: any channel
    number: int
    mode: str
    source: str
    param: Param | None = None  # None for actions
    action: str | None = None
    arg: str | int | None = None  # preset name or snapshot slot
    lo: float = 0.0
    hi: float = 1.0
    curve: str = "param"
    invert: bool = False
    step: float = 1.0
    takeover: str = "soft"
    on: float = 1.0
    off: float = 0.0
    seconds: float = 0.0
    led_on: int = 127
    led_off: int = 0
    echo: bool = True
    label: str = ""
    raw: dict = field(default_factory=dict, compare=False, hash=False, repr=False)

    @property
    def continuous(self) -> bool:
        return self.mode in CONTINUOUS_MODES

    @property
    def control(self) -> tuple[str, int | None, int]:
        return (self.type, self.channel, self.number)

    def describe(self) -> str:
        ch = "any" if self.channel is None else self.channel
        num = "" if self.type == "pitchbend" else f" {self.number}"
        return f"{self.type}{num} ch {ch} → {self.target}"

    # Control position x in 0..1 <-> parameter value, through the entry's range and curve.
    def to_value(self, x: float) -> float:
        x = min(max(x, 0.0), 1.0)
        p = self.param
        if self.curve == "linear":
            return self.lo + x * (self.hi - self.lo)
        if self.curve == "exp":
            return self.lo * (self.hi / self.lo) ** x
        nlo, nhi = p.to_normalized(self.lo), p.to_normalized(self.hi)
        return p.from_normalized(nlo + x * (nhi - nlo))

    def to_x(self, value: float) -> float:
        p = self.param
        if self.curve == "linear":
            x = (value - self.lo) / (self.hi - self.lo)
        elif self.curve == "exp":
            x = math.log(max(value, 1e-12) / self.lo) / math.log(self.hi / self.lo)
        else:
            nlo, nhi = p.to_normalized(self.lo), p.to_normalized(self.hi)
            x = (p.to_normalized(value) - nlo) / (nhi - nlo) if nhi != nlo else 0.0
        return min(max(x, 0.0), 1.0)


@dataclass
class Mapping:
    """A loaded mapping file: its device and its entries, in file order."""

    device: Device
    entries: list[MapEntry]
    path: str = ""
    skipped: list[str] = field(default_factory=list)  # level parameters this model does not have


def _close(word: str, choices: Iterable[str]) -> str:
    near = difflib.get_close_matches(word, list(choices), n=4, cutoff=0.5)
    return f" (did you mean {', '.join(near)}?)" if near else ""


def _strings(value, what: str) -> tuple[str, ...]:
    if value is None or value is False:
        return ()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
        raise ValueError(f"{what} must be a non-empty string or a list of non-empty strings, not {value!r}")
    return tuple(value)


def _channel(value, what: str = "channel") -> int | None:
    if isinstance(value, str) and value.lower() == "any":
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 16:
        raise ValueError(f"{what} must be 1..16 or \"any\", not {value!r}")
    return value


def _number(value, what: str, lo: float | None = None, hi: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{what} must be a number, not {value!r}")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise ValueError(f"{what} = {value!r} is outside {lo:g}..{hi:g}")
    return float(value)


def parse_target(target: str, registry: dict[str, Param]) -> tuple[Param | None, str | None, str | int | None]:
    """``"l0.zoom"`` → (Param, None, None); ``"snapshot.recall:3"`` → (None, "snapshot.recall", 3).

    Raises ValueError listing close matches for an unknown name."""
    if not isinstance(target, str) or not target:
        raise ValueError(f"param must be a parameter name or an action, not {target!r}")
    base, sep, arg = target.partition(":")
    if base in ACTIONS:  # "reset" is also a registry trigger; as a MIDI target it is the action
        if base in ACTIONS_WITH_ARG:
            if not arg:
                raise ValueError(f"{base} needs an argument: \"{base}:"
                                 f"{'NAME' if base.startswith('preset') else 'N'}\"")
            if base.startswith("snapshot"):
                if not arg.isdigit():
                    raise ValueError(f"{target!r}: the snapshot slot must be a whole number ≥ 0")
                return None, base, int(arg)
            return None, base, arg
        if sep:
            raise ValueError(f"{base} takes no argument (got {target!r})")
        return None, base, None
    if target in registry:
        return registry[target], None, None
    actions = [a + (":" if a in ACTIONS_WITH_ARG else "") for a in ACTIONS]
    raise ValueError(f"unknown parameter {target!r}{_close(target, list(registry) + actions)}")


def _missing_level_param(target: str) -> bool:
    """True for a level parameter this registry's model lacks (too deep, or the level has no
    such term), which a shared controller file may name: skipped with a warning, not an error."""
    m = re.fullmatch(r"l(\d+)\.(\w+)", target)
    return bool(m) and m.group(2) in {p.name for p in LEVEL_PARAMS}


def _parse_entry(raw, index: int, registry: dict[str, Param], defaults: dict, device_name: str) -> MapEntry:
    if not isinstance(raw, dict):
        raise ValueError("must be a table of keys ([[map]] with param = ..., type = ...)")
    for key in raw:
        if key not in ENTRY_KEYS:
            raise ValueError(f"unknown key {key!r}{_close(key, ENTRY_KEYS)}; allowed: {', '.join(ENTRY_KEYS)}")
    for key in ("param", "type"):
        if key not in raw:
            raise ValueError(f"missing key {key!r}")
    param, action, arg = parse_target(raw["param"], registry)
    typ = raw["type"]
    if typ not in TYPES:
        raise ValueError(f"type {typ!r} is not one of {', '.join(TYPES)}{_close(str(typ), TYPES)}")
    channel = _channel(raw.get("channel", defaults.get("channel", "any")))
    if typ == "pitchbend":
        if "number" in raw:
            raise ValueError("pitchbend has no number (one bend per channel)")
        number = 0
    else:
        if "number" not in raw:
            raise ValueError(f"missing key 'number' ({typ} needs one)")
        number = raw["number"]
        lo, hi = NUMBER_RANGES[typ]
        if isinstance(number, bool) or not isinstance(number, int) or not lo <= number <= hi:
            extra = " (the MSB; its LSB is number + 32)" if typ == "cc14" else ""
            raise ValueError(f"number for {typ} must be an integer {lo}..{hi}{extra}, not {number!r}")

    # Mode: continuous for faders/knobs/encoders, button modes for notes and button-like CCs.
    if action is not None:
        default_mode = "trigger"
    elif typ == "note":
        default_mode = "trigger" if "value" in raw else "toggle"
    else:
        default_mode = "absolute"
    mode = raw.get("mode", default_mode)
    allowed = {"cc": CONTINUOUS_MODES + BUTTON_MODES, "note": BUTTON_MODES}.get(typ, ("absolute",) + BUTTON_MODES)
    if action is not None:
        allowed = ("trigger",)
    if mode not in allowed:
        why = "actions fire once per press" if action is not None else f"for type {typ}"
        raise ValueError(f"mode {mode!r} is not allowed ({why}); use one of {', '.join(allowed)}"
                         f"{_close(str(mode), allowed)}")

    kw: dict = {}
    if action is not None:
        for key in ("min", "max", "curve", "invert", "step", "takeover", "value"):
            if key in raw:
                raise ValueError(f"{key!r} has no meaning for the action {action!r}")
        if "seconds" in raw:
            if action not in ("preset.recall", "snapshot.recall"):
                raise ValueError(f"'seconds' only applies to preset.recall and snapshot.recall, not {action}")
            kw["seconds"] = _number(raw["seconds"], "seconds", 0, 600)
    else:
        if "seconds" in raw:
            raise ValueError("'seconds' only applies to preset.recall and snapshot.recall")
        lo = _number(raw.get("min", param.min), "min", param.min, param.max)
        hi = _number(raw.get("max", param.max), "max", param.min, param.max)
        if not lo < hi:
            raise ValueError(f"min ({lo:g}) must be below max ({hi:g}); use invert = true to reverse a control")
        curve = raw.get("curve", "param")
        if curve not in CURVES:
            raise ValueError(f"curve {curve!r} is not one of {', '.join(CURVES)}{_close(str(curve), CURVES)}")
        if curve == "exp" and lo <= 0:
            raise ValueError(f"curve 'exp' needs a positive range, but min is {lo:g}")
        invert = raw.get("invert", False)
        if not isinstance(invert, bool):
            raise ValueError(f"invert must be true or false, not {invert!r}")
        step = _number(raw.get("step", 1.0), "step", 1e-6, 1000)
        if "step" in raw and mode not in RELATIVE_MODES and typ != "nrpn":
            raise ValueError("'step' only applies to relative encoders (and NRPN increment/decrement)")
        takeover = raw.get("takeover", defaults.get("takeover", "soft"))
        if takeover not in TAKEOVERS:
            raise ValueError(f"takeover must be soft or jump, not {takeover!r}")
        if "value" in raw:
            if mode not in BUTTON_MODES:
                raise ValueError("'value' is what a button sets; it needs mode trigger, toggle or momentary")
            on = param.parse(raw["value"])
            if not param.min <= on <= param.max:
                raise ValueError(f"value {raw['value']!r} is outside {param.name}'s range {param.min:g}..{param.max:g}")
            on = param.clamp(on)
        else:
            on = hi
        kw.update(lo=lo, hi=hi, curve=curve, invert=invert, step=step, takeover=takeover, on=on, off=lo)
    for key in ("led_on", "led_off"):
        if key in raw:
            v = raw[key]
            if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= 127:
                raise ValueError(f"{key} must be an integer 0..127, not {v!r}")
            kw[key] = v
    echo = raw.get("echo", True)
    if not isinstance(echo, bool):
        raise ValueError(f"echo must be true or false, not {echo!r}")
    label = raw.get("label", "")
    if not isinstance(label, str):
        raise ValueError(f"label must be a string, not {label!r}")
    return MapEntry(index=index, target=raw["param"], type=typ, channel=channel, number=number, mode=mode,
                    source=f"midi:{device_name}#{index}", param=param, action=action, arg=arg, echo=echo,
                    label=label, raw=dict(raw), **kw)


def parse_mapping(data: dict, registry: dict[str, Param], path: str = "<mapping>") -> Mapping:
    """Check an already-parsed mapping table (what ``tomllib`` returns). Raises MappingError."""
    def fail(msg: str):
        raise MappingError(f"{path}: {msg}")

    if not isinstance(data, dict):
        fail("expected a table")
    for key in data:
        if key not in ("device", "map"):
            fail(f"unknown top-level key {key!r}{_close(key, ('device', 'map'))}; expected [device] and [[map]]")
    dev = data.get("device")
    if not isinstance(dev, dict):
        fail("missing [device] table (with at least name = \"...\")")
    for key in dev:
        if key not in DEVICE_KEYS:
            fail(f"[device]: unknown key {key!r}{_close(key, DEVICE_KEYS)}; allowed: {', '.join(DEVICE_KEYS)}")
    name = dev.get("name")
    if not isinstance(name, str) or not name.strip():
        fail("[device]: missing key 'name' (a non-empty string)")
    defaults: dict = {}
    try:
        match = _strings(dev.get("match"), "match")
        output = _strings(dev.get("output"), "output")
        if "channel" in dev:
            _channel(dev["channel"])
            defaults["channel"] = dev["channel"]
        if "takeover" in dev:
            if dev["takeover"] not in TAKEOVERS:
                raise ValueError(f"takeover must be soft or jump, not {dev['takeover']!r}")
            defaults["takeover"] = dev["takeover"]
    except ValueError as exc:
        fail(f"[device]: {exc}")
    maps = data.get("map")
    if not isinstance(maps, list) or not maps:
        fail("no [[map]] entries")
    entries, skipped = [], []
    for i, raw in enumerate(maps, start=1):
        target = raw.get("param") if isinstance(raw, dict) else None
        where = f"[[map]] entry {i}" + (f" (param {target!r})" if isinstance(target, str) else "")
        try:
            entries.append(_parse_entry(raw, i, registry, defaults, name))
        except ValueError as exc:
            if isinstance(target, str) and target not in registry and _missing_level_param(target) \
                    and str(exc).startswith("unknown parameter"):
                skipped.append(target)
                continue
            fail(f"{where}: {exc}")
    if skipped:
        log.warning("%s: skipped %d entries for level parameters this model does not have: %s", path,
                    len(skipped), ", ".join(skipped))
    return Mapping(Device(name, match, output), entries, path=path, skipped=skipped)


def load_mapping(path: str | Path, registry: dict[str, Param] | None = None) -> Mapping:
    """Read and check a TOML mapping file. ``registry`` defaults to ``build_registry(3)``.

    Raises MappingError naming the file, the ``[[map]]`` entry (1-based index and param) and the
    problem: TOML syntax (with line and column), a missing key, an unknown parameter (with close
    matches), a bad type/mode/channel/number/range."""
    path = Path(path)
    registry = build_registry(3) if registry is None else registry
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise MappingError(f"{path}: cannot read mapping file: {exc.strerror or exc}") from exc
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise MappingError(f"{path}: TOML syntax error: {exc}") from exc
    return parse_mapping(data, registry, str(path))


def bundled_mappings() -> dict[str, Path]:
    """The mapping files shipped with ffvj, by name (file stem): generic, nanokontrol2, ..."""
    try:
        folder = Path(str(resources.files("ffvj.mappings")))
    except ModuleNotFoundError:
        folder = Path(__file__).resolve().parents[1] / "mappings"  # a source checkout
    return {p.stem: p for p in sorted(folder.glob("*.toml"))}


def resolve_mapping(spec: str | Path, registry: dict[str, Param] | None = None) -> Mapping:
    """``--midi-mapping SPEC``: a path to a TOML file, or the name of a bundled mapping."""
    path = Path(spec)
    if path.suffix != ".toml" and not path.exists():
        bundled = bundled_mappings()
        if str(spec) not in bundled:
            raise MappingError(f"no mapping {str(spec)!r}: not a file, and not one of the bundled mappings "
                               f"({', '.join(bundled) or 'none'}){_close(str(spec), bundled)}")
        path = bundled[str(spec)]
    return load_mapping(path, registry)


def default_mappings(registry: dict[str, Param] | None = None) -> list[Mapping]:
    """Every bundled mapping: each controller's file auto-connects to its controller, and generic
    (no ``match``) serves the virtual port and any other input."""
    return [load_mapping(p, registry) for p in bundled_mappings().values()]


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if not math.isfinite(v):
            raise ValueError(f"cannot write {v!r} to TOML")
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)  # JSON string escapes are valid TOML basic strings
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {type(v).__name__} to TOML")


def dump_mapping(device: Device, entries: Sequence[dict], header: str = "") -> str:
    """A mapping file's TOML text (``entries`` are raw ``[[map]]`` dicts, as in ``MapEntry.raw``)."""
    lines = [f"# {line}".rstrip() for line in header.splitlines()]
    lines += ["", "[device]", f"name = {_toml_value(device.name)}"]
    if device.match:
        lines.append(f"match = {_toml_value(list(device.match))}")
    if device.output:
        lines.append(f"output = {_toml_value(list(device.output))}")
    for raw in entries:
        lines += ["", "[[map]]"]
        for key in ENTRY_KEYS:  # a stable, readable key order
            if key in raw:
                lines.append(f"{key} = {_toml_value(raw[key])}")
    return "\n".join(lines).lstrip("\n") + "\n"


# --------------------------------------------------------------------------------------------------
# LED echo
# --------------------------------------------------------------------------------------------------


class EchoSender:
    """Sends LED/ring feedback to a controller on its own thread, so a parameter change (from OSC,
    a preset, the render loop) never waits on a MIDI port. Latest value per control wins; batches
    are at least ``interval`` seconds apart (a rate limit the controller's firmware appreciates)."""

    def __init__(self, port, interval: float = 0.01, name: str = "midi-echo"):
        self.port, self.interval = port, interval
        self._pending: dict = {}
        self._cond = threading.Condition()
        self._closed = False
        self.sent = 0
        self.errors = 0
        self._warn = RateLimitedLog(log)
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def put(self, key, messages: list) -> None:
        """Queue ``messages`` for control ``key``, replacing what was pending for it. Never blocks long."""
        with self._cond:
            if self._closed:
                return
            self._pending[key] = messages
            self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return
                batch, self._pending = self._pending, {}
            for messages in batch.values():
                for msg in messages:
                    try:
                        self.port.send(msg)
                        self.sent += 1
                    except Exception as exc:  # noqa: BLE001 — a vanished port must not end the show
                        # (mido/rtmidi raise backend-specific types for an unplugged device)
                        self.errors += 1
                        self._warn.warning("send", "LED echo to %s failed: %s", getattr(self.port, "name", "?"), exc)
            time.sleep(self.interval)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=1.0)


# --------------------------------------------------------------------------------------------------
# The mapper
# --------------------------------------------------------------------------------------------------


def _relative_ticks(mode: str, v: int) -> int:
    """Signed encoder steps from one relative CC value."""
    if mode == "relative-twos":  # 1..63 up, 127..65 down (127 = -1)
        return v - 128 if v >= 64 else v
    if mode == "relative-binary":  # offset 64: 65 = +1, 63 = -1
        return v - 64
    return -(v - 64) if v >= 64 else v  # sign-magnitude: bit 6 is the sign, 65 = -1


class MidiMapper:
    """Turns mido messages into parameter sets, actions and tempo events. Thread-safe.

    ``handle(msg)`` never raises during a show: malformed or unmapped input is counted
    (``malformed``, ``unmapped``, ``errors``) and logged rate-limited. ``output`` (anything with
    ``send(msg)``, e.g. a mido output port) enables LED echo: when a mapped parameter changes from
    any source, the controller gets the matching CC/note value back, from a sender thread.
    ``learner`` (a ``Learner``) sees every message first while it is armed.
    """

    def __init__(self, mapping: Mapping | Sequence[Mapping], store, actions=None, tempo=None, *,
                 output=None, learner: "Learner | None" = None, clock: bool = True):
        self.mappings = [mapping] if isinstance(mapping, Mapping) else list(mapping)
        self.store, self.actions, self.tempo = store, actions, tempo
        self.learner, self.clock = learner, clock
        self.messages = self.unmapped = self.malformed = self.errors = self.held = 0
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
        self._echo = EchoSender(output) if output is not None else None
        store.add_listener(self._on_param)
        if learner is not None:
            learner.on_learned.append(self.bind)

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
                self.malformed += 1
                self._warn.warning("malformed", "ignored malformed MIDI input %r: %s", msg, exc)
                return
        try:
            self._handle(msg)
        except Exception as exc:  # noqa: BLE001 — last resort in a callback thread: the show goes on
            self.errors += 1
            self._warn.warning("error", "MIDI message %s could not be applied: %r", msg, exc)

    def _handle(self, msg) -> None:
        self.messages += 1
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
        self.unmapped += 1
        self._warn.warning(f"unmapped {what} {ch}", "unmapped MIDI %s on channel %d (add it to a mapping, "
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
                if e.takeover == "soft" and not self._engaged.get(e.source, True):
                    cur = e.to_x(self.store.get(e.param.name))
                    crossed = prev is not None and (prev - cur) * (x_e - cur) <= 0
                    if abs(x_e - cur) > TAKEOVER_TOLERANCE and not crossed:
                        self.held += 1
                        continue  # the control is away from the value: wait until it gets there
                    self._engaged[e.source] = True
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
        if e.action == "tap":
            if self.tempo is not None:
                self.tempo.tap()
            return
        if e.action == "learn":
            if self.learner is None:
                self._warn.warning("learn", "a 'learn' control was pressed but MIDI learn is not enabled")
            elif self.learner.arm() is None:
                self._warn.warning("learn-osc", "MIDI learn: change a parameter via OSC first, then press learn")
            return
        if self.actions is None:
            self._warn.warning("no-actions", "action %s ignored: no action queue", e.target)
            return
        if e.action == "reset":
            self.actions.post("reset")
        elif e.action == "preset.recall":
            self.actions.post("preset.recall", name=e.arg, seconds=e.seconds)
        elif e.action == "preset.save":
            self.actions.post("preset.save", name=e.arg)
        elif e.action == "snapshot.store":
            self.actions.post("snapshot.store", slot=e.arg)
        elif e.action == "snapshot.recall":
            self.actions.post("snapshot.recall", slot=e.arg, seconds=e.seconds)

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

    def stats(self) -> dict:
        return {"messages": self.messages, "unmapped": self.unmapped, "malformed": self.malformed,
                "errors": self.errors, "takeover_held": self.held,
                "echo_sent": self._echo.sent if self._echo else 0}

    def close(self) -> None:
        self._closed = True
        self.store.remove_listener(self._on_param)
        if self._echo is not None:
            self._echo.close()
        if self.learner is not None and self.bind in self.learner.on_learned:
            self.learner.on_learned.remove(self.bind)


# --------------------------------------------------------------------------------------------------
# MIDI learn
# --------------------------------------------------------------------------------------------------


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
            entry = _parse_entry(raw, self._count, self.registry, {}, self.name)
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


# --------------------------------------------------------------------------------------------------
# Ports
# --------------------------------------------------------------------------------------------------


def backend_errors() -> tuple[type[BaseException], ...]:
    """What opening a MIDI backend or port raises when the platform cannot do it."""
    errors: tuple = (ImportError, OSError, RuntimeError, ValueError)
    try:
        import rtmidi  # python-rtmidi's errors: SystemError (an OSError), InvalidUseError, ...
        errors += (rtmidi.RtMidiError,)
    except ImportError:
        pass
    return errors


def _load_backend(backend=None):
    """A ``mido.Backend``: None → mido's default (``MIDO_BACKEND`` or rtmidi); a module string such
    as ``"mido.backends.rtmidi/UNIX_JACK"``; or a Backend object."""
    if backend is None or isinstance(backend, str):
        return mido.Backend(backend, load=True)
    return backend


def _never_supported(exc: BaseException) -> bool:
    """A backend saying it cannot do this at all (no virtual ports), not that it is busy: rtmidi on
    Windows raises NotImplementedError, mido's portmidi and pygame backends a ValueError saying so."""
    return isinstance(exc, NotImplementedError) or (isinstance(exc, ValueError) and "not supported" in str(exc))


def _retrying(errors: tuple, fn, *args, attempts: int = 3, **kwargs):
    """List or open ports, retrying briefly on ``errors``: a JACK server busy with other clients,
    or a device that has just been plugged in, can refuse the first try."""
    for attempt in range(attempts):
        try:
            return fn(*args, **kwargs)
        except errors as exc:  # NotImplementedError is a RuntimeError
            if attempt == attempts - 1 or _never_supported(exc):
                raise
            time.sleep(0.25 * (attempt + 1))


def _input_lister(backend):
    """``(list_inputs, close)`` for hot-plug rescans. mido's rtmidi backend opens two new MIDI clients
    for every listing; on JACK each is a server round trip made with the GIL held, and while it waits
    JACK's process cycle waits on an open port's Python callback, which waits for the GIL: the whole
    JACK graph stalls for its 5 s timeout. One persistent rtmidi client lists from JACK's shared
    memory instead. Only where the MIDI API is named (``mido.backends.rtmidi/UNIX_JACK``): with
    none, rtmidi picks the first API that has ports when the client is made, so one made at start
    with nothing plugged in could settle on the wrong API for good; mido's fresh clients choose
    again each time. Other backends list through mido."""
    if getattr(backend, "name", None) == "mido.backends.rtmidi" and getattr(backend, "api", None):
        try:
            import rtmidi

            probe = rtmidi.MidiIn(backend.module._get_api_id(backend.api), name="ffvj-hotplug")
            return probe.get_ports, probe.delete
        except (ImportError, AttributeError, ValueError, RuntimeError, OSError) as exc:
            log.debug("MIDI: persistent port lister unavailable (%s); listing through mido", exc)
    return backend.get_input_names, lambda: None


def midi_ports(backend=None) -> dict[str, list[str]]:
    """``{"inputs": [...], "outputs": [...]}`` for ``ffvj devices``; raises when MIDI is unusable."""
    b = _load_backend(backend)
    return {"inputs": list(b.get_input_names()), "outputs": list(b.get_output_names())}


class MidiInput:
    """Every MIDI input of a show, wired to mappers through mido callbacks (no polling loop).

    ``start()`` opens, in order: the virtual input ``virtual_name`` (other software on this machine
    sends to it; not on backends without virtual ports such as Windows MME), each port named in
    ``ports`` (case-insensitive substring; an unknown name raises MidiError listing the available
    ports), and every port matching a mapping's ``[device] match``. A port uses the mappings whose
    ``match`` fits its name; any other port (the virtual one included) uses the mappings without a
    ``match`` (such as generic.toml), or all mappings when every one has a ``match``. LED echo goes
    to the output port matching the mapping's ``[device] output``.

    Hot-plug: every ``rescan_s`` seconds a watcher thread lists the inputs again. A controller
    unplugged mid-show is closed and reconnected when it comes back (under a new ALSA number too); a
    controller plugged in late is connected if it matches a mapping or a ``ports`` name; a virtual
    port the MIDI server refused at start (a busy JACK server does) is tried again.

    No usable MIDI API (no ALSA sequencer, no JACK server, python-rtmidi missing): one warning, and
    the show runs on without MIDI — unless ``ports`` named a port explicitly, which raises MidiError.
    ``close()`` is idempotent; use it as a context manager.
    """

    def __init__(self, store, actions=None, tempo=None, mappings: Sequence[Mapping] = (),
                 ports: Sequence[str] = (), virtual_name: str | None = "ffvj", backend=None, *,
                 learner: Learner | None = None, auto_connect: bool = True, echo: bool = True,
                 rescan_s: float | None = 2.0):
        self.store, self.actions, self.tempo = store, actions, tempo
        self.mappings, self.port_names = list(mappings), list(ports)
        self.virtual_name, self.backend, self.learner = virtual_name, backend, learner
        self.auto_connect, self.echo, self.rescan_s = auto_connect, echo, rescan_s
        self.available = False
        self.mappers: list[MidiMapper] = []
        # One link per open input: its port, its mapper and its LED echo output (or None).
        self._links: dict[str, tuple] = {}
        self._retired_stats: dict[str, int] = {}  # counts of mappers whose port went away
        self._virtual_state = "closed"  # "open", "closed" (retry on rescan) or "unsupported"
        self._lock = threading.Lock()  # guards the link table, never held while talking to the server
        self._rescan_lock = threading.Lock()  # one rescan at a time
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None
        self._warn = RateLimitedLog(log, interval=30.0)
        self._started = self._closed = False

    def __enter__(self) -> "MidiInput":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def connected(self) -> list[str]:
        with self._lock:
            return [link[0].name for link in self._links.values()]

    @property
    def inputs(self) -> list:
        with self._lock:
            return [link[0] for link in self._links.values()]

    @property
    def outputs(self) -> list:
        with self._lock:
            return [link[2] for link in self._links.values() if link[2] is not None]

    def start(self) -> "MidiInput":
        if self._started:
            return self
        self._started = True
        self._errors = backend_errors()
        try:
            self._backend = _load_backend(self.backend)
            inputs = list(_retrying((OSError, RuntimeError), self._backend.get_input_names))
        except self._errors as exc:
            if self.port_names:
                raise MidiError(f"cannot open MIDI port(s) {', '.join(map(repr, self.port_names))}: no usable "
                                f"MIDI API here ({exc})") from exc
            log.warning("MIDI disabled: no usable MIDI API (%s). The show runs on without MIDI.", exc)
            return self
        self.available = True
        try:
            self._open_all(inputs)
        except BaseException:
            self.close()
            raise
        if self.rescan_s:
            self._list_inputs, self._close_lister = _input_lister(self._backend)
            self._watcher = threading.Thread(target=self._watch, name="ffvj-midi-hotplug", daemon=True)
            self._watcher.start()
        return self

    # -- which ports -------------------------------------------------------------------------------

    def _named(self, port: str) -> bool:
        return any(name.lower() in port.lower() for name in self.port_names)

    def _wanted(self, inputs: list[str]) -> list[str]:
        """The inputs to listen to: those named in ``ports``, then those a mapping matches."""
        wanted = [p for p in inputs if self._named(p) and not self._is_own(p)]
        if self.auto_connect:
            wanted += [p for p in inputs if p not in wanted and not self._is_own(p)
                       and any(m.device.matches(p) for m in self.mappings)]
        return wanted

    def _is_own(self, port_name: str) -> bool:
        return bool(self.virtual_name) and port_name.split(":")[0] == self.virtual_name

    def _unmatched(self) -> list[Mapping]:
        return [m for m in self.mappings if not m.device.match] or self.mappings

    # -- opening and closing -----------------------------------------------------------------------

    def _open_all(self, inputs: list[str]) -> None:
        for name in self.port_names:
            if not any(name.lower() in p.lower() for p in inputs):
                raise MidiError(f"unknown MIDI port {name!r}; available inputs: "
                                f"{', '.join(inputs) if inputs else 'none'}")
        self._open_virtual(attempts=3)
        for name in self._wanted(inputs):
            try:
                self._connect(name)
            except self._errors as exc:
                if self._named(name):
                    raise MidiError(f"cannot open MIDI port {name!r}: {exc}") from exc
                log.warning("MIDI: cannot open %r (%s); will try again", name, exc)

    def _open_virtual(self, attempts: int) -> None:
        if not self.virtual_name or self._virtual_state != "closed":
            return
        mapper = MidiMapper(self._unmatched(), self.store, self.actions, self.tempo, learner=self.learner)
        try:
            port = _retrying(self._errors, self._backend.open_input, self.virtual_name, virtual=True,
                             client_name=self.virtual_name, callback=mapper.handle, attempts=attempts)
        except self._errors as exc:
            mapper.close()
            if _never_supported(exc):  # say it once, and never try again
                self._virtual_state = "unsupported"
                log.warning("MIDI: no virtual input port on this backend (%s); connect a controller with "
                            "--midi NAME", exc)
            else:
                self._warn.warning("virtual", "MIDI: the MIDI server refused the virtual input %r (%s); trying "
                                              "again every %.0f s", self.virtual_name, exc, self.rescan_s or 0)
            return
        self._virtual_state = "open"
        self._add_link(self.virtual_name, port, mapper, None)
        log.info("MIDI: virtual input %r open (send to it from other software)", port.name)

    def _connect(self, name: str) -> None:
        own = [m for m in self.mappings if m.device.matches(name)]
        wants_echo = self.echo and any(m.device.output for m in own)
        out = self._open_echo(own, name) if wants_echo else None
        mapper = MidiMapper(own or self._unmatched(), self.store, self.actions, self.tempo, output=out,
                            learner=self.learner)
        try:
            port = _retrying(self._errors, self._backend.open_input, name, callback=mapper.handle)
        except BaseException:
            mapper.close()
            if out is not None:
                out.close()
            raise
        if not self._add_link(name, port, mapper, out):
            return
        log.info("MIDI: listening to %r with %s", name,
                 ", ".join(m.device.name for m in (own or self._unmatched())) or "no mapping")
        mapper.refresh_leds()

    def _add_link(self, name: str, port, mapper: MidiMapper, out) -> bool:
        with self._lock:
            if not self._closed:
                self._links[name] = (port, mapper, out)
                self.mappers.append(mapper)
                return True
        # close() ran while this port was opening (a watcher stuck on a slow server): undo it
        self._close_link(port, mapper, out)
        return False

    def _disconnect(self, name: str) -> None:
        with self._lock:
            link = self._links.pop(name, None)
            if link is None:
                return
            mapper = link[1]
            if mapper in self.mappers:
                self.mappers.remove(mapper)
            for k, v in mapper.stats().items():
                self._retired_stats[k] = self._retired_stats.get(k, 0) + v
        self._close_link(*link)

    @staticmethod
    def _close_link(port, mapper: MidiMapper, out) -> None:
        port.close()  # the input first, so no callback runs into a closed mapper or output
        mapper.close()
        if out is not None:
            out.close()

    def _open_echo(self, mappings: list[Mapping], input_name: str):
        """The output port for LED echo to the controller behind ``input_name``, or None."""
        try:
            # Listed only when needed: on JACK every listing is a short-lived client of the server.
            outputs = list(_retrying(self._errors, self._backend.get_output_names))
        except self._errors as exc:
            log.warning("MIDI: LED echo unavailable, cannot list output ports (%s)", exc)
            return None
        candidates = [o for o in outputs if any(m.device.matches_output(o) for m in mappings)]
        if not candidates:
            log.info("MIDI: no output port for LED echo to %r", input_name)
            return None
        # Two identical controllers: ALSA and CoreMIDI give a device's input and output the same
        # name, so prefer that one over the first match.
        name = input_name if input_name in candidates else candidates[0]
        try:
            return _retrying(self._errors, self._backend.open_output, name)
        except self._errors as exc:
            log.warning("MIDI: LED echo to %r unavailable (%s)", name, exc)
            return None

    # -- hot-plug ----------------------------------------------------------------------------------

    def _watch(self) -> None:
        try:
            while not self._stop.wait(self.rescan_s):
                try:
                    self.rescan(self._list_inputs)
                except self._errors as exc:  # a busy or restarting MIDI server: next time
                    self._warn.warning("rescan", "MIDI: cannot list ports (%s); trying again", exc)
                except Exception:  # never let hot-plug take MIDI down; say what broke
                    log.exception("MIDI: hot-plug rescan failed")
        finally:
            self._close_lister()

    def rescan(self, list_inputs=None) -> None:
        """Close inputs that vanished, open wanted inputs that appeared, retry a refused virtual port.
        The watcher thread calls this every ``rescan_s``; tests and tools may call it directly.

        Only the watcher (or, before it starts, ``start``) opens and closes ports; ``_lock`` guards
        the link table alone, so the status line never waits on a slow MIDI server."""
        with self._rescan_lock:  # the watcher and a direct call must not open the same port twice
            self._rescan(list_inputs)

    def _rescan(self, list_inputs) -> None:
        if self._closed or not self.available:
            return
        self._open_virtual(attempts=1)
        inputs = list((list_inputs or self._backend.get_input_names)())
        for name in [n for n in self.connected_names() if n != self.virtual_name and n not in inputs]:
            self._disconnect(name)
            log.warning("MIDI: %r went away; it reconnects when it comes back", name)
        for name in self._wanted(inputs):
            if name not in self._links and not self._closed:
                try:
                    self._connect(name)
                except self._errors as exc:
                    self._warn.warning("open " + name, "MIDI: cannot open %r (%s); trying again", name, exc)

    def connected_names(self) -> list[str]:
        """The names this input was opened under (the link keys; a port's own ``name`` may differ)."""
        with self._lock:
            return list(self._links)

    # -- reporting ---------------------------------------------------------------------------------

    def status(self) -> str:
        """One short part of the runtime's status line."""
        if not self.available:
            return "midi off"
        st = self.stats()
        return (f"midi {len(self._links)} in, {st.get('messages', 0)} msgs, "
                f"{st.get('unmapped', 0) + st.get('malformed', 0)} unmapped/bad")

    def stats(self) -> dict:
        with self._lock:
            total, mappers = dict(self._retired_stats), list(self.mappers)
        for m in mappers:
            for k, v in m.stats().items():
                total[k] = total.get(k, 0) + v
        return total

    def close(self) -> None:
        self._stop.set()
        if self._watcher is not None and self._watcher is not threading.current_thread():
            self._watcher.join(timeout=10)  # a watcher stuck on a dead server is a daemon: go on
        with self._lock:
            if self._closed:
                return
            self._closed = True
        for name in self.connected_names():
            self._disconnect(name)


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
    registry = build_registry(3) if registry is None else registry
    for name in param_names:
        parse_target(name, registry)  # all names checked before the first question
    errors = backend_errors()
    try:
        b = _load_backend(backend)
        inputs = list(_retrying(errors, b.get_input_names)) if port is not None else []
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
                    midi_in = (_retrying(errors, b.open_input, virtual_name, virtual=True, client_name=virtual_name,
                                         callback=learner.feed)
                               if port is None else _retrying(errors, b.open_input, hits[0], callback=learner.feed))
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
