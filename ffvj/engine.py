"""The hierarchical feedback engine: Δ_φ applied to every level of the feature hierarchy at once.

    h_t^ℓ = Δ_φ( h_{t-1}^ℓ, γ_{ℓ-1}(h_{t-1}^{ℓ-1}), γ_ℓ⁻¹(h_{t-1}^{ℓ+1}) )

For every level ℓ that updates this frame (not frozen, and frame index divisible by its period)::

    own  = blur(warp(h_{t-1}^ℓ))                   zoom, rotation, drift and hue-driven warp, one resample
    pre  = (g_self·own + g_up·γ_{ℓ-1}(h_{t-1}^{ℓ-1}) + g_down·γ_ℓ⁻¹(h_{t-1}^{ℓ+1})) / (g_self + g_up + g_down)
    new  = bound(drive · pre + noise)
    new  = lerp(new, h_{t-1}^ℓ, temporal)
    ℓ=0: new = colour(new), then the source is injected (mix, or keyed by its luminance)

The gains are normalised, so they set the *mix* of the three terms and ``drive`` alone sets the loop
gain: with drive ≈ 1 a consistent hierarchy is a fixed point, above 1 contrast grows until the bound
holds it. Every level reads t-1 and writes t (double-buffered), so the update order never matters.

``reference_step`` is the plain, eager statement of the formula: the oracle the tests and the
benchmark compare ``FeedbackEngine.step`` against. ``FeedbackEngine`` adds what a live instrument
needs: cached grids and kernels, skipped identity work, decode caching for levels that did not
change, the stability guard, and a single readback.
"""

from __future__ import annotations

import copy
import logging
import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from . import kernels, pixfmt
from .model import FeatureAutoencoder, _pad_to_even
from .params import (BOUNDS, COLOR_PERMS, INPUT_MODES, MAP_DEPTHS, MAP_KINDS, RateLimitedLog, level_param_name,
                     map_spans)

log = logging.getLogger(__name__)

# --- the pieces of Δ, as plain functions ----------------------------------------------------------

def bound(x: torch.Tensor, kind: str, drive: float = 1.0) -> torch.Tensor:
    """The bounding nonlinearity: keeps every state in [-1, 1] (the original experiment's set)."""
    y = x * drive
    if kind == "tanh":
        return torch.tanh(y)
    if kind == "sigmoid":  # logistic on the [0, 1] picture with slope 4: a steeper tanh
        return torch.sigmoid(4.0 * y) * 2.0 - 1.0
    if kind == "sine":  # folds overshoot back instead of flattening it
        return torch.sin(y * (math.pi / 2))
    if kind == "wrap":  # fract(): overshoot re-enters from the other side
        return torch.remainder(y + 1.0, 2.0) - 1.0
    if kind == "clamp":
        return y.clamp(-1.0, 1.0)
    if kind == "magnitude":  # per-pixel vector clamp: keeps hue/direction, limits length (RMS ≤ 1)
        rms = y.pow(2).mean(1, keepdim=True).sqrt()
        return (y / rms.clamp_min(1.0)).clamp(-1.0, 1.0)
    raise ValueError(f"unknown bound {kind!r}; choose from {', '.join(BOUNDS)}")


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


_constant = kernels.constant


def blur3(x: torch.Tensor) -> torch.Tensor:
    """Separable [1 2 1]/4 Gaussian with replicate borders."""
    c = x.shape[1]
    k = _constant((0.25, 0.5, 0.25), x.device, x.dtype)
    x = F.pad(x, (1, 1, 1, 1), mode="replicate")
    x = F.conv2d(x, k.view(1, 1, 1, 3).expand(c, 1, 1, 3), groups=c)
    return F.conv2d(x, k.view(1, 1, 3, 1).expand(c, 1, 3, 1), groups=c)


def blur_sharpen(x: torch.Tensor, amount) -> torch.Tensor:
    """amount > 0 blurs, < 0 sharpens (unsharp mask); a float or a (1, 1, H, W) map."""
    return x + amount * (blur3(x) - x)


def luminance01(picture: torch.Tensor) -> torch.Tensor:
    """(N, 1, H, W) luminance in [0, 1] of a [-1, 1] RGB picture."""
    w = _constant((0.299, 0.587, 0.114), picture.device, picture.dtype).view(1, 3, 1, 1)
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


def spatial_value(phi: dict, name: str, level: int | None, modmap: torch.Tensor | None, span: float):
    """A parameter's value, as a float or, where the map reaches it, a (1, 1, H, W) map."""
    value = phi[name if level is None else level_param_name(level, name)]
    depth = phi.get(MAP_DEPTHS[name.split(".")[-1] if level is not None else name], 0.0)
    if modmap is None or depth == 0.0:
        return value
    return value + depth * span * modmap


def _resize_map(m: torch.Tensor | None, size: tuple[int, int]) -> torch.Tensor | None:
    if m is None or tuple(m.shape[-2:]) == tuple(size):
        return m
    return F.interpolate(m, size=size, mode="area" if m.shape[-1] > size[1] else "bilinear")


@dataclass
class StepInputs:
    """What one frame of Δ needs beyond the states: φ, the source, the modulation image, the noise."""

    phi: dict[str, float]
    source: torch.Tensor | None = None
    map_image: torch.Tensor | None = None
    frame_index: int = 0
    noise: torch.Generator | None = None
    spans: dict[str, float] = field(default_factory=map_spans)  # half-range of each mapped quantity


def updates_on(frame_index: int, period: int) -> bool:
    """Level with this period updates on frames ≡ period // 2 (mod period). With the default periods
    2^ℓ the levels above 0 take turns (1 on odd frames, 2 on 2 mod 4, 3 on 4 mod 8, …) instead of
    all landing on frame 0 together, so no frame carries every level's work."""
    period = max(1, int(period))
    return frame_index % period == period // 2


def reference_step(model: FeatureAutoencoder, prev: list[torch.Tensor], inp: StepInputs) -> list[torch.Tensor]:
    """The formula, computed plainly (no caching, no skipping): the oracle for ``FeedbackEngine``."""
    phi = inp.phi
    h, w = prev[0].shape[-2:]
    kind = BOUNDS[int(phi["bound"])]
    full_map = modulation_map(MAP_KINDS[int(phi["map.kind"])], h, w, phi["map.angle"], phi["map.invert"] >= 0.5,
                              inp.source, inp.map_image, prev[0].device, prev[0].dtype)
    displacement0 = chroma(prev[0])
    new = []
    for lvl, state in enumerate(prev):
        if phi[level_param_name(lvl, "freeze")] >= 0.5 or not updates_on(inp.frame_index,
                                                                             phi[level_param_name(lvl, "period")]):
            new.append(state)
            continue
        size = tuple(state.shape[-2:])
        m = _resize_map(full_map, size)
        span = inp.spans
        g = base_grid(*size, state.device, state.dtype)
        disp = _resize_map(displacement0, size)
        zoom = spatial_value(phi, "zoom", lvl, m, span.get("zoom", 0))
        rot = spatial_value(phi, "rotate", lvl, m, span.get("rotate", 0))
        warp = spatial_value(phi, "warp", lvl, m, span.get("warp", 0))
        sq = lambda v: v[:, 0] if torch.is_tensor(v) else v  # noqa: E731  maps are (1,1,H,W); grids want (1,H,W)
        grid = sample_grid(g, sq(zoom), sq(rot), phi[level_param_name(lvl, "translate_x")],
                           phi[level_param_name(lvl, "translate_y")], size[1] / size[0], disp, sq(warp))
        own = blur_sharpen(resample(state, grid), spatial_value(phi, "blur", lvl, m, span.get("blur", 0)))
        gs = phi[level_param_name(lvl, "gain_self")]
        total = gs * own
        weight = gs
        if lvl > 0:
            gu = phi[level_param_name(lvl, "gain_up")]
            total = total + gu * model.encode(lvl - 1, prev[lvl - 1])
            weight += gu
        if lvl < len(prev) - 1:
            gd = phi[level_param_name(lvl, "gain_down")]
            total = total + gd * model.decode(lvl, prev[lvl + 1], size=size)
            weight += gd
        pre = total / weight if weight > 1e-6 else torch.zeros_like(state)
        noise = spatial_value(phi, "noise", lvl, m, span.get("noise", 0))
        if torch.is_tensor(noise) or noise > 0:
            pre = pre + noise * torch.randn(pre.shape, generator=inp.noise, device=pre.device, dtype=pre.dtype)
        out = bound(pre, kind, phi["drive"])
        out = torch.lerp(out, state, phi[level_param_name(lvl, "temporal")])
        if lvl == 0:
            out = apply_color(out, color_matrix(phi["color.hue"], phi["color.saturation"],
                                                COLOR_PERMS[int(phi["color.perm"])], phi["color.contrast"]))
            if inp.source is not None:
                out = inject(out, inp.source, spatial_value(phi, "input.mix", None, m, span.get("input.mix", 0)),
                             INPUT_MODES[int(phi["input.mode"])], phi["input.threshold"], phi["input.softness"])
            out = out.clamp(-1, 1)
        new.append(out)
    return new


# --- the live engine -----------------------------------------------------------------------------

class StabilityGuard:
    """Detects a loop that has blown up (NaN/Inf), died to a flat picture, or saturated, so the engine
    can re-seed before anyone sees it. One small device→host sync per frame."""

    def __init__(self, patience: int = 12, flat_std: float = 0.02, saturated_fraction: float = 0.97):
        self.patience, self.flat_std, self.saturated_fraction = patience, flat_std, saturated_fraction
        self.bad_frames = 0
        self.recoveries = 0
        self.last_reason = ""

    def check(self, states: list[torch.Tensor], levels: list[int] | None = None) -> str | None:
        """The reason to re-seed now, or None. ``levels``: the ones that changed this frame (a level
        that did not change was checked when it did)."""
        levels = list(range(len(states))) if levels is None else levels
        picture = states[0][..., ::4, ::4]  # a quarter-resolution look is enough for statistics
        # aminmax: one pass, no |x| temporary; NaN propagates into both ends.
        ends = [end for lvl in levels for end in torch.aminmax(_memory_order(states[lvl]))]
        stats = torch.stack(ends + [picture.std(), (picture.abs() > 0.98).float().mean()]).tolist()
        *ends_host, spread, saturated = stats
        peaks = [max(-lo, hi) if math.isfinite(lo) and math.isfinite(hi) else math.nan
                 for lo, hi in zip(ends_host[0::2], ends_host[1::2])]
        if not all(math.isfinite(p) for p in peaks):
            bad = [lvl for lvl, p in zip(levels, peaks) if not math.isfinite(p)]
            return f"non-finite values in level(s) {bad}"
        if spread < self.flat_std or saturated > self.saturated_fraction:
            self.bad_frames += 1
            if self.bad_frames >= self.patience:
                what = "flat" if spread < self.flat_std else "saturated"
                return f"picture {what} for {self.bad_frames} frames (std {spread:.3f}, saturated {saturated:.0%})"
        else:
            self.bad_frames = 0
        return None


def _memory_order(t: torch.Tensor) -> torch.Tensor:
    """The same elements as a view in memory order: a whole-tensor reduction over a channels-last
    level then reads it straight through (8× faster for ``aminmax`` on the development CPU)."""
    if t.dim() == 4 and not t.is_contiguous() and t.is_contiguous(memory_format=torch.channels_last):
        return t.permute(0, 2, 3, 1)
    return t


def seed_picture(height: int, width: int, generator: torch.Generator, device, dtype=torch.float32) -> torch.Tensor:
    """Smooth coloured noise in [-1, 1]: something with structure at every level to start from."""
    coarse = torch.rand((1, 3, max(2, height // 32), max(2, width // 32)), generator=generator, device=device,
                        dtype=dtype)
    return F.interpolate(coarse * 2 - 1, size=(height, width), mode="bicubic", align_corners=False).clamp(-1, 1)


def _engine_layout(level: int, state: torch.Tensor) -> torch.Tensor:
    """The memory layout the engine keeps each level in (a no-op when it already is): the picture
    plain (N, C, H, W), as sources and sinks want it; feature levels channels-last, the layout
    oneDNN's convolutions read and write fastest, so encoders, decoders and the mixing never convert."""
    if level == 0:
        return state.contiguous()
    return state.contiguous(memory_format=torch.channels_last)


#: Engine precisions: the states, the weights and the arithmetic of the step. The reference stays fp32.
PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


class FeedbackEngine:
    """Holds the feedback state of every level and advances it one frame at a time.

    ``step(phi, source)`` takes one parameter snapshot and the newest source frame (a (1, 3, H, W)
    tensor in [-1, 1] on the engine's device, or None) and returns h⁰. ``readback()`` copies h⁰ to
    the host once as RGB uint8. ``reset(source)`` re-seeds every level (the panic button).

    Faster than ``reference_step`` by: fused encoder tails (``kernels``; compiled with
    ``compile=True``), decodes reused while the level above is unchanged, sampling grids reused while
    zoom/rotation/drift are unchanged, identity transforms skipped, in-place arithmetic, and levels
    that take turns (``updates_on``).
    """

    def __init__(self, model: FeatureAutoencoder, width: int, height: int, device: str | torch.device = "cpu",
                 seed: int = 0, map_image: torch.Tensor | None = None, guard: StabilityGuard | None = None,
                 compile: bool = False, precision: str = "fp32"):
        if precision not in PRECISIONS:
            raise ValueError(f"unknown precision {precision!r}; choose from {', '.join(PRECISIONS)}")
        self.device = torch.device(device)
        self.dtype = PRECISIONS[precision]
        if self.dtype != torch.float32:  # a copy: the caller's model (the reference's) stays fp32
            model = copy.deepcopy(model)
        self.model = model.to(self.device, self.dtype).eval()
        self.width, self.height = width, height
        self.sizes = self.model.level_sizes(height, width)
        # Sampling grids stay fp32 whatever the precision: fp16 resolves only ~2 pixels across a 4K
        # frame and bf16 ~15. The half-precision states are sampled through fp32 (``_resample``).
        self.grids = [base_grid(h, w, self.device) for h, w in self.sizes]
        self.map_image = map_image
        self.spans = map_spans()
        self.noise = torch.Generator(device=self.device).manual_seed(seed)
        self.guard = guard or StabilityGuard()
        self.frame_index = 0
        self._versions = [0] * len(self.sizes)  # bumped when a level's state changes
        self._decoded: dict[int, tuple[int, torch.Tensor]] = {}  # level -> (version of level+1, γ⁻¹ output)
        self._color: tuple[tuple, torch.Tensor | None] = ((), None)
        self._map: tuple[tuple, torch.Tensor | None] = ((), None)
        self._affine: dict[int, tuple[tuple, torch.Tensor]] = {}  # level -> (zoom, rot, tx, ty), grid
        self._planar_affine: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # level -> grid, as (2, H·W)
        self._warn = RateLimitedLog(log, interval=5.0)
        self._tails = [self._encoder_tail(lvl, compile) for lvl in range(self.model.levels)]
        # Eager tanh/avg encoders fold tanh(y) = 2σ(2y) − 1's inner 2 into a copy of the weights (×2
        # is exact in binary floating point), so the sigmoid runs in place on the convolution output.
        self._doubled = None
        if not compile and self.model.config.activation == "tanh" and self.model.config.pooling == "avg":
            self._doubled = [(e.conv.weight.detach() * 2, e.conv.bias.detach() * 2) for e in self.model.encoders]
        self.states = self.seed_states(None)
        if compile:  # compile now, at start-up, not on the first frame of the show
            for lvl in range(self.model.levels):
                self._encode(lvl, self.states[lvl])

    def _encoder_tail(self, level: int, compile: bool):
        """The fused nonlinearity + pooling for this model's encoders, or None (use the model's own)."""
        cfg = self.model.config
        if cfg.activation == "tanh" and cfg.pooling == "avg":
            return kernels.compile_or_eager(kernels.tanh_avgpool_fused, kernels.tanh_avgpool_eager,
                                            f"the level {level} encoder", compile)
        if cfg.activation == "tanh" and cfg.pooling == "max":
            return kernels.tanh_maxpool
        return None

    def _encode(self, level: int, h: torch.Tensor) -> torch.Tensor:
        """γ_level with the fused tail; equal to ``model.encode`` within float rounding."""
        tail = self._tails[level]
        if tail is None:
            return self.model.encode(level, h)
        # Channels-last makes oneDNN's convolution and the 2×2 pooling of its output ~3× faster on
        # CPUs; the tail returns the pooled result in the same layout.
        conv = self.model.encoders[level].conv
        if self._doubled is None:
            return tail(conv(_pad_to_even(h).contiguous(memory_format=torch.channels_last)))
        h = kernels.replicate_pad_channels_last(_pad_to_even(h), conv.padding[0])
        return kernels.tanh_avgpool_doubled(F.conv2d(h, *self._doubled[level]))

    @property
    def levels(self) -> int:
        return self.model.levels

    @torch.no_grad()
    def seed_states(self, source: torch.Tensor | None) -> list[torch.Tensor]:
        """h⁰ from the source (or noise when there is none, or it is flat), and every level encoded."""
        picture = source
        if picture is None or picture.std().item() < 0.02:
            picture = seed_picture(self.height, self.width, self.noise, self.device)
        states = self.model.encode_all(picture.to(self.device, self.dtype).contiguous())
        return [_engine_layout(lvl, s) for lvl, s in enumerate(states)]

    @torch.no_grad()
    def reset(self, source: torch.Tensor | None = None) -> None:
        self.states = self.seed_states(source)
        self._versions = [v + 1 for v in self._versions]
        self._decoded.clear()

    @torch.no_grad()
    def set_states(self, states: list[torch.Tensor]) -> None:
        """Replace every level's state (snapshot recall, crossfade). Raises ValueError unless there is
        one tensor per level with the current shape. Invalidates the decode cache, as ``reset`` does."""
        if len(states) != len(self.states) or any(a.shape != b.shape for a, b in zip(states, self.states)):
            raise ValueError(f"states of shapes {[tuple(s.shape) for s in states]} do not fit this engine's "
                             f"{[tuple(s.shape) for s in self.states]}")
        self.states = [_engine_layout(lvl, s.to(self.device, self.dtype)) for lvl, s in enumerate(states)]
        self._versions = [v + 1 for v in self._versions]
        self._decoded.clear()

    def _color_matrix(self, phi: dict) -> torch.Tensor | None:
        key = (phi["color.hue"], phi["color.saturation"], int(phi["color.perm"]), phi["color.contrast"])
        if key != self._color[0]:
            m = color_matrix(key[0], key[1], COLOR_PERMS[key[2]], key[3])
            self._color = (key, None if torch.allclose(m, torch.eye(3)) else m.to(self.device, self.dtype))
        return self._color[1]

    def _modulation(self, phi: dict, source: torch.Tensor | None) -> torch.Tensor | None:
        kind = MAP_KINDS[int(phi["map.kind"])]
        if kind == "none" or not any(phi[d] for d in MAP_DEPTHS.values()):
            return None
        if kind == "luma":  # changes with every source frame
            return modulation_map(kind, self.height, self.width, 0, phi["map.invert"] >= 0.5, source, None,
                                  self.device, self.dtype)
        key = (kind, phi["map.angle"], phi["map.invert"] >= 0.5)
        if key != self._map[0]:
            self._map = (key, modulation_map(kind, self.height, self.width, key[1], key[2], None, self.map_image,
                                             self.device, self.dtype))
        return self._map[1]

    def _grid(self, lvl: int, zoom, rot, tx: float, ty: float, warp, picture0: torch.Tensor) -> torch.Tensor:
        """The sampling grid; its affine part is reused while zoom, rotation and drift stay put."""
        size = self.sizes[lvl]
        sq = lambda v: v[:, 0] if torch.is_tensor(v) else v  # noqa: E731  maps are (1,1,H,W); grids want (1,H,W)
        spatial = torch.is_tensor(zoom) or torch.is_tensor(rot)
        if spatial:
            affine = sample_grid(self.grids[lvl], sq(zoom), sq(rot), tx, ty, size[1] / size[0])
        else:
            key = (zoom, rot, tx, ty)
            cached = self._affine.get(lvl)
            if cached is None or cached[0] != key:
                cached = (key, sample_grid(self.grids[lvl], zoom, rot, tx, ty, size[1] / size[0]))
                self._affine[lvl] = cached
            affine = cached[1]
        if not (torch.is_tensor(warp) or warp):
            return affine
        picture = _resize_map(picture0, size)  # resizing is linear with unit weights: it commutes with chroma
        if torch.is_tensor(warp) or spatial or picture.shape[0] != 1:
            disp = chroma(picture)
            w = sq(warp) * 2
            return affine + torch.stack((w * disp[:, 0], w * disp[:, 1]), -1)
        # affine + 2w·chroma(picture) = affine + 2w·CHROMA·(picture + 1)/2 = affine + w·CHROMA·picture
        # (CHROMA's rows sum to 0: grey does not move): one (2, 3) × (3, H·W) product writes the grid,
        # planar (x plane, y plane), handed to grid_sample as a strided (1, H, W, 2) view: 3× faster
        # than building the interleaved grid, and grid_sample reads it no slower.
        planar = self._planar_affine.get(lvl)
        if planar is None or planar[0] is not affine:
            planar = (affine, affine[0].permute(2, 0, 1).reshape(2, -1).contiguous())
            self._planar_affine[lvl] = planar
        colour = _constant(sum(CHROMA, ()), self.device, affine.dtype).view(2, 3) * warp
        grid = torch.addmm(planar[1], colour, picture[0].reshape(3, -1).to(affine.dtype))
        return grid.view(2, *size).permute(1, 2, 0)[None]

    def _resample(self, state: torch.Tensor, grid: torch.Tensor, scale: float | None = None) -> torch.Tensor:
        """``resample`` (times ``scale``), a new tensor; on a CPU the picture (the one plain-layout,
        3-channel level) is sampled on every core. Half-precision states are sampled in fp32, on the
        fp32 grid."""
        if state.dtype != grid.dtype:
            out = resample(state.to(grid.dtype), grid)
            return (out if scale is None else out.mul_(scale)).to(state.dtype)
        if self.device.type != "cpu" or not state.is_contiguous() or state.shape[1] > 4:
            out = resample(state, grid)
            return out if scale is None else out.mul_(scale)
        return kernels.grid_sample_in_bands(state, grid, torch.get_num_threads(), scale=scale, mode="bilinear",
                                            padding_mode="reflection", align_corners=False)

    def _decode(self, level: int, prev: list[torch.Tensor]) -> torch.Tensor:
        """γ_level⁻¹(h^{level+1}), reused while level+1 has not changed (it updates less often)."""
        cached = self._decoded.get(level)
        if cached is not None and cached[0] == self._versions[level + 1]:
            return cached[1]
        # oneDNN's convolution is ~1.7× faster on channels-last input (the state is usually not).
        h = prev[level + 1].contiguous(memory_format=torch.channels_last)
        decoder = self.model.decoders[level]
        if decoder.kind == "subpixel":
            out = kernels.pixel_shuffle2(decoder.conv(h))
        else:
            out = decoder(h)
        out = out[..., : self.sizes[level][0], : self.sizes[level][1]]
        self._decoded[level] = (self._versions[level + 1], out)
        return out

    @torch.no_grad()
    def step(self, phi: dict[str, float], source: torch.Tensor | None = None) -> torch.Tensor:
        prev = self.states
        if source is not None and source.dtype != self.dtype:
            source = source.to(self.dtype)
        kind = BOUNDS[int(phi["bound"])]
        modmap = self._modulation(phi, source)
        updating = [phi[level_param_name(lvl, "freeze")] < 0.5
                    and updates_on(self.frame_index, phi[level_param_name(lvl, "period")])
                    for lvl in range(len(prev))]
        gain = 2 * phi["drive"] if kind == "tanh" else 1.0  # tanh(drive·x) = 2σ(2·drive·x) − 1
        new = []
        for lvl, state in enumerate(prev):
            if not updating[lvl]:
                new.append(state)
                continue
            p = lambda name: phi[level_param_name(lvl, name)]  # noqa: E731
            size = self.sizes[lvl]
            m = _resize_map(modmap, size)
            zoom = spatial_value(phi, "zoom", lvl, m, self.spans["zoom"])
            rot = spatial_value(phi, "rotate", lvl, m, self.spans["rotate"])
            warp = spatial_value(phi, "warp", lvl, m, self.spans["warp"])
            tx, ty = p("translate_x"), p("translate_y")
            moves = any(torch.is_tensor(v) for v in (zoom, rot, warp)) or (zoom, rot, tx, ty, warp) != (1, 0, 0, 0, 0)
            gs = p("gain_self")
            gu = p("gain_up") if lvl > 0 else 0.0
            gd = p("gain_down") if lvl < len(prev) - 1 else 0.0
            weight = gs + gu + gd
            # The normalisation 1/weight and, for tanh, the 2·drive go into the mixing weights: no
            # separate passes over the level for them.
            scale = gain / weight if weight > 1e-6 else 0.0
            blur = spatial_value(phi, "blur", lvl, m, self.spans["blur"])
            blurs = torch.is_tensor(blur) or bool(blur)
            grid = self._grid(lvl, zoom, rot, tx, ty, warp, prev[0]) if moves else None
            # ``pre`` is always a new tensor: everything below may work in place on it.
            if grid is not None and not blurs:  # the sampler's own write carries the weight
                pre = self._resample(state, grid, scale=gs * scale)
            else:
                own = self._resample(state, grid) if grid is not None else state
                pre = (blur_sharpen(own, blur) if blurs else own) * (gs * scale)
            if gu:
                pre.add_(self._encode(lvl - 1, prev[lvl - 1]), alpha=gu * scale)
            if gd:
                pre.add_(self._decode(lvl, prev), alpha=gd * scale)
            noise = spatial_value(phi, "noise", lvl, m, self.spans["noise"])
            if torch.is_tensor(noise) or noise > 0:
                pre.add_(noise * torch.randn(pre.shape, generator=self.noise, device=pre.device, dtype=pre.dtype),
                         alpha=gain)
            out = pre.sigmoid_().mul_(2).sub_(1) if kind == "tanh" else bound(pre, kind, phi["drive"])
            if p("temporal"):
                out = out.lerp_(state, p("temporal"))
            if lvl == 0:
                matrix = self._color_matrix(phi)
                if matrix is not None:
                    out = apply_color(out, matrix)
                if source is not None:
                    mix, mode = spatial_value(phi, "input.mix", None, m, self.spans["input.mix"]), \
                        INPUT_MODES[int(phi["input.mode"])]
                    if mode == "mix" and not torch.is_tensor(mix):  # the common case, in place
                        out = out.lerp_(source, float(mix)) if mix else out
                    else:
                        out = inject(out, source, mix, mode, phi["input.threshold"], phi["input.softness"])
                out = out.clamp_(-1, 1)  # out is this frame's own tensor, never a state
            new.append(_engine_layout(lvl, out))
            self._versions[lvl] += 1
        self.states = new
        self.frame_index += 1
        reason = self.guard.check(new, [lvl for lvl, u in enumerate(updating) if u])
        if reason:
            self.guard.recoveries += 1
            self.guard.last_reason = reason
            self.guard.bad_frames = 0
            self._warn.warning("reseed", "feedback re-seeded: %s", reason)
            self.reset(source)
        return self.states[0]

    @torch.no_grad()
    def readback(self, fmt: str = pixfmt.RGB24) -> np.ndarray:
        """h⁰ as one frame of ``fmt`` (``pixfmt``): by default an RGB uint8 (H, W, 3) array. The
        conversion runs on the engine's device; this is the one device→host copy per frame and format."""
        # Half-precision pictures are widened first: bf16 cannot tell 255 levels apart near ±1.
        return pixfmt.convert(self.states[0].float(), fmt).cpu().numpy()
