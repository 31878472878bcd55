"""The pieces of Δ_φ as plain functions, and ``reference_step``: the formula, computed plainly.

    h_t^ℓ = Δ_φ( h_{t-1}^ℓ,  γ_{ℓ-1}(h_{t-1}^{ℓ-1}),  γ_ℓ⁻¹(h_{t-1}^{ℓ+1}) )

For every level ℓ that updates this frame (not frozen, and frame index divisible by its period)::

    own  = R_ℓ · blur(warp(h_{t-1}^ℓ))             zoom, rotation, drift and hue-driven warp, one resample;
                                                   R_ℓ turns the feature vectors (lℓ.turn, ℓ ≥ 1)
    pre  = (g_self·own + g_up·γ_{ℓ-1}(h_{t-1}^{ℓ-1}) + g_down·γ_ℓ⁻¹(h_{t-1}^{ℓ+1})) / (g_self + g_up + g_down)
    new  = s_ℓ · bound(drive · drive_ℓ · (pre + s_ℓ·noise) / s_ℓ)
    new  = lerp(new, h_{t-1}^ℓ, temporal)
    new  = amplify(new)                            layer amplification, where lℓ.amplify > 0 (``amplify``)
    ℓ=0: new = colour(new), then the source is injected (mix, or keyed by its luminance)

On the picture (ℓ = 0, s = 1) ``color.bound`` chooses what the bound acts on: its luminance, the colour
kept as it is within the gamut (``luma``, the default), or each channel (``rgb``: see ``bound_picture``).

The gains are normalised, so they set the *mix* of the three terms and ``drive`` alone sets the loop
gain: with drive ≈ 1 a consistent hierarchy is a fixed point, above 1 contrast grows until the bound
holds it. s_ℓ is level ℓ's natural scale (1 for the picture; for a feature level, how far its units
swing on natural pictures, measured when the model was trained and kept in its card): bounding every
level to ±s_ℓ keeps its state in the range its decoder learned from, and noise is relative to it.
Every level reads t-1 and writes t (double-buffered), so the update order never matters.

``reference_step`` is the plain, eager statement of the formula (no caches, no skipped work, no fused
kernels): the oracle the tests and the benchmark compare ``FeedbackEngine.step`` against.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ..model.fastops import binomial3
from ..model.net import FeatureAutoencoder
from ..phi import BOUNDS, MAP_KINDS, MapSpans, Phi, map_spans
from .amplify import amplify, autograd_vjp, jitter
from .kernels import constant


def bound(x: torch.Tensor, kind: str, drive: float = 1.0, scale: float = 1.0) -> torch.Tensor:
    """The bounding nonlinearity (the original experiment's set): keeps a state in [−scale, scale],
    as scale · f(drive · x / scale), so the slope at 0 is ``drive`` whatever the scale."""
    y = x * (drive / scale)
    if kind == "tanh":
        out = torch.tanh(y)
    elif kind == "sigmoid":  # logistic on the [0, 1] picture with slope 4: a steeper tanh
        out = torch.sigmoid(4.0 * y) * 2.0 - 1.0
    elif kind == "sine":  # folds overshoot back instead of flattening it
        out = torch.sin(y * (math.pi / 2))
    elif kind == "wrap":  # fract(): overshoot re-enters from the other side
        out = torch.remainder(y + 1.0, 2.0) - 1.0
    elif kind == "clamp":
        out = y.clamp(-1.0, 1.0)
    elif kind == "magnitude":  # per-pixel vector clamp: keeps hue/direction, limits length (RMS ≤ 1)
        rms = y.pow(2).mean(1, keepdim=True).sqrt()
        out = (y / rms.clamp_min(1.0)).clamp(-1.0, 1.0)
    else:
        raise ValueError(f"unknown bound {kind!r}; choose from {', '.join(BOUNDS)}")
    return out if scale == 1.0 else out * scale


def bound_picture(x: torch.Tensor, kind: str, drive: float, mode: str) -> torch.Tensor:
    """The picture's bound. ``rgb``: ``bound`` on each channel, so ``drive`` grows colour as it grows
    contrast and the loop burns toward fully saturated hues. ``luma``: ``bound`` on the luminance
    (Rec. 601 weights, as ``color_matrix``), and the chroma (the rest) kept as it is, only shortened
    where the gamut ends (the largest t ≤ 1 that keeps every channel in [−1, 1]): the hue never moves,
    and saturation grows only if something asks for it (``color.saturation``, the source).

    Per-pixel arithmetic on channel slices (a 1×1 convolution or a reduction over channels is 20× and
    15× slower on a CPU at 640×360)."""
    if mode == "rgb":
        return bound(x, kind, drive)
    r, g, b = x[:, 0:1], x[:, 1:2], x[:, 2:3]
    luma = torch.add(r * 0.299, g, alpha=0.587).add_(b, alpha=0.114)
    chroma = x - luma
    cr, cg, cb = chroma[:, 0:1], chroma[:, 1:2], chroma[:, 2:3]
    top = torch.maximum(torch.maximum(cr, cg), cb).clamp_(min=1e-12)  # ≥ 0: the chroma's weighted mean is 0
    bottom = torch.minimum(torch.minimum(cr, cg), cb).neg_().clamp_(min=1e-12)
    y = bound(luma, kind, drive)
    # y + t·c stays in [−1, 1] for t ≤ (1 − y)/max(c) and t ≤ (1 + y)/(−min(c)); |y| ≤ 1, so t ≥ 0.
    t = torch.minimum((1 - y).div_(top), (1 + y).div_(bottom)).clamp_(max=1.0)
    return torch.addcmul(y, t, chroma)


def color_matrix(hue_deg: float, saturation: float, perm: str, contrast: float) -> torch.Tensor:
    """One 3×3 matrix for permutation → hue rotation about the grey axis → saturation → contrast.

    Pictures are in [-1, 1], so mid-grey is 0 and all four are linear maps about it.
    """
    p = torch.zeros(3, 3, dtype=torch.float64)
    for out_ch, letter in enumerate(perm):
        p[out_ch, "rgb".index(letter)] = 1.0
    a = math.radians(hue_deg)
    k = torch.full((3, 3), 1.0 / 3.0, dtype=torch.float64)  # projection on the grey axis
    cross = torch.tensor([[0, -1, 1], [1, 0, -1], [-1, 1, 0]], dtype=torch.float64) / math.sqrt(3)
    rot = math.cos(a) * torch.eye(3, dtype=torch.float64) + math.sin(a) * cross + (1 - math.cos(a)) * k
    luma = torch.tensor([0.299, 0.587, 0.114], dtype=torch.float64).expand(3, 3)
    sat = saturation * torch.eye(3, dtype=torch.float64) + (1 - saturation) * luma
    return (contrast * sat @ rot @ p).float()


def feature_rotation(channels: int, degrees: float, device=None, dtype=torch.float32) -> torch.Tensor:
    """The (C, C) rotation ``lℓ.turn`` applies to a level's feature vectors: exp(θ·A) with A a fixed
    skew-symmetric matrix (from a generator seeded by C alone, so every show and the reference turn the
    same way), scaled so that its largest rotation plane turns by θ. Orthogonal: the features' energy is
    kept, only which learned features carry it changes."""
    g = torch.Generator().manual_seed(7919 * channels)
    a = torch.randn(channels, channels, generator=g, dtype=torch.float64)
    a = a - a.T
    a = a / torch.linalg.eigvals(a).abs().max()
    return torch.linalg.matrix_exp(a * math.radians(degrees)).to(device=device, dtype=dtype)


def turn_features(x: torch.Tensor, rotation: torch.Tensor) -> torch.Tensor:
    """Every feature vector of ``x`` (N, C, H, W) turned by ``rotation`` (a 1×1 convolution)."""
    return F.conv2d(x, rotation.to(x.dtype)[:, :, None, None])


def apply_color(x: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    return torch.einsum("ij,njhw->nihw", matrix.to(x), x)


def chroma(picture: torch.Tensor) -> torch.Tensor:
    """The picture's opponent-colour vector (N, 2, H, W): its direction is the hue, its length the
    saturation times brightness. Used as the warp displacement, so colour drives motion."""
    r, g, b = ((picture + 1.0) * 0.5).unbind(1)
    return torch.stack((r - 0.5 * (g + b), (math.sqrt(3) / 2) * (g - b)), 1)


# chroma(p) = CHROMA · (p + 1)/2 per pixel: the same map as a matrix, for the engine's one-product warp.
CHROMA = ((1.0, -0.5, -0.5), (0.0, math.sqrt(3) / 2, -math.sqrt(3) / 2))


def base_grid(height: int, width: int, device, dtype=torch.float32) -> torch.Tensor:
    """Pixel centres in grid_sample's [-1, 1] coordinates, (1, H, W, 2) as (x, y)."""
    ys = (torch.arange(height, device=device, dtype=dtype) + 0.5) / height * 2 - 1
    xs = (torch.arange(width, device=device, dtype=dtype) + 0.5) / width * 2 - 1
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack((gx, gy), -1)[None]


def sample_grid(grid: torch.Tensor, zoom, rotate_deg, tx: float, ty: float, aspect: float,
                displacement: torch.Tensor | None = None, warp=0.0) -> torch.Tensor:
    """Where each output pixel reads from: drift by (tx, ty) frame sizes, rotate and zoom about the
    centre (in square pixels, so rotation does not shear), then displace along ``displacement``.
    ``zoom``, ``rotate_deg`` and ``warp`` are floats or (1, H, W) maps."""
    x = (grid[..., 0] - 2 * tx) * aspect
    y = grid[..., 1] - 2 * ty
    a = torch.as_tensor(rotate_deg, dtype=grid.dtype, device=grid.device) * (math.pi / 180)
    z = torch.as_tensor(zoom, dtype=grid.dtype, device=grid.device)
    c, s = torch.cos(a) / z, torch.sin(a) / z
    sx = (c * x + s * y) / aspect
    sy = -s * x + c * y
    if displacement is not None:
        w = torch.as_tensor(warp, dtype=grid.dtype, device=grid.device) * 2
        sx = sx + w * displacement[:, 0]
        sy = sy + w * displacement[:, 1]
    return torch.stack((sx, sy), -1)


def resample(x: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    # Reflection at the border: zeros would feed a black frame back into the loop.
    return F.grid_sample(x, grid.expand(x.shape[0], -1, -1, -1), mode="bilinear", padding_mode="reflection",
                         align_corners=False)


def blur_sharpen(x: torch.Tensor, amount) -> torch.Tensor:
    """amount > 0 blurs, < 0 sharpens (unsharp mask around the [1 2 1]² low-pass); a float or a (1, 1, H, W) map."""
    return x + amount * (binomial3(x) - x)


def luminance01(picture: torch.Tensor) -> torch.Tensor:
    """(N, 1, H, W) luminance in [0, 1] of a [-1, 1] RGB picture."""
    w = constant((0.299, 0.587, 0.114), picture.device, picture.dtype).view(1, 3, 1, 1)
    return ((picture + 1) * 0.5 * w).sum(1, keepdim=True)


def inject(picture: torch.Tensor, source: torch.Tensor, mix, mode: str, threshold: float, softness: float
           ) -> torch.Tensor:
    """Mix the source into the picture: everywhere (``mix``), or where it is bright (``key``)."""
    weight = mix
    if mode == "key":
        lo, hi = threshold - softness, threshold + softness
        t = ((luminance01(source) - lo) / (hi - lo)).clamp(0, 1)
        weight = weight * t * t * (3 - 2 * t)  # smoothstep
    if not torch.is_tensor(weight):
        return torch.lerp(picture, source, float(weight))
    return torch.lerp(picture, source, weight.to(picture.dtype))


def modulation_map(kind: str, height: int, width: int, angle_deg: float, invert: bool,
                   source: torch.Tensor | None, image: torch.Tensor | None, device, dtype=torch.float32
                   ) -> torch.Tensor | None:
    """M(x, y) in [0, 1] as (1, 1, H, W), or None for ``none``.

    radial: 0 at the centre, 1 in the corners; linear: 0 → 1 along ``angle_deg``; luma: the
    source's luminance (0.5 without a source); image: a picture file's luminance."""
    if kind == "none":
        return None
    def flat() -> torch.Tensor:  # no information yet: the middle of every parameter's mapped range
        return torch.full((1, height, width), 0.5, device=device, dtype=dtype)

    if kind == "radial":
        m = base_grid(height, width, device, dtype).pow(2).sum(-1).sqrt() / math.sqrt(2)
    elif kind == "linear":
        g = base_grid(height, width, device, dtype)
        a = math.radians(angle_deg)
        span = abs(math.cos(a)) + abs(math.sin(a))
        m = (g[..., 0] * math.cos(a) + g[..., 1] * math.sin(a)) / span * 0.5 + 0.5
    elif kind == "luma":
        m = luminance01(source)[:, 0] if source is not None else flat()
    elif kind == "image":
        if image is None:
            m = flat()
        else:
            m = F.interpolate(image.to(device, dtype), size=(height, width), mode="bilinear",
                              align_corners=False)[:, 0]
    else:
        raise ValueError(f"unknown map {kind!r}; choose from {', '.join(MAP_KINDS)}")
    m = m.clamp(0, 1)[:, None]
    return 1 - m if invert else m


def spatial_value(value: float, depth: float, modmap: torch.Tensor | None, span: float):
    """A spatial parameter's ``value``, as a float or, where the map reaches it (``depth`` ≠ 0, the map's
    ``map.<quantity>``), a (1, 1, H, W) map: value + depth · span · M."""
    if modmap is None or depth == 0.0:
        return value
    return value + depth * span * modmap


def resize_map(m: torch.Tensor | None, size: tuple[int, int]) -> torch.Tensor | None:
    if m is None or tuple(m.shape[-2:]) == tuple(size):
        return m
    return F.interpolate(m, size=size, mode="area" if m.shape[-1] > size[1] else "bilinear")


@dataclass
class StepInputs:
    """What one frame of Δ needs beyond the states: φ, the source, the modulation image, the noise."""

    phi: Phi
    source: torch.Tensor | None = None
    map_image: torch.Tensor | None = None
    frame_index: int = 0
    noise: torch.Generator | None = None
    spans: MapSpans = field(default_factory=map_spans)  # half-range of each mapped quantity
    scales: tuple[float, ...] | None = None  # each level's natural scale s_ℓ (None: 1 for every level)
    # Layer amplification's RMSProp energy per level, carried from frame to frame by the caller.
    amplify_memory: dict = field(default_factory=dict)


def updates_on(frame_index: int, period: int) -> bool:
    """Level with this period updates on frames ≡ period // 2 (mod period). With the default periods
    2^ℓ the levels above 0 take turns (1 on odd frames, 2 on 2 mod 4, 3 on 4 mod 8, …) instead of
    all landing on frame 0 together, so no frame carries every level's work."""
    period = max(1, int(period))
    return frame_index % period == period // 2


def reference_step(model: FeatureAutoencoder, prev: list[torch.Tensor], inp: StepInputs) -> list[torch.Tensor]:
    """The formula, computed plainly (no caching, no skipping): the oracle for ``FeedbackEngine``."""
    phi, span, reach = inp.phi, inp.spans, inp.phi.map
    h, w = prev[0].shape[-2:]
    full_map = modulation_map(reach.kind, h, w, reach.angle, reach.invert, inp.source, inp.map_image, prev[0].device,
                              prev[0].dtype)
    displacement0 = chroma(prev[0])
    new = []
    for lvl, state in enumerate(prev):
        lv = phi.level[lvl]
        if lv.freeze or not updates_on(inp.frame_index, lv.period):
            new.append(state)
            continue
        size = tuple(state.shape[-2:])
        m = resize_map(full_map, size)
        g = base_grid(*size, state.device, state.dtype)
        disp = resize_map(displacement0, size)
        zoom = spatial_value(lv.zoom, reach.zoom, m, span.zoom)
        rot = spatial_value(lv.rotate, reach.rotate, m, span.rotate)
        warp = spatial_value(lv.warp, reach.warp, m, span.warp)
        sq = lambda v: v[:, 0] if torch.is_tensor(v) else v  # noqa: E731  maps are (1,1,H,W); grids want (1,H,W)
        grid = sample_grid(g, sq(zoom), sq(rot), lv.translate_x, lv.translate_y, size[1] / size[0], disp, sq(warp))
        own = blur_sharpen(resample(state, grid), spatial_value(lv.blur, reach.blur, m, span.blur))
        if lv.turn:
            own = turn_features(own, feature_rotation(state.shape[1], lv.turn, state.device, state.dtype))
        total = lv.gain_self * own
        weight = lv.gain_self
        if lvl > 0:
            total = total + lv.gain_up * model.encode(lvl - 1, prev[lvl - 1])
            weight += lv.gain_up
        if lvl < len(prev) - 1:
            total = total + lv.gain_down * model.decode(lvl, prev[lvl + 1], size=size)
            weight += lv.gain_down
        pre = total / weight if weight > 1e-6 else torch.zeros_like(state)
        s = inp.scales[lvl] if inp.scales else 1.0
        noise = spatial_value(lv.noise, reach.noise, m, span.noise)
        if torch.is_tensor(noise) or noise > 0:
            pre = pre + (noise * s) * torch.randn(pre.shape, generator=inp.noise, device=pre.device, dtype=pre.dtype)
        drive = phi.drive * lv.drive
        if lvl == 0:
            out = bound_picture(pre, phi.bound, drive, phi.color.bound)
        else:
            out = bound(pre, phi.bound, drive, s)
        out = torch.lerp(out, state, lv.temporal)
        if lv.amplify > 0:
            out = amplify(autograd_vjp(model), model.levels, lvl, out, lv.amplify, phi.amplify, inp.scales,
                          inp.amplify_memory, jitter(inp.frame_index, lvl, min(phi.amplify.depth, model.levels - lvl)))
        if lvl == 0:
            out = apply_color(out, color_matrix(phi.color.hue, phi.color.saturation, phi.color.perm, phi.color.contrast))
            if inp.source is not None:
                out = inject(out, inp.source, spatial_value(phi.input.mix, reach.mix, m, span.mix), phi.input.mode,
                             phi.input.threshold, phi.input.softness)
            out = out.clamp(-1, 1)
        new.append(out)
    return new


def seed_picture(height: int, width: int, generator: torch.Generator, device, dtype=torch.float32) -> torch.Tensor:
    """Smooth coloured noise in [-1, 1]: something with structure at every level to start from."""
    coarse = torch.rand((1, 3, max(2, height // 32), max(2, width // 32)), generator=generator, device=device,
                        dtype=dtype)
    return F.interpolate(coarse * 2 - 1, size=(height, width), mode="bicubic", align_corners=False).clamp(-1, 1)
