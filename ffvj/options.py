"""Command-line options declared once, on the config dataclass field they fill.

A config (``RunConfig``, ``LookConfig``, ...) declares each option as its field's metadata::

    @dataclass
    class LookConfig:
        seconds: float = option(10.0, "each run's length")
        sheets: str = option("png", "contact sheet format", choices=("png", "jpg"))
        levels: bool = option(True, "contact sheets with the feature levels' views")   # --no-levels

        def __post_init__(self):
            check_choices(self)          # a mode that is not one of its choices fails here, in one line

and the command line is made from it: ``add_options(parser, LookConfig)`` adds ``--seconds``, ``--sheets``
and ``--no-levels`` (flag, help with the default, type, choices: one declaration), and
``from_args(LookConfig, args)`` makes the config of what was parsed. A bool field that is on by default
becomes ``--no-NAME`` (its help says what turning it off does); ``repeat=True`` makes a repeatable option whose values are a tuple; ``joins``
makes one flag fill several fields (``--size WxH`` fills ``width`` and ``height``). Fields without an
``option`` (set by the library, not the command line) are left alone.

This module imports nothing of ffvj: configs on every floor use it.
"""

from __future__ import annotations

import argparse
import enum
from collections.abc import Callable
from dataclasses import MISSING, Field, dataclass, field, fields

_OPTION = "option"


@dataclass(frozen=True)
class Option:
    help: str
    flag: str | None = None  # default: --field-name (with the prefix add_options is given)
    metavar: str | None = None
    parse: Callable | None = None  # the text to a value (argparse's type); default: the default's type
    choices: tuple | None = None  # checked on construction too (``check_choices``)
    repeat: bool = False  # repeatable: every value, as a tuple (or what ``collect`` makes of them)
    collect: Callable | None = None  # e.g. dict, for KEY=VALUE pairs
    joins: tuple[str, ...] = ()  # the fields one flag fills, from a tuple ``parse`` returns
    show_default: bool = True  # "(default: X)" after the help
    # The flag's own default is None, so the caller can tell a value asked for from the field's default
    # (a busy default port is swapped for a free one; one asked for is an error): from_args gives None.
    asked: bool = False


def option(default=MISSING, help: str = "", *, default_factory=MISSING, **kw) -> Field:
    """A config field that is also a command-line option (see the module docstring)."""
    spec = Option(help, **kw)
    if isinstance(default, enum.Enum) and spec.choices is None:
        spec = Option(help, **{**kw, "choices": tuple(type(default))})
    return field(default=default, default_factory=default_factory, metadata={_OPTION: spec})


def _default(f: Field):
    return f.default_factory() if f.default_factory is not MISSING else f.default


def _shown(value) -> str:
    if isinstance(value, tuple):
        return ",".join(map(_shown, value))
    if isinstance(value, enum.Enum):
        return str(value.value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _parser(f: Field, default):
    """The type of a field's values: its default's, or (a default of None) its annotation's (``float | None``)."""
    if isinstance(default, enum.Enum) or isinstance(default, bool):
        return None
    if isinstance(default, (int, float)):
        return type(default)
    base = str(f.type).split("|")[0].strip()
    return {"int": int, "float": float}.get(base)


def add_options(parser, cls, prefix: str = "", exclude: tuple[str, ...] = ()) -> None:
    """One argparse option per ``option`` field of ``cls`` (``prefix``: "osc" makes ``--osc-port``)."""
    specs = {f.name: f for f in fields(cls)}
    for f in fields(cls):
        spec: Option | None = f.metadata.get(_OPTION)
        if spec is None or f.name in exclude:
            continue
        name = f"{prefix}_{f.name}" if prefix else f.name
        flag = spec.flag or "--" + name.replace("_", "-")
        default = tuple(_default(specs[n]) for n in spec.joins) if spec.joins else _default(f)
        kw = {"dest": name, "help": spec.help}
        if spec.metavar or spec.joins:
            kw["metavar"] = spec.metavar or "x".join(n[0].upper() for n in spec.joins)  # --size WxH
        if isinstance(default, bool) and not spec.parse:
            if default:  # on unless turned off
                flag = spec.flag or "--no-" + name.replace("_", "-")
            parser.add_argument(flag, action="store_false" if default else "store_true", **kw)
            continue
        if spec.repeat or spec.asked:
            kw.update(action="append" if spec.repeat else "store", default=None)
        else:
            kw["default"] = default
        parse = spec.parse or _parser(f, default)
        if spec.choices is not None:
            kw["choices"] = [c.value if isinstance(c, enum.Enum) else c for c in spec.choices]
        if parse is not None:
            kw["type"] = parse
        if spec.show_default and default not in (None, (), "") and not spec.repeat and "(default" not in spec.help:
            shown = "x".join(map(_shown, default)) if spec.joins else _shown(default)  # 640x360
            kw["help"] = f"{spec.help} (default: {shown})"
        parser.add_argument(flag, **kw)


def from_args(cls, args: argparse.Namespace, prefix: str = "", **given):
    """``cls`` made of the options ``add_options`` added, as parsed, and ``given`` on top."""
    kwargs = {}
    for f in fields(cls):
        spec: Option | None = f.metadata.get(_OPTION)
        name = f"{prefix}_{f.name}" if prefix else f.name
        if spec is None or f.name in given or not hasattr(args, name):
            continue
        value = getattr(args, name)
        if spec.joins:
            kwargs.update(zip(spec.joins, value))
        elif spec.repeat:
            kwargs[f.name] = (spec.collect or tuple)(value) if value else _default(f)
        elif spec.asked and value is None:
            kwargs[f.name] = _default(f)
        else:
            kwargs[f.name] = value
    return cls(**kwargs, **given)


def check_choices(config) -> None:
    """Every field of ``config`` that has choices holds one of them (an enum field is made one:
    ``pace="realtime"`` becomes ``Pace.REALTIME``); otherwise a ValueError naming the field and its
    choices. For ``__post_init__``: a mode is checked when the config is made, not when it is used."""
    for f in fields(config):
        spec: Option | None = f.metadata.get(_OPTION)
        if spec is None or spec.choices is None:
            continue
        value = getattr(config, f.name)
        default = _default(f)
        if isinstance(default, enum.Enum):
            try:
                object.__setattr__(config, f.name, type(default)(value))
            except ValueError:
                raise ValueError(f"{f.name} must be one of {', '.join(str(c.value) for c in type(default))}, "
                                 f"not {value!r}") from None
        elif value not in spec.choices and value is not None:
            raise ValueError(f"{f.name} must be one of {', '.join(map(str, spec.choices))}, not {value!r}")


def model_option(default_is: str = "the default model") -> Field:
    """``--model``: one declaration for every command that loads a model."""
    return option(None, f"bundled model name ('ffvj model list') or checkpoint path (default: {default_is})",
                  metavar="NAME|PATH", show_default=False)


def device_option(default: str = "auto") -> Field:
    """``--device``: one declaration for every command that renders or trains."""
    return option(default, "auto (cuda, then mps, then cpu), cpu, cuda[:N] or mps")


def settings_option(help: str) -> Field:
    """``--set NAME=VALUE``, repeatable, as a dict (the parameters are checked by what uses them)."""
    return option(help=help + "; repeatable (see 'ffvj params')", default_factory=dict, flag="--set",
                  metavar="NAME=VALUE", parse=key_value, repeat=True, collect=dict)


@dataclass(frozen=True)
class ModelChoice:
    """The ``--model`` of the commands that only read a model (params, touchosc, learn, model eval/show/views)."""

    model: str | None = model_option()


@dataclass(frozen=True)
class DeviceChoice:
    """The ``--device`` of the commands that compute on one without a config of their own (model eval)."""

    device: str = device_option()


# -- the values options take, as argparse types (a bad one is a usage error that says what was expected) --

def size(text: str) -> tuple[int, int]:
    """``WIDTHxHEIGHT``, each 16..8192."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must be WIDTHxHEIGHT, like 640x360, not {text!r}") from None
    if not (16 <= w <= 8192 and 16 <= h <= 8192):
        raise argparse.ArgumentTypeError(f"size {w}x{h} out of range (16..8192 each way)")
    return w, h


def port(text: str) -> int:
    try:
        number = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a port is a number, not {text!r}") from None
    if not 0 <= number <= 65535:
        raise argparse.ArgumentTypeError(f"port {number} is not in 0..65535")
    return number


def positive_int(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, not {text!r}") from None
    if n <= 0:
        raise argparse.ArgumentTypeError(f"expected a number above 0, not {n}")
    return n


def loose_value(text: str):
    """A value typed by its text: int, float, the bool words (true/yes/on, false/no/off), else the string."""
    lowered = text.lower()
    if lowered in ("true", "yes", "on"):
        return True
    if lowered in ("false", "no", "off"):
        return False
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def key_value(text: str) -> tuple[str, object]:
    """``KEY=VALUE``, the value typed by its text (``loose_value``); the config checks it further."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{text!r}: expected KEY=VALUE")
    return key, loose_value(value)
