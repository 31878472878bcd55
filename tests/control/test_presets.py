"""Presets: TOML files of parameter targets, read, written and morphed to."""

import logging
import tomllib
from pathlib import Path

import pytest

from ffvj.control.params import ParamStore, build_registry
from ffvj.phi import BOUNDS
from ffvj.control.presets import PresetBank, PresetError, format_preset, read_preset, smoothstep
from tests.helpers import REPO

FACTORY = REPO / "presets"
FACTORY_LOOKS = sorted(p.stem for p in FACTORY.glob("*.toml"))


@pytest.fixture
def store():
    return ParamStore(build_registry(3))


@pytest.fixture
def bank(store, tmp_path):
    return PresetBank(store, tmp_path / "presets")


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


# --- presets: files --------------------------------------------------------------------------------

def test_save_load_round_trip_writes_readable_toml(store, bank):
    store.set("bound", "wrap")
    store.set("color.perm", "bgr")
    store.set("l0.zoom", 1.0123456789)
    store.set("l1.period", 3)
    store.set("l2.freeze", 1)
    store.set("lfo1.target", "l2.zoom")
    path = bank.save("look a")
    assert path == bank.directory / "look a.toml" and bank.names() == ["look a"]
    text = path.read_text()
    assert 'bound = "wrap"' in text and '"lfo1.target" = "l2.zoom"' in text  # enums by choice name
    assert '"l1.period" = 3' in text and '"l2.freeze" = true' in text  # ints as integers, bools as booleans
    data = tomllib.loads(text)
    assert data["meta"]["name"] == "look a" and data["meta"]["ffvj"] and data["meta"]["levels"] == 3
    assert "T" in data["meta"]["created"]
    assert list(data["params"]) == list(store.registry)  # every parameter, in registry order
    assert bank.load("look a") == store.targets()  # floats exact, enums back to their index
    assert not list(bank.directory.glob(".*"))  # no temporary file left behind


def test_written_text_escapes_strings_and_keeps_float_precision():
    reg = build_registry(3)
    values = {"l0.zoom": 1.0 + 2**-40, "drive": 1e-3 + 1, "color.perm": 4.0}
    text = format_preset(values, reg, 'odd "name" \\ with\ttab', "2025-01-01T00:00:00+00:00", "0.1.0")
    data = tomllib.loads(text)
    assert data["meta"]["name"] == 'odd "name" \\ with\ttab'
    assert data["params"] == {"drive": 1.001, "color.perm": "bgr", "l0.zoom": 1.0 + 2**-40}


def test_names_lists_user_and_factory_presets_and_user_shadows_factory(store, tmp_path):
    bank = PresetBank(store, tmp_path / "mine", factory=FACTORY)
    assert len(FACTORY_LOOKS) >= 8 and set(FACTORY_LOOKS) <= set(bank.names())
    assert bank.path("melt") == FACTORY / "melt.toml"
    store.set("l0.zoom", 0.9)
    bank.save("melt")
    assert bank.path("melt") == tmp_path / "mine" / "melt.toml" and bank.load("melt")["l0.zoom"] == 0.9


@pytest.mark.parametrize("name", FACTORY_LOOKS)
def test_factory_presets_are_whole_looks_valid_for_the_default_model(name):
    registry = build_registry(3)
    values, notes = read_preset(FACTORY / f"{name}.toml", registry)
    assert notes == []
    assert set(values) == {n for n in registry if not n.startswith("output.")}  # base = "default"


def test_a_whole_look_leaves_nothing_of_the_last_one_behind_but_the_output_settings(store, bank):
    write(bank.directory / "whole.toml", '[meta]\nbase = "default"\n[params]\n"l0.rotate" = -3.5\n')
    store.set("drive", 2.0)
    store.set("map.kind", "radial")
    store.set("output.flash_limit", False)
    assert bank.recall("whole")
    assert store.get("l0.rotate") == -3.5
    assert store.get("drive") == store.registry["drive"].default and store.get("map.kind") == 0
    assert store.get("output.flash_limit") == 0.0  # the performer's choice, not the look's


def test_bad_names_are_refused(bank):
    for name in ("", "../evil", "a/b", ".hidden", "x.toml", "a" * 65):
        with pytest.raises(PresetError, match="bad preset name"):
            bank.save(name)


def test_malformed_files_fail_naming_the_file(bank):
    cases = {
        "syntax": ('[params]\n"l0.zoom" = = 1\n', "not valid TOML"),
        "notable": ('[meta]\nname = "x"\n', "no \\[params\\] table"),
        "array": ('[params]\n"l0.zoom" = [1, 2]\n', "l0.zoom"),
        "string": ('[params]\n"l0.zoom" = "big"\n', "should be a number"),
        "nan": ('[params]\n"l0.zoom" = nan\n', "not finite"),
        "meta": ('meta = 3\n[params]\n', "meta must be a table"),
        "base": ('[meta]\nbase = "drift"\n[params]\n', "the one base is"),
    }
    for name, (text, what) in cases.items():
        path = write(bank.directory / f"{name}.toml", text)
        with pytest.raises(PresetError, match=what) as info:
            bank.load(name)
        assert str(path) in str(info.value)
    with pytest.raises(PresetError, match="no preset 'absent'.*available: array"):
        bank.load("absent")


def test_unknown_names_and_choices_are_logged_and_ignored(store, bank, caplog):
    """A preset from a model with more levels still loads: what this model lacks is left out."""
    big = ParamStore(build_registry(5))
    big.set("l5.zoom", 1.1)
    big.set("l0.zoom", 1.05)
    big.set("lfo1.target", "l5.zoom")
    big.set("lfo1.depth", 0.5)
    PresetBank(big, bank.directory).save("big")
    with caplog.at_level(logging.WARNING, logger="ffvj.control.presets"):
        values = bank.load("big")
    assert values["l0.zoom"] == 1.05 and values["lfo1.depth"] == 0.5
    assert "l5.zoom" not in values and "l4.gain_self" not in values and "lfo1.target" not in values
    assert "big.toml" in caplog.text and "l5.zoom" in caplog.text and "lfo1.target='l5.zoom'" in caplog.text
    assert bank.recall("big") and store.get("l0.zoom") == 1.05


def test_out_of_range_values_are_clamped_and_noted(store, tmp_path):
    path = write(tmp_path / "p.toml", '[params]\n"l0.zoom" = 9.0\n"l1.period" = 2.4\n"input.mode" = 1\n')
    values, notes = read_preset(path, store.registry)
    assert values == {"l0.zoom": store.registry["l0.zoom"].max, "l1.period": 2.0, "input.mode": 1.0}
    assert notes == ["clamped out-of-range value(s): l0.zoom=9"]


# --- presets: the morph ----------------------------------------------------------------------------

def test_morph_is_exact_at_start_middle_and_end_with_smoothstep(store, bank):
    store.set("l0.zoom", 1.2)
    store.set("bound", "sine")
    store.set("l1.period", 5)
    store.set("map.invert", 1)
    bank.save("b")
    store.set("l0.zoom", 1.0)
    store.set("bound", "tanh")
    store.set("l1.period", 1)
    store.set("map.invert", 0)
    a, b = 1.0, 1.2
    assert bank.recall("b", seconds=2.0) and bank.morphing
    assert store.get("l0.zoom") == a and store.get("bound") == 0  # t = 0: nothing moved yet
    bank.update(0.5)  # u = 1/4
    assert smoothstep(0.25) == 0.15625
    assert store.get("l0.zoom") == a + (b - a) * 0.15625
    assert store.get("bound") == 0 and store.get("l1.period") == 1 and store.get("map.invert") == 0
    bank.update(0.49)  # just before halfway: discrete parameters still hold
    assert store.get("bound") == 0
    bank.update(0.01)  # u = 1/2: enums, ints and bools switch; floats are exactly half way
    assert store.get("l0.zoom") == a + (b - a) * 0.5
    assert store.get("bound") == BOUNDS.index("sine") and store.get("l1.period") == 5 and store.get("map.invert") == 1
    bank.update(0.5)  # u = 3/4
    assert store.get("l0.zoom") == a + (b - a) * 0.84375
    bank.update(5.0)  # past the end: exactly the preset
    assert store.get("l0.zoom") == b and not bank.morphing
    bank.update(1.0)  # nothing left to do
    assert store.get("l0.zoom") == b


def test_recall_with_zero_seconds_jumps_and_missing_parameters_keep_their_value(store, bank):
    write(bank.directory / "partial.toml", '[params]\n"l0.rotate" = -3.5\n"color.perm" = "brg"\n')
    store.set("l0.zoom", 1.1)
    store.set("drive", 2.0)
    assert bank.recall("partial")  # seconds = 0
    assert store.get("l0.rotate") == -3.5 and store.get("color.perm") == 2
    assert store.get("l0.zoom") == 1.1 and store.get("drive") == 2.0
    assert not bank.morphing


def test_morph_writes_through_the_store_as_preset(store, bank):
    seen = []
    store.add_listener(lambda name, value, source: seen.append((name, source)))
    write(bank.directory / "p.toml", '[params]\n"drive" = 2.0\n"l0.zoom" = 1.012\n')  # zoom already there
    bank.recall("p", 1.0)
    bank.update(0.5)
    bank.update(0.5)
    assert seen == [("drive", "preset"), ("drive", "preset")]  # unchanged parameters are not re-sent


def test_a_parameter_the_performer_touches_leaves_the_morph(store, bank):
    write(bank.directory / "p.toml", '[params]\n"drive" = 3.0\n"l0.rotate" = 5.0\n')
    bank.recall("p", 1.0)
    bank.update(0.25)
    store.set("drive", 0.5, source="midi")
    bank.update(1.0)
    assert store.get("drive") == 0.5 and store.get("l0.rotate") == 5.0


def test_recall_during_a_show_logs_and_ignores_bad_or_missing_presets(store, bank, caplog):
    write(bank.directory / "broken.toml", "[params\n")
    before = store.targets()
    with caplog.at_level(logging.WARNING, logger="ffvj.control.presets"):
        assert bank.recall("broken", 1.0) is False
        assert bank.recall("nothing-here") is False
        assert bank.recall("../up") is False
    assert "broken.toml" in caplog.text and "nothing-here" in caplog.text and "bad preset name" in caplog.text
    assert store.targets() == before and not bank.morphing


def test_a_new_recall_starts_from_where_the_morph_is(store, bank):
    write(bank.directory / "hi.toml", '[params]\n"drive" = 3.0\n')
    write(bank.directory / "lo.toml", '[params]\n"drive" = 1.0\n')
    start = store.get("drive")
    bank.recall("hi", 1.0)
    bank.update(0.5)
    mid = store.get("drive")
    assert mid == start + (3.0 - start) * 0.5
    bank.recall("lo", 1.0)
    bank.update(0.5)
    assert store.get("drive") == mid + (1.0 - mid) * 0.5


def test_names_windows_reserves_are_refused_and_saves_are_capped(store, bank, monkeypatch):
    from ffvj.control import presets

    for name in ("con", "CON", "nul.txt", "com1", "lpt9"):
        with pytest.raises(PresetError, match="Windows reserves"):
            bank.save(name)
    monkeypatch.setattr(presets, "MAX_PRESETS", 3)
    for name in ("a", "b", "c"):
        bank.save(name)
    with pytest.raises(PresetError, match="3 presets"):
        bank.save("d")
    bank.save("b")  # replacing one is fine


def test_hand_edited_files_that_crashed_start_up_are_one_line_errors(bank):
    """A 10,000-deep array raised RecursionError (2,998 lines of traceback) and a 3,000-digit integer
    OverflowError; a FIFO named like a preset blocked its reader for good."""
    import os

    cases = {
        "deep": ('[params]\n"l0.zoom" = ' + "[" * 10_000 + "]" * 10_000 + "\n", "nested too deep"),
        "digits": ('[params]\n"l0.zoom" = 1' + "0" * 3000 + "\n", "far outside"),
        "huge": ("# " + "x" * (2 << 20) + "\n[params]\n", "over 1024 KiB"),
    }
    for name, (text, what) in cases.items():
        write(bank.directory / f"{name}.toml", text)
        with pytest.raises(PresetError, match=what) as info:
            bank.load(name)
        assert "\n" not in str(info.value) and len(str(info.value)) < 400
    os.mkfifo(bank.directory / "pipe.toml")
    with pytest.raises(PresetError, match="pipe.toml is a FIFO, not a regular file"):
        bank.load("pipe")  # at once: nothing ever writes to it
    assert not bank.recall("pipe")


def test_the_factory_gallery_has_twelve_looks_at_most_a_third_of_them_graded():
    """Issue 22: looks told apart by their structure, not by an output grade a mixer could add to anything."""
    import tomllib

    graded = [name for name in FACTORY_LOOKS
              if tomllib.loads((FACTORY / f"{name}.toml").read_text())["params"].get("grade.mix", 0) > 0]
    assert len(FACTORY_LOOKS) >= 12
    assert len(graded) <= (len(FACTORY_LOOKS) + 1) / 3, graded  # the default look counts too: it is ungraded
