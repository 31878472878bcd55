"""Parameter presets: every parameter target, saved as readable TOML::

    [meta]
    name = "tunnel"
    created = "2025-01-31T21:04:05+00:00"
    ffvj = "0.1.0"
    levels = 3

    [params]
    "input.mix" = 0.12
    bound = "tanh"            # enums by choice name
    "l1.period" = 2           # ints as integers, bools as true/false

``PresetBank.recall(name, seconds)`` morphs the store's targets there (smoothstep easing; enums, bools
and ints switch halfway), one step per ``update(dt)``; a parameter the performer touches during a
morph leaves the morph, so the morph never fights a fader.

Explicit calls (``load``, ``save``) raise PresetError naming the file. ``recall``, what a show calls,
logs problems rate-limited and carries on.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import logging
import math
import os
import re
import threading
from collections.abc import Mapping
from importlib import resources
from pathlib import Path

import tomli_w

from ..files import write_atomically
from ..phi import Param
from ..reporting import RateLimitedLog
from .params import ParamStore
from .tomlfile import TomlFileError, read_toml

log = logging.getLogger(__name__)

PRESET_SUFFIX = ".toml"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9 _.+-]{0,63}")


class PresetError(ValueError):
    """A preset that cannot be saved or loaded; the message names the file and what is wrong."""


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


# Names Windows reserves for devices, with any extension: a preset "con" could never be a file there.
WINDOWS_RESERVED = frozenset({"con", "prn", "aux", "nul", *(f"com{i}" for i in range(1, 10)),
                              *(f"lpt{i}" for i in range(1, 10))})
MAX_PRESETS = 1000  # saved over the network by any client: a cap, so a flood cannot fill the disk


def check_name(name: str) -> str:
    """A preset name is its file name: letters, digits, space, _ . + - (no paths, none of the names
    Windows reserves such as ``con``). Raises PresetError."""
    if not isinstance(name, str) or not _NAME.fullmatch(name) or name.endswith(PRESET_SUFFIX):
        raise PresetError(f"bad preset name {name!r}: use up to 64 letters, digits, spaces or _ . + - "
                          f"(not starting with a symbol, without {PRESET_SUFFIX})")
    if name.split(".")[0].strip().lower() in WINDOWS_RESERVED:
        raise PresetError(f"bad preset name {name!r}: Windows reserves it for a device; choose another")
    return name


# --- the TOML text, both ways ----------------------------------------------------------------------

def _toml_value(param: Param, value: float):
    """A parameter's value as TOML writes it best: enums by choice name, bools, ints, floats (as φ types it)."""
    return float(value) if param.kind == "float" else param.typed(value)


def format_preset(values: Mapping[str, float], registry: Mapping[str, Param], name: str,
                  created: str, version: str, meta: Mapping | None = None) -> str:
    """A preset's TOML text: ``[meta]`` (plus ``meta``'s entries: ``base``, ``model``, notes), then
    ``[params]`` in registry order (tomli-w quotes the names: they contain dots, which TOML would
    otherwise read as nested tables)."""
    levels = max((p.level for p in registry.values() if p.level is not None), default=0)
    doc = {"meta": {"name": name, "created": created, "ffvj": version, "levels": levels, **(meta or {})},
           "params": {n: _toml_value(p, values[n]) for n, p in registry.items() if n in values}}
    return "# ffvj preset: [params] holds parameter targets by name (enums by choice name).\n" + tomli_w.dumps(doc)


OUTPUT_PREFIX = "output."  # parameters of the output, not of the look: a base preset leaves them alone


def read_preset(path: Path, registry: Mapping[str, Param], meta: dict | None = None
                ) -> tuple[dict[str, float], list[str]]:
    """Parse a preset file into ``{name: value in native units}`` for ``registry``, plus notes on what
    was ignored: names this registry lacks (a model with more levels, a newer ffvj), enum choices it
    lacks (an LFO target on such a level), and values clamped into range.

    With ``base = "default"`` in ``[meta]`` (as every factory preset has) the preset is a whole look: every
    parameter it leaves out is given its default, except the output's own (``output.*``, such as the
    flash limiter). Without it, what the preset leaves out keeps its value when it is recalled.
    ``model = "NAME"`` in ``[meta]`` names the bundled model the look is for: recalling it switches the
    show to that model (``models``). ``meta``, when given, receives the file's ``[meta]`` table.

    Raises PresetError naming the file for anything malformed: unreadable, not TOML, no ``[params]``
    table, a value that is not a number, bool or (for an enum) a choice name, a non-finite number, a
    ``base`` other than "default".
    """
    path = Path(path)
    try:
        data = read_toml(path, "preset file")  # a regular file only: a FIFO must not hang the file worker
    except TomlFileError as exc:
        raise PresetError(str(exc)) from None
    table = data.get("params")
    if not isinstance(table, dict):
        raise PresetError(f"preset file {path} has no [params] table")
    found = data.get("meta", {})
    if not isinstance(found, dict):
        raise PresetError(f"preset file {path}: meta must be a table")
    if meta is not None:
        meta.update(found)
    meta = found
    model = meta.get("model")
    if model is not None and (not isinstance(model, str) or not model):
        raise PresetError(f"preset file {path}: meta.model = {model!r} should be a bundled model's name")
    base = meta.get("base")
    if base not in (None, "default"):
        raise PresetError(f"preset file {path}: meta.base = {base!r}: the one base is \"default\" (what the "
                          f"preset leaves out goes to its default); leave base out to keep those values as they are")
    values: dict[str, float] = {}
    unknown, bad_choice, clamped = [], [], []
    for name, raw in table.items():
        param = registry.get(name)
        if param is None:
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
            raise PresetError(f"preset file {path}: {name} = {str(raw)[:60]} is not a number, true/false or a "
                              "choice name")
        try:
            value = float(raw)
        except OverflowError:  # TOML integers have no limit; a float does
            raise PresetError(f"preset file {path}: {name} = {str(raw)[:20]}… is far outside "
                              f"{param.min:g}..{param.max:g}") from None
        if not math.isfinite(value):
            raise PresetError(f"preset file {path}: {name} = {raw!r} is not finite")
        if param.clamp(value) != value and param.kind == "float":
            clamped.append(f"{name}={value:g}")
        values[name] = param.clamp(value)
    if base == "default":  # a complete look: recalled after another, it leaves nothing of that one behind
        for name, param in registry.items():
            if not name.startswith(OUTPUT_PREFIX):  # how the output is kept safe is not part of a look
                values.setdefault(name, param.default)
    notes = []
    if unknown:
        notes.append(f"ignored {len(unknown)} parameter(s) unknown here: {', '.join(unknown)}")
    if bad_choice:
        notes.append(f"ignored choice(s) unknown here: {', '.join(bad_choice)}")
    if clamped:
        notes.append(f"clamped out-of-range value(s): {', '.join(clamped)}")
    return values, notes


def _ffvj_version() -> str:
    """The installed ffvj's version (pyproject.toml's), written into every preset."""
    try:
        return importlib.metadata.version("ffvj")
    except importlib.metadata.PackageNotFoundError:  # a source tree that was never installed
        return "0+unknown"


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
        self._ready: dict[str, tuple] = {}  # a preset read ahead of its quantised recall
        self._morph: dict[str, tuple[float, float, Param]] = {}  # name -> (start, end, param)
        self._elapsed = 0.0
        self._duration = 0.0
        self._warn = RateLimitedLog(log)
        self.last_model: str | None = None  # ``[meta] model`` of the preset read last
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
        path = self.directory / f"{check_name(name)}{PRESET_SUFFIX}"
        if not path.exists() and self.directory.is_dir() and \
                sum(1 for _ in self.directory.glob(f"*{PRESET_SUFFIX}")) >= MAX_PRESETS:
            raise PresetError(f"{MAX_PRESETS} presets in {self.directory} already: not saving {name!r} "
                              "(replace one, or tidy the folder)")
        created = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat()
        write_atomically(path, format_preset(self.store.targets(), self.store.registry, name, created, _ffvj_version()))
        log.info("saved preset %r to %s", name, path)
        return path

    def prefetch(self, name: str) -> bool:
        """Read preset ``name`` now (on a file worker), so that a recall later, on the bar, needs no disk on
        the render loop (``ready``). A bad preset is logged, rate-limited; returns whether it was read."""
        try:
            entry = self._read_file(name)
        except PresetError as exc:
            self._warn.warning(f"recall:{name}", "preset recall ignored: %s", exc)
            return False
        with self._lock:
            self._ready = {name: entry}  # one change waits at a time
        return True

    def ready(self, name: str) -> bool:
        with self._lock:
            return name in self._ready

    def _read(self, name: str) -> tuple[dict[str, float], list[str]]:
        with self._lock:
            entry = self._ready.pop(name, None)
        values, notes, self.last_model = entry if entry is not None else self._read_file(name)
        return values, notes

    def _read_file(self, name: str) -> tuple[dict[str, float], list[str], str | None]:
        path = self.path(name)
        if not path.exists():
            raise PresetError(f"no preset {name!r} in {self.directory}"
                              + (f" or {self.factory}" if self.factory else "")
                              + f"; available: {', '.join(self.names()) or 'none'}")
        meta: dict = {}
        values, notes = read_preset(path, self.store.registry, meta)
        return values, notes, meta.get("model")  # (the model the preset is for: None, any)

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
