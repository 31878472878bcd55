"""The live feedback engine: Δ_φ (``delta``) applied to every level of the feature hierarchy at once.

``FeedbackEngine`` holds the feedback state of every level and advances it one frame at a time. It
computes what ``delta.reference_step`` computes, faster, and adds what a live instrument needs: the
model's fused γ/γ⁻¹ (``FeatureAutoencoder.fast``), decodes reused while the level above is unchanged,
cached sampling grids, skipped identity work, in-place arithmetic, the stability guard, and a single
readback per frame and picture format.
"""

from __future__ import annotations

import copy
import logging
import math
from dataclasses import dataclass, replace

import numpy as np
import torch

from ..model.net import FeatureAutoencoder
from ..model.views import LevelView, fallback, project
from ..phi import ColorPhi, LevelPhi, Phi, map_spans
from ..reporting import RateLimitedLog
from . import kernels, pixfmt
from .amplify import amplify, jitter
from .delta import (
    CHROMA,
    apply_color,
    base_grid,
    blur_sharpen,
    bound,
    bound_picture,
    chroma,
    color_matrix,
    feature_rotation,
    inject,
    modulation_map,
    resample,
    resize_map,
    sample_grid,
    seed_picture,
    spatial_value,
    turn_features,
    updates_on,
)

log = logging.getLogger(__name__)


class StabilityGuard:
    """Watches the loop once per frame (one small device→host sync) and says what it needs:

    * ``"reseed now"``: a state went NaN or infinite. Nothing to fade from: a cut, in that very frame.
    * ``"reseed"``: the picture has been flat or saturated for ``patience`` frames; the engine re-seeds
      with a crossfade. A loop that keeps dying (re-seeded again within ``4 × patience`` frames) gets
      twice the patience each time, up to ``max_patience``, so it backs off instead of pulsing; a
      healthy stretch brings the patience back.
    * ``"nudge"``: the picture has not moved (less than ``still_change`` 8-bit levels a frame, on
      average) for ``still_frames`` frames: a fixed point, which a still input settles into. The
      engine nudges it back to life (a little noise and motion, easing in and out), never a cut.
    """

    def __init__(self, patience: int = 12, flat_std: float = 0.02, saturated_fraction: float = 0.97,
                 still_frames: int = 60, still_change: float = 0.5, max_patience: int = 384):
        self.base_patience = self.patience = patience
        self.flat_std, self.saturated_fraction, self.max_patience = flat_std, saturated_fraction, max_patience
        self.still_frames, self.still_change = still_frames, still_change / 127.5  # in picture units
        self.bad_frames = self.still = self.frames = 0
        self.recoveries = self.nudges = 0
        self.last_reason = ""
        self._last_reseed = -10**9
        self._previous: torch.Tensor | None = None

    def check(self, states: list[torch.Tensor], levels: list[int] | None = None) -> tuple[str, str] | None:
        """``(what, why)`` the loop needs now (see the class docstring), or None. ``levels``: the ones
        that changed this frame (a level that did not change was checked when it did)."""
        self.frames += 1
        levels = list(range(len(states))) if levels is None else levels
        picture = states[0][..., ::4, ::4].float()  # a quarter-resolution look is enough for statistics
        previous, self._previous = self._previous, picture
        moved = (picture - previous).abs().mean() if previous is not None and previous.shape == picture.shape \
            else picture.new_tensor(math.inf)
        # aminmax: one pass, no |x| temporary; NaN propagates into both ends.
        ends = [end for lvl in levels for end in torch.aminmax(_memory_order(states[lvl]))]
        stats = torch.stack(ends + [picture.std(), (picture.abs() > 0.98).float().mean(), moved]).tolist()
        *ends_host, spread, saturated, change = stats
        peaks = [max(-lo, hi) if math.isfinite(lo) and math.isfinite(hi) else math.nan
                 for lo, hi in zip(ends_host[0::2], ends_host[1::2])]
        if not all(math.isfinite(p) for p in peaks):
            bad = [lvl for lvl, p in zip(levels, peaks) if not math.isfinite(p)]
            return self._reseed("reseed now", f"non-finite values in level(s) {bad}")
        if spread < self.flat_std or saturated > self.saturated_fraction:
            self.bad_frames += 1
            if self.bad_frames >= self.patience:
                what = "flat" if spread < self.flat_std else "saturated"
                return self._reseed("reseed", f"picture {what} for {self.bad_frames} frames (std {spread:.3f}, "
                                              f"saturated {saturated:.0%})")
            return None
        self.bad_frames = 0
        if self.frames - self._last_reseed > 16 * self.patience:
            self.patience = self.base_patience  # healthy for a good while: back to the first patience
        self.still = self.still + 1 if change < self.still_change else 0
        if self.still >= self.still_frames:
            self.still = 0
            self.nudges += 1
            return "nudge", f"the picture has not moved for {self.still_frames} frames"
        return None

    def _reseed(self, what: str, why: str) -> tuple[str, str]:
        if self.frames - self._last_reseed <= 4 * self.patience:
            self.patience = min(2 * self.patience, self.max_patience)  # it keeps dying: back off
            why += f"; it keeps dying, so next time after {self.patience} frames"
        self._last_reseed = self.frames
        self.recoveries += 1
        self.bad_frames = self.still = 0
        self.last_reason = why
        return what, why


def _memory_order(t: torch.Tensor) -> torch.Tensor:
    """The same elements as a view in memory order: a whole-tensor reduction over a channels-last
    level then reads it straight through (8× faster for ``aminmax`` on the development CPU)."""
    if t.dim() == 4 and not t.is_contiguous() and t.is_contiguous(memory_format=torch.channels_last):
        return t.permute(0, 2, 3, 1)
    return t


def _engine_layout(level: int, state: torch.Tensor) -> torch.Tensor:
    """The memory layout the engine keeps each level in (a no-op when it already is): the picture
    plain (N, C, H, W), as sources and sinks want it; feature levels channels-last, the layout
    oneDNN's convolutions read and write fastest, so encoders, decoders and the mixing never convert."""
    if level == 0:
        return state.contiguous()
    return state.contiguous(memory_format=torch.channels_last)


RESEED_SECONDS = 0.5  # a re-seed (the panic button, the guard) crossfades this long instead of cutting
NUDGE_FRAMES = 45  # how long the guard's nudge of a frozen picture lasts
NUDGE_NOISE, NUDGE_ROTATE = 0.05, 1.5  # at its height: noise on the feature levels, a turn (degrees/update)


class _Crossfade:
    """Pulls every level's state toward a target while the feedback keeps running: each frame, after
    the step, h^ℓ ← lerp(h^ℓ, s^ℓ, w) with w = smoothstep(t / seconds), t the time since it began. Each
    blend is in feature space, per level (as autoencoder embeddings interpolate), and acts on a state the
    loop has already evolved from the previous blend, so the pull compounds; at t = seconds (w = 1) the
    states are exactly the target and the feedback runs on from there."""

    def __init__(self, target: list[torch.Tensor], seconds: float):
        self.target, self.seconds, self.elapsed = target, seconds, 0.0

    def advance(self, states: list[torch.Tensor], dt: float) -> tuple[list[torch.Tensor], bool]:
        self.elapsed += max(float(dt), 0.0)
        u = min(self.elapsed / self.seconds, 1.0)
        if u >= 1.0:
            return [t.clone() for t in self.target], True  # a copy: the loop must never alias the target
        w = u * u * (3.0 - 2.0 * u)  # smoothstep
        return [torch.lerp(live, t, w) for live, t in zip(states, self.target)], False


class _ModelFade:
    """A model switch's crossfade: the old model's engine steps on by itself, and the picture is
    lerp(its picture, the new loop's, w), w = smoothstep(t / seconds). The blend is what the new loop
    feeds back, so it grows out of the old picture; at t = seconds the old loop is dropped."""

    def __init__(self, engine: FeedbackEngine, seconds: float):
        self.engine, self.seconds, self.elapsed = engine, seconds, 0.0

    def blend(self, picture: torch.Tensor, phi: Phi, source, dt: float) -> tuple[torch.Tensor, bool]:
        old = self.engine.step(phi, source, dt)
        self.elapsed += max(float(dt), 0.0)
        u = min(self.elapsed / self.seconds, 1.0)
        if u >= 1.0:
            return picture, True
        w = u * u * (3.0 - 2.0 * u)
        return torch.lerp(old, picture, w), False


@dataclass(frozen=True)
class _Mixing:
    """How a level's three terms are weighed and bounded, with the arithmetic folded in: the
    normalisation 1/(g_self + g_up + g_down) and, for tanh, the bound's gain 2·drive/s go into the
    mixing weights (``scale``), so no pass over the level is spent on them, and the bound is then
    s·tanh(y/s) = s·(2σ(2y/s) − 1) with the 2·drive/s already in (``fused``). The picture bounded on its
    luminance takes the plain path: its bound is not per element."""

    scale: float  # every term's weight is times this
    fold: float  # what was folded into the weights (the noise is times it too)
    fused: bool
    drive: float

    @classmethod
    def of(cls, phi: Phi, lvl: int, s: float) -> _Mixing:
        lv = phi.level[lvl]
        weight = lv.gain_self + lv.gain_up + lv.gain_down  # (0 where a level has no such term)
        drive = phi.drive * lv.drive
        gain = 2 * drive if phi.bound == "tanh" else 1.0  # tanh(drive·x) = 2σ(2·drive·x) − 1
        fused = phi.bound == "tanh" and not (lvl == 0 and phi.color.bound == "luma")
        fold = gain / s if fused else 1.0
        return cls(fold / weight if weight > 1e-6 else 0.0, fold, fused, drive)

    def bound(self, pre: torch.Tensor, lvl: int, phi: Phi, s: float) -> torch.Tensor:
        """The level's bound on ``pre`` (in place where it can)."""
        if self.fused:
            return pre.sigmoid_().mul_(2 * s).sub_(s)
        if lvl == 0:
            return bound_picture(pre, phi.bound, self.drive, phi.color.bound)
        return bound(pre, phi.bound, self.drive, s)


#: Engine precisions: the states, the weights and the arithmetic of the step. The reference stays fp32.
PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


class FeedbackEngine:
    """Holds the feedback state of every level and advances it one frame at a time.

    ``step(phi, source)`` takes one parameter snapshot and the newest source frame (a (1, 3, H, W)
    tensor in [-1, 1] on the engine's device, or None) and returns h⁰. ``readback()`` copies h⁰ to
    the host once as RGB uint8. ``reset(source)`` re-seeds every level (the panic button).

    Faster than ``reference_step`` by: the model's fused γ/γ⁻¹ (``self.fast``; compiled with
    ``compile=True``), decodes reused while the level above is unchanged, sampling grids reused while
    zoom/rotation/drift are unchanged, identity transforms skipped, in-place arithmetic, and levels
    that take turns (``updates_on``). ``source`` is the newest source frame ``step`` was given, which
    the panic button re-seeds from.
    """

    def __init__(self, model: FeatureAutoencoder, width: int, height: int, device: str | torch.device = "cpu",
                 seed: int = 0, map_image: torch.Tensor | None = None, guard: StabilityGuard | None = None,
                 compile: bool = False, precision: str = "fp32", scales=None, views=None):
        if precision not in PRECISIONS:
            raise ValueError(f"unknown precision {precision!r}; choose from {', '.join(PRECISIONS)}")
        self.device = torch.device(device)
        self.dtype = PRECISIONS[precision]
        self.width, self.height = width, height
        self.compile = compile
        self.map_image = map_image
        self.spans = map_spans()
        self.noise = torch.Generator(device=self.device).manual_seed(seed)
        self.guard = guard or StabilityGuard()
        self.frame_index = 0
        self._color: tuple[tuple, torch.Tensor | None] = ((), None)
        self._map: tuple[tuple, torch.Tensor | None] = ((), None)
        self._use_model(model, scales, views)
        self._warn = RateLimitedLog(log, interval=5.0)
        self.source: torch.Tensor | None = None  # the newest source frame step() was given
        self._fade: _Crossfade | None = None
        self._reseed: float | None = None  # a re-seed asked for, to run at the next step: its fade time
        self._nudge = 0  # frames of the guard's nudge still to come
        self._outgoing: _ModelFade | None = None  # the model switched from, fading out
        self._seeded_from_source = False
        self.states = self.seed_states(None)
        if compile:  # compile now, at start-up, not on the first frame of the show
            for lvl in range(self.model.levels):
                self.fast.encode(lvl, self.states[lvl])

    def _use_model(self, model: FeatureAutoencoder, scales, views=None) -> None:
        """Everything that belongs to the model: the model on the device, its levels' sizes, scales and
        view projections (the card's ``views``: one dict per feature level, or None for the first three
        channels), grids, the fast path, and the caches of its states (emptied)."""
        if self.dtype != torch.float32:  # a copy: the caller's model (the reference's) stays fp32
            model = copy.deepcopy(model)
        self.model = model.to(self.device, self.dtype).eval()
        self.sizes = self.model.level_sizes(self.height, self.width)
        # Each level's natural scale s_ℓ (see ``delta``): the model card's, or 1 for every level.
        self.scales = tuple(float(v) for v in scales) if scales is not None else (1.0,) * len(self.sizes)
        if len(self.scales) != len(self.sizes) or self.scales[0] != 1.0 or not all(0 < v <= 1 for v in self.scales):
            raise ValueError(f"scales must be one per level, the picture's 1, each in (0, 1]: got {scales!r}")
        # Sampling grids stay fp32 whatever the precision: fp16 resolves only ~2 pixels across a 4K
        # frame and bf16 ~15. The half-precision states are sampled through fp32 (``_resample``).
        self.grids = [base_grid(h, w, self.device) for h, w in self.sizes]
        self._versions = [0] * len(self.sizes)  # bumped when a level's state changes
        self._decoded: dict[int, tuple[int, torch.Tensor]] = {}  # level -> (version of level+1, γ⁻¹ output)
        self._affine: dict[int, tuple[tuple, torch.Tensor]] = {}  # level -> (zoom, rot, tx, ty), grid
        self._turns: dict[int, tuple[tuple, torch.Tensor]] = {}  # level -> (channels, degrees), lℓ.turn's rotation
        self._planar_affine: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # level -> grid, as (2, H·W)
        self.amplify_memory: dict[int, torch.Tensor] = {}  # layer amplification's RMSProp energy per level
        self.fast = self.model.fast(self.compile)  # γ and γ⁻¹, fused (after the move to device and dtype)
        channels = self.model.channels
        if views is not None and len(views) != self.model.levels:
            raise ValueError(f"views must be one per feature level ({self.model.levels}), got {len(views)}")
        self.views = [None] + [LevelView.from_dict(v, channels[lvl + 1]) if views is not None else
                               fallback(channels[lvl + 1]) for lvl, v in
                               enumerate(views if views is not None else [None] * self.model.levels)]
        self._projections = [None] + [v.matrix(self.device, self.dtype) for v in self.views[1:]]

    @torch.no_grad()
    def view(self, level: int) -> torch.Tensor:
        """Level ``level`` as a (1, 3, H, W) picture in [−1, 1] at the show's size (``model.views``): the
        picture itself for level 0, a new tensor each call."""
        if not 0 <= level <= self.model.levels:
            raise ValueError(f"level {level} is not one of this model's 0..{self.model.levels}")
        if level == 0:
            return self.states[0]
        return project(self.states[level], self._projections[level], (self.height, self.width))

    @torch.no_grad()
    def switch_model(self, model: FeatureAutoencoder, scales=None, seconds: float = 2.0, views=None) -> None:
        """Run on ``model`` from the next step on, keeping the picture: every deeper level is re-encoded
        from it by the new model (any channel counts; the same number of levels, so every parameter
        still means what it meant). For ``seconds`` the old model's loop runs on beside the new one
        and the picture crossfades from its picture to the new loop's (``_ModelFade``): the hierarchy
        changes under the picture, not the picture. A switch during a fade starts from the picture
        being shown; crossfades to stored states (snapshots of the old model) stop."""
        if model.levels != self.model.levels:
            raise ValueError(f"a model of {model.levels} levels cannot replace one of {self.model.levels}: the "
                             f"show's parameters are per level; start the show with --model instead")
        outgoing = None
        if math.isfinite(seconds) and seconds > 0:
            outgoing = copy.copy(self)  # the old loop carries on alone: it keeps the old model and caches
            outgoing._outgoing = outgoing._fade = None
            outgoing.guard = copy.deepcopy(self.guard)
            outgoing.noise = torch.Generator(device=self.device).manual_seed(int(self.noise.initial_seed()) + 1)
        picture = self.states[0]
        self._fade = None
        self._use_model(model, scales, views)
        encoded = self.model.encode_all(picture.contiguous())
        self.states = [picture] + [_engine_layout(lvl, s) for lvl, s in enumerate(encoded) if lvl > 0]
        self._outgoing = _ModelFade(outgoing, float(seconds)) if outgoing is not None else None

    @property
    def switching(self) -> bool:
        """A model switch's crossfade is under way."""
        return self._outgoing is not None

    @property
    def levels(self) -> int:
        return self.model.levels

    def _nudged(self, phi: Phi) -> Phi:
        """φ with the guard's nudge added: noise in every feature level and a turn of every level (one
        way, then the other, nudge after nudge), easing in and out over ``NUDGE_FRAMES`` (a sine
        envelope), so a frozen picture moves again and settles somewhere new."""
        t = 1.0 - self._nudge / NUDGE_FRAMES
        self._nudge -= 1
        ease = math.sin(math.pi * t)
        turn = NUDGE_ROTATE * ease * (1 if self.guard.nudges % 2 else -1)
        return replace(phi, level=tuple(replace(lv, rotate=lv.rotate + turn,
                                                noise=lv.noise + NUDGE_NOISE * ease if lvl else lv.noise)
                                        for lvl, lv in enumerate(phi.level)))

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
        """Re-seed every level now, from ``source`` (or noise), cutting to it; any crossfade stops."""
        self._fade = None
        self.set_states(self.seed_states(source))
        self._seeded_from_source = self._seeded_from_source or source is not None

    def reseed(self, seconds: float = 0.5) -> None:
        """Re-seed every level at the next step, from the source frame it is given (the frame being made;
        noise without one), crossfading to it over ``seconds`` (0: a cut). The panic button."""
        self._reseed = max(0.0, float(seconds)) if math.isfinite(seconds) else 0.0

    @torch.no_grad()
    def crossfade_to(self, states: list[torch.Tensor], seconds: float) -> None:
        """Pull every level toward ``states`` over ``seconds`` while the feedback keeps running (see
        ``_Crossfade``), replacing a crossfade under way; ``seconds`` ≤ 0 jumps there at once."""
        self._check_fit(states)
        target = [_engine_layout(lvl, s.to(self.device, self.dtype)) for lvl, s in enumerate(states)]
        if not (math.isfinite(seconds) and seconds > 0):
            self._fade = None
            self.set_states([s.clone() for s in target])  # a copy: the loop must never alias the caller's
            return
        self._fade = _Crossfade(target, float(seconds))

    @property
    def fading(self) -> bool:
        return self._fade is not None

    def cancel_fade(self) -> None:
        """Stop a crossfade where it is."""
        self._fade = None

    def _check_fit(self, states: list[torch.Tensor]) -> None:
        if len(states) != len(self.states) or any(a.shape != b.shape for a, b in zip(states, self.states)):
            raise ValueError(f"states of shapes {[tuple(s.shape) for s in states]} do not fit this engine's "
                             f"{[tuple(s.shape) for s in self.states]}")

    @torch.no_grad()
    def set_states(self, states: list[torch.Tensor]) -> None:
        """Replace every level's state. Raises ValueError unless there is one tensor per level with the
        current shape. Invalidates the decode cache."""
        self._check_fit(states)
        self.states = [_engine_layout(lvl, s.to(self.device, self.dtype)) for lvl, s in enumerate(states)]
        self._versions = [v + 1 for v in self._versions]
        self._decoded.clear()

    def _color_matrix(self, color: ColorPhi) -> torch.Tensor | None:
        key = (color.hue, color.saturation, color.perm, color.contrast)
        if key != self._color[0]:
            m = color_matrix(*key)
            self._color = (key, None if torch.allclose(m, torch.eye(3)) else m.to(self.device, self.dtype))
        return self._color[1]

    def _modulation(self, phi: Phi, source: torch.Tensor | None) -> torch.Tensor | None:
        reach = phi.map
        if reach.kind == "none" or not reach.reaches_anything():
            return None
        if reach.kind == "luma":  # changes with every source frame
            return modulation_map(reach.kind, self.height, self.width, 0, reach.invert, source, None, self.device,
                                  self.dtype)
        key = (reach.kind, reach.angle, reach.invert)
        if key != self._map[0]:
            self._map = (key, modulation_map(reach.kind, self.height, self.width, reach.angle, reach.invert, None,
                                             self.map_image, self.device, self.dtype))
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
        picture = resize_map(picture0, size)  # resizing is linear with unit weights: it commutes with chroma
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
        colour = kernels.constant(sum(CHROMA, ()), self.device, affine.dtype).view(2, 3) * warp
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

    def _rotation(self, level: int, degrees: float) -> torch.Tensor:
        """``lℓ.turn``'s feature rotation, made once per (level, angle)."""
        key = (self.model.channels[level], degrees)  # (a model switch may bring other channel counts)
        if self._turns.get(level, (None,))[0] != key:
            self._turns[level] = (key, feature_rotation(key[0], degrees, self.device, self.dtype))
        return self._turns[level][1]

    def _decode(self, level: int, prev: list[torch.Tensor]) -> torch.Tensor:
        """γ_level⁻¹(h^{level+1}), reused while level+1 has not changed (it updates less often)."""
        cached = self._decoded.get(level)
        if cached is not None and cached[0] == self._versions[level + 1]:
            return cached[1]
        out = self.fast.decode(level, prev[level + 1], self.sizes[level])
        self._decoded[level] = (self._versions[level + 1], out)
        return out

    @torch.no_grad()
    def step(self, phi: Phi, source: torch.Tensor | None = None, dt: float = 1 / 30) -> torch.Tensor:
        """One frame of Δ_φ on every level; ``dt`` (seconds since the last frame) times crossfades."""
        source = self._take(source)
        if self._nudge:
            phi = self._nudged(phi)
        modmap = self._modulation(phi, source)
        updating = [not lv.freeze and updates_on(self.frame_index, lv.period) for lv in phi.level]
        new = [self._update(lvl, phi, modmap, source) if updating[lvl] else state
               for lvl, state in enumerate(self.states)]
        self.states = self._blend_fades(new, phi, source, dt)
        self.frame_index += 1
        self._heed(self.guard.check(self.states, [lvl for lvl, u in enumerate(updating) if u]), source)
        return self.states[0]

    def _take(self, source: torch.Tensor | None) -> torch.Tensor | None:
        """The newest source frame, in the engine's dtype; the first one seeds every level, and a re-seed
        asked for starts now."""
        if source is not None and source.dtype != self.dtype:
            source = source.to(self.dtype)
        self.source = source
        if source is not None and not self._seeded_from_source:
            # The first source frame seeds every level: the audience sees the input at once, and the
            # feedback grows out of it (a cut on the very first frame; a fade if frames were shown).
            self._seeded_from_source = True
            self._reseed = 0.0 if self.frame_index == 0 else RESEED_SECONDS
        if self._reseed is not None:
            seconds, self._reseed = self._reseed, None
            self.crossfade_to(self.seed_states(source), seconds)
        return source

    def _update(self, lvl: int, phi: Phi, modmap: torch.Tensor | None, source: torch.Tensor | None) -> torch.Tensor:
        """Level ``lvl``'s new state: Δ_φ (``delta``'s docstring) on this frame's states, a tensor of its own."""
        prev, lv, reach, span, s = self.states, phi.level[lvl], phi.map, self.spans, self.scales[lvl]
        m = resize_map(modmap, self.sizes[lvl])
        mixing = _Mixing.of(phi, lvl, s)
        pre = self._own(lvl, lv, m, reach, lv.gain_self * mixing.scale)
        if lv.turn:
            pre = turn_features(pre, self._rotation(lvl, lv.turn))
        if lv.gain_up:
            pre.add_(self.fast.encode(lvl - 1, prev[lvl - 1]), alpha=lv.gain_up * mixing.scale)
        if lv.gain_down:
            pre.add_(self._decode(lvl, prev), alpha=lv.gain_down * mixing.scale)
        noise = spatial_value(lv.noise, reach.noise, m, span.noise)
        if torch.is_tensor(noise) or noise > 0:  # s·noise in state units, times what was folded in
            pre.add_(noise * torch.randn(pre.shape, generator=self.noise, device=pre.device, dtype=pre.dtype),
                     alpha=mixing.fold * s)
        out = mixing.bound(pre, lvl, phi, s)
        if lv.temporal:
            out = out.lerp_(prev[lvl], lv.temporal)
        if lv.amplify > 0:
            out = amplify(self.fast.encode_vjp, self.model.levels, lvl, out, lv.amplify, phi.amplify, self.scales,
                          self.amplify_memory, jitter(self.frame_index, lvl, min(phi.amplify.depth,
                                                                                self.model.levels - lvl)))
        if lvl == 0:
            out = self._finish_picture(out, phi, m, source)
        self._versions[lvl] += 1
        return _engine_layout(lvl, out)

    def _own(self, lvl: int, lv: LevelPhi, m: torch.Tensor | None, reach, weight: float) -> torch.Tensor:
        """The level's own last state moved (zoom, rotation, drift, warp: one resample), blurred or
        sharpened, times ``weight``: always a new tensor, so everything after may work in place on it."""
        state, span = self.states[lvl], self.spans
        zoom = spatial_value(lv.zoom, reach.zoom, m, span.zoom)
        rot = spatial_value(lv.rotate, reach.rotate, m, span.rotate)
        warp = spatial_value(lv.warp, reach.warp, m, span.warp)
        blur = spatial_value(lv.blur, reach.blur, m, span.blur)
        tx, ty = lv.translate_x, lv.translate_y
        moves = any(torch.is_tensor(v) for v in (zoom, rot, warp)) or (zoom, rot, tx, ty, warp) != (1, 0, 0, 0, 0)
        blurs = torch.is_tensor(blur) or bool(blur)
        grid = self._grid(lvl, zoom, rot, tx, ty, warp, self.states[0]) if moves else None
        if grid is not None and not blurs:  # the sampler's own write carries the weight
            return self._resample(state, grid, scale=weight)
        own = self._resample(state, grid) if grid is not None else state
        return (blur_sharpen(own, blur) if blurs else own) * weight

    def _finish_picture(self, out: torch.Tensor, phi: Phi, m: torch.Tensor | None,
                        source: torch.Tensor | None) -> torch.Tensor:
        """The picture's colour, then the source injected (mixed, or keyed), within [−1, 1]."""
        matrix = self._color_matrix(phi.color)
        if matrix is not None:
            out = apply_color(out, matrix)
        if source is not None:
            mix = spatial_value(phi.input.mix, phi.map.mix, m, self.spans.mix)
            if phi.input.mode == "mix" and not torch.is_tensor(mix):  # the common case, in place
                out = out.lerp_(source, float(mix)) if mix else out
            else:
                out = inject(out, source, mix, phi.input.mode, phi.input.threshold, phi.input.softness)
        return out.clamp_(-1, 1)  # out is this frame's own tensor, never a state

    def _blend_fades(self, new: list[torch.Tensor], phi: Phi, source, dt: float) -> list[torch.Tensor]:
        """A crossfade to stored states, then a model switch's, over the new states."""
        if self._fade is not None:
            new, done = self._fade.advance(new, dt)
            self._fade = None if done else self._fade
            self._versions = [v + 1 for v in self._versions]
            self._decoded.clear()
        if self._outgoing is not None:
            new[0], done = self._outgoing.blend(new[0], phi, source, dt)
            self._outgoing = None if done else self._outgoing
            self._versions[0] += 1
        return new

    def _heed(self, need: tuple[str, str] | None, source: torch.Tensor | None) -> None:
        """Do what the stability guard asks for: a nudge, a re-seed with a crossfade, or a cut."""
        if need is None:
            return
        what, why = need
        if what == "nudge":
            self._nudge = NUDGE_FRAMES
            self._warn.warning("nudge", "feedback nudged back to life: %s", why)
            return
        self._warn.warning("reseed", "feedback re-seeded: %s", why)
        if what == "reseed now":
            self.reset(source)  # nothing to fade from: cut, in this very frame
        else:
            self.crossfade_to(self.seed_states(source), RESEED_SECONDS)

    @torch.no_grad()
    def readback(self, fmt: str = pixfmt.RGB24, picture: torch.Tensor | None = None) -> np.ndarray:
        """h⁰ (or ``picture``, what the output shows of it) as one frame of ``fmt`` (``pixfmt``): by default
        an RGB uint8 (H, W, 3) array. The conversion runs on the engine's device; this is the one
        device→host copy per frame and format."""
        # Half-precision pictures are widened first: bf16 cannot tell 255 levels apart near ±1.
        return pixfmt.convert((self.states[0] if picture is None else picture).float(), fmt).cpu().numpy()
