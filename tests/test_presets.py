import logging
import tomllib
from pathlib import Path

import pytest
import torch

import ffvj.presets as presets_module
from ffvj.engine import FeedbackEngine, StepInputs, reference_step
from ffvj.model import FeatureAutoencoder, ModelConfig
from ffvj.modulation import lfo_params
from ffvj.params import BOUNDS, ActionQueue, ParamStore, RateLimitedLog, build_registry
from ffvj.presets import (PresetBank, PresetError, SnapshotBank, SnapshotError, format_preset, handle_action,
                          read_preset, smoothstep)

W, H = 45, 29
FACTORY = Path(__file__).resolve().parent.parent / "presets"


def registry(levels: int = 3) -> dict:
    reg = build_registry(levels)
    reg.update({p.name: p for p in lfo_params(reg)})
    return reg


@pytest.fixture(autouse=True)
def fresh_action_log(monkeypatch):
    # The action log is module-wide and rate-limited: give every test its own so caplog sees each warning.
    monkeypatch.setattr(presets_module, "_warn", RateLimitedLog(presets_module.log))


@pytest.fixture
def store():
    return ParamStore(registry())


@pytest.fixture
def bank(store, tmp_path):
    return PresetBank(store, tmp_path / "presets")


@pytest.fixture
def model():
    torch.manual_seed(0)
    return FeatureAutoencoder(ModelConfig(channels=(3, 6, 8, 10))).eval()


@pytest.fixture
def engine(model):
    e = FeedbackEngine(model, W, H)
    e.guard.patience = 10**9  # tiny random models may flatten; these tests are about states, not looks
    return e


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
    store.set("reset", 1)  # a trigger: never saved
    path = bank.save("look a")
    assert path == bank.directory / "look a.toml" and bank.names() == ["look a"]
    text = path.read_text()
    assert '"bound" = "wrap"' in text and '"lfo1.target" = "l2.zoom"' in text
    assert '"l1.period" = 3' in text and '"l2.freeze" = true' in text and '"reset"' not in text
    data = tomllib.loads(text)
    assert data["meta"]["name"] == "look a" and data["meta"]["ffvj"] and data["meta"]["levels"] == 3
    assert "T" in data["meta"]["created"]
    loaded = bank.load("look a")
    expected = {k: v for k, v in store.targets().items() if k != "reset"}
    assert loaded == expected  # floats exact, enums back to their index
    assert not list(bank.directory.glob(".*"))  # no temporary file left behind


def test_written_text_escapes_strings_and_keeps_float_precision():
    reg = registry()
    values = {"l0.zoom": 1.0 + 2**-40, "drive": 1e-3 + 1, "color.perm": 4.0}
    text = format_preset(values, reg, 'odd "name" \\ with\ttab', "2025-01-01T00:00:00+00:00", "0.1.0")
    data = tomllib.loads(text)
    assert data["meta"]["name"] == 'odd "name" \\ with\ttab'
    assert data["params"] == {"drive": 1.001, "color.perm": "bgr", "l0.zoom": 1.0 + 2**-40}


def test_names_lists_user_and_factory_presets_and_user_shadows_factory(store, tmp_path):
    bank = PresetBank(store, tmp_path / "mine", factory=FACTORY)
    assert {"drift", "pulse"} <= set(bank.names())
    assert bank.path("drift") == FACTORY / "drift.toml"
    store.set("l0.zoom", 0.9)
    bank.save("drift")
    assert bank.path("drift") == tmp_path / "mine" / "drift.toml" and bank.load("drift")["l0.zoom"] == 0.9


@pytest.mark.parametrize("name", ["drift", "pulse"])
def test_factory_presets_are_valid_for_the_default_model(name):
    values, notes = read_preset(FACTORY / f"{name}.toml", registry(3))
    assert values and notes == []


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
    big = ParamStore(registry(5))
    big.set("l5.zoom", 1.1)
    big.set("l0.zoom", 1.05)
    big.set("lfo1.target", "l5.zoom")
    big.set("lfo1.depth", 0.5)
    PresetBank(big, bank.directory).save("big")
    with caplog.at_level(logging.WARNING, logger="ffvj.presets"):
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
    with caplog.at_level(logging.WARNING, logger="ffvj.presets"):
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


# --- snapshots -------------------------------------------------------------------------------------

def phi_defaults(model) -> dict:
    return ParamStore(build_registry(model.levels)).frame(0)


def test_snapshot_store_and_recall_are_exact_and_copies(engine, model):
    snaps = SnapshotBank()
    phi = phi_defaults(model)
    assert snaps.store(engine, 2) and snaps.occupied() == [2]
    kept = [s.clone() for s in engine.states]
    for _ in range(3):
        engine.step(phi)
    assert not all(torch.equal(a, b) for a, b in zip(engine.states, kept))
    assert snaps.recall(engine, 2)
    assert all(torch.equal(a, b) for a, b in zip(engine.states, kept))
    assert all(a is not b for a, b in zip(engine.states, snaps.get(2)))  # the slot is not aliased
    engine.step(phi)
    assert all(torch.equal(a, b) for a, b in zip(snaps.get(2), kept))  # stepping left the slot alone


def test_recall_invalidates_the_decode_cache(engine, model):
    """After a recall the engine computes exactly the formula from the recalled states."""
    snaps = SnapshotBank()
    phi = phi_defaults(model)
    engine.step(phi)
    snaps.store(engine, 0)
    engine.reset()  # new states
    engine.step(phi)
    engine.step(phi)  # level 0 now holds a cached decode of level 1
    snaps.recall(engine, 0)
    prev = [s.clone() for s in engine.states]
    expected = reference_step(model, prev, StepInputs(phi, frame_index=engine.frame_index))
    engine.step(phi)
    for a, b in zip(engine.states, expected):
        assert torch.allclose(a, b, atol=1e-5)


def test_crossfade_blends_by_smoothstep_and_ends_exactly_on_the_snapshot(engine, model):
    snaps = SnapshotBank(slots=4)
    snaps.store(engine, 1)
    target = [s.clone() for s in snaps.get(1)]
    engine.reset()
    live = [s.clone() for s in engine.states]
    assert snaps.recall(engine, 1, seconds=2.0) and snaps.fading
    assert all(torch.equal(a, b) for a, b in zip(engine.states, live))  # nothing happens before update
    snaps.update(engine, 1.0)  # the midpoint: weight smoothstep(½) = ½
    assert all(torch.equal(a, torch.lerp(l, t, 0.5)) for a, l, t in zip(engine.states, live, target))
    engine.step(phi_defaults(model))  # the feedback keeps running during the fade
    snaps.update(engine, 0.5)
    snaps.update(engine, 0.5)
    assert all(torch.equal(a, t) for a, t in zip(engine.states, target)) and not snaps.fading
    snaps.update(engine, 1.0)  # idle


def test_snapshot_of_another_size_is_refused(model, engine, caplog):
    snaps = SnapshotBank()
    snaps.store(engine, 0)
    bigger = FeedbackEngine(model, 64, 40)
    before = [s.clone() for s in bigger.states]
    with caplog.at_level(logging.WARNING, logger="ffvj.presets"):
        assert snaps.recall(bigger, 0, seconds=1.0) is False
    assert "refused" in caplog.text and not snaps.fading
    assert all(torch.equal(a, b) for a, b in zip(bigger.states, before))
    with pytest.raises(ValueError, match="do not fit"):
        bigger.set_states(snaps.get(0))


def test_empty_and_bad_slots_are_logged_and_ignored(engine, caplog):
    snaps = SnapshotBank(slots=8)
    with caplog.at_level(logging.WARNING, logger="ffvj.presets"):
        assert snaps.recall(engine, 3) is False
        assert snaps.recall(engine, 8) is False
        assert snaps.store(engine, -1) is False
    assert "slot 3 is empty" in caplog.text and "not in 0..7" in caplog.text
    with pytest.raises(ValueError):
        SnapshotBank(slots=0)


def test_snapshot_bank_saves_and_loads_with_safetensors(engine, tmp_path):
    snaps = SnapshotBank()
    snaps.store(engine, 0)
    engine.reset()
    snaps.store(engine, 5)
    path = snaps.save(tmp_path / "bank.safetensors")
    other = SnapshotBank()
    assert other.load(path) == [0, 5]
    for slot in (0, 5):
        assert all(torch.equal(a, b) for a, b in zip(other.get(slot), snaps.get(slot)))
    assert other.recall(engine, 0)
    (tmp_path / "junk.safetensors").write_bytes(b"not a tensor file")
    with pytest.raises(SnapshotError, match="junk.safetensors"):
        other.load(tmp_path / "junk.safetensors")
    with pytest.raises(SnapshotError, match="slot 5 does not fit"):
        SnapshotBank(slots=4).load(path)


def test_fp32_snapshots_crossfade_into_a_half_precision_engine(model, tmp_path):
    """A bank saved from an fp32 show (or loaded from disk, always fp32) recalls and crossfades into
    an fp16 engine: the states take the engine's precision."""
    snaps = SnapshotBank()
    snaps.store(FeedbackEngine(model, W, H, seed=3), 2)
    half = FeedbackEngine(model, W, H, precision="fp16")
    assert snaps.recall(half, 2, seconds=1.0)
    snaps.update(half, 0.5)
    assert all(s.dtype == torch.float16 for s in half.states)
    snaps.update(half, 1.0)
    assert all(torch.allclose(a.float(), b, atol=1e-3) for a, b in zip(half.states, snaps.get(2)))


# --- actions ---------------------------------------------------------------------------------------

def test_action_dispatch(engine, store, bank):
    snaps = SnapshotBank()
    queue = ActionQueue()
    queue.post("snapshot.store", slot=1)
    for name, args in queue.drain():
        assert handle_action(name, args, engine, bank, snaps)
    assert handle_action("preset.save", {"name": "live"}, engine, bank, snaps)
    kept = [s.clone() for s in engine.states]
    store.set("drive", 3.0)
    assert handle_action("reset", {}, engine, bank, snaps)
    assert not all(torch.equal(a, b) for a, b in zip(engine.states, kept))
    queue.post("snapshot.recall", slot=1.0)  # OSC may send the slot as a float
    for name, args in queue.drain():
        assert handle_action(name, args, engine, bank, snaps)
    assert handle_action("preset.recall", {"name": "live"}, engine, bank, snaps)
    assert all(torch.equal(a, b) for a, b in zip(engine.states, kept))
    assert store.get("drive") == store.registry["drive"].default
    assert handle_action("snapshot.recall", {"slot": 1, "seconds": 1.0}, engine, bank, snaps) and snaps.fading
    store.set("drive", 3.0)
    assert handle_action("preset.recall", {"name": "live", "seconds": "0.5"}, engine, bank, snaps)
    assert bank.morphing
    assert handle_action("reset", {}, engine, bank, snaps) and not snaps.fading  # panic stops the fade


def test_action_queue_carries_a_name_argument(engine, bank):
    queue = ActionQueue()
    queue.post("preset.save", name="queued")
    assert queue.drain() == [("preset.save", {"name": "queued"})]


def test_bad_actions_are_logged_and_ignored(engine, store, bank, caplog):
    snaps = SnapshotBank()
    with caplog.at_level(logging.WARNING, logger="ffvj.presets"):
        assert handle_action("explode", {}, engine, bank, snaps) is False
        assert handle_action("snapshot.store", {"slot": "x"}, engine, bank, snaps) is False
        assert handle_action("snapshot.recall", {}, engine, bank, snaps) is False
        assert handle_action("preset.save", {"name": "../x"}, engine, bank, snaps) is False
        assert handle_action("preset.recall", {"name": "absent"}, engine, bank, snaps) is False
        assert handle_action("snapshot.store", {"slot": 0}, engine, bank, None) is False
    text = caplog.text
    assert "unknown action 'explode'" in text and "snapshot.store" in text and "bad preset name" in text
    assert "absent" in text and "no snapshot bank" in text


def test_two_taps_on_one_clock_tick_do_not_divide_by_zero():
    from ffvj.tempo import Tempo

    tempo = Tempo(100)
    tempo.tap(now=5.0)
    assert tempo.tap(now=5.0) == 100
