"""Layer amplification: a term of Δ that nudges a level toward what excites the features above it.

The DeepDream ("Inceptionism") idea, as the cnn-vis tool does it for one image, spread over the frames
of the loop: each update, level ℓ's new state h (the rest of Δ already applied: the *un-amplified*
state u) takes one step of gradient ascent on how strongly the features ``depth`` encoders up respond
to it. In units of the levels' natural scales (x = h / s_ℓ, α = γ(h) / s_ℓ+depth)::

    F(x)  = l1 · mean|α| + l2 · mean clip(α, −g, g)²            the features already active, amplified
    G     = halfband(∂F/∂x)                                    through the real encoders (their VJPs)
    G     ← G − mean(G)                                        per channel: structure, not exposure
    v     ← ρ·v + (1 − ρ)·mean(G²)                             RMSProp's running energy, one per level
    d     = η · G / √v                                         the nudge: RMS η whatever the model's gain
    d     ← d − tv · ¼·∇TV₂(d)                                  total variation (exponent 2) of the nudge
    d     ← prox_pull(d)                                       the p-norm pull (p = 6) toward u
    h     = s_ℓ · clamp(x_u + d, −1, 1)

* η is ``lℓ.amplify`` (0: off, the default); ``amplify.depth``, ``.l1``, ``.l2``, ``.clip``, ``.tv`` and
  ``.pull`` are shared by every level (``phi.AmplifyPhi``, read as ``phi.amplify``).
* **Why the half-band filter on G**: the 2×2 pooling's gradient is constant on each 2×2 block of its
  input, a fixed pixel-grid pattern the loop would accumulate into a lattice; the decoder's half-band
  filter (zero at the grid's Nyquist frequency) removes it and little else.
* **Why the jitter**: the encoders further up pool over 4- and 8-pixel blocks, and their gradients'
  block patterns lie below the half-band's reach: amplified through three encoders, the picture grew
  bars and thin lines locked to the 8-pixel grid. As DeepDream jitters its input, each update takes
  the gradient of the state rolled by an offset in 0 … 2^depth − 1 each way (``jitter``: a hash of
  the frame and level) and rolls it back: no block boundary stays in place, so none accumulates. (The
  roll wraps: a border strip as wide as the encoders' reach sees the opposite border as its
  neighbour for that update.)
* **Why the TV term acts on the nudge**: it smooths what amplification adds and never the level's own
  detail (``lℓ.blur`` is there for that). One explicit step of ¼·∇TV₂ is d + tv·(mean of 4 neighbours
  − d): stable for tv ≤ 1.
* **The pull** keeps the amplified state near u: the proximal step of (pull / p)·c²·Σ|y / c|^p with
  c = 2η (it leaves a nudge of RMS size alone and limits outliers), i.e. the y with
  y + pull·c·(|y|/c)^(p−1)·sign(y) = d: monotone in d, so stable for any weight, solved by Newton's
  method from above (``pull_prox``).
* **Why the gradient's mean is taken out** (per channel, over the level): a constant part of it is added again every
  frame, so it compounds into a drift of the whole level; at the picture that is its exposure and colour,
  and the learned features respond most to bright, warm light, so the picture bleached to a pale yellow
  within seconds. Taking the mean out amplifies the features' structure (streaks, cells) and leaves the
  picture's overall tone to the loop.
* RMSProp normalises by the gradient's energy over the whole level (one number, smoothed over frames),
  not per element: the nudge keeps the gradient's spatial structure, strongest where the features are.

The engine and ``delta.reference_step`` both call ``amplify``: the engine with the model's closed-form
encoder VJPs (``FastPath.encode_vjp``), the reference with autograd's (``autograd_vjp``).
``tests/engine/test_amplify.py`` checks the gradient against finite differences and every closed form
(the VJPs, ∂F/∂α, TV, the pull) against autograd.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..model.fastops import halfband5
from ..phi import AmplifyPhi

PULL_EXPONENT = 6
RMS_DECAY = 0.9  # ρ: the energy's memory, about 10 updates
_EPS = 1e-12


def feature_objective(alpha: torch.Tensor, knobs: AmplifyPhi) -> torch.Tensor:
    """F: how strongly the features respond (scale-free, a mean over every unit)."""
    g = knobs.clip
    return knobs.l1 * alpha.abs().mean() + knobs.l2 * alpha.clamp(-g, g).pow(2).mean()


def tv_energy(d: torch.Tensor) -> torch.Tensor:
    """TV₂: ½ Σ of squared differences between horizontal and vertical neighbours."""
    return 0.5 * ((d[..., :, 1:] - d[..., :, :-1]).pow(2).sum() + (d[..., 1:, :] - d[..., :-1, :]).pow(2).sum())


def tv_step(d: torch.Tensor, weight: float) -> torch.Tensor:
    """d − weight · ¼ · ∇TV₂(d), in closed form: d + weight · (mean of the 4 neighbours − d), borders
    replicated (a missing neighbour counts as d itself, so it adds nothing: exactly TV₂'s gradient)."""
    if weight <= 0:
        return d
    p = F.pad(d, (1, 1, 1, 1), mode="replicate")
    mean4 = (p[..., 1:-1, :-2] + p[..., 1:-1, 2:] + p[..., :-2, 1:-1] + p[..., 2:, 1:-1]) * 0.25
    return torch.lerp(d, mean4, weight)


def pull_prox(d: torch.Tensor, weight: float, c: float, iterations: int = 4) -> torch.Tensor:
    """argmin_y ½(y − d)² + weight·(c²/p)·Σ|y/c|^p, p = 6: with u = |y|/c and A = |d|/c, the root of
    u + weight·u⁵ = A (with d's sign). Newton's method on this convex increasing function converges
    monotonically from above. The start, min(A, tangents of (A/weight)^(1/5) at 1, 32 and 1024), lies
    above the root ((A/weight)^(1/5) bounds it, and a concave function lies below its tangents) and
    close to it: four steps leave a residual of at most 2e-4 of c (a thousandth of an 8-bit level at the largest
    step) for A/weight up to 10⁴ (weight ≥ 0.05 at the nudge's largest, A ≈ 20 RMS). In place on temporaries: it runs on every element of a level."""
    if weight <= 0 or c <= 0:
        return d
    with torch.no_grad():
        a = d.abs().div_(c)
        x = a / weight
        u = torch.minimum(a, (x - 1).div_(5).add_(1))
        for root, at in ((2, 32), (4, 1024)):  # x^(1/5) ≤ root + (x − at)/(5·root⁴)
            u = torch.minimum(u, (x - at).div_(5 * root ** 4).add_(root))
        u.clamp_min_(0)
        r, t = x, torch.empty_like(u)  # x is not needed any more: its memory holds u⁴
        for _ in range(iterations):
            # u − (u + w·u⁵ − A) / (1 + 5w·u⁴) = (A + 4w·u⁵) / (1 + 5w·u⁴): seven passes, and ≥ 0 by itself
            torch.mul(u, u, out=r)
            r.mul_(r)  # u⁴
            torch.mul(u, r, out=t).mul_(4 * weight).add_(a)
            torch.div(t, r.mul_(5 * weight).add_(1), out=u)
        return u.mul_(c).copysign_(d)


def objective_gradient(alpha: torch.Tensor, knobs: AmplifyPhi) -> torch.Tensor:
    """∂F/∂α in closed form: (l1·sign(α) + 2·l2·α where |α| < g) / the number of units."""
    g = knobs.clip
    grad = alpha.sign().mul_(knobs.l1)
    inside = alpha.abs() < g
    return grad.add_(alpha * inside, alpha=2 * knobs.l2).div_(alpha.numel())


def autograd_vjp(model):
    """``encode_vjp`` by autograd through the model's own encoders: the reference's (the engine's fast
    path, ``FastPath.encode_vjp``, is tested against it)."""
    def encode_vjp(level: int, h: torch.Tensor):
        out, vjp = torch.func.vjp(model.encoders[level], h)
        return out, lambda g: vjp(g)[0]
    return encode_vjp


def feature_gradient(encode_vjp, levels, state: torch.Tensor, scale_in: float, scale_out: float,
                     knobs: AmplifyPhi) -> torch.Tensor:
    """∂F/∂x at x = state / scale_in, through the encoders of ``levels`` (level ℓ's, then the ones above);
    ``encode_vjp(level, h)`` gives ``(γ_level(h), vjp)``, ``vjp(g)`` a tensor of h's size."""
    a, vjps = state, []
    for lvl in levels:
        a, vjp = encode_vjp(lvl, a)
        vjps.append(vjp)
    grad = objective_gradient(a / scale_out, knobs).div_(scale_out)
    for vjp in reversed(vjps):
        grad = vjp(grad)
    return grad * scale_in


def jitter(frame_index: int, level: int, depth: int) -> tuple[int, int]:
    """This update's offset of the pooling grids (``amplify``'s ``shift``): (dy, dx) in 0 … 2^depth − 1.
    Offset k of the n² = 4^depth is k = (frame + 13·level) · step mod n², ``step`` the odd number nearest
    n²/φ: every n² frames bring every offset once, and neighbouring frames lie far apart (a golden-ratio
    sequence). The engine and the reference shift alike."""
    n = 1 << max(0, depth)
    cells = n * n
    step = round(cells / 1.618033988749895) | 1
    k = ((frame_index + 13 * level) * step) % cells
    return k // n, k % n


def amplify(encode_vjp, levels: int, level: int, state: torch.Tensor, step: float, knobs: AmplifyPhi, scales,
            memory: dict, shift: tuple[int, int] = (0, 0)) -> torch.Tensor:
    """Level ``level``'s un-amplified new state, amplified (see the module docstring), for a model of
    ``levels`` hidden levels. ``memory`` holds each level's RMSProp energy between frames (the caller
    keeps it; a dict). ``shift`` (``jitter``): the gradient is taken of the state rolled by (dy, dx) and
    rolled back, so the encoders' pooling grids fall elsewhere each update. A new tensor, in the
    state's dtype and memory layout."""
    top = min(level + max(1, knobs.depth), levels)
    s_in = scales[level] if scales else 1.0
    s_out = scales[top] if scales else 1.0
    with torch.no_grad():
        shifted = torch.roll(state, shift, (-2, -1)) if any(shift) else state
        grad = feature_gradient(encode_vjp, range(level, top), shifted, s_in, s_out, knobs).float()
        if any(shift):
            grad = torch.roll(grad, (-shift[0], -shift[1]), (-2, -1))
        grad = halfband5(grad)
        grad = grad.sub_(grad.mean(dim=(-2, -1), keepdim=True))
        energy = grad.pow(2).mean()
        v = memory.get(level)
        v = energy if v is None else torch.lerp(energy, v, RMS_DECAY)
        memory[level] = v
        d = grad.mul_(step / (v.sqrt() + _EPS))
        d = tv_step(d, knobs.tv)
        d = pull_prox(d, knobs.pull, 2 * step)
        x = d.add_(state, alpha=1 / s_in).clamp_(-1, 1)
        out = x.mul_(s_in).to(state.dtype)
    return out.contiguous(memory_format=torch.channels_last) if _channels_last(state) else out.contiguous()


def _channels_last(t: torch.Tensor) -> bool:
    return t.dim() == 4 and not t.is_contiguous() and t.is_contiguous(memory_format=torch.channels_last)
