"""MIDI mapping files: the TOML schema, checked against the parameter registry and the actions table.

``load_mapping(path, registry) -> Mapping`` reads a file (see ``mappings/*.toml``) and checks every
entry. A bad file raises ``MappingError`` naming the file, the ``[[map]]`` entry and what is wrong — at
setup, never during the show. ``dump_mapping`` writes one back (through tomli-w). ``bundled_mappings``,
``resolve_mapping(name_or_path)`` and ``default_mappings`` serve the CLI's ``--midi-mapping``.

An entry's ``param`` is a parameter name or an action from ``actions.ACTIONS``: ``reset``, ``tap``,
``learn``, or one that takes arguments with the first after a colon (``"snapshot.recall:3"``,
``"preset.recall:dawn"``, ``"bpm:128"``) and the others as keys of the entry (``seconds = 4``).
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import tomli_w

from ...phi import DEFAULT_LEVELS, LEVEL_PARAMS, Param
from ..actions import ACTIONS, Action
from ..params import build_registry, close_matches
from ..tomlfile import TomlFileError, read_toml

log = logging.getLogger(__name__)

TYPES = ("cc", "cc14", "nrpn", "note", "pitchbend")
CONTINUOUS_MODES = ("absolute", "relative-twos", "relative-binary", "relative-signmag")
RELATIVE_MODES = CONTINUOUS_MODES[1:]
BUTTON_MODES = ("trigger", "toggle", "momentary")
CURVES = ("param", "linear", "exp")
TAKEOVERS = ("soft", "jump")
NUMBER_RANGES = {"cc": (0, 127), "cc14": (0, 31), "nrpn": (0, 16383), "note": (0, 127)}
DEVICE_KEYS = ("name", "match", "output", "channel", "takeover")
# An action's arguments after the first are keys of its entry (preset.recall's "seconds").
ACTION_KEYS = tuple(dict.fromkeys(arg.name for action in ACTIONS.values() for arg in action.args[1:]))


class MappingError(ValueError):
    """A mapping file that cannot be used; the message names the file, the entry and the problem."""


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
    """One ``[[map]]`` entry, checked and resolved against the registry and the actions table.

    ``lo``/``hi`` are the sub-range in the parameter's units (the whole range when the file gives
    no ``min``/``max``). ``on``/``off`` are what a button sets. An action entry fires ``action`` with
    ``values`` (its arguments, in order). ``source`` is the tag the mapper passes to
    ``ParamStore.set``, unique per entry, so soft takeover can tell this control's own changes from
    everyone else's.
    """

    index: int  # 1-based position among the file's [[map]] entries
    target: str  # as written: "l0.zoom", "snapshot.recall:3"
    type: str
    channel: int | None  # 1..16; None: any channel
    number: int
    mode: str
    source: str
    param: Param | None = None  # None for actions
    action: Action | None = None
    values: tuple = ()
    lo: float = 0.0
    hi: float = 1.0
    curve: str = "param"
    invert: bool = False
    step: float = 1.0
    takeover: str = "soft"
    on: float = 1.0
    off: float = 0.0
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


# --- checking one value -----------------------------------------------------------------------------

def _strings(value, what: str) -> tuple[str, ...]:
    if value is None or value is False:
        return ()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
        raise ValueError(f"{what} must be a non-empty string or a list of non-empty strings, not {value!r}")
    return tuple(value)


def channel_number(value, what: str = "channel") -> int | None:
    """A channel 1..16, or None for "any"."""
    if isinstance(value, str) and value.lower() == "any":
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 16:
        raise ValueError(f"{what} must be 1..16 or \"any\", not {value!r}")
    return value


def _number(what: str, lo: float | None = None, hi: float | None = None) -> Callable:
    def check(value) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"{what} must be a number, not {value!r}")
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            raise ValueError(f"{what} = {value!r} is outside {lo:g}..{hi:g}")
        return float(value)
    return check


def _whole(what: str, lo: int, hi: int) -> Callable:
    def check(value) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            raise ValueError(f"{what} must be an integer {lo}..{hi}, not {value!r}")
        return value
    return check


def _choice(what: str, choices: Sequence[str]) -> Callable:
    def check(value) -> str:
        if value not in choices:
            raise ValueError(f"{what} {value!r} is not one of {', '.join(choices)}{close_matches(str(value), choices)}")
        return value
    return check


def _kind(what: str, kind: type) -> Callable:
    def check(value):
        if not isinstance(value, kind):
            raise ValueError(f"{what} must be {'true or false' if kind is bool else 'a string'}, not {value!r}")
        return value
    return check


# Every key of a [[map]] entry: who may use it ("any" entry, a "param" entry, an "action" entry) and
# the check of its value on its own. Checks that need other keys (number by type, min below max, a
# button value in the parameter's range, which modes a type allows) are in parse_entry.
ENTRY_KEYS: dict[str, tuple[str, Callable | None]] = {
    "param": ("any", None),
    "type": ("any", _choice("type", TYPES)),
    "channel": ("any", channel_number),
    "number": ("any", None),
    "mode": ("any", None),
    "min": ("param", _number("min")),
    "max": ("param", _number("max")),
    "curve": ("param", _choice("curve", CURVES)),
    "invert": ("param", _kind("invert", bool)),
    "step": ("param", _number("step", 1e-6, 1000)),
    "takeover": ("param", _choice("takeover", TAKEOVERS)),
    "value": ("param", None),
    **{key: ("action", None) for key in ACTION_KEYS},
    "led_on": ("any", _whole("led_on", 0, 127)),
    "led_off": ("any", _whole("led_off", 0, 127)),
    "echo": ("any", _kind("echo", bool)),
    "label": ("any", _kind("label", str)),
}


def parse_target(target: str, registry: dict[str, Param]) -> tuple[Param | None, Action | None, tuple]:
    """``"l0.zoom"`` → (Param, None, ()); ``"snapshot.recall:3"`` → (None, the action, (3,)).

    Raises ValueError listing close matches for an unknown name, or naming a bad argument."""
    if not isinstance(target, str) or not target:
        raise ValueError(f"param must be a parameter name or an action, not {target!r}")
    base, sep, text = target.partition(":")
    action = ACTIONS.get(base)
    if action is not None:
        if not action.args:
            if sep:
                raise ValueError(f"{base} takes no argument (got {target!r})")
            return None, action, ()
        first = action.args[0]
        if not text:
            raise ValueError(f"{base} needs an argument: \"{base}:{first.name.upper()}\" ({first.doc})")
        try:
            value = text if first.kind is str else first.kind(text)
        except ValueError:
            raise ValueError(f"{target!r}: the {first.name} must be a "
                             f"{'whole number ≥ 0' if first.kind is int else 'number'}") from None
        try:
            return None, action, (first.convert(value, strict=True),)  # a preset name is checked here, at load
        except ValueError as exc:  # PresetError is a ValueError
            raise ValueError(f"{target!r}: {exc}") from None
    if target in registry:
        return registry[target], None, ()
    actions = [a.name + (":" if a.args else "") for a in ACTIONS.values()]
    raise ValueError(f"unknown parameter {target!r}{close_matches(target, list(registry) + actions)}")


def _missing_level_param(target: str) -> bool:
    """True for a level parameter this registry's model lacks (too deep, or the level has no
    such term), which a shared controller file may name: skipped with a warning, not an error."""
    m = re.fullmatch(r"l(\d+)\.(\w+)", target)
    return bool(m) and m.group(2) in {p.name for p in LEVEL_PARAMS}


def parse_entry(raw, index: int, registry: dict[str, Param], defaults: dict, device_name: str) -> MapEntry:
    """One ``[[map]]`` table as a MapEntry; ValueError naming the problem."""
    if not isinstance(raw, dict):
        raise ValueError("must be a table of keys ([[map]] with param = ..., type = ...)")
    for key in raw:
        if key not in ENTRY_KEYS:
            raise ValueError(f"unknown key {key!r}{close_matches(key, ENTRY_KEYS)}; allowed: {', '.join(ENTRY_KEYS)}")
    for key in ("param", "type"):
        if key not in raw:
            raise ValueError(f"missing key {key!r}")
    param, action, values = parse_target(raw["param"], registry)
    for key in raw:
        who = ENTRY_KEYS[key][0]
        if who == "param" and action is not None:
            raise ValueError(f"{key!r} has no meaning for the action {action.name!r}")
        if who == "action" and (action is None or key not in {a.name for a in action.args[1:]}):
            takers = [a.name for a in ACTIONS.values() if key in {arg.name for arg in a.args[1:]}]
            raise ValueError(f"{key!r} only applies to {' and '.join(takers)}"
                             + (f", not {action.name}" if action is not None else ""))
    checked = {key: ENTRY_KEYS[key][1](value) if ENTRY_KEYS[key][1] else value for key, value in raw.items()}
    typ = checked["type"]
    channel = channel_number(raw.get("channel", defaults.get("channel", "any")))
    if typ == "pitchbend":
        if "number" in raw:
            raise ValueError("pitchbend has no number (one bend per channel)")
        number = 0
    else:
        if "number" not in raw:
            raise ValueError(f"missing key 'number' ({typ} needs one)")
        number, (lo, hi) = raw["number"], NUMBER_RANGES[typ]
        if isinstance(number, bool) or not isinstance(number, int) or not lo <= number <= hi:
            extra = " (the MSB; its LSB is number + 32)" if typ == "cc14" else ""
            raise ValueError(f"number for {typ} must be an integer {lo}..{hi}{extra}, not {number!r}")

    # Mode: continuous for faders/knobs/encoders, button modes for notes and button-like CCs.
    if action is not None:
        mode, allowed, why = raw.get("mode", "trigger"), ("trigger",), "actions fire once per press"
    else:
        default = ("trigger" if "value" in raw else "toggle") if typ == "note" else "absolute"
        allowed = {"cc": CONTINUOUS_MODES + BUTTON_MODES, "note": BUTTON_MODES}.get(typ, ("absolute",) + BUTTON_MODES)
        mode, why = raw.get("mode", default), f"for type {typ}"
    if mode not in allowed:
        raise ValueError(f"mode {mode!r} is not allowed ({why}); use one of {', '.join(allowed)}"
                         f"{close_matches(str(mode), allowed)}")

    kw: dict = {key: checked[key] for key in ("led_on", "led_off", "echo", "label") if key in checked}
    if action is not None:
        more = {a.name: checked[a.name] for a in action.args[1:] if a.name in checked}
        kw["values"] = tuple(action.bind(values, more, strict=True).values())
    else:
        lo = _number("min", param.min, param.max)(checked.get("min", param.min))
        hi = _number("max", param.min, param.max)(checked.get("max", param.max))
        if not lo < hi:
            raise ValueError(f"min ({lo:g}) must be below max ({hi:g}); use invert = true to reverse a control")
        curve = checked.get("curve", "param")
        if curve == "exp" and lo <= 0:
            raise ValueError(f"curve 'exp' needs a positive range, but min is {lo:g}")
        if "step" in raw and mode not in RELATIVE_MODES and typ != "nrpn":
            raise ValueError("'step' only applies to relative encoders (and NRPN increment/decrement)")
        on = hi
        if "value" in raw:
            if mode not in BUTTON_MODES:
                raise ValueError("'value' is what a button sets; it needs mode trigger, toggle or momentary")
            on = param.parse(raw["value"])
            if not param.min <= on <= param.max:
                raise ValueError(f"value {raw['value']!r} is outside {param.name}'s range {param.min:g}..{param.max:g}")
            on = param.clamp(on)
        kw.update(lo=lo, hi=hi, curve=curve, invert=checked.get("invert", False), step=checked.get("step", 1.0),
                  takeover=checked.get("takeover", defaults.get("takeover", "soft")), on=on, off=lo)
    return MapEntry(index=index, target=raw["param"], type=typ, channel=channel, number=number, mode=mode,
                    source=f"midi:{device_name}#{index}", param=param, action=action, raw=dict(raw), **kw)


# --- whole files ------------------------------------------------------------------------------------

def parse_mapping(data: dict, registry: dict[str, Param], path: str = "<mapping>") -> Mapping:
    """Check an already-parsed mapping table (what ``tomllib`` returns). Raises MappingError."""
    def fail(msg: str):
        raise MappingError(f"{path}: {msg}")

    if not isinstance(data, dict):
        fail("expected a table")
    for key in data:
        if key not in ("device", "map"):
            fail(f"unknown top-level key {key!r}{close_matches(key, ('device', 'map'))}; expected [device] and [[map]]")
    dev = data.get("device")
    if not isinstance(dev, dict):
        fail("missing [device] table (with at least name = \"...\")")
    for key in dev:
        if key not in DEVICE_KEYS:
            fail(f"[device]: unknown key {key!r}{close_matches(key, DEVICE_KEYS)}; allowed: {', '.join(DEVICE_KEYS)}")
    name = dev.get("name")
    if not isinstance(name, str) or not name.strip():
        fail("[device]: missing key 'name' (a non-empty string)")
    defaults: dict = {}
    try:
        match = _strings(dev.get("match"), "match")
        output = _strings(dev.get("output"), "output")
        if "channel" in dev:
            channel_number(dev["channel"])
            defaults["channel"] = dev["channel"]
        if "takeover" in dev:
            defaults["takeover"] = _choice("takeover", TAKEOVERS)(dev["takeover"])
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
            entries.append(parse_entry(raw, i, registry, defaults, name))
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
    """Read and check a TOML mapping file. ``registry`` defaults to the default model's.

    Raises MappingError naming the file, the ``[[map]]`` entry (1-based index and param) and the
    problem: TOML syntax (with line and column), a missing key, an unknown parameter (with close
    matches), a bad type/mode/channel/number/range."""
    path = Path(path)
    registry = build_registry(DEFAULT_LEVELS) if registry is None else registry
    try:
        data = read_toml(path, "mapping file")  # a regular file only, bounded; one line for any problem
    except TomlFileError as exc:
        raise MappingError(str(exc)) from None
    return parse_mapping(data, registry, str(path))


def dump_mapping(device: Device, entries: Sequence[dict], header: str = "") -> str:
    """A mapping file's TOML text (``entries`` are raw ``[[map]]`` dicts, as in ``MapEntry.raw``),
    each entry's keys in the schema's order."""
    dev = {"name": device.name, **({"match": list(device.match)} if device.match else {}),
           **({"output": list(device.output)} if device.output else {})}
    maps = [{key: raw[key] for key in ENTRY_KEYS if key in raw} for raw in entries]
    comment = "".join(f"# {line}".rstrip() + "\n" for line in header.splitlines())
    return comment + ("\n" if comment else "") + tomli_w.dumps({"device": dev, "map": maps})


def bundled_mappings() -> dict[str, Path]:
    """The mapping files shipped with ffvj, by name (file stem): generic, nanokontrol2, ..."""
    folder = Path(str(resources.files("ffvj.mappings")))
    return {p.stem: p for p in sorted(folder.glob("*.toml"))}


def resolve_mapping(spec: str | Path, registry: dict[str, Param] | None = None) -> Mapping:
    """``--midi-mapping SPEC``: a path to a TOML file, or the name of a bundled mapping."""
    path = Path(spec)
    if path.suffix != ".toml" and not path.exists():
        bundled = bundled_mappings()
        if str(spec) not in bundled:
            raise MappingError(f"no mapping {str(spec)!r}: not a file, and not one of the bundled mappings "
                               f"({', '.join(bundled) or 'none'}){close_matches(str(spec), bundled)}")
        path = bundled[str(spec)]
    return load_mapping(path, registry)


def default_mappings(registry: dict[str, Param] | None = None) -> list[Mapping]:
    """Every bundled mapping: each controller's file auto-connects to its controller, and generic
    (no ``match``) serves the virtual port and any other input."""
    return [load_mapping(p, registry) for p in bundled_mappings().values()]
