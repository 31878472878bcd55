"""The encoders' and decoders' hot element-wise work, fused where that pays, with an honest fallback.

Measured on the 2-core development CPU at 640×360 (see docs/PERFORMANCE.md): ``torch.tanh`` runs at
about 0.6 G elements/s there, slower than the first level's whole convolution, while
``torch.sigmoid`` is 4× faster. So:

* eager: tanh(x) = 2·σ(2x) − 1 (exact to float rounding), and for an average-pooled tanh the affine
  part runs after pooling, on a quarter of the elements; with the encoder's weights doubled, the
  sigmoid runs in place on the convolution's output and the pooling is two strided additions.
* compiled (torch.compile/inductor): a rational tanh (Eigen's float approximation, max error 4e-7)
  fused with the pooling into one loop: one read of the convolution's output, one quarter-size write.

``compile_or_eager`` compiles once and, if inductor fails, logs why once and keeps the eager path.
``FastPath`` (in ``net``) is the one user of these.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)


def halfband5(x: torch.Tensor) -> torch.Tensor:
    """(−1, 4, 10, 4, −1)/16 across and down (replicate borders), per channel: zero at the grid's Nyquist
    frequency (a 2-pixel pattern leaves nothing), flatter below it than [1 2 1] (¾ against ½ at a
    4-pixel period), so less of the picture's own detail goes with it. The smooth decoder's filter."""
    p = F.pad(x, (2, 2, 2, 2), mode="replicate")

    def taps(a, b, c, d, e):
        return torch.add(b, d).mul_(4).add_(c, alpha=10).sub_(a).sub_(e).mul_(1 / 16)

    w = p.shape[-1]
    across = taps(*(p[..., i:w - 4 + i] for i in range(5)))
    h = across.shape[-2]
    return taps(*(across[..., i:h - 4 + i, :] for i in range(5)))


def binomial3(x: torch.Tensor) -> torch.Tensor:
    """[1 2 1]/4 across and down (replicate borders), per channel: a low-pass that is exactly zero at
    the grid's Nyquist frequency, so a 2-pixel pattern leaves nothing. The smooth decoder's filter.

    Written as shifted additions, not a depthwise convolution: at 640×360 the 3-channel picture takes
    0.3 ms this way against 7–16 ms through oneDNN's depthwise kernels on the development CPU."""
    p = F.pad(x, (1, 1, 1, 1), mode="replicate")
    across = torch.add(p[..., :-2], p[..., 2:]).add_(p[..., 1:-1], alpha=2)
    return torch.add(across[..., :-2, :], across[..., 2:, :]).add_(across[..., 1:-1, :], alpha=2).mul_(1 / 16)

_TANH_CLIP = 7.90531110763549805  # beyond this the rational form is flat to float precision


def tanh_via_sigmoid(x: torch.Tensor) -> torch.Tensor:
    """tanh(x) = 2σ(2x) − 1, in place on a temporary; ~2× faster than torch.tanh on a CPU."""
    return torch.sigmoid(x * 2).mul_(2).sub_(1)


def rational_tanh(x: torch.Tensor) -> torch.Tensor:
    """Eigen's float tanh: a 13/6 rational on clamp(x, ±7.905). Only arithmetic, so inductor fuses it."""
    x = x.clamp(-_TANH_CLIP, _TANH_CLIP)
    x2 = x * x
    p = x2 * -2.76076847742355e-16 + 2.00018790482477e-13
    p = p * x2 + -8.60467152213735e-11
    p = p * x2 + 5.12229709037114e-08
    p = p * x2 + 1.48572235717979e-05
    p = p * x2 + 6.37261928875436e-04
    p = p * x2 + 4.89352455891786e-03
    q = x2 * 1.19825839466702e-06 + 1.18534705686654e-04
    q = q * x2 + 2.26843463243900e-03
    q = q * x2 + 4.89352518554385e-03
    return x * p / q


def tanh_avgpool_eager(y: torch.Tensor) -> torch.Tensor:
    # pool(2σ(2y) − 1) = 2·pool(σ(2y)) − 1: the affine part on a quarter of the elements.
    return F.avg_pool2d(torch.sigmoid(y.mul_(2)), 2).mul_(2).sub_(1)


def sum_pool2(y: torch.Tensor) -> torch.Tensor:
    """The sums (not means) of 2×2 blocks of an (N, C, H, W) tensor with even H and W.

    On a channels-last tensor (a convolution's output here) this is two additions of strided views:
    rows pairs, then neighbouring pixels, ~3× faster than ``avg_pool2d`` on the development CPU. The
    result is channels-last too. Any other layout goes through ``avg_pool2d``."""
    n, c, h, w = y.shape
    hwc = y.permute(0, 2, 3, 1)
    if not hwc.is_contiguous():
        return F.avg_pool2d(y, 2).mul_(4)
    rows = hwc.view(n, h // 2, 2, w * c)
    pairs = (rows[:, :, 0] + rows[:, :, 1]).view(n, h // 2, w // 2, 2, c)
    return (pairs[:, :, :, 0] + pairs[:, :, :, 1]).permute(0, 3, 1, 2)


def pixel_shuffle2(y: torch.Tensor) -> torch.Tensor:
    """``F.pixel_shuffle(y, 2)``, faster for a channels-last ``y`` with few output channels.

    The channels-last pixel shuffle vectorises over output channels; with the picture's 3 it is 2.3×
    slower than one reshaping copy to a plain (N, C, 2H, 2W) tensor, which is what the picture
    level wants anyway. With more channels the built-in one is faster and stays channels-last."""
    n, c, h, w = y.shape
    hwc = y.permute(0, 2, 3, 1)
    if c // 4 >= 8 or not hwc.is_contiguous():
        return F.pixel_shuffle(y, 2)
    # y's channel index is co·4 + i·2 + j for output pixel (2·row + i, 2·col + j) of channel co.
    return hwc.reshape(n, h, w, c // 4, 2, 2).permute(0, 3, 1, 4, 2, 5).reshape(n, c // 4, 2 * h, 2 * w)


def replicate_pad_channels_last(x: torch.Tensor, pad: int) -> torch.Tensor:
    """``F.pad(x, (pad,) * 4, mode="replicate")`` written straight into a channels-last tensor: one
    copy of the picture instead of two (pad, then convert) before a channels-last convolution."""
    n, c, h, w = x.shape
    out = torch.empty((n, h + 2 * pad, w + 2 * pad, c), dtype=x.dtype, device=x.device)
    inner = out[:, pad:pad + h, pad:pad + w]
    inner.copy_(x.permute(0, 2, 3, 1))
    out[:, :pad, pad:pad + w] = inner[:, :1]  # top and bottom rows repeat the edge row
    out[:, pad + h:, pad:pad + w] = inner[:, -1:]
    out[:, :, :pad] = out[:, :, pad:pad + 1]  # then the columns, corners included
    out[:, :, pad + w:] = out[:, :, pad + w - 1:pad + w]
    return out.permute(0, 3, 1, 2)


def replicate_pad_adjoint(g: torch.Tensor, left: int, right: int, top: int, bottom: int) -> torch.Tensor:
    """The adjoint (transpose) of ``F.pad(x, (left, right, top, bottom), mode="replicate")``: the padded
    gradient cropped, each border strip summed into the edge it repeats (columns first over every row,
    then rows: replicate padding is separable, the corners included)."""
    w = g.shape[-1]
    layout = torch.channels_last if g.dim() == 4 and not g.is_contiguous() and \
        g.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format
    cols = g[..., :, left:w - right].clone(memory_format=layout)  # a slice's clone would be plain
    if left:
        cols[..., :, :1] += g[..., :, :left].sum(-1, keepdim=True)
    if right:
        cols[..., :, -1:] += g[..., :, w - right:].sum(-1, keepdim=True)
    h = cols.shape[-2]
    out = cols[..., top:h - bottom, :]
    if top:
        out[..., :1, :] += cols[..., :top, :].sum(-2, keepdim=True)
    if bottom:
        out[..., -1:, :] += cols[..., h - bottom:, :].sum(-2, keepdim=True)
    return out


def tanh_avgpool_doubled(y2: torch.Tensor) -> torch.Tensor:
    """pool(tanh(y)) from y2 = 2y (a convolution with doubled weights): the sigmoid in place on it,
    then mean(2σ − 1) = sum(σ)/2 − 1."""
    return sum_pool2(y2.sigmoid_()).mul_(0.5).sub_(1)


def tanh_avgpool_fused(y: torch.Tensor) -> torch.Tensor:
    return F.avg_pool2d(rational_tanh(y), 2)


def tanh_maxpool(y: torch.Tensor) -> torch.Tensor:
    # tanh is monotonic, so max-pooling first gives the same values with a quarter of the tanh work.
    return tanh_via_sigmoid(F.max_pool2d(y, 2))


def compile_or_eager(fn, eager, what: str, enabled: bool):
    """``torch.compile(fn)`` that falls back to ``eager`` on its first failure, saying why once."""
    if not enabled:
        return eager
    compiled = torch.compile(fn, dynamic=False)
    state = {"fn": compiled}

    def call(*args):
        if state["fn"] is eager:
            return eager(*args)
        try:
            return state["fn"](*args)
        # Dynamo/inductor failures (no C++ compiler, an unsupported op, a codegen bug) surface as
        # these; anything else is a real bug and propagates.
        except (torch._dynamo.exc.TorchDynamoException, RuntimeError, OSError) as exc:
            log.warning("torch.compile of %s failed, using the eager path instead: %s: %s", what,
                        type(exc).__name__, str(exc).splitlines()[0] if str(exc) else "")
            state["fn"] = eager
            return eager(*args)

    return call
