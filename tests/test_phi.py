"""φ's vocabulary (``ffvj.phi``): every parameter of the picture has one typed place in ``Phi``, the engine
reads φ only through it, and the engine stands below the controls."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import ffvj
from ffvj.control.params import build_registry
from ffvj.phi import BOUNDS, Phi, level_has, picture_params

PACKAGE = Path(ffvj.__file__).parent


def _read(phi: Phi, name: str):
    """The field of ``phi`` that the parameter ``name`` is, by its place (``l2.turn``: ``phi.level[2].turn``)."""
    head, _, rest = name.partition(".")
    if head[0] == "l" and head[1:].isdigit():
        return getattr(phi.level[int(head[1:])], rest)
    return getattr(getattr(phi, head), rest) if rest else getattr(phi, head)


@pytest.mark.parametrize("levels", [1, 3, 4])
def test_every_parameter_of_the_picture_lands_in_its_own_typed_field(levels):
    registry = picture_params(levels)
    defaults = {name: p.default for name, p in registry.items()}
    for name, p in registry.items():
        # A value no other parameter has (within its range), so a mix-up of two fields shows.
        value = p.max if p.kind != "float" else p.min + (p.max - p.min) * 0.618
        phi = Phi.of({**defaults, name: value}, levels)
        got = _read(phi, name)
        expected = p.typed(value)
        assert got == expected and type(got) is type(expected), (name, got, expected)
        if p.kind == "enum":
            assert got in p.choices
    assert Phi.of(defaults) == Phi.defaults(levels) and Phi.defaults(levels).levels == levels


def test_a_level_without_a_parameter_reads_nothing_there():
    phi = Phi.defaults(3)
    assert phi.level[0].gain_up == phi.level[0].turn == 0.0  # nothing below the picture; colour is not turned
    assert phi.level[3].gain_down == phi.level[3].amplify == 0.0  # nothing above the top
    assert not level_has("gain_up", 0, 3) and level_has("gain_up", 1, 3)
    assert "l0.gain_up" not in build_registry(3) and "l3.gain_down" not in build_registry(3)


def test_phi_is_frozen_and_typed():
    phi = Phi.defaults(3)
    with pytest.raises(AttributeError):
        phi.drive = 2.0  # type: ignore[misc]
    assert phi.bound in BOUNDS and isinstance(phi.level[1].period, int) and isinstance(phi.map.invert, bool)
    assert phi.with_level(0, zoom=1.1).level[0].zoom == 1.1 and phi.level[0].zoom != 1.1


def test_the_registry_reads_the_picture_from_phi_and_adds_only_the_controls_own():
    registry = build_registry(3)
    picture = picture_params(3)
    assert list(registry)[:len(picture)] == list(picture)
    others = set(registry) - set(picture)
    assert all(name.split(".")[0].rstrip("0123456789") in ("lfo", "audio", "tempo") for name in others), others


def _string_literals(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef)) and node.body
                  and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}
    return {node.value for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings}


def test_the_engine_names_no_parameter_by_a_string():
    """A renamed parameter must fail in the tests, not on a show's first frame: the engine reads φ by
    attribute (``phi.level[1].zoom``), never by a name in a string."""
    names = set(build_registry(4))
    fields_ = {name.rpartition(".")[2] for name in names}  # "zoom", "flash_limit", ... (a key like phi["zoom"])
    # Choice names (tanh, luma, mix, ...) are values, not parameters; a few coincide with a field's name.
    values = set(BOUNDS) | {"mix", "luma", "rgb", "none"}
    for path in sorted((PACKAGE / "engine").glob("*.py")):
        found = _string_literals(path) & (names | fields_) - values
        assert not found, f"{path.name} names parameters in strings: {sorted(found)}"


def _imports(path: Path) -> set[str]:
    """The ffvj modules ``path`` imports (absolute names)."""
    package = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts[:-1])
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level else ""
            module = ".".join(p for p in (base, node.module or "") if p)
            found.add(module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {m for m in found if m.startswith("ffvj")}


@pytest.mark.parametrize("floor,above", [("engine", ("ffvj.control", "ffvj.show", "ffvj.web", "ffvj.media")),
                                         ("model", ("ffvj.control", "ffvj.engine", "ffvj.show")),
                                         ("phi", ("ffvj.",))])
def test_the_floors_import_nothing_above_them(floor, above):
    paths = [PACKAGE / "phi.py"] if floor == "phi" else sorted((PACKAGE / floor).rglob("*.py"))
    for path in paths:
        wrong = {m for m in _imports(path) if m.startswith(above)}
        assert not wrong, f"{path.relative_to(PACKAGE)} imports {sorted(wrong)}"
