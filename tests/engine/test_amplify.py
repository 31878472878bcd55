"""Layer amplification (``engine.amplify``): the gradient, the closed forms, boundedness, the engine."""

import numpy as np
import pytest
import torch

from ffvj.control.params import ParamStore, build_registry
from ffvj.engine.amplify import (amplify, autograd_vjp, feature_gradient, feature_objective,
                                 objective_gradient, pull_prox, tv_energy, tv_step)
from ffvj.engine.engine import FeedbackEngine
from ffvj.model.net import FeatureAutoencoder, ModelConfig
from ffvj.phi import AmplifyPhi, Phi
from tests.helpers import PLAIN_LEVELS


@pytest.fixture
def model():
    torch.manual_seed(0)
    return FeatureAutoencoder(ModelConfig(channels=(3, 6, 8, 10))).eval().double()


def objective_at(model, x, encoders, s_in, s_out, knobs):
    a = x * s_in
    for e in encoders:
        a = e(a)
    return feature_objective(a / s_out, knobs)


@pytest.mark.parametrize("depth", [1, 2, 3])
def test_the_feature_gradient_matches_finite_differences(model, depth):
    """∂F/∂x through 1–3 real encoders, against central differences in float64 (a smooth objective: l2 only
    inside the clip, so no kink sits within a difference step)."""
    knobs = AmplifyPhi(depth=depth, l1=0.0, l2=1.0, clip=10.0)
    torch.manual_seed(1)
    x = torch.rand(1, 3, 9, 11, dtype=torch.float64) * 1.6 - 0.8
    encoders = model.encoders[:depth]
    grad = feature_gradient(autograd_vjp(model), range(depth), x, 1.0, 0.7, knobs).double()
    with torch.no_grad():
        for index in [(0, 0, 0, 0), (0, 1, 4, 5), (0, 2, 8, 10), (0, 1, 3, 7)]:
            e = torch.zeros_like(x)
            e[index] = 1e-5
            numeric = (objective_at(model, x + e, encoders, 1.0, 0.7, knobs)
                       - objective_at(model, x - e, encoders, 1.0, 0.7, knobs)) / 2e-5
            assert abs(numeric.item() - grad[index].item()) <= 1e-6 + 1e-4 * abs(numeric.item()), index


@pytest.mark.parametrize("size", [(9, 11), (16, 24), (10, 7)])
@pytest.mark.parametrize("depth", [1, 2])
def test_the_fast_paths_closed_form_gradient_matches_autograd(model, size, depth):
    """``FastPath.encode_vjp`` (tanh + average pooling in closed form: odd sizes, the replicate padding's
    adjoint, channels-last levels) against autograd through the model's own encoders, from the picture
    and from a feature level."""
    fast = model.fast()
    knobs = AmplifyPhi(depth=depth)
    torch.manual_seed(5)
    for level in (0, 1):
        x = torch.rand(1, model.channels[level], *size, dtype=torch.float64) * 1.6 - 0.8
        if level:
            x = x.contiguous(memory_format=torch.channels_last)
        top = min(level + depth, model.levels)
        ours = feature_gradient(fast.encode_vjp, range(level, top), x, 0.9, 0.6, knobs)
        theirs = feature_gradient(autograd_vjp(model), range(level, top), x, 0.9, 0.6, knobs)
        assert ours.shape == x.shape
        assert torch.allclose(ours, theirs, rtol=1e-9, atol=1e-14), (level, (ours - theirs).abs().max())


def test_the_objectives_gradient_matches_autograd():
    torch.manual_seed(6)
    alpha = (torch.randn(2, 5, 6, 7, dtype=torch.float64) * 0.6).requires_grad_(True)
    knobs = AmplifyPhi(l1=0.7, l2=0.4, clip=0.5)
    (theirs,) = torch.autograd.grad(feature_objective(alpha, knobs), alpha)
    assert torch.allclose(objective_gradient(alpha.detach(), knobs), theirs, atol=1e-15)


def test_the_tv_step_is_a_quarter_gradient_step_of_tv_energy():
    torch.manual_seed(2)
    d = torch.randn(2, 3, 7, 9, dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(tv_energy(d), d)
    for weight in (0.3, 1.0):
        assert torch.allclose(tv_step(d.detach(), weight), d.detach() - weight * 0.25 * grad, atol=1e-12)
    assert torch.equal(tv_step(d.detach(), 0), d.detach())  # 0: off


@pytest.mark.parametrize("weight", [0.1, 0.5, 1.0])
def test_the_pull_is_the_proximal_step_of_the_six_norm(weight):
    """prox(d) minimises ½(y − d)² + w·(c²/6)·Σ|y/c|⁶: autograd's gradient of that objective vanishes there;
    it is monotone in d, shrinks every value, and leaves small ones (|d| ≪ c) nearly alone."""
    c = 0.05
    d = torch.linspace(-12 * c, 12 * c, 2001, dtype=torch.float64)
    y = pull_prox(d, weight, c).requires_grad_(True)
    objective = 0.5 * (y - d).pow(2).sum() + weight * c * c / 6 * (y / c).abs().pow(6).sum()
    (grad,) = torch.autograd.grad(objective, y)
    assert grad.abs().max() < 2e-4 * c
    y = y.detach()
    assert (y.diff() >= 0).all() and (y.abs() <= d.abs()).all() and torch.equal(y.sign(), d.sign())
    small = d.abs() <= c / 4
    assert torch.allclose(y[small], d[small], rtol=weight * 0.25 ** 4 + 1e-9)  # w·(¼)⁴ at c/4


def test_a_step_raises_the_feature_objective(model):
    """The point of it: one small amplification step makes the features above respond more."""
    knobs = AmplifyPhi(tv=0.0, pull=0.0)
    torch.manual_seed(3)
    x = (torch.rand(1, 3, 32, 48, dtype=torch.float64) * 1.2 - 0.6)
    before = objective_at(model, x, model.encoders[:1], 1.0, 1.0, knobs)
    after = objective_at(model, amplify(model.fast().encode_vjp, model.levels, 0, x, 0.01, knobs, None, {}).double(), model.encoders[:1], 1.0, 1.0,
                         knobs)
    assert after > before * 1.001


def test_the_nudge_has_rms_step(model):
    """RMSProp makes the nudge's size the step whatever the model's gain (the lattice the pooling's blocks
    could leave is measured on the running loop by ``ffvj look``: docs/LOOKS.md)."""
    torch.manual_seed(4)
    x = torch.rand(1, 3, 64, 96, dtype=torch.float64) * 1.2 - 0.6
    knobs = AmplifyPhi(tv=0.0, pull=0.0)
    d = amplify(model.fast().encode_vjp, model.levels, 0, x, 0.02, knobs, None, {}).double() - x
    assert d.pow(2).mean().sqrt().item() == pytest.approx(0.02, rel=0.05)
    louder = FeatureAutoencoder(model.config).double().eval()
    louder.load_state_dict(model.state_dict())
    with torch.no_grad():
        louder.encoders[0].conv.weight.mul_(10)
    d10 = amplify(louder.fast().encode_vjp, louder.levels, 0, x, 0.02, knobs, None, {}).double() - x
    assert d10.pow(2).mean().sqrt().item() == pytest.approx(0.02, rel=0.05)


def test_the_nudge_has_no_mean_so_it_cannot_drift_the_exposure(model):
    """A constant part of the nudge would be added again every frame (the picture bleached to pale yellow):
    every channel's nudge averages to zero over the level, at every depth, while still raising the objective."""
    torch.manual_seed(5)
    x = torch.rand(1, 3, 48, 64, dtype=torch.float64) * 1.2 - 0.6  # inside ±1: no clamp at the edges
    for depth in (1, 2, 3):
        knobs = AmplifyPhi(depth=depth, tv=0.0, pull=0.0)
        gradient = feature_gradient(model.fast().encode_vjp, range(depth), x, 1.0, 1.0, knobs)
        assert gradient.mean(dim=(-2, -1)).abs().max() > 0.1 * gradient.pow(2).mean().sqrt()  # it had one
        d = amplify(model.fast().encode_vjp, model.levels, 0, x, 0.02, knobs, None, {}).double() - x
        assert d.mean(dim=(-2, -1)).abs().max() < 1e-4 * d.pow(2).mean().sqrt(), depth


def test_amplification_stays_bounded_at_every_level_and_depth(model):
    """The largest step on every level, every depth, 60 frames: every state finite and, once updated, within ±s."""
    model = model.float()
    engine = FeedbackEngine(model, 48, 32, scales=(1.0, 0.8, 0.6, 0.5))
    phi = ParamStore(build_registry(model.levels)).advance(0)
    for frame in range(60):
        phi.update({f"l{lvl}.amplify": 0.1 for lvl in range(model.levels)}, **{"amplify.depth": 1 + frame % 3})
        engine.step(Phi.of(phi))
        for lvl, s in enumerate(engine.states):
            assert torch.isfinite(s).all()
            if frame >= 8:  # every level has updated since the seed (whose encodings may reach 1 > s)
                assert s.abs().max() <= engine.scales[lvl] + 1e-5, (frame, lvl)


def test_amplification_changes_the_show_and_off_costs_nothing(model):
    """lℓ.amplify = 0 (the default below level 2) is bit-identical to an engine that never heard of it; on, the picture moves
    away from that run, and the energy memory is kept per amplified level."""
    model = model.float()
    phi = ParamStore(build_registry(model.levels)).advance(0)
    phi.update(PLAIN_LEVELS)
    plain, amplified = FeedbackEngine(model, 48, 32, seed=3), FeedbackEngine(model, 48, 32, seed=3)
    for _ in range(8):
        plain.step(Phi.of(dict(phi)))
        amplified.step(Phi.of(dict(phi, **{"l0.amplify": 0.06, "l1.amplify": 0.06})))
    assert set(amplified.amplify_memory) == {0, 1} and not plain.amplify_memory
    diff = np.abs(plain.readback().astype(int) - amplified.readback().astype(int)).mean()
    assert diff > 2.0


def test_amplification_at_60_percent_makes_a_held_out_pan_visibly_different(tmp_path):
    """The issue's measure, through the real show (offline): the bundled model on the held-out pan, every
    lℓ.amplify at 60 % of its range against the same run without; after 5 s the frames differ by ≥ 6
    8-bit levels on average, and the amplified run stays lively (never flat)."""
    from ffvj.look.report import _source
    from ffvj.show import RunConfig, run

    spec, options = _source("pan", tmp_path)
    fps, seconds = 30, 6
    registry = build_registry(3)
    sixty = {name: p.min + 0.6 * (p.max - p.min) for name, p in registry.items() if name.endswith(".amplify")}
    assert len(sixty) == 3  # l0, l1, l2: every level with a level above it
    frames = {}
    for label, settings in (("off", {}), ("on", sixty)):
        got = frames[label] = []
        run(RunConfig(source=spec, source_options=options, sinks=["null"], width=160, height=96, fps=fps,
                      frames=fps * seconds, pace="offline", settings=settings, status_interval=1e9),
            on_frame=lambda slot, picture, source, engine, got=got: got.append(picture.astype(np.float32))
            if slot >= 5 * fps else None)
    diff = np.mean([np.abs(a - b).mean() for a, b in zip(frames["off"], frames["on"])])
    assert diff >= 6.0, diff
    assert min(f.std() for f in frames["on"]) > 10  # not flat


@pytest.mark.parametrize("activation, pooling", [("tanh", "max"), ("elu", "avg")])
def test_encoders_without_a_closed_form_go_through_autograd(activation, pooling):
    """The fast path's fallback (``torch.func.vjp`` on detached weights, as for the bundled ``crisp``) gives
    the reference's gradient and leaves the weights' gradients alone."""
    torch.manual_seed(8)
    model = FeatureAutoencoder(ModelConfig(channels=(3, 5, 7), activation=activation, pooling=pooling)).double()
    x = torch.rand(1, 3, 12, 10, dtype=torch.float64) * 1.6 - 0.8
    knobs = AmplifyPhi(depth=2)
    ours = feature_gradient(model.fast().encode_vjp, range(0, 2), x, 1.0, 0.5, knobs)
    theirs = feature_gradient(autograd_vjp(model), range(0, 2), x, 1.0, 0.5, knobs)
    assert torch.allclose(ours, theirs, atol=1e-14)
    assert all(p.grad is None for p in model.parameters())


def test_the_jitter_moves_the_pooling_grids_over_every_offset():
    """Amplified through three encoders, the picture grew bars locked to the 8-pixel grid: each update
    now takes the gradient at another offset, and over a few dozen updates every offset comes up."""
    from ffvj.engine.amplify import jitter

    offsets = {jitter(frame, 0, 3) for frame in range(256)}
    assert offsets == {(dy, dx) for dy in range(8) for dx in range(8)}
    assert jitter(5, 1, 2) == jitter(5, 1, 2) and all(0 <= v < 4 for v in jitter(7, 2, 2))
    assert len({jitter(frame, 0, 3) for frame in range(8)}) >= 6  # not a slow sweep: neighbours differ
