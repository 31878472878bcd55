"""The output's colour grade: a gradient map by luminance, blended, never fed back."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from ffvj.control.controls import Controls
from ffvj.engine.grade import gradient_map, grade, stop_color
from ffvj.phi import GradePhi
from ffvj.show import RunConfig, run


def _grey(level01: float) -> torch.Tensor:
    return torch.full((1, 3, 4, 4), level01 * 2 - 1)


def _rgb01(t: torch.Tensor) -> np.ndarray:
    return ((t[0, :, 0, 0] + 1) / 2).numpy()


def test_black_mid_grey_and_white_take_the_maps_stops():
    dark, light = stop_color(240, 1.0, 0.75), stop_color(45, 0.8, 1.0)
    assert np.allclose(_rgb01(gradient_map(_grey(0.0), 240, 45, False, 1.0)), 0, atol=1e-6)
    assert np.allclose(_rgb01(gradient_map(_grey(0.5), 240, 45, False, 1.0)), dark, atol=1e-5)
    assert np.allclose(_rgb01(gradient_map(_grey(1.0), 240, 45, False, 1.0)), light, atol=1e-5)
    # A negative: white takes black, black the highlight colour.
    assert np.allclose(_rgb01(gradient_map(_grey(1.0), 240, 45, True, 1.0)), 0, atol=1e-6)
    assert np.allclose(_rgb01(gradient_map(_grey(0.0), 240, 45, True, 1.0)), light, atol=1e-5)


def test_the_map_keeps_the_pictures_order_of_brightness_and_its_range():
    ramp = torch.linspace(-1, 1, 64).view(1, 1, 1, 64).expand(1, 3, 8, 64).contiguous()
    out = gradient_map(ramp, 300, 170, False, 1.0)
    lum = (out[0, 0, 0] * 0.299 + out[0, 1, 0] * 0.587 + out[0, 2, 0] * 0.114)
    assert torch.all(lum[1:] >= lum[:-1] - 1e-6)
    assert out.min() >= -1 and out.max() <= 1


def test_mix_blends_and_zero_is_the_picture_itself():
    picture = torch.rand(1, 3, 8, 8) * 2 - 1
    off = GradePhi(mix=0.0, shadows=240, highlights=45, invert=False)
    assert grade(picture, off) is picture
    full = gradient_map(picture, 240, 45, False, 1.0)
    half = grade(picture, replace(off, mix=0.5))
    assert torch.allclose(half, (picture + full) / 2, atol=1e-6)


def test_the_grade_reaches_the_sinks_but_never_the_feedback():
    frames = {}
    for mix in (0.0, 1.0):
        controls = Controls.for_levels(3)
        for name, value in (("grade.mix", mix), ("grade.shadows", 300.0), ("grade.invert", 1)):
            assert controls.store.set(name, value)
        sent, states = [], []
        run(RunConfig(source="generator", sinks=["null"], width=64, height=48, frames=10, pace="offline", seed=1),
            controls=controls,
            on_frame=lambda slot, picture, source, engine: (sent.append(picture.copy()),
                                                            states.append(engine.readback())))
        frames[mix] = (sent, states)
    (plain, plain_states), (graded, graded_states) = frames[0.0], frames[1.0]
    assert all(np.array_equal(a, b) for a, b in zip(plain_states, graded_states))  # the loop is untouched
    assert np.abs(graded[-1].astype(int) - plain[-1]).mean() > 20  # the output is not


@pytest.mark.parametrize("name", ["ghost", "ink", "solar"])
def test_graded_presets_set_a_whole_grade(name):
    import tomllib

    from ffvj.control.presets import factory_presets_dir

    params = tomllib.loads((factory_presets_dir() / f"{name}.toml").read_text())["params"]
    assert params["grade.mix"] > 0
    assert {"grade.shadows", "grade.highlights", "grade.invert"} <= set(params)
