"""The engine's own hot loops (the model's are in ``ffvj.model.kernels``).

``constant`` caches small per-device tensors; ``grid_sample_in_bands`` samples one picture on every
CPU core (PyTorch's CPU sampler uses one core for one picture).
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F


@functools.lru_cache(maxsize=32)
def constant(values: tuple[float, ...], device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """A small constant tensor made once per device: no host→device copy per frame on a GPU."""
    return torch.tensor(values, dtype=dtype, device=device)


def grid_sample_in_bands(x: torch.Tensor, grid: torch.Tensor, bands: int, scale: float | None = None,
                         **options) -> torch.Tensor:
    """``F.grid_sample(x, grid, **options)`` for one picture (N = 1), on ``bands`` cores.

    PyTorch's CPU grid sampler parallelises over the batch only, so a single picture runs on one
    core (1.9 ms at 640×360 on the development CPU, with 1 thread or 2). Split into bands of output
    rows and handed over as a batch of ``bands`` (the input expanded, not copied), it runs on all of
    them; the bands land back in one plain (1, C, H, W) tensor. Same arithmetic per pixel: the result
    is identical. Falls back to one call when H does not split evenly or N > 1. It pays for the
    3-channel picture (1.93 → 1.10 ms at 640×360); with 12 or more channels it is slower than one
    call (the sampler appears to copy the expanded input per band), so the engine uses it for the
    picture only. ``scale``, when
    given, multiplies the result in the same write that reassembles the bands."""
    n, c, h, w = x.shape
    if bands < 2 or n != 1 or h % bands:
        out = F.grid_sample(x, grid, **options)
        return out if scale is None else out.mul_(scale)
    banded = F.grid_sample(x.expand(bands, -1, -1, -1), grid.reshape(bands, h // bands, w, 2), **options)
    out = torch.empty((1, c, h, w), dtype=banded.dtype, device=banded.device)
    target = out[0].view(c, bands, h // bands, w).transpose(0, 1)
    if scale is None:
        target.copy_(banded)
    else:
        torch.mul(banded, scale, out=target)
    return out

