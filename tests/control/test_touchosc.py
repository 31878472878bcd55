"""TouchOSC layout: generate, reload, validate; the committed mappings/ffvj.tosc fits the registry."""

from __future__ import annotations

import zlib
from xml.etree import ElementTree

import pytest

from ffvj.control.actions import ACTIONS
from ffvj.control.osc import NORM_SUFFIX, OSC_COMMANDS
from ffvj.control.params import build_registry
from ffvj.phi import ADDRESS_PREFIX, DEFAULT_LEVELS
from ffvj.control.touchosc import LayoutError, generate_layout, validate_layout
from tests.helpers import REPO

COMMITTED = REPO / "mappings" / "ffvj.tosc"


def reachable(used: dict[str, list[str]]) -> set[str]:
    return {a[: -len(NORM_SUFFIX)] if a.endswith(NORM_SUFFIX) else a for a in used}


@pytest.fixture
def py2tosc():
    return pytest.importorskip("py2tosc", reason="py2tosc is not installed (pip install 'ffvj[touchosc]')")


@pytest.mark.parametrize("levels", [1, 3])
def test_generate_reload_validate(tmp_path, py2tosc, levels):
    registry = build_registry(levels)
    path = generate_layout(registry, tmp_path / "layout.tosc")
    used = validate_layout(path, registry)
    assert reachable(used) >= {p.address for p in registry.values()}  # every parameter has a control
    for p in registry.values():
        if p.kind in ("float", "int"):
            assert p.address + NORM_SUFFIX in used and p.address not in used  # faders speak 0..1
        else:
            assert p.address in used
    assert len(used[f"{ADDRESS_PREFIX}/snapshot/recall"]) == 8 and len(used[f"{ADDRESS_PREFIX}/snapshot/store"]) == 8
    assert {f"{ADDRESS_PREFIX}/{name}" for name in ("reset", "tap", "learn")} <= set(used)  # the show page's buttons
    doc = py2tosc.load(path)  # an independent reader: py2tosc's own model of the format
    assert [i for i in doc.validate() if i.level == "error"] == []
    pager = doc.find("pages")
    tabs = [page.tab_label for page in pager]
    assert tabs[:2] == ["show", "global"]
    assert [t for t in tabs if t.startswith("l") and t[1:].isdigit()] == [f"l{i}" for i in range(levels + 1)]
    ids = [c.id for c in doc.walk()]
    assert len(ids) == len(set(ids))
    zoom = doc.find("l0.zoom")
    assert zoom.control_type.value == "FADER"
    assert zoom.value("x").default == pytest.approx(registry["l0.zoom"].to_normalized(registry["l0.zoom"].default),
                                                    abs=1e-6)
    assert doc.find("bound").control_type.value == "RADIO" and doc.find("bound").steps == 6


def test_generation_is_deterministic(tmp_path, py2tosc):
    registry = build_registry(DEFAULT_LEVELS)
    a = generate_layout(registry, tmp_path / "a.tosc")
    b = generate_layout(registry, tmp_path / "b.tosc")
    assert zlib.decompress(a.read_bytes()) == zlib.decompress(b.read_bytes())


def test_committed_layout_is_valid():
    """Standard library only: the file users load is a .tosc that fits the default registry."""
    registry = build_registry(DEFAULT_LEVELS)
    used = validate_layout(COMMITTED)
    assert reachable(used) >= {p.address for p in registry.values()}
    assert set(used) <= {p.address for p in registry.values()} | {
        p.address + NORM_SUFFIX for p in registry.values()} | {a.address for a in ACTIONS.values()}
    assert not set(used) & {a.address for a in OSC_COMMANDS.values()}  # the server's own commands: not on a tablet


def test_committed_layout_is_up_to_date(tmp_path, py2tosc):
    fresh = generate_layout(build_registry(DEFAULT_LEVELS), tmp_path / "fresh.tosc")
    assert zlib.decompress(COMMITTED.read_bytes()) == zlib.decompress(fresh.read_bytes()), (
        "mappings/ffvj.tosc is stale: regenerate it with: ffvj touchosc mappings/ffvj.tosc")


def test_validation_finds_problems(tmp_path, py2tosc):
    registry = build_registry(DEFAULT_LEVELS)
    path = generate_layout(registry, tmp_path / "layout.tosc")
    # The layout of a 3-level model against a 1-level registry: l2 and l3 do not exist there.
    with pytest.raises(LayoutError) as err:
        validate_layout(path, build_registry(1))
    assert "/ffvj/l3/zoom/norm is not an ffvj address" in str(err.value)
    # A fader that sends its raw x to /norm outside 0..1 is caught.
    root = ElementTree.fromstring(zlib.decompress(path.read_bytes()))
    norm = next(osc for osc in root.iter("osc") if osc.findtext("./path/partial/value").endswith(NORM_SUFFIX))
    norm.find("./arguments/partial/scaleMax").text = "127"
    bad = tmp_path / "bad.tosc"
    bad.write_bytes(zlib.compress(ElementTree.tostring(root)))
    with pytest.raises(LayoutError, match="must send the control's x scaled 0..1"):
        validate_layout(bad, registry)
    (tmp_path / "junk.tosc").write_bytes(b"not zlib")
    with pytest.raises(LayoutError, match="zlib"):
        validate_layout(tmp_path / "junk.tosc")


def test_ffvj_touchosc_regenerates_the_shipped_layout(tmp_path, capsys):
    from ffvj.cli import main

    out = tmp_path / "ffvj.tosc"
    assert main(["touchosc", str(out)]) == 0
    assert out.read_bytes() == (REPO / "mappings" / "ffvj.tosc").read_bytes()
