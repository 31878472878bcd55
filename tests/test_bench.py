"""The benchmark's report and the fast kernels it measures (never timings: those are the bench's job)."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ffvj import kernels
from ffvj.cli import main
from ffvj.engine import FeedbackEngine, StepInputs, reference_step
from ffvj.model import FeatureAutoencoder, ModelConfig
from ffvj.params import ParamStore, build_registry


def test_bench_json_has_the_promised_keys(capsys):
    assert main(["bench", "--size", "64x48", "--frames", "4", "--no-end-to-end", "--json", "--device", "cpu"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert {"engine_fps", "reference_fps", "speedup", "size", "device"} <= set(r)
    assert r["size"] == "64x48" and r["device"] == "cpu" and r["engine_fps"] > 0 and r["reference_fps"] > 0
    assert [row["level"] for row in r["levels"]] == [0, 1, 2, 3]
    assert r["floor"]["floor_ms"] > 0 and r["floor"]["flops"] > 0 and r["peak_memory_mb"] > 0


def test_bench_runs_a_half_precision_engine_against_the_fp32_reference(capsys):
    assert main(["bench", "--size", "64x48", "--frames", "3", "--no-end-to-end", "--json", "--precision", "fp16"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["precision"] == "fp16" and r["engine_fps"] > 0 and r["reference_fps"] > 0
    assert main(["bench", "--size", "64x48", "--frames", "3", "--no-end-to-end", "--json"]) == 0
    fp32 = json.loads(capsys.readouterr().out)
    assert fp32["precision"] == "fp32"
    assert r["floor"]["bytes"] < fp32["floor"]["bytes"]  # half the bytes per state element


def test_fast_tanh_forms_match_torch():
    x = torch.linspace(-12, 12, 20001)
    assert (kernels.rational_tanh(x) - torch.tanh(x)).abs().max() < 1e-6
    assert (kernels.tanh_via_sigmoid(x) - torch.tanh(x)).abs().max() < 1e-6
    y = torch.randn(1, 6, 10, 14) * 3
    ref = F.avg_pool2d(torch.tanh(y), 2)
    assert torch.allclose(kernels.tanh_avgpool_eager(y.clone()), ref, atol=1e-6)
    assert torch.allclose(kernels.tanh_avgpool_fused(y.clone()), ref, atol=1e-6)
    assert torch.allclose(kernels.tanh_maxpool(y), F.max_pool2d(torch.tanh(y), 2), atol=1e-6)


@pytest.mark.parametrize("channels_last", [True, False])
def test_layout_kernels_equal_torch(channels_last):
    """The engine's own pooling, pixel shuffle and doubled-weight tail give torch's results, on a
    channels-last tensor (their fast path) and on a plain one (their fallback)."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    y = (torch.randn(1, 12, 10, 14) * 3).contiguous(memory_format=fmt)
    assert torch.allclose(kernels.sum_pool2(y), F.avg_pool2d(y, 2) * 4, atol=1e-5)
    assert torch.allclose(kernels.tanh_avgpool_doubled(y.clone() * 2), F.avg_pool2d(torch.tanh(y), 2), atol=1e-6)
    for pad in (1, 2):
        assert torch.equal(kernels.replicate_pad_channels_last(y, pad), F.pad(y, (pad,) * 4, mode="replicate"))
        assert kernels.replicate_pad_channels_last(y, pad).is_contiguous(memory_format=torch.channels_last)
    for channels in (12, 48):  # 3 output channels: the reshaping copy; 12: the built-in shuffle
        z = torch.randn(1, channels, 5, 7).contiguous(memory_format=fmt)
        assert torch.equal(kernels.pixel_shuffle2(z), F.pixel_shuffle(z, 2))


@pytest.mark.parametrize("height", [12, 13])
def test_banded_grid_sample_is_identical(height):
    """Bands of rows sampled as a batch give the very same picture (an odd height: one call)."""
    torch.manual_seed(0)
    x = torch.rand(1, 3, height, 20) * 2 - 1
    grid = torch.rand(1, height, 20, 2) * 2.4 - 1.2  # some points outside: reflection at work
    options = dict(mode="bilinear", padding_mode="reflection", align_corners=False)
    for bands in (1, 2, 4):
        assert torch.equal(kernels.grid_sample_in_bands(x, grid, bands, **options), F.grid_sample(x, grid, **options))
        assert torch.allclose(kernels.grid_sample_in_bands(x, grid, bands, scale=0.7, **options),
                              F.grid_sample(x, grid, **options) * 0.7, rtol=0, atol=1e-7)
    planar = grid[0].permute(2, 0, 1).contiguous().permute(1, 2, 0)[None]  # the engine's strided grid
    assert torch.equal(kernels.grid_sample_in_bands(x, planar, 2, **options), F.grid_sample(x, grid, **options))


@pytest.mark.parametrize("pooling", ["avg", "max"])
def test_engine_encode_equals_the_model(pooling):
    torch.manual_seed(0)
    model = FeatureAutoencoder(ModelConfig(channels=(3, 6, 8, 10), pooling=pooling)).eval()
    engine = FeedbackEngine(model, 45, 29)
    with torch.no_grad():
        for lvl in range(model.levels):
            h = engine.states[lvl]
            assert torch.allclose(engine._encode(lvl, h), model.encode(lvl, h), atol=1e-5)


def test_compiled_engine_matches_the_reference(caplog):
    """torch.compile'd kernels match the oracle; where inductor cannot build, the fallback is logged."""
    torch.manual_seed(0)
    model = FeatureAutoencoder(ModelConfig(channels=(3, 6, 8, 10))).eval()
    engine = FeedbackEngine(model, 40, 24, compile=True)
    phi = ParamStore(build_registry(model.levels)).frame(0)
    states = [s.clone() for s in engine.states]
    source = torch.rand(1, 3, 24, 40) * 2 - 1
    for i in range(4):
        states = reference_step(model, states, StepInputs(phi, source, None, i, torch.Generator()))
        engine.step(phi, source)
    for a, b in zip(engine.states, states):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-5)
    assert np.isfinite(engine.readback()).all()
    fell_back = any("torch.compile of" in r.getMessage() for r in caplog.records)
    if fell_back:
        pytest.skip("inductor could not compile here; the eager fallback matched and said why")
