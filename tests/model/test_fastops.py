"""The model's fast path: fused encoder/decoder kernels and FastPath, equal to the plain modules."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ffvj.control.params import ParamStore, build_registry
from ffvj.engine.delta import StepInputs, reference_step
from ffvj.engine.engine import FeedbackEngine
from ffvj.model import fastops
from ffvj.model.net import FeatureAutoencoder, ModelConfig
from ffvj.phi import Phi


def test_fast_tanh_forms_match_torch():
    x = torch.linspace(-12, 12, 20001)
    assert (fastops.rational_tanh(x) - torch.tanh(x)).abs().max() < 1e-6
    assert (fastops.tanh_via_sigmoid(x) - torch.tanh(x)).abs().max() < 1e-6
    y = torch.randn(1, 6, 10, 14) * 3
    ref = F.avg_pool2d(torch.tanh(y), 2)
    assert torch.allclose(fastops.tanh_avgpool_eager(y.clone()), ref, atol=1e-6)
    assert torch.allclose(fastops.tanh_avgpool_fused(y.clone()), ref, atol=1e-6)
    assert torch.allclose(fastops.tanh_maxpool(y), F.max_pool2d(torch.tanh(y), 2), atol=1e-6)


@pytest.mark.parametrize("channels_last", [True, False])
def test_layout_kernels_equal_torch(channels_last):
    """The fast path's pooling, pixel shuffle and doubled-weight tail give torch's results, on a
    channels-last tensor (their fast path) and on a plain one (their fallback)."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    y = (torch.randn(1, 12, 10, 14) * 3).contiguous(memory_format=fmt)
    assert torch.allclose(fastops.sum_pool2(y), F.avg_pool2d(y, 2) * 4, atol=1e-5)
    assert torch.allclose(fastops.tanh_avgpool_doubled(y.clone() * 2), F.avg_pool2d(torch.tanh(y), 2), atol=1e-6)
    for pad in (1, 2):
        assert torch.equal(fastops.replicate_pad_channels_last(y, pad), F.pad(y, (pad,) * 4, mode="replicate"))
        assert fastops.replicate_pad_channels_last(y, pad).is_contiguous(memory_format=torch.channels_last)
    for channels in (12, 48):  # 3 output channels: the reshaping copy; 12: the built-in shuffle
        z = torch.randn(1, channels, 5, 7).contiguous(memory_format=fmt)
        assert torch.equal(fastops.pixel_shuffle2(z), F.pixel_shuffle(z, 2))


@pytest.mark.parametrize("decoder", ["smooth", "subpixel", "upconv", "interp"])
@pytest.mark.parametrize("pooling", ["avg", "max"])
def test_fast_path_equals_the_model(pooling, decoder):
    """γ and γ⁻¹ of FastPath equal the model's own encode and decode (odd sizes too), in the engine's layouts."""
    torch.manual_seed(0)
    model = FeatureAutoencoder(ModelConfig(channels=(3, 6, 8, 10), pooling=pooling, decoder=decoder)).eval()
    fast = model.fast()
    with torch.no_grad():
        states = model.encode_all(torch.rand(1, 3, 29, 45) * 2 - 1)
        for lvl in range(model.levels):
            assert torch.allclose(fast.encode(lvl, states[lvl]), model.encode(lvl, states[lvl]), atol=1e-5)
            size = tuple(states[lvl].shape[-2:])
            out = fast.decode(lvl, states[lvl + 1], size)
            assert torch.allclose(out, model.decode(lvl, states[lvl + 1], size), atol=1e-5)
            if lvl == 0 and decoder != "upconv":
                assert out.stride(-1) == 1  # the picture: plain (N, C, H, W) rows, as sources and sinks want it


@pytest.mark.slow
def test_compiled_engine_matches_the_reference(caplog):
    """torch.compile'd kernels match the oracle; where inductor cannot build, the fallback is logged."""
    torch.manual_seed(0)
    model = FeatureAutoencoder(ModelConfig(channels=(3, 6, 8, 10))).eval()
    engine = FeedbackEngine(model, 40, 24, compile=True)
    phi = ParamStore(build_registry(model.levels)).advance(0)
    source = torch.rand(1, 3, 24, 40) * 2 - 1
    engine.reset(source)  # seeded from the source, as a show's first frame is
    states = [s.clone() for s in engine.states]
    for i in range(4):
        states = reference_step(model, states, StepInputs(Phi.of(phi), source, None, i, torch.Generator()))
        engine.step(Phi.of(phi), source)
    for a, b in zip(engine.states, states):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-5)
    assert np.isfinite(engine.readback()).all()
    fell_back = any("torch.compile of" in r.getMessage() for r in caplog.records)
    if fell_back:
        pytest.skip("inductor could not compile here; the eager fallback matched and said why")


def test_the_smooth_decoders_filter_leaves_no_two_pixel_pattern():
    torch.manual_seed(0)
    y, x = torch.meshgrid(torch.arange(16), torch.arange(24), indexing="ij")
    checker = ((x + y) % 2 * 2 - 1).float()[None, None].expand(1, 3, -1, -1)
    smooth = torch.rand(1, 3, 16, 24)
    out = fastops.binomial3(smooth + checker)
    assert torch.allclose(out[..., 1:-1, 1:-1], fastops.binomial3(smooth)[..., 1:-1, 1:-1], atol=1e-6)
    plain = F.conv2d(F.pad(smooth, (1, 1, 1, 1), mode="replicate"),
                     (torch.tensor([1.0, 2, 1])[:, None] * torch.tensor([1.0, 2, 1])[None] / 16).expand(3, 1, 3, 3),
                     groups=3)
    assert torch.allclose(fastops.binomial3(smooth), plain, atol=1e-6)  # the same filter as a convolution
    cl = smooth.contiguous(memory_format=torch.channels_last)
    assert torch.allclose(fastops.binomial3(cl), plain, atol=1e-6)
