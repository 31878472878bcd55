"""Snapshots: every level's feedback state, stored, recalled and crossfaded in feature space."""

import logging

import pytest
import torch

from ffvj.control.params import ParamStore, build_registry
from ffvj.control.snapshots import SnapshotBank
from ffvj.engine.delta import StepInputs, reference_step
from ffvj.engine.engine import FeedbackEngine
from ffvj.model.net import FeatureAutoencoder, ModelConfig
from ffvj.phi import Phi

W, H = 45, 29


@pytest.fixture
def model():
    torch.manual_seed(0)
    return FeatureAutoencoder(ModelConfig(channels=(3, 6, 8, 10))).eval()


@pytest.fixture
def engine(model):
    e = FeedbackEngine(model, W, H)
    e.guard.patience = 10**9  # tiny random models may flatten; these tests are about states, not looks
    return e


def phi_defaults(model) -> dict:
    return ParamStore(build_registry(model.levels)).advance(0)


def test_snapshot_store_and_recall_are_exact_and_copies(engine, model):
    snaps = SnapshotBank()
    phi = phi_defaults(model)
    assert snaps.store(engine, 2) and snaps.occupied() == [2]
    kept = [s.clone() for s in engine.states]
    for _ in range(3):
        engine.step(Phi.of(phi))
    assert not all(torch.equal(a, b) for a, b in zip(engine.states, kept))
    assert snaps.recall(engine, 2)
    assert all(torch.equal(a, b) for a, b in zip(engine.states, kept))
    assert all(a is not b for a, b in zip(engine.states, snaps.get(2)))  # the slot is not aliased
    engine.step(Phi.of(phi))
    assert all(torch.equal(a, b) for a, b in zip(snaps.get(2), kept))  # stepping left the slot alone


def test_recall_invalidates_the_decode_cache(engine, model):
    """After a recall the engine computes exactly the formula from the recalled states."""
    snaps = SnapshotBank()
    phi = phi_defaults(model)
    engine.step(Phi.of(phi))
    snaps.store(engine, 0)
    engine.reset()  # new states
    engine.step(Phi.of(phi))
    engine.step(Phi.of(phi))  # level 0 now holds a cached decode of level 1
    snaps.recall(engine, 0)
    prev = [s.clone() for s in engine.states]
    expected = reference_step(model, prev, StepInputs(Phi.of(phi), frame_index=engine.frame_index))
    engine.step(Phi.of(phi))
    for a, b in zip(engine.states, expected):
        assert torch.allclose(a, b, atol=1e-5)


def held(model) -> dict:
    """φ with every level frozen: a step changes nothing itself, so what moves is the crossfade alone."""
    phi = phi_defaults(model)
    return dict(phi, **{f"l{lvl}.freeze": 1.0 for lvl in range(model.levels + 1)})


def test_crossfade_blends_by_smoothstep_and_ends_exactly_on_the_snapshot(engine, model):
    snaps = SnapshotBank(slots=4)
    snaps.store(engine, 1)
    target = [s.clone() for s in snaps.get(1)]
    engine.reset()
    live = [s.clone() for s in engine.states]
    assert snaps.recall(engine, 1, seconds=2.0) and engine.fading
    assert all(torch.equal(a, b) for a, b in zip(engine.states, live))  # nothing happens before a step
    engine.step(Phi.of(held(model)), dt=1.0)  # the midpoint: weight smoothstep(½) = ½
    assert all(torch.equal(a, torch.lerp(l, t, 0.5)) for a, l, t in zip(engine.states, live, target))
    engine.step(Phi.of(phi_defaults(model)), dt=0.5)  # the feedback keeps running during the fade
    engine.step(Phi.of(phi_defaults(model)), dt=0.5)
    assert all(torch.equal(a, t) for a, t in zip(engine.states, target)) and not engine.fading
    assert all(a is not t for a, t in zip(engine.states, snaps.get(1)))  # the slot is not aliased


def test_snapshot_of_another_size_is_refused(model, engine, caplog):
    snaps = SnapshotBank()
    snaps.store(engine, 0)
    bigger = FeedbackEngine(model, 64, 40)
    before = [s.clone() for s in bigger.states]
    with caplog.at_level(logging.WARNING, logger="ffvj.control.snapshots"):
        assert snaps.recall(bigger, 0, seconds=1.0) is False
    assert "refused" in caplog.text and not bigger.fading
    assert all(torch.equal(a, b) for a, b in zip(bigger.states, before))
    with pytest.raises(ValueError, match="do not fit"):
        bigger.set_states(snaps.get(0))


def test_empty_and_bad_slots_are_logged_and_ignored(engine, caplog):
    snaps = SnapshotBank(slots=8)
    with caplog.at_level(logging.WARNING, logger="ffvj.control.snapshots"):
        assert snaps.recall(engine, 3) is False
        assert snaps.recall(engine, 8) is False
        assert snaps.store(engine, -1) is False
    assert "slot 3 is empty" in caplog.text and "not in 0..7" in caplog.text
    with pytest.raises(ValueError):
        SnapshotBank(slots=0)


def test_fp32_snapshots_crossfade_into_a_half_precision_engine(model):
    """A bank stored from an fp32 show recalls and crossfades into an fp16 engine: the states take
    the engine's precision."""
    snaps = SnapshotBank()
    snaps.store(FeedbackEngine(model, W, H, seed=3), 2)
    half = FeedbackEngine(model, W, H, precision="fp16")
    assert snaps.recall(half, 2, seconds=1.0)
    half.step(Phi.of(held(model)), dt=0.5)
    assert all(s.dtype == torch.float16 for s in half.states)
    half.step(Phi.of(held(model)), dt=1.0)
    assert all(torch.allclose(a.float(), b, atol=1e-3) for a, b in zip(half.states, snaps.get(2)))
