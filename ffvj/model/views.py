"""Level views: a feature level shown as a picture, for a sink of its own (``--sink l2:ndi:ffvj-l2``).

The projection belongs to the model (it is fitted on its codes and kept in its card); the engine
applies it (``FeedbackEngine.view``).

A level's C channels are projected to RGB by a fixed linear map: its first three principal components
over natural pictures (``fit``, run by ``ffvj train`` and ``ffvj model views``, stored in the model
card as ``views``), each scaled by 2.5 standard deviations so the training data's codes fill most of
[−1, 1], then clamped and resized (bilinear) to the show's size. Fixed, so a colour on the view means the
same feature from frame to frame; principal components, so the view shows as much of what the level
holds as three channels can. A card without views gets the level's first three channels (``fallback``).

The picture itself is level 0; its view is the picture.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

SPREAD = 2.5  # standard deviations of a component mapped to ±1


@dataclass(frozen=True)
class LevelView:
    """RGB = clamp(((h − mean) · components) / (SPREAD · std), −1, 1), per pixel."""

    mean: tuple[float, ...]  # (C,)
    components: tuple[tuple[float, ...], ...]  # 3 × C, unit rows
    std: tuple[float, float, float]  # each component's standard deviation on the fitting data

    def to_dict(self) -> dict:
        return {"mean": [round(v, 6) for v in self.mean], "components": [[round(v, 6) for v in row]
                                                                          for row in self.components],
                "std": [round(v, 6) for v in self.std]}

    @classmethod
    def from_dict(cls, d: dict, channels: int) -> "LevelView":
        mean, comps, std = d["mean"], d["components"], d["std"]
        if len(mean) != channels or len(comps) != 3 or any(len(r) != channels for r in comps) or len(std) != 3:
            raise ValueError(f"a level view for {channels} channels needs a mean of {channels}, 3 components of "
                             f"{channels} and 3 deviations")
        return cls(tuple(map(float, mean)), tuple(tuple(map(float, r)) for r in comps),
                   tuple(max(float(v), 1e-6) for v in std))

    def matrix(self, device, dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """(3, C) weights and (3,) offsets of the projection as one affine map."""
        comps = torch.tensor(self.components, dtype=torch.float64)
        weights = comps / (SPREAD * torch.tensor(self.std, dtype=torch.float64))[:, None]
        offset = -(weights @ torch.tensor(self.mean, dtype=torch.float64))
        return weights.to(device, dtype), offset.to(device, dtype)


def fallback(channels: int) -> LevelView:
    """The first three channels (repeated when fewer), each spread as if its deviation were ⅓."""
    rows = tuple(tuple(1.0 if c == k % channels else 0.0 for c in range(channels)) for k in range(3))
    return LevelView((0.0,) * channels, rows, (1 / 3, 1 / 3, 1 / 3))


@torch.no_grad()
def fit(states: torch.Tensor) -> LevelView:
    """Principal components of one level's codes, (N, C, H, W) over natural pictures."""
    x = states.permute(0, 2, 3, 1).reshape(-1, states.shape[1]).double()
    mean = x.mean(0)
    centred = x - mean
    # The covariance's eigenvectors, largest first; each one's sign fixed (largest entry positive) so a
    # refit on other crops does not flip a colour.
    values, vectors = torch.linalg.eigh(centred.T @ centred / max(1, x.shape[0] - 1))
    order = values.argsort(descending=True)
    comps = []
    for k in range(3):
        if k < len(order):
            v = vectors[:, order[k]]
            v = v * torch.sign(v[v.abs().argmax()])
            comps.append(v)
        else:  # fewer than 3 channels: repeat the first component
            comps.append(comps[0])
    comps_t = torch.stack(comps)
    std = (centred @ comps_t.T).std(0).clamp_min(1e-6)  # a direction the codes never move in: no division by 0
    return LevelView(tuple(mean.tolist()), tuple(tuple(r.tolist()) for r in comps_t), tuple(std.tolist()))


def project(state: torch.Tensor, projection: tuple[torch.Tensor, torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
    """Level ``state`` (1, C, h, w) as a (1, 3, H, W) picture in [−1, 1] at ``size`` (H, W), plain layout;
    ``projection`` is a view's ``matrix`` on the state's device and dtype (made once, used every frame)."""
    weights, offset = projection
    rgb = torch.einsum("kc,nchw->nkhw", weights, state) + offset[None, :, None, None]
    rgb = rgb.clamp_(-1, 1)
    if tuple(rgb.shape[-2:]) != tuple(size):
        rgb = F.interpolate(rgb, size=size, mode="bilinear", align_corners=False).clamp_(-1, 1)
    return rgb.contiguous()
