"""Level views (``model.views``): principal components fitted, projected, kept in the card."""

import pytest
import torch

from ffvj.model import checkpoint
from ffvj.model.views import SPREAD, LevelView, fallback, fit, project


def test_fit_finds_the_principal_directions_and_project_spreads_them():
    """Codes that vary mostly along one direction, then a second: the first component is that direction
    (sign fixed), its deviation measured; the projection puts ±SPREAD deviations at ±1 and clamps."""
    torch.manual_seed(0)
    a, b = torch.tensor([3.0, 4.0, 0.0, 0.0]) / 5, torch.tensor([0.0, 0.0, 1.0, 0.0])
    coeff = torch.randn(4000, 2) * torch.tensor([0.5, 0.1])
    codes = (coeff @ torch.stack([a, b]) + torch.tensor([0.1, 0.0, 0.2, 0.0]))
    states = codes.T.reshape(1, 4, 40, 100)
    view = fit(states)
    assert torch.allclose(torch.tensor(view.components[0]), a, atol=1e-2)
    assert torch.allclose(torch.tensor(view.components[1]).abs(), b, atol=1e-2)
    assert view.std[0] == pytest.approx(0.5, rel=0.05) and view.std[1] == pytest.approx(0.1, rel=0.05)
    rgb = project(states, view.matrix('cpu', states.dtype), (80, 200))
    assert rgb.shape == (1, 3, 80, 200) and rgb.abs().max() <= 1.0 and rgb.is_contiguous()
    native = project(states, view.matrix('cpu', states.dtype), (40, 100))
    assert native[0, 0].std().item() == pytest.approx(1 / SPREAD, rel=0.05)  # ±SPREAD deviations → ±1
    again = LevelView.from_dict(view.to_dict(), 4)
    assert torch.allclose(project(states, again.matrix('cpu', states.dtype), (40, 100)), project(states, view.matrix('cpu', states.dtype), (40, 100)), atol=1e-5)


def test_a_bad_view_entry_is_refused_and_a_missing_one_falls_back():
    with pytest.raises(ValueError, match="a level view for 12 channels needs a mean of 12"):
        LevelView.from_dict({"mean": [0.0] * 5, "components": [[0.0] * 12] * 3, "std": [1, 1, 1]}, 12)
    view = fallback(2)
    assert view.components == ((1.0, 0.0), (0.0, 1.0), (1.0, 0.0))


@pytest.mark.parametrize("name", ["default", "random", "crisp", "smooth"])
def test_every_bundled_card_has_a_view_per_feature_level(name):
    model, card = checkpoint.load(name)
    views = checkpoint.views(card)
    assert len(views) == model.levels
    for lvl, entry in enumerate(views, 1):
        LevelView.from_dict(entry, model.channels[lvl])
