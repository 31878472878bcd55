import pytest
import torch

from ffvj.model.net import FeatureAutoencoder, ModelConfig


@pytest.mark.parametrize("height,width", [(64, 64), (37, 53), (1, 1), (9, 640), (45, 80)])
def test_every_level_keeps_the_ceil_size_at_any_frame_size(small_model, height, width):
    x = torch.rand(2, 3, height, width) * 2 - 1
    sizes = small_model.level_sizes(height, width)
    states = small_model.encode_all(x)
    assert [tuple(s.shape[-2:]) for s in states] == sizes
    assert [s.shape[1] for s in states] == list(small_model.channels)
    for level in range(small_model.levels):
        back = small_model.decode(level, states[level + 1], size=sizes[level])
        assert back.shape == states[level].shape


@pytest.mark.parametrize("height,width", [(31, 47), (360, 640), (17, 18)])
def test_round_trip_returns_the_input_size(small_model, height, width):
    x = torch.rand(1, 3, height, width) * 2 - 1
    for depth in range(1, small_model.levels + 1):
        assert small_model.reconstruct(x, depth).shape == x.shape


def test_decode_without_size_doubles():
    model = FeatureAutoencoder(ModelConfig(channels=(3, 4, 5), decoder="upconv"))
    h = torch.zeros(1, 5, 7, 9)
    assert model.decode(1, h).shape == (1, 4, 14, 18)


def test_odd_sizes_are_replicate_padded_not_zero_padded():
    # A constant picture must stay constant through encode at an odd size: zero padding would darken
    # the last row/column, and a feedback loop would grow that edge into a frame.
    model = FeatureAutoencoder(ModelConfig(channels=(3, 4)))
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(0.1)
        h = model.encode(0, torch.full((1, 3, 7, 5), 0.5))
    assert torch.allclose(h, h[..., :1, :1].expand_as(h))


def test_channels_and_levels_are_public():
    model = FeatureAutoencoder(ModelConfig(channels=(3, 12, 24, 48)))
    assert model.levels == 3 and model.channels == (3, 12, 24, 48)


@pytest.mark.parametrize("bad", [dict(channels=(3,)), dict(kernel_size=2), dict(activation="gelu"),
                                 dict(pooling="median"), dict(decoder="magic")])
def test_bad_config_names_the_problem(bad):
    with pytest.raises(ValueError):
        ModelConfig(**bad)


def test_config_round_trips_through_a_dict():
    cfg = ModelConfig(channels=(3, 8, 16), activation="relu", pooling="avg", decoder="upconv")
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown model config keys"):
        ModelConfig.from_dict({**cfg.to_dict(), "dropout": 0.1})


def test_the_interp_decoder_is_bilinear_then_a_convolution_at_the_sub_pixel_cost():
    """interp computes upconv's function (bilinear ×2, then the 3×3 kernel at the fine size) as four
    phase kernels at the coarse size: the same parameters give the same pictures, borders included."""
    import numpy as np

    torch.manual_seed(0)
    interp = FeatureAutoencoder(ModelConfig(decoder="interp")).eval()
    upconv = FeatureAutoencoder(ModelConfig(decoder="upconv")).eval()
    upconv.load_state_dict(interp.state_dict())  # the same parameters: one fine 3×3 kernel per decoder
    with torch.no_grad():
        for level, (c, h, w) in enumerate(((12, 23, 31), (24, 12, 16), (48, 6, 8))):
            x = torch.randn(1, c, h, w)
            assert torch.allclose(interp.decode(level, x), upconv.decode(level, x), atol=1e-5)
    with pytest.raises(ValueError, match="3×3"):
        ModelConfig(decoder="interp", kernel_size=5)
    assert np.isfinite(interp.decode(0, torch.zeros(1, 12, 4, 4)).detach().numpy()).all()
