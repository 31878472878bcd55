"""MIDI mapping files: the bundled ones load, and every malformed one names the file, entry and problem."""

from __future__ import annotations

import textwrap

import pytest

from ffvj.control.midi.mapping import MappingError, bundled_mappings, default_mappings, load_mapping, resolve_mapping
from ffvj.control.params import build_registry

from .rig import MAPPINGS, REG


# ------------------------------------------------------------------------------------ mapping files

@pytest.mark.parametrize("path", sorted(MAPPINGS.glob("*.toml")), ids=lambda p: p.name)
def test_bundled_mappings_load(path):
    m = load_mapping(path, REG)
    assert m.entries and not m.skipped
    controls = [e.control for e in m.entries]
    assert len(controls) == len(set(controls)), "one control mapped twice"
    if path.name != "generic.toml":
        assert m.device.match and m.device.output
    # A smaller model: the entries for the levels it lacks are skipped, not an error.
    small = load_mapping(path, build_registry(1))
    assert all(s.startswith(("l2.", "l3.", "l1.gain_down")) for s in small.skipped)


def test_bundled_mappings_cover_the_musical_core():
    targets = {e.target for p in MAPPINGS.glob("*.toml") for e in load_mapping(p, REG).entries}
    for name in ("drive", "input.mix", "l0.zoom", "l0.rotate", "l0.warp", "l0.gain_self", "l1.gain_up",
                 "l0.gain_down", "color.hue", "l0.blur", "l0.temporal", "bound", "reset", "tap",
                 "snapshot.store:0", "snapshot.recall:0"):
        assert name in targets


def write(tmp_path, text, name="bad.toml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


ENTRY = '[device]\nname = "x"\n\n[[map]]\nparam = "drive"\ntype = "cc"\nnumber = 1\n\n[[map]]\n'


@pytest.mark.parametrize("body, expected", [
    ('param = "l0.zom"\ntype = "cc"\nnumber = 2\n', ["entry 2", "'l0.zom'", "unknown parameter", "l0.zoom"]),
    ('param = "drive"\nnumber = 2\n', ["entry 2", "missing key 'type'"]),
    ('param = "drive"\ntype = "cc"\n', ["entry 2", "missing key 'number'"]),
    ('param = "drive"\ntype = "ccc"\nnumber = 2\n', ["entry 2", "type 'ccc'", "cc14"]),
    ('param = "drive"\ntype = "cc"\nnumber = 128\n', ["entry 2", "0..127"]),
    ('param = "drive"\ntype = "cc14"\nnumber = 40\n', ["entry 2", "0..31", "LSB"]),
    ('param = "drive"\ntype = "nrpn"\nnumber = 20000\n', ["entry 2", "0..16383"]),
    ('param = "drive"\ntype = "cc"\nnumber = 2\nchannel = 17\n', ["entry 2", "channel", "1..16"]),
    ('param = "drive"\ntype = "cc"\nnumber = 2\nchannel = "all"\n', ["entry 2", "\"any\""]),
    ('param = "drive"\ntype = "cc"\nnumber = 2\nmode = "relative"\n', ["entry 2", "mode 'relative'", "relative-twos"]),
    ('param = "drive"\ntype = "note"\nnumber = 2\nmode = "absolute"\n', ["entry 2", "mode 'absolute'", "toggle"]),
    ('param = "drive"\ntype = "cc"\nnumber = 2\nmin = 3\nmax = 1\n', ["entry 2", "min (3) must be below max"]),
    ('param = "drive"\ntype = "cc"\nnumber = 2\nmax = 9\n', ["entry 2", "max = 9", "outside"]),
    ('param = "drive"\ntype = "cc"\nnumber = 2\nchanel = 1\n', ["entry 2", "unknown key 'chanel'", "channel"]),
    ('param = "l0.rotate"\ntype = "cc"\nnumber = 2\ncurve = "exp"\n', ["entry 2", "exp", "positive"]),
    ('param = "snapshot.recall:x"\ntype = "note"\nnumber = 2\n', ["entry 2", "slot"]),
    ('param = "tap"\ntype = "note"\nnumber = 2\nmin = 1\n', ["entry 2", "'min'", "action"]),
    ('param = "reset"\ntype = "note"\nnumber = 2\nmode = "toggle"\n', ["entry 2", "actions fire once"]),
    ('param = "bound"\ntype = "note"\nnumber = 2\nvalue = "sin"\n', ["entry 2", "'sin'", "sine"]),
    ('param = "drive"\ntype = "pitchbend"\nnumber = 2\n', ["entry 2", "pitchbend has no number"]),
])
def test_malformed_mapping_names_file_entry_and_problem(tmp_path, body, expected):
    path = write(tmp_path, ENTRY + body)
    with pytest.raises(MappingError) as err:
        load_mapping(path, REG)
    msg = str(err.value)
    assert str(path) in msg
    for part in expected:
        assert part in msg, msg


@pytest.mark.parametrize("text, expected", [
    ('[device]\nname = "x"\n[[map]]\nparam = "drive\ntype = "cc"\n', ["not valid TOML", "line 4"]),
    ('[[map]]\nparam = "drive"\ntype = "cc"\nnumber = 1\n', ["missing [device]"]),
    ('[device]\nname = "x"\n', ["no [[map]] entries"]),
    ('[device]\nname = "x"\nmatch = 3\n[[map]]\nparam = "drive"\ntype = "cc"\nnumber = 1\n', ["[device]", "match"]),
    ('[device]\nname = "x"\n[[maps]]\nparam = "drive"\n', ["unknown top-level key 'maps'", "map"]),
])
def test_malformed_mapping_file_level(tmp_path, text, expected):
    path = write(tmp_path, text)
    with pytest.raises(MappingError) as err:
        load_mapping(path, REG)
    assert str(path) in str(err.value)
    for part in expected:
        assert part in str(err.value), str(err.value)


def test_resolve_mapping_by_name_or_path(tmp_path):
    assert set(bundled_mappings()) >= {"generic", "nanokontrol2", "midimix", "launchcontrol_xl", "xtouch_mini"}
    assert resolve_mapping("nanokontrol2", REG).device.name == "Korg nanoKONTROL2"
    assert resolve_mapping(MAPPINGS / "midimix.toml", REG).device.name == "Akai MIDImix"
    with pytest.raises(MappingError, match="nanokontrol2"):
        resolve_mapping("nanokontrol", REG)
    assert len(default_mappings(REG)) == len(bundled_mappings())


def test_missing_mapping_file(tmp_path):
    with pytest.raises(MappingError, match="cannot read"):
        load_mapping(tmp_path / "nope.toml", REG)


@pytest.mark.parametrize("extra, expected", [
    ('param = "snapshot.recall:1"\ntype = "note"\nnumber = 2\nseconds = 1000\n', ["entry 2", "seconds = 1000", "0..600"]),
    ('param = "snapshot.recall:1"\ntype = "note"\nnumber = 2\nseconds = -1\n', ["entry 2", "seconds = -1"]),
    ('param = "snapshot.recall:1"\ntype = "note"\nnumber = 2\nseconds = true\n', ["entry 2", "finite number"]),
    ('param = "bpm:1000"\ntype = "note"\nnumber = 2\n', ["entry 2", "bpm = 1000", "20..300"]),
    ('param = "snapshot.store:8"\ntype = "note"\nnumber = 2\n', ["entry 2", "slot = 8", "0..7"]),
    ('param = "drive"\ntype = "cc"\nnumber = 2\nseconds = 1\n', ["entry 2", "'seconds' only applies to"]),
])
def test_action_arguments_in_a_file_are_checked_strictly(tmp_path, extra, expected):
    """What a live surface would clamp (a fade time, a tempo) is an error in a file: fix it at setup."""
    path = write(tmp_path, ENTRY + extra)
    with pytest.raises(MappingError) as err:
        load_mapping(path, REG)
    for part in expected:
        assert part in str(err.value), str(err.value)


def test_files_that_are_not_utf8_and_bad_preset_names_are_one_line_errors(tmp_path):
    from ffvj.control.midi.mapping import MappingError, load_mapping

    raw = tmp_path / "latin1.toml"
    raw.write_bytes('[device]\nname = "Contrôleur"\n'.encode("latin-1"))
    with pytest.raises(MappingError, match="not UTF-8 text.*save it as UTF-8"):
        load_mapping(raw)
    bad = tmp_path / "bad.toml"
    bad.write_text('[device]\nname = "x"\n[[map]]\nparam = "preset.recall:../x"\ntype = "note"\nnumber = 3\n')
    with pytest.raises(MappingError, match="bad preset name"):
        load_mapping(bad)
