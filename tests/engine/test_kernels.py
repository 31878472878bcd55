"""The engine's own kernels: the banded grid sampler."""

import pytest
import torch
import torch.nn.functional as F

from ffvj.engine import kernels


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
