"""Parameter presets (TOML files), feedback-state snapshots, and the render loop's action dispatch.

Presets are the performer's settings: every parameter target, saved as readable text::

    [meta]
    name = "tunnel"
    created = "2025-01-31T21:04:05+00:00"
    ffvj = "0.1.0"
    levels = 3

    [params]
    "input.mix" = 0.12
    "bound" = "tanh"          # enums by choice name
    "l1.period" = 2           # ints as integers, bools as true/false

``PresetBank.recall(name, seconds)`` morphs the store's targets there (smoothstep easing; enums, bools
and ints switch halfway), one step per ``update(dt)``; a parameter the performer touches during a
morph leaves the morph, so the morph never fights a fader.

Snapshots are the picture's memory: ``SnapshotBank`` clones every level's feedback state h^ℓ into a
slot and later jumps or crossfades back to it while the feedback keeps running.

``handle_action`` runs the discrete triggers the render loop drains from ``ActionQueue``.

Explicit calls (``load``, ``save``, ``SnapshotBank.load``) raise errors that name the file. The calls
a show makes (``recall``, ``handle_action``) log problems rate-limited and carry on.
"""

from __future__ import annotations

import datetime
import logging
import math
import os
import re
import tempfile
import threading
import tomllib
from collections.abc import Mapping
from importlib import resources
from pathlib import Path

import torch

from .params import Param, ParamStore, RateLimitedLog

log = logging.getLogger(__name__)

# Triggers, not settings: recalling a preset must not re-seed the picture.
NOT_IN_PRESETS = frozenset({"reset"})
PRESET_SUFFIX = ".toml"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9 _.+-]{0,63}")


class PresetError(ValueError):
    """A preset that cannot be saved or loaded; the message names the file and what is wrong."""


class SnapshotError(ValueError):
    """A snapshot bank file that cannot be saved or loaded; the message names the file."""


def default_presets_dir() -> Path:
    """``$XDG_CONFIG_HOME/ffvj/presets``, else ``~/.config/ffvj/presets``."""
    base = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(base) / "ffvj" / "presets"


def factory_presets_dir() -> Path | None:
    """The presets shipped with ffvj (the repository's ``presets/``, installed as the data package
    ``ffvj.factory_presets``), or None where this install has none."""
    try:
        return Path(str(resources.files("ffvj.factory_presets")))
    except ModuleNotFoundError:
        return None


def smoothstep(u: float) -> float:
    """3u² − 2u³ on [0, 1]: eases in and out, 0.5 at the middle."""
    u = min(max(u, 0.0), 1.0)
    return u * u * (3.0 - 2.0 * u)


def check_name(name: str) -> str:
    """A preset name is its file name: letters, digits, space, _ . + - (no paths). Raises PresetError."""
    if not isinstance(name, str) or not _NAME.fullmatch(name) or name.endswith(PRESET_SUFFIX):
        raise PresetError(f"bad preset name {name!r}: use up to 64 letters, digits, spaces or _ . + - "
                          f"(not starting with a symbol, without {PRESET_SUFFIX})")
    return name


# --- the TOML text, both ways ----------------------------------------------------------------------

def _toml_string(s: str) -> str:
    out = []
    for ch in s:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _toml_value(param: Param, value: float) -> str:
    if param.kind == "enum":
        return _toml_string(param.choices[int(value)])
    if param.kind == "bool":
        return "true" if value >= 0.5 else "false"
    if param.kind == "int":
        return str(int(value))
    return repr(float(value))  # shortest text that reads back as the same float; valid TOML


def format_preset(values: Mapping[str, float], registry: Mapping[str, Param], name: str,
                  created: str, version: str) -> str:
    """A preset's TOML text: ``[meta]``, then ``[params]`` in registry order (names quoted: they
    contain dots, which TOML would otherwise read as nested tables)."""
    levels = max((p.level for p in registry.values() if p.level is not None), default=0)
    lines = ["# ffvj preset: [params] holds parameter targets by name (enums by choice name).",
             "[meta]", f"name = {_toml_string(name)}", f"created = {_toml_string(created)}",
             f"ffvj = {_toml_string(version)}", f"levels = {levels}", "", "[params]"]
    for pname, param in registry.items():
        if pname in values and pname not in NOT_IN_PRESETS:
            lines.append(f"{_toml_string(pname)} = {_toml_value(param, values[pname])}")
    return "\n".join(lines) + "\n"


def read_preset(path: Path, registry: Mapping[str, Param]) -> tuple[dict[str, float], list[str]]:
    """Parse a preset file into ``{name: value in native units}`` for ``registry``, plus notes on what
    was ignored: names this registry lacks (a model with more levels, a newer ffvj), enum choices it
    lacks (an LFO target on such a level), triggers, and values clamped into range.

    Raises PresetError naming the file for anything malformed: unreadable, not TOML, no ``[params]``
    table, a value that is not a number, bool or (for an enum) a choice name, a non-finite number.
    """
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise PresetError(f"cannot read preset file {path}: {exc.strerror or exc}") from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise PresetError(f"preset file {path} is not valid TOML: {exc}") from exc
    table = data.get("params")
    if not isinstance(table, dict):
        raise PresetError(f"preset file {path} has no [params] table")
    if "meta" in data and not isinstance(data["meta"], dict):
        raise PresetError(f"preset file {path}: meta must be a table")
    values: dict[str, float] = {}
    unknown, bad_choice, clamped = [], [], []
    for name, raw in table.items():
        param = registry.get(name)
        if param is None or name in NOT_IN_PRESETS:
            unknown.append(name)
            continue
        if isinstance(raw, str):
            if param.kind != "enum":
                raise PresetError(f"preset file {path}: {name} = {raw!r} should be a number")
            if raw not in param.choices:
                bad_choice.append(f"{name}={raw!r}")
                continue
            values[name] = float(param.choices.index(raw))
            continue
        if not isinstance(raw, (bool, int, float)):
            raise PresetError(f"preset file {path}: {name} = {raw!r} is not a number, true/false or a choice name")
        value = float(raw)
        if not math.isfinite(value):
            raise PresetError(f"preset file {path}: {name} = {raw!r} is not finite")
        if param.clamp(value) != value and param.kind == "float":
            clamped.append(f"{name}={value:g}")
        values[name] = param.clamp(value)
    notes = []
    if unknown:
        notes.append(f"ignored {len(unknown)} parameter(s) unknown here: {', '.join(unknown)}")
    if bad_choice:
        notes.append(f"ignored choice(s) unknown here: {', '.join(bad_choice)}")
    if clamped:
        notes.append(f"clamped out-of-range value(s): {', '.join(clamped)}")
    return values, notes


def _write_atomically(path: Path, text: str) -> None:
    # Write beside the target, then rename: a crash or a full disk mid-save never leaves half a preset.
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# --- presets ---------------------------------------------------------------------------------------

class PresetBank:
    """Named presets of a ParamStore's targets in ``directory`` (default ``default_presets_dir()``),
    plus read-only ``factory`` presets (pass ``factory_presets_dir()``) that a user preset of the same
    name shadows.

    Threads: ``recall`` may come from any thread; ``update`` belongs to the render loop. Every write
    goes through ``store.set(..., source="preset")``.
    """

    def __init__(self, store: ParamStore, directory: str | Path | None = None, factory: str | Path | None = None):
        self.store = store
        self.directory = Path(directory).expanduser() if directory else default_presets_dir()
        self.factory = Path(factory) if factory else None
        self._lock = threading.Lock()
        self._morph: dict[str, tuple[float, float, Param]] = {}  # name -> (start, end, param)
        self._elapsed = 0.0
        self._duration = 0.0
        self._warn = RateLimitedLog(log)
        store.add_listener(self._on_set)

    # Files.

    def names(self) -> list[str]:
        """Every preset name available (user and factory), sorted."""
        found = set()
        for folder in (self.directory, self.factory):
            if folder is not None and folder.is_dir():
                found.update(p.stem for p in folder.glob(f"*{PRESET_SUFFIX}") if _NAME.fullmatch(p.stem))
        return sorted(found)

    def path(self, name: str) -> Path:
        """The file ``name`` loads from: the user's, else the factory one, else where the user's would be."""
        user = self.directory / f"{check_name(name)}{PRESET_SUFFIX}"
        if not user.exists() and self.factory is not None and (self.factory / user.name).exists():
            return self.factory / user.name
        return user

    def save(self, name: str) -> Path:
        """Write the store's current targets (not the smoothed values: the performer's intent) as
        preset ``name``, replacing one of that name. Returns the file. Raises PresetError or OSError."""
        from . import __version__  # late: the package's __init__ may import this module

        path = self.directory / f"{check_name(name)}{PRESET_SUFFIX}"
        created = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat()
        _write_atomically(path, format_preset(self.store.targets(), self.store.registry, name, created, __version__))
        log.info("saved preset %r to %s", name, path)
        return path

    def _read(self, name: str) -> tuple[dict[str, float], list[str]]:
        path = self.path(name)
        if not path.exists():
            raise PresetError(f"no preset {name!r} in {self.directory}"
                              + (f" or {self.factory}" if self.factory else "")
                              + f"; available: {', '.join(self.names()) or 'none'}")
        return read_preset(path, self.store.registry)

    def load(self, name: str) -> dict[str, float]:
        """Preset ``name`` as ``{parameter: native value}``, parameters this registry lacks left out
        (and logged). Raises PresetError naming the file when it is missing or malformed."""
        values, notes = self._read(name)
        for note in notes:
            log.warning("preset %s: %s", self.path(name), note)
        return values

    # The morph.

    def recall(self, name: str, seconds: float = 0.0) -> bool:
        """Morph the targets from where they are now to preset ``name`` over ``seconds`` (0: at once;
        the ``update`` calls do the rest). Parameters the preset lacks keep their value. For use during
        a show: a missing or bad preset is logged (rate-limited) and ignored; returns whether it started.
        """
        try:
            values, notes = self._read(name)
        except PresetError as exc:
            self._warn.warning(f"recall:{name}", "preset recall ignored: %s", exc)
            return False
        for note in notes:
            self._warn.warning(f"notes:{name}", "preset %r: %s", name, note)
        seconds = float(seconds) if math.isfinite(float(seconds)) else 0.0
        current = self.store.targets()
        with self._lock:
            self._morph = {n: (current[n], v, self.store.registry[n]) for n, v in values.items() if current[n] != v}
            self._elapsed = 0.0
            self._duration = max(seconds, 0.0)
            changing = len(self._morph)
        log.info("recalling preset %r over %gs (%d parameters change)", name, seconds, changing)
        if seconds <= 0:
            self.update(0.0)
        return True

    @property
    def morphing(self) -> bool:
        with self._lock:
            return bool(self._morph)

    def cancel(self) -> None:
        """Stop a morph where it is."""
        with self._lock:
            self._morph = {}

    def update(self, dt: float) -> None:
        """Advance the morph by ``dt`` seconds and set the targets it reaches. With u the elapsed
        fraction, a float goes start + (end − start)·smoothstep(u); an enum, bool or int jumps to its
        end value once u ≥ ½; at u = 1 every value is exactly the preset's."""
        writes = []
        with self._lock:
            if not self._morph:
                return
            self._elapsed += max(float(dt), 0.0)
            u = 1.0 if self._duration <= 0 else min(self._elapsed / self._duration, 1.0)
            s = smoothstep(u)
            for name, (start, end, param) in list(self._morph.items()):
                if param.kind == "float" and u < 1.0:
                    # Rounding must not step outside [start, end] (the store would count a clamp).
                    writes.append((name, min(max(start + (end - start) * s, min(start, end)), max(start, end))))
                elif param.kind == "float" or u >= 0.5:
                    writes.append((name, end))
                    del self._morph[name]
        # Outside the lock: store.set calls our listener, which takes it.
        for name, value in writes:
            self.store.set(name, value, source="preset")

    def _on_set(self, name: str, value: float, source: str) -> None:
        # The performer (or anything but us) touched a parameter: it leaves the morph, which then never
        # writes it again, so a fader moved during a long morph stays where the performer put it.
        if source != "preset":
            with self._lock:
                self._morph.pop(name, None)


# --- state snapshots -------------------------------------------------------------------------------

class SnapshotBank:
    """``slots`` memories of the whole feedback state, numbered 0..slots-1. Render thread only.

    Crossfade scheme (``recall`` with seconds > 0): the feedback keeps running; each frame, *after*
    ``engine.step``, ``update(engine, dt)`` replaces every level's state by

        h^ℓ ← lerp(h^ℓ, s^ℓ, w),   w = smoothstep(t / seconds)

    where s^ℓ is the stored state and t the time since the recall. Each blend is in feature space, per
    level (as autoencoder embeddings interpolate), and acts on a state the loop has already evolved from
    the previous blend, so the pull compounds; at t = seconds (w = 1) the states are exactly the
    snapshot and the feedback runs on from there.
    """

    def __init__(self, slots: int = 8):
        if slots < 1:
            raise ValueError(f"a snapshot bank needs at least one slot, got {slots}")
        self.slots = slots
        self._states: list[list[torch.Tensor] | None] = [None] * slots
        self._fade: list[torch.Tensor] | None = None
        self._elapsed = 0.0
        self._duration = 0.0
        self._warn = RateLimitedLog(log)

    def occupied(self) -> list[int]:
        """The slots holding a snapshot (for LED echo, UI)."""
        return [i for i, s in enumerate(self._states) if s is not None]

    def get(self, slot: int) -> list[torch.Tensor] | None:
        """The stored states of ``slot`` (do not modify them), or None when it is empty."""
        return self._states[slot]

    @property
    def fading(self) -> bool:
        return self._fade is not None

    def _slot_ok(self, slot, what: str) -> bool:
        if isinstance(slot, bool) or not isinstance(slot, int) or not 0 <= slot < self.slots:
            self._warn.warning(f"slot:{what}", "snapshot %s ignored: slot %r is not in 0..%d", what, slot,
                               self.slots - 1)
            return False
        return True

    @torch.no_grad()
    def store(self, engine, slot: int) -> bool:
        """Clone every level's state into ``slot`` (on the engine's device), replacing what was there."""
        if not self._slot_ok(slot, "store"):
            return False
        self._states[slot] = [s.detach().clone() for s in engine.states]
        log.info("stored snapshot %d", slot)
        return True

    @staticmethod
    def _fits(states: list[torch.Tensor], engine) -> bool:
        return len(states) == len(engine.states) and all(a.shape == b.shape for a, b in zip(states, engine.states))

    @torch.no_grad()
    def recall(self, engine, slot: int, seconds: float = 0.0) -> bool:
        """Jump (seconds ≤ 0) or start a crossfade to ``slot``. An empty slot, a bad slot number or a
        snapshot of another size (the engine was resized, another model) is logged and ignored."""
        if not self._slot_ok(slot, "recall"):
            return False
        states = self._states[slot]
        if states is None:
            self._warn.warning(f"empty:{slot}", "snapshot recall ignored: slot %d is empty", slot)
            return False
        if not self._fits(states, engine):
            self._warn.warning(f"size:{slot}", "snapshot %d refused: its states %s do not fit the engine's %s",
                               slot, [tuple(s.shape) for s in states], [tuple(s.shape) for s in engine.states])
            return False
        target = [s.to(engine.device, live.dtype) for s, live in zip(states, engine.states)]
        if not (math.isfinite(seconds) and seconds > 0):
            self._fade = None
            engine.set_states([s.clone() for s in target])  # a copy: the loop must never alias the slot
            return True
        self._fade, self._elapsed, self._duration = target, 0.0, float(seconds)
        return True

    def cancel(self) -> None:
        """Stop a crossfade where it is (the panic button does)."""
        self._fade = None

    @torch.no_grad()
    def update(self, engine, dt: float) -> None:
        """One frame of the crossfade; call after ``engine.step``. Does nothing when not fading."""
        if self._fade is None:
            return
        if not self._fits(self._fade, engine):  # the engine changed under us: drop the fade
            self._warn.warning("fade-size", "snapshot crossfade dropped: the engine's states changed size")
            self._fade = None
            return
        self._elapsed += max(float(dt), 0.0)
        u = min(self._elapsed / self._duration, 1.0)
        if u >= 1.0:
            engine.set_states([s.clone() for s in self._fade])
            self._fade = None
            return
        w = smoothstep(u)
        engine.set_states([torch.lerp(live, snap, w) for live, snap in zip(engine.states, self._fade)])

    # On disk (safetensors: tensors plus string metadata, nothing executable).

    def save(self, path: str | Path) -> Path:
        """Write every occupied slot to a safetensors file as ``slot<i>.level<ℓ>``."""
        from safetensors.torch import save_file

        from . import __version__

        path = Path(path)
        tensors = {f"slot{i}.level{lvl}": s.detach().to("cpu").contiguous()
                   for i in self.occupied() for lvl, s in enumerate(self._states[i])}
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file(tensors, str(path), metadata={"format": "ffvj-snapshots", "ffvj": __version__,
                                                "slots": str(self.slots)})
        return path

    def load(self, path: str | Path, device: str | torch.device = "cpu") -> list[int]:
        """Fill slots from a file written by ``save`` (replacing those slots); returns the slots filled.
        Raises SnapshotError naming the file when it is missing or not such a file. Size is checked
        at recall, as for snapshots taken live."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        path = Path(path)
        try:
            tensors = load_file(str(path), device=str(device))
        except (OSError, SafetensorError) as exc:
            raise SnapshotError(f"cannot read snapshot file {path}: {exc}") from exc
        found: dict[int, dict[int, torch.Tensor]] = {}
        for key, tensor in tensors.items():
            m = re.fullmatch(r"slot(\d+)\.level(\d+)", key)
            if m is None:
                raise SnapshotError(f"snapshot file {path}: unexpected tensor {key!r}")
            slot, lvl = int(m[1]), int(m[2])
            if slot >= self.slots:
                raise SnapshotError(f"snapshot file {path}: slot {slot} does not fit a bank of {self.slots}")
            if tensor.dim() != 4 or tensor.shape[0] != 1:
                raise SnapshotError(f"snapshot file {path}: {key} has shape {tuple(tensor.shape)}, not (1, C, H, W)")
            found.setdefault(slot, {})[lvl] = tensor.float()
        for slot, levels in found.items():
            if sorted(levels) != list(range(len(levels))):
                raise SnapshotError(f"snapshot file {path}: slot {slot} has levels {sorted(levels)}")
        for slot, levels in found.items():
            self._states[slot] = [levels[lvl] for lvl in range(len(levels))]
        return sorted(found)


# --- actions ---------------------------------------------------------------------------------------

ACTIONS = ("reset", "preset.recall", "preset.save", "snapshot.store", "snapshot.recall")
_warn = RateLimitedLog(log)


def _arg(args: Mapping, key: str, kind, default=None):
    """An action argument converted to ``kind``; raises KeyError/TypeError/ValueError when unusable."""
    value = args[key] if default is None else args.get(key, default)
    if kind is int:
        f = float(value)
        if not f.is_integer():
            raise ValueError(f"{key}={value!r} is not a whole number")
        return int(f)
    if kind is float:
        f = float(value)
        if not math.isfinite(f):
            raise ValueError(f"{key}={value!r} is not finite")
        return f
    if not isinstance(value, str):
        raise TypeError(f"{key}={value!r} is not a string")
    return value


def handle_action(name: str, args: Mapping, engine, presets: PresetBank | None, snapshots: SnapshotBank | None,
                  source: torch.Tensor | None = None) -> bool:
    """Run one action drained from ``ActionQueue`` (render thread, before ``engine.step``):

    ``reset`` (re-seed from ``source`` and stop a crossfade), ``preset.recall`` (name=, seconds=0),
    ``preset.save`` (name=), ``snapshot.store`` (slot=), ``snapshot.recall`` (slot=, seconds=0).

    Never raises for a bad action: unknown names, bad or missing arguments, missing presets and
    failed saves are logged (rate-limited) and ignored. Returns whether the action took effect.
    """
    try:
        if name == "reset":
            if snapshots is not None:
                snapshots.cancel()
            engine.reset(source)
            return True
        if (name.startswith("preset.") and presets is None) or (name.startswith("snapshot.") and snapshots is None):
            _warn.warning(f"off:{name}", "action %s ignored: no %s bank in this show", name, name.split(".")[0])
            return False
        if name == "preset.recall":
            return presets.recall(_arg(args, "name", str), _arg(args, "seconds", float, 0.0))
        if name == "preset.save":
            presets.save(_arg(args, "name", str))
            return True
        if name == "snapshot.store":
            return snapshots.store(engine, _arg(args, "slot", int))
        if name == "snapshot.recall":
            return snapshots.recall(engine, _arg(args, "slot", int), _arg(args, "seconds", float, 0.0))
    except (KeyError, TypeError, ValueError, OSError) as exc:  # PresetError is a ValueError
        _warn.warning(f"bad:{name}", "action %s%r ignored: %s", name, dict(args), exc)
        return False
    _warn.warning(f"unknown:{name}", "unknown action %r ignored; known: %s", name, ", ".join(ACTIONS))
    return False
