"""What the page shows: every parameter and action, described for the page's JavaScript.

Nothing is listed by hand: the groups come from the registry (picture-wide parameters by their prefix,
one group per level, one per LFO slot: the TouchOSC layout's pages) and the buttons from the actions
table, with a menu for an argument whose values are known (a preset's or a bundled model's name, a
snapshot slot).
"""

from __future__ import annotations

from ..control.actions import ACTIONS, Action
from ..control.model_switch import bundled_names, check_model_name
from ..control.presets import check_name
from ..phi import Param


def _param(p: Param) -> dict:
    label = p.name.split(".", 1)[1] if p.level is not None or p.name.startswith(("lfo", "audio")) else p.name
    d = {"name": p.name, "label": label, "kind": p.kind, "min": p.min, "max": p.max, "default": p.default,
         "unit": p.unit, "curve": p.curve, "doc": p.doc, "address": p.address}
    if p.choices:
        d["choices"] = list(p.choices)
    return d


def groups(registry: dict[str, Param]) -> list[dict]:
    """``[{"id", "title", "sections": [{"title", "params": [...]}, ...]}, ...]``: the picture first, then
    each level, then the LFOs, then the music (the audio slots, the music's triggers) and the tempo clock,
    in registry order within each."""
    picture: dict[str, list[Param]] = {}
    lfos: dict[str, list[Param]] = {}
    music: dict[str, list[Param]] = {}
    levels: dict[int, list[Param]] = {}
    for p in registry.values():
        prefix = p.name.split(".")[0]
        if p.level is not None:
            levels.setdefault(p.level, []).append(p)
        elif prefix.startswith("lfo"):
            lfos.setdefault(prefix, []).append(p)
        elif prefix.startswith("audio") or prefix == "tempo":
            music.setdefault(prefix, []).append(p)
        else:
            picture.setdefault(prefix, []).append(p)
    out = [{"id": "picture", "title": "picture", "sections": [
        {"title": prefix, "params": [_param(p) for p in ps]} for prefix, ps in picture.items()]}]
    for level, ps in sorted(levels.items()):
        title = f"level {level}" + (" (the picture)" if level == 0 else "")
        out.append({"id": f"l{level}", "title": title, "sections": [{"title": f"l{level}",
                                                                      "params": [_param(p) for p in ps]}]})
    if lfos:
        out.append({"id": "lfos", "title": "LFOs", "sections": [
            {"title": prefix, "params": [_param(p) for p in ps]} for prefix, ps in lfos.items()]})
    if music:
        out.append({"id": "music", "title": "music · tempo", "sections": [
            {"title": prefix, "params": [_param(p) for p in ps]} for prefix, ps in music.items()]})
    return out


def _arg_choices(action: Action, controls) -> list[list]:
    """For each argument, the values a menu offers ([] for a free field)."""
    out = []
    for arg in action.args:
        if arg.check is check_model_name:  # the running model first
            current = controls.models.current if controls.models is not None else None
            out.append(sorted(bundled_names(), key=lambda name: name != current))
        elif arg.check is check_name:
            out.append(controls.presets.names() if controls.presets is not None else [])
        elif arg.kind is int and arg.min is not None and arg.max is not None and arg.max - arg.min <= 64:
            out.append(list(range(int(arg.min), int(arg.max) + 1)))
        else:
            out.append([])
    return out


def actions(controls) -> list[dict]:
    """Every action: its table entry, a caption, and the menus for its arguments."""
    return [{**a.describe(), "title": a.title, "button": a.button, "choices": _arg_choices(a, controls),
             **({"value": a.value(controls)} if a.value is not None else {})}  # the tempo, for its field
            for a in ACTIONS.values()]
