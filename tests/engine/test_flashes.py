"""The flash limiter on synthetic strobes and on the sine bound's period doubling."""

import torch

from ffvj.control.params import ParamStore, build_registry
from ffvj.phi import BOUNDS, Phi
from ffvj.engine.engine import FeedbackEngine
from ffvj.engine.flashes import BUDGET, FlashLimiter, FlashTracker, max_flashes
from ffvj.model.net import FeatureAutoencoder, ModelConfig

H, W = 48, 64


def flat(value: float, red: bool = False) -> torch.Tensor:
    picture = torch.full((1, 3, H, W), value)
    if red:
        picture[:, 1:] = -1.0
    return picture


def shown_flashes(frames, fps=30, enabled=True):
    limiter, check = FlashLimiter(fps), FlashTracker(fps)
    general, red = [], []
    for picture in frames:
        g, r = check.add(limiter.limit(picture, enabled))
        general.append(g)
        red.append(r)
    return max_flashes(general, fps), max_flashes(red, fps), limiter


def test_a_full_frame_strobe_is_kept_within_three_flashes_a_second():
    strobe = [flat(1.0 if i % 2 else -1.0) for i in range(90)]  # 15 Hz black/white at 30 fps
    general, red, limiter = shown_flashes(strobe)
    assert general <= BUDGET and limiter.limited > 0
    raw, _, _ = shown_flashes(strobe, enabled=False)
    assert raw == 15.0  # off, it passes untouched


def test_a_red_strobe_is_limited_too():
    strobe = [flat(1.0 if i % 2 else -0.6, red=True) for i in range(90)]
    general, red, limiter = shown_flashes(strobe)
    assert red <= BUDGET and general <= BUDGET and limiter.limited > 0


def test_slow_change_and_a_few_flashes_pass_untouched():
    ramp = [flat(-1.0 + 2.0 * i / 89) for i in range(90)]
    _, _, limiter = shown_flashes(ramp)
    assert limiter.limited == 0
    two_a_second = [flat(1.0 if (i // 8) % 2 else -1.0) for i in range(90)]  # ~1.9 flashes per second
    general, _, limiter = shown_flashes(two_a_second)
    assert limiter.limited == 0 and 1.5 <= general <= BUDGET


def test_the_limiter_never_touches_the_feedback():
    limiter = FlashLimiter(30)
    pictures = [flat(1.0 if i % 2 else -1.0) for i in range(40)]
    kept = [p.clone() for p in pictures]
    for p in pictures:
        limiter.limit(p)
    assert all(torch.equal(a, b) for a, b in zip(pictures, kept))


def test_the_sine_bounds_period_doubling_reaches_the_audience_tamed():
    """Drive ≥ 1.4 on the sine bound period-doubles into a full-frame flicker; the output stays safe."""
    torch.manual_seed(0)
    engine = FeedbackEngine(FeatureAutoencoder(ModelConfig(channels=(3, 6, 8, 10))).eval(), W, H, seed=0)
    engine.guard.patience = 10**9
    phi = ParamStore(build_registry(3)).advance(0)
    phi.update({"bound": float(BOUNDS.index("sine")), "drive": 4.0, "input.mix": 0.0})
    frames = []
    for _ in range(90):
        engine.step(Phi.of(phi))
        frames.append(engine.states[0].clone())
    raw, _, _ = shown_flashes(frames, enabled=False)
    general, red, limiter = shown_flashes(frames)
    assert raw > BUDGET  # the loop itself strobes
    assert general <= BUDGET and red <= BUDGET and limiter.limited > 0


def test_what_the_sinks_get_is_counted_by_the_same_rules_as_the_limiter():
    """A chaotic picture whose changes sit at the thresholds: the limiter decides on the 8-bit codes the
    sinks receive, so a viewer counting those codes (as ``ffvj look`` does) finds the budget kept."""
    from ffvj.engine import pixfmt
    from ffvj.look.measures import FlashCounter

    rng = torch.Generator().manual_seed(1)
    # Half the pixels (52 %) blink up and down every frame by about the general step (ΔL = 0.1 from mid-grey is
    # +0.19 here), each by its own amount: about a quarter of the frame makes the step, give or take
    # rounding.
    blinking = torch.rand(1, 1, H, W, generator=rng) < 0.52
    bright = 0.19 + 0.01 * torch.randn(1, 1, H, W, generator=rng)
    frames = []
    for k in range(150):
        level = torch.where(blinking & (k % 2 == 1), bright, torch.zeros_like(bright))
        frames.append((level + 0.003 * torch.randn(1, 1, H, W, generator=rng)).expand(1, 3, H, W).clone())
    limiter, viewer, general = FlashLimiter(30), FlashCounter(30), []
    for picture in frames:
        codes = pixfmt.convert(limiter.limit(picture), pixfmt.RGB24).numpy()
        general.append(viewer.add(codes)[0])
    raw = []
    unlimited = FlashCounter(30)
    for picture in frames:
        raw.append(unlimited.add(pixfmt.convert(picture, pixfmt.RGB24).numpy())[0])
    assert max_flashes(raw, 30) > BUDGET  # the input does flash
    assert max_flashes(general, 30) <= BUDGET
