"""A TouchOSC layout generated from the parameter registry, and a check that one still fits it.

Contract
--------
``generate_layout(registry, path)`` writes a ``.tosc`` (zlib-compressed ``lexml`` XML) with
py2tosc (``pip install 'ffvj[touchosc]'``): a pager with a ``show`` page generated from the actions
table (a big button per argument-less button action: reset, tap, learn; a row of buttons per action
that takes a slot: snapshot store and recall 0..7; actions that need a name or a number, such as
preset recall or bpm, are left to other surfaces), a ``global`` page, one page per level ``l0``,
``l1``, ... and pages for the other picture-wide groups (``lfo1+lfo2``, ...); on every page two
columns of rows, a caption (name, unit) beside

- a fader for float and int parameters, sending 0..1 to ``param.address + "/norm"`` (the server
  applies the parameter's curve, so an exp zoom or a centred rotation feels right under the finger),
  drawn from the centre for centred (``sym``) parameters and starting at the default;
- a radio for enums, its segments labelled with the choices, sending the choice index (int) to
  ``param.address``; an enum of more than 16 choices (an LFO's target) gets a stepped fader sending
  the index instead;
- a toggle button for bools, sending 0/1 to ``param.address``;
- momentary buttons for triggers, sending on press only.

Every control also receives on its address, so with feedback (``--osc-feedback TABLET:PORT`` or
``/ffvj/feedback/subscribe``) the layout follows changes from MIDI, presets and other surfaces.
Control ids are derived from the addresses, so regenerating an unchanged registry gives the same
file. ``mappings/ffvj.tosc`` is the layout for the default model (3 levels):
``ffvj touchosc mappings/ffvj.tosc``.

``validate_layout(path, registry=None)`` needs only the standard library: it decompresses and
parses the file and checks that every OSC address a control uses is one the server answers (a
parameter, its ``/norm`` twin, an action or one of the server's commands) and that ``/norm`` controls send a 0..1 value. It
returns ``{address: [control names]}`` and raises ``LayoutError`` listing every problem. Where
py2tosc is installed its own structural checks run too.
"""

from __future__ import annotations

import math
import uuid
import zlib
from pathlib import Path
from xml.etree import ElementTree

from ..phi import DEFAULT_LEVELS, Param
from .actions import ACTIONS, Action
from .osc import NORM_SUFFIX, OSC_COMMANDS
from .params import build_registry

SIZE = (1024, 768)  # a landscape tablet; TouchOSC scales the canvas to the screen
TABBAR = 40
ROWS = 10  # parameter rows per column; two columns per page
MAX_RADIO = 16  # enums with more choices get a stepped fader (an LFO's target among every parameter)
_IDS = uuid.UUID("6f1c2d1e-5b7a-4c4e-9a51-0f0f5e0c7a11")  # namespace for deterministic control ids

PAGE_COLORS = {"show": (0.55, 0.15, 0.15, 1.0), "global": (0.16, 0.33, 0.45, 1.0)}
BUTTON_COLORS = {"reset": PAGE_COLORS["show"]}  # the panic button stands out; the others are amber
AMBER = (0.55, 0.42, 0.1, 1.0)
SLOT_ROW_COLORS = [(0.2, 0.2, 0.45, 1.0), (0.15, 0.4, 0.3, 1.0)]
LEVEL_COLORS = [(0.2, 0.45, 0.3, 1.0), (0.45, 0.4, 0.15, 1.0), (0.45, 0.25, 0.45, 1.0), (0.25, 0.3, 0.55, 1.0),
                (0.5, 0.3, 0.2, 1.0)]


class LayoutError(ValueError):
    """A layout that TouchOSC or ffvj's OSC server would not accept as it is."""

    def __init__(self, path, problems: list[str]):
        self.problems = problems
        super().__init__(f"{path}: {len(problems)} problem(s):\n" + "\n".join(f"  {p}" for p in problems))


def _py2tosc():
    try:
        import py2tosc
    except ImportError:
        raise ImportError("generating a TouchOSC layout needs py2tosc: pip install 'ffvj[touchosc]'") from None
    return py2tosc


def _id(key: str) -> str:
    return str(uuid.uuid5(_IDS, key))


def _caption(param: Param) -> str:
    text = param.name.split(".", 1)[1] if param.level is not None else param.name
    if param.unit:
        text += f" ({param.unit})"
    if param.kind == "enum" and len(param.choices) > MAX_RADIO:
        text += f" ({len(param.choices)} choices)"
    return text


def _pack(groups: list[list[Param]], rows: int) -> list[list[list[Param]]]:
    """Groups of parameters onto pages of two columns of at most ``rows`` rows. A group stays in one
    column when it fits (an LFO slot, the colour controls); a larger one gets a page of its own."""
    pages, page = [], [[]]
    for group in groups:
        if len(group) > rows:
            if page[0]:
                pages.append(page)
            half = math.ceil(len(group) / 2)
            pages.append([group[:half], group[half:]])
            page = [[]]
            continue
        if len(page[-1]) + len(group) > rows:
            if len(page) == 2:
                pages.append(page)
                page = [[]]
            else:
                page.append([])
        page[-1].extend(group)
    if page[0]:
        pages.append(page)
    return pages


def _pages(registry: dict[str, Param], rows: int = ROWS) -> list[tuple[str, list[list[Param]]]]:
    """(page name, columns of parameters): ``global`` first, then one page per level, then the rest of the
    picture-wide parameters (LFO slots), each page named after the groups on it."""
    params = list(registry.values())
    groups: dict[str, list[Param]] = {}
    for p in params:
        if p.level is None:
            groups.setdefault(p.name.split(".")[0], []).append(p)
    global_pages = _pack(list(groups.values()), rows)
    named = []
    for i, columns in enumerate(global_pages):
        prefixes = list(dict.fromkeys(p.name.split(".")[0] for col in columns for p in col))
        name = "global" if i == 0 else "+".join(prefixes) if len(prefixes) <= 2 else f"{prefixes[0]}-{prefixes[-1]}"
        named.append((name, columns))
    out = named[:1]
    for level in sorted({p.level for p in params if p.level is not None}):
        for columns in _pack([[p for p in params if p.level == level]], rows):
            out.append((f"l{level}", columns))
    return out + named[1:]


def generate_layout(registry: dict[str, Param], path: str | Path, size: tuple[int, int] = SIZE) -> Path:
    """Write the layout for ``registry`` to ``path`` (a ``.tosc``) and return the path."""
    t = _py2tosc()
    width, height = size
    page_frame = (0, TABBAR, width, height - TABBAR)
    pages = [_show_page(t, page_frame)]
    for index, (name, columns) in enumerate(_pages(registry)):
        color = PAGE_COLORS.get(name) or LEVEL_COLORS[(index - 1) % len(LEVEL_COLORS)]
        pages.append(_param_page(t, name, columns, page_frame, color))
    pager = t.pager(id=_id("pager"), name="pages", frame=(0, 0, width, height), tabbar_size=TABBAR,
                    children=pages)
    root = t.group(id=_id("root"), name="ffvj", frame=(0, 0, width, height), children=[pager])
    doc = t.Document(root=root)
    errors = [i for i in doc.validate() if i.level == "error"]
    if errors:  # our own bug, not the user's: say so before writing a file TouchOSC would refuse
        raise LayoutError(path, [str(i) for i in errors])
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    doc.save(path)
    return path


def _page(t, name: str, frame, children) -> object:
    return t.group(id=_id(f"page/{name}"), name=name, tab_label=name, frame=frame, children=children,
                   interactive=False, outline=False, tab_color_off=(0.25, 0.25, 0.25, 1.0),
                   tab_color_on=(0.5, 0.5, 0.5, 1.0), text_color_off=(1.0, 1.0, 1.0, 1.0),
                   text_color_on=(1.0, 1.0, 1.0, 1.0))


def _label(t, key: str, text: str, frame, size: int = 14, align=None):
    return t.label(id=_id(f"label/{key}"), name=f"{key}.label", frame=frame, background=False,
                   text_size=size, text_align_h=align if align is not None else t.AlignH.LEFT,
                   values=[t.Value("text", default=text), t.Value("touch", default=False)])


def _osc(t, address: str, arg, on: str = "ANY", receive: bool = True):
    """An OSC binding: ``arg`` to a constant ``address`` when x changes (``on``: ANY, or RISE for a press).
    Built from py2tosc's core dataclasses, which mirror the file format."""
    return t.OscMessage(receive=receive, triggers=[t.Trigger("x", t.TriggerCondition(on))],
                        path=[t.Partial(t.PartialType.CONSTANT, t.Conversion.STRING, address)], arguments=[arg])


def _x(t, conversion: str, scale_max: float):
    """The control's x (0..1 for a fader, the index for a radio), scaled to 0..scale_max."""
    return t.Partial(t.PartialType.VALUE, t.Conversion(conversion), "x", 0.0, scale_max)


def _param_page(t, name: str, columns: list[list[Param]], frame, color) -> object:
    """Two columns of rows: a caption on the left of each cell, the control on the right."""
    _, _, width, height = frame
    pad, gap = 12, 8
    rows = max(len(col) for col in columns)
    cell_w = (width - 3 * pad) / 2
    cell_h = min(80.0, (height - 2 * pad - (rows - 1) * gap) / rows)
    children = []
    for col, params in enumerate(columns):
        for row, p in enumerate(params):
            x = pad + col * (cell_w + pad)
            y = pad + row * (cell_h + gap)
            caption_w = cell_w * 0.34
            children.append(_label(t, p.name, _caption(p), (round(x), round(y), round(caption_w), round(cell_h)),
                                   size=12))
            children += _control(t, p, (round(x + caption_w), round(y), round(cell_w - caption_w),
                                            round(cell_h)), color)
    return _page(t, name, frame, children)


def _control(t, p: Param, frame, color) -> list:
    """The control for one parameter, plus the labels drawn over a radio's segments."""
    if p.kind in ("float", "int"):
        control = t.fader(id=_id(f"fader/{p.address}"), name=p.name, frame=frame, color=color,
                          orientation=t.Orientation.EAST, centered=p.curve == "sym",
                          values=[t.Value("x", default=round(p.to_normalized(p.default), 6)),
                                  t.Value("touch", default=False)])
        if p.kind == "int":
            control.grid_steps = int(p.max - p.min)
        control.messages.append(_osc(t, p.address + NORM_SUFFIX, _x(t, "FLOAT", 1.0)))
        return [control]
    if p.kind == "enum" and len(p.choices) > MAX_RADIO:
        # Too many choices for segments: a stepped fader whose x (0..1) is scaled to the index.
        last = len(p.choices) - 1
        control = t.fader(id=_id(f"fader/{p.address}"), name=p.name, frame=frame, color=color,
                          orientation=t.Orientation.EAST, grid_steps=last,
                          values=[t.Value("x", default=round(p.default / last, 6)), t.Value("touch", default=False)])
        control.messages.append(_osc(t, p.address, _x(t, "INTEGER", float(last))))
        return [control]
    if p.kind == "enum":
        control = t.radio(id=_id(f"radio/{p.address}"), name=p.name, frame=frame, color=color,
                          steps=len(p.choices), values=[t.Value("x", default=float(p.default)),
                                                        t.Value("touch", default=False)])
    else:  # bool
        control = t.button(id=_id(f"toggle/{p.address}"), name=p.name, frame=frame, color=color,
                           button_type=t.ButtonType.TOGGLE_RELEASE,
                           values=[t.Value("x", default=float(p.default)), t.Value("touch", default=False)])
    # A radio's x is the choice index and a toggle's is 0/1: sent as ints on the native address.
    control.messages.append(_osc(t, p.address, _x(t, "INTEGER", 1.0)))
    out = [control]
    if p.kind == "enum":  # each segment's choice name, drawn over it (labels let touches through)
        x, y, w, h = frame
        step = w / len(p.choices)
        out += [_label(t, f"{p.name}.{choice}", choice, (round(x + i * step), y, round(step), h),
                       size=9 if len(p.choices) > 10 else 12, align=t.AlignH.CENTER)
                for i, choice in enumerate(p.choices)]
    return out


def _trigger_button(t, key: str, text: str, address: str, frame, color, constant: str | None = None):
    """A momentary button that sends once, on press."""
    button = t.button(id=_id(f"button/{key}"), name=key, frame=frame, color=color,
                      button_type=t.ButtonType.MOMENTARY)
    arg = (t.Partial(t.PartialType.CONSTANT, t.Conversion.INTEGER, constant) if constant is not None
           else _x(t, "INTEGER", 1.0))
    button.messages.append(_osc(t, address, arg, on="RISE", receive=False))
    caption = _label(t, key, text, frame, size=16, align=t.AlignH.CENTER)
    return [button, caption]


def _slot_action(action: Action) -> bool:
    """An action laid out as a row of buttons, one per value of its first argument: a whole number in
    a small range, the other arguments left at their defaults."""
    first = action.args[0] if action.args else None
    return (first is not None and first.kind is int and first.min is not None and first.max is not None
            and first.max - first.min < 16 and all(not a.required for a in action.args[1:]))


def _show_page(t, frame) -> object:
    """Generated from the actions table: the argument-less buttons in a row, then a row per slot action."""
    _, _, width, height = frame
    pad = 16
    buttons = [a for a in ACTIONS.values() if a.button and not a.args]
    rows = [a for a in ACTIONS.values() if _slot_action(a)]
    children = []
    wide = (width - pad * (len(buttons) + 1)) / max(1, len(buttons))
    for i, action in enumerate(buttons):
        children += _trigger_button(t, action.name, action.title.upper(), action.address,
                                    (round(pad + i * (wide + pad)), pad, round(wide), 160),
                                    BUTTON_COLORS.get(action.name, AMBER))
    for row, action in enumerate(rows):
        first = action.args[0]
        values = range(int(first.min), int(first.max) + 1)
        cell = (width - pad * (len(values) + 1)) / len(values)
        y = 160 + 2 * pad + row * (110 + pad)
        children.append(_label(t, action.name, action.name.replace(".", " "), (pad, y, 300, 24), size=14))
        for i, value in enumerate(values):
            x = pad + i * (cell + pad)
            children += _trigger_button(t, f"{action.name}.{value}", str(value), action.address,
                                        (round(x), y + 28, round(cell), 80), SLOT_ROW_COLORS[row % 2],
                                        constant=str(value))
    return _page(t, "show", frame, children)


# -- validation (standard library only) -------------------------------------------------------------

def _text(element, tag: str, default: str = "") -> str:
    found = element.find(tag)
    return found.text if found is not None and found.text is not None else default


def validate_layout(path: str | Path, registry: dict[str, Param] | None = None) -> dict[str, list[str]]:
    """Check a ``.tosc`` against ``registry`` (default: the default model's); see the module docstring."""
    registry = build_registry(DEFAULT_LEVELS) if registry is None else registry
    path = Path(path)
    params = {p.address: p for p in registry.values()}
    known = (set(params) | {a + NORM_SUFFIX for a in params}
             | {a.address for a in (*ACTIONS.values(), *OSC_COMMANDS.values())})
    try:
        xml = zlib.decompress(path.read_bytes())
    except zlib.error as exc:
        raise LayoutError(path, [f"not a zlib-compressed .tosc ({exc})"]) from None
    try:
        root = ElementTree.fromstring(xml)
    except ElementTree.ParseError as exc:
        raise LayoutError(path, [f"not XML ({exc})"]) from None
    if root.tag != "lexml" or root.find("node") is None:
        raise LayoutError(path, [f"expected a <lexml> document holding a <node>, found <{root.tag}>"])

    problems: list[str] = []
    used: dict[str, list[str]] = {}
    for node in root.iter("node"):
        name = next((_text(p, "value") for p in node.findall("./properties/property") if _text(p, "key") == "name"),
                    node.get("ID", "?"))
        for osc in node.findall("./messages/osc"):
            partials = osc.findall("./path/partial")
            if any(_text(p, "type") != "CONSTANT" for p in partials):
                problems.append(f"{name}: its OSC address is built from properties; ffvj layouts use constants")
                continue
            address = "".join(_text(p, "value") for p in partials)
            if address not in known:
                problems.append(f"{name}: {address or '(empty address)'} is not an ffvj address")
                continue
            used.setdefault(address, []).append(name)
            if address.endswith(NORM_SUFFIX):
                args = osc.findall("./arguments/partial")
                ok = (len(args) == 1 and _text(args[0], "type") == "VALUE" and _text(args[0], "value") == "x"
                      and float(_text(args[0], "scaleMin", "nan")) == 0.0
                      and float(_text(args[0], "scaleMax", "nan")) == 1.0)
                if not ok:
                    problems.append(f"{name}: {address} must send the control's x scaled 0..1")
    try:
        import py2tosc
    except ImportError:
        py2tosc = None
    if py2tosc is not None:
        problems += [str(i) for i in py2tosc.loads(path.read_bytes()).validate() if i.level == "error"]
    if problems:
        raise LayoutError(path, problems)
    return used
