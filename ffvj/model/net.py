"""The learned feature hierarchy: a stacked convolutional pooling autoencoder.

A pure module: one config dataclass, the nn.Modules built from it, and their fast path for inference
(``FeatureAutoencoder.fast()``). No file I/O, no device choice, no training (see ``checkpoint.py`` and
``train.py`` for those).

Conventions
-----------
* ``h⁰`` is the picture: RGB in [-1, 1], shape (N, 3, H, W). Hidden levels are tanh units by default,
  also in [-1, 1], so every level is "image-like" and the feedback engine can bound all of them alike.
* ``encode(ℓ, h)`` is γ_ℓ: level ℓ → ℓ+1 (convolution, nonlinearity, 2×2 pooling).
  ``decode(ℓ, h)`` is γ_ℓ⁻¹: level ℓ+1 → ℓ (3×3 convolution to 4× the channels, then pixel shuffle).
* ``fast(compile)`` returns a ``FastPath``: the same γ and γ⁻¹ for inference, fused where it pays
  (``fastops``), in the memory layouts the feedback engine keeps (feature levels channels-last).
* Any frame size works. Before pooling, ``encode`` replicate-pads an odd height or width by one row or
  column, so level ℓ+1 has size ceil(H/2) × ceil(W/2). ``decode`` returns 2H × 2W and crops to
  ``size`` when given; ``level_sizes`` lists every level's size for a frame, so a caller that keeps
  a state per level (the feedback engine) always gets back exactly the size it holds. Replicate
  padding (not zeros) everywhere, because a dark border would be fed back and grow into a frame.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..options import option
from . import fastops

ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU, "elu": nn.ELU, "identity": nn.Identity}
POOLINGS = ("max", "avg")
DECODERS = ("smooth", "subpixel", "upconv", "interp")


def channel_list(text: str) -> tuple[int, ...]:
    """``3,12,24,48``: the picture's channels, then each level's."""
    try:
        return tuple(int(c) for c in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"channels are numbers separated by commas, not {text!r}") from None


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild the model; stored verbatim in every checkpoint."""

    # channels[0] is the picture (3); channels[ℓ] is level ℓ. Number of levels = len(channels) - 1.
    channels: tuple[int, ...] = option((3, 12, 24, 48), "channels per level, the picture first", parse=channel_list,
                                       metavar="3,C1,C2,...")
    kernel_size: int = option(3, "convolution kernel size (odd)")
    activation: str = option("tanh", "the encoders' activation", choices=tuple(ACTIVATIONS))
    pooling: str = option("avg", "the encoders' pooling", choices=POOLINGS)
    decoder: str = option("smooth", "how the decoders upsample", choices=DECODERS)

    def __post_init__(self) -> None:
        # Accept lists from JSON, keep a hashable tuple.
        object.__setattr__(self, "channels", tuple(int(c) for c in self.channels))
        if len(self.channels) < 2 or any(c < 1 for c in self.channels):
            raise ValueError(f"channels must list the picture and at least one level, got {self.channels}")
        if self.kernel_size < 1 or self.kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd and positive, got {self.kernel_size}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation {self.activation!r} unknown; choose from {sorted(ACTIVATIONS)}")
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling {self.pooling!r} unknown; choose from {list(POOLINGS)}")
        if self.decoder not in DECODERS:
            raise ValueError(f"decoder {self.decoder!r} unknown; choose from {list(DECODERS)}")
        if self.decoder == "interp" and self.kernel_size != 3:
            raise ValueError(f"the interp decoder is for 3×3 kernels, not {self.kernel_size}: use upconv")

    @property
    def levels(self) -> int:
        return len(self.channels) - 1

    def to_dict(self) -> dict:
        d = asdict(self)
        d["channels"] = list(self.channels)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        known = set(cls.__dataclass_fields__)
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown model config keys {sorted(unknown)}; known: {sorted(known)}")
        return cls(**d)


def _pad_to_even(h: torch.Tensor) -> torch.Tensor:
    pad_w, pad_h = h.shape[-1] % 2, h.shape[-2] % 2
    if pad_w or pad_h:
        h = F.pad(h, (0, pad_w, 0, pad_h), mode="replicate")
    return h


class Encoder(nn.Module):
    """γ_ℓ: convolution → nonlinearity → 2×2 pooling."""

    def __init__(self, c_in: int, c_out: int, cfg: ModelConfig):
        super().__init__()
        k = cfg.kernel_size
        self.conv = nn.Conv2d(c_in, c_out, k, padding=k // 2, padding_mode="replicate")
        self.act = ACTIVATIONS[cfg.activation]()
        self.pool = nn.MaxPool2d(2) if cfg.pooling == "max" else nn.AvgPool2d(2)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.pool(self.act(self.conv(_pad_to_even(h))))


class Decoder(nn.Module):
    """γ_ℓ⁻¹: back up one level, doubling height and width.

    ``subpixel``: a 3×3 convolution at the coarse size to 4·c_out channels, then pixel shuffle. The
    four output phases have filters of their own (a sub-pixel convolution *is* a transposed one), so
    whatever differs between them is a fixed 2-pixel pattern; in a feedback loop it accumulates into a
    screen-locked lattice.
    ``smooth`` (the default): the same, then a fixed low-pass (Sugawara et al. 2018; ``fastops.halfband5``)
    that is zero at the fine grid's Nyquist frequency: no phase pattern survives it. Trained with the
    filter in place, the convolution learns to lift what the filter softens.
    ``upconv``: bilinear ×2, then a 3×3 convolution at the fine size (Odena et al. 2016; ~4× the
    arithmetic).
    ``interp``: the same function as upconv away from the borders, at the sub-pixel decoder's cost: the
    fine 3×3 kernel composed with the bilinear ×2 gives each of the four output phases a 3×3 kernel at
    the coarse size (``interp_phases``), one convolution makes all four, a pixel shuffle lays them out.
    Every fine pixel is interpolated between coarse ones, so a level's cells leave no edges: what a
    feature level hands down has no block or grid of its own (the sub-pixel decoders' phases, even
    smoothed, print each cell of a busy level as a block: texture locked to a 2^ℓ-pixel grid).
    The output is linear: the target of level ℓ is whatever level ℓ holds, and the feedback engine
    applies its own bounding function.
    """

    def __init__(self, c_in: int, c_out: int, cfg: ModelConfig):
        super().__init__()
        k = cfg.kernel_size
        self.kind = cfg.decoder
        mult = 1 if cfg.decoder in ("upconv", "interp") else 4
        self.conv = nn.Conv2d(c_in, c_out * mult, k, padding=k // 2, padding_mode="replicate")

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        if self.kind == "upconv":
            return self.conv(F.interpolate(h, scale_factor=2, mode="bilinear", align_corners=False))
        if self.kind == "interp":
            weight, bias = interp_phases(self.conv.weight, self.conv.bias)
            return F.pixel_shuffle(F.conv2d(F.pad(h, (1, 1, 1, 1), mode="replicate"), weight, bias), 2)
        out = F.pixel_shuffle(self.conv(h), 2)
        return fastops.halfband5(out) if self.kind == "smooth" else out


# Bilinear ×2 (align_corners=False), as a fine tap u ∈ {−1, 0, 1} of output phase a reads the coarse
# neighbours −1, 0, 1: fine 2i+a+u lies at coarse i + (a+u)/2 − 1/4, between two coarse pixels.
_BILINEAR_TAPS = torch.tensor([[[0.75, 0.25, 0.0], [0.25, 0.75, 0.0], [0.0, 0.75, 0.25]],   # phase 0
                               [[0.25, 0.75, 0.0], [0.0, 0.75, 0.25], [0.0, 0.25, 0.75]]])  # phase 1


def interp_phases(weight: torch.Tensor, bias: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The ``interp`` decoder's four phase kernels from its fine 3×3 ``weight`` (C_out, C_in, 3, 3): a
    (4·C_out, C_in, 3, 3) coarse weight whose output channel 4c + 2a + b is channel c's phase (a, b),
    as ``pixel_shuffle`` lays them out; the bias repeated four times."""
    taps = _BILINEAR_TAPS.to(weight)
    phases = torch.einsum("oiuv,aup,bvq->oabipq", weight, taps, taps)
    c_out, c_in = weight.shape[:2]
    coarse = phases.reshape(c_out * 4, c_in, 3, 3)
    return coarse, None if bias is None else bias.repeat_interleave(4)


class FeatureAutoencoder(nn.Module):
    """A stack of encoder/decoder pairs; every level can be encoded and decoded on its own."""

    def __init__(self, cfg: ModelConfig | None = None):
        super().__init__()
        self.config = cfg or ModelConfig()
        ch = self.config.channels
        self.encoders = nn.ModuleList(Encoder(ch[i], ch[i + 1], self.config) for i in range(self.levels))
        self.decoders = nn.ModuleList(
            Decoder(ch[i + 1], ch[i], self.config) for i in range(self.levels)
        )

    @property
    def levels(self) -> int:
        """Number of hidden levels (level 0, the picture, not counted)."""
        return self.config.levels

    @property
    def channels(self) -> tuple[int, ...]:
        """Channel count of every level, the picture first."""
        return self.config.channels

    def encode(self, level: int, h: torch.Tensor) -> torch.Tensor:
        """γ_level: level → level+1. Output size is ceil(H/2) × ceil(W/2)."""
        return self.encoders[level](h)

    def decode(self, level: int, h: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
        """γ_level⁻¹: level+1 → level, cropped to ``size`` (H, W) when given."""
        out = self.decoders[level](h)
        if size is not None:
            out = out[..., : size[0], : size[1]]
        return out

    def level_sizes(self, height: int, width: int) -> list[tuple[int, int]]:
        """(H, W) of every level for a frame of height × width, the picture first."""
        sizes = [(height, width)]
        for _ in range(self.levels):
            h, w = sizes[-1]
            sizes.append(((h + 1) // 2, (w + 1) // 2))
        return sizes

    def encode_all(self, image: torch.Tensor, depth: int | None = None) -> list[torch.Tensor]:
        """[h⁰, h¹, …, h^depth] for an image: the hierarchy's bottom-up pass."""
        states = [image]
        for level in range(self.levels if depth is None else depth):
            states.append(self.encode(level, states[-1]))
        return states

    def reconstruct(self, image: torch.Tensor, depth: int) -> torch.Tensor:
        """The round trip γ_0⁻¹ ∘ … ∘ γ_{depth-1}⁻¹ ∘ γ_{depth-1} ∘ … ∘ γ_0, at the image's size."""
        states = self.encode_all(image, depth)
        h = states[-1]
        for level in reversed(range(depth)):
            h = self.decode(level, h, size=tuple(states[level].shape[-2:]))
        return h

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.reconstruct(image, self.levels)

    def fast(self, compile: bool = False) -> FastPath:
        """γ and γ⁻¹ for inference, fused (see ``FastPath``). Make it after moving the model to its
        device and dtype."""
        return FastPath(self, compile)


class FastPath:
    """``encode`` and ``decode`` of a model for inference, equal to the model's within float rounding.

    What it does differently, measured on the 2-core development CPU (docs/PERFORMANCE.md):

    * Convolutions read and write channels-last (oneDNN's fastest layout, ~3× for the encoder and its
      pooling, ~1.7× for a decoder): ``encode`` returns channels-last; ``decode`` returns channels-last
      for feature levels and plain (N, C, H, W) for the 3-channel picture, via a reshaping pixel
      shuffle (2.3× faster there than the built-in one).
    * tanh + average pooling (the default model): tanh(y) = 2σ(2y) − 1 with the inner 2 folded into
      a doubled copy of the encoder's weights (×2 is exact in binary floating point), the sigmoid in
      place on the convolution's output, the 2×2 means as strided sums, the affine part after pooling.
    * ``compile=True``: the tail (nonlinearity + pooling) compiled by torch.compile into one loop,
      falling back to eager (logged once) where inductor cannot build.
    * ``encode_vjp``: γ and its vector-Jacobian product, for gradients through an encoder (layer
      amplification). tanh + average pooling in closed form — σ kept from the forward pass, then
      2×2 repeat · σ(1 − σ), a transposed convolution and the replicate padding's adjoint — 4× faster
      than autograd at 640×360 on the development CPU (its convolution backward alone took 35 ms);
      other encoders by autograd (``torch.func.vjp``). Tested against autograd.

    It keeps doubled weights: make it after the model is on its device and dtype, and make a new one
    if the weights change.
    """

    def __init__(self, model: FeatureAutoencoder, compile: bool = False):
        self.model = model
        cfg = model.config
        self._tails = [self._tail(level, compile) for level in range(model.levels)]
        self._doubled = None
        closed_form = cfg.activation == "tanh" and cfg.pooling == "avg"
        doubled = [(e.conv.weight.detach() * 2, e.conv.bias.detach() * 2) for e in model.encoders] \
            if closed_form else None
        if not compile:
            self._doubled = doubled
        # encode_vjp's, whatever ``compile`` says, in fp32 whatever the model's precision: the gradient's
        # sign term flips on rounding, and half precision would move the nudge with it.
        wide = lambda t: t.to(torch.promote_types(t.dtype, torch.float32))  # noqa: E731
        self._vjp_doubled = [(wide(w), wide(b)) for w, b in doubled] if closed_form else None
        self._interp = [tuple(t.detach() if t is not None else None for t in interp_phases(d.conv.weight, d.conv.bias))
                        if d.kind == "interp" else None for d in model.decoders]

    def _tail(self, level: int, compile: bool):
        """The fused nonlinearity + pooling for this model's encoders, or None (use the model's own)."""
        cfg = self.model.config
        if cfg.activation == "tanh" and cfg.pooling == "avg":
            return fastops.compile_or_eager(fastops.tanh_avgpool_fused, fastops.tanh_avgpool_eager,
                                            f"the level {level} encoder", compile)
        if cfg.activation == "tanh" and cfg.pooling == "max":
            return fastops.tanh_maxpool
        return None

    def encode(self, level: int, h: torch.Tensor) -> torch.Tensor:
        """γ_level, channels-last where the tail is fused."""
        tail = self._tails[level]
        if tail is None:
            return self.model.encode(level, h)
        conv = self.model.encoders[level].conv
        if self._doubled is None:
            return tail(conv(_pad_to_even(h).contiguous(memory_format=torch.channels_last)))
        h = fastops.replicate_pad_channels_last(_pad_to_even(h), conv.padding[0])
        return fastops.tanh_avgpool_doubled(F.conv2d(h, *self._doubled[level]))

    def encode_vjp(self, level: int, h: torch.Tensor):
        """``(γ_level(h), vjp)``: the encoding, and ``vjp(g)`` = ∂⟨g, γ_level(h)⟩/∂h (a tensor of h's size),
        in fp32 (or the model's wider precision) in the closed form."""
        encoder = self.model.encoders[level]
        if self._vjp_doubled is None:
            params = {k: v.detach() for k, v in encoder.named_parameters()}
            out, vjp_fn = torch.func.vjp(lambda x: torch.func.functional_call(encoder, params, (x,)), h)
            return out, lambda g: vjp_fn(g)[0]
        pad = encoder.conv.padding[0]
        odd_h, odd_w = h.shape[-2] % 2, h.shape[-1] % 2
        weight2, bias2 = self._vjp_doubled[level]
        padded = fastops.replicate_pad_channels_last(_pad_to_even(h.to(weight2.dtype)), pad)
        s = F.conv2d(padded, weight2, bias2).sigmoid_()  # σ(2z): tanh(z) = 2σ(2z) − 1
        out = fastops.sum_pool2(s).mul_(0.5).sub_(1)
        weight = weight2 * 0.5

        def vjp(g: torch.Tensor) -> torch.Tensor:
            # ∂/∂z of mean-pooled tanh(z): the 2×2 repeat of g / 4, times 1 − tanh² = 4σ(1 − σ)
            up = F.interpolate(g.to(s.dtype), scale_factor=2, mode="nearest")  # 1.6× faster than a broadcast
            gp = F.conv_transpose2d(torch.addcmul(s, s, s, value=-1).mul_(up), weight)
            if gp.shape[1] <= 4:
                gp = gp.contiguous()  # the picture's gradient: plain, like the picture (the rest is 2× faster)
            return fastops.replicate_pad_adjoint(gp, pad, pad + odd_w, pad, pad + odd_h)

        return out, vjp

    def decode(self, level: int, h: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
        """γ_level⁻¹ of ``h`` (level+1), cropped to ``size`` (H, W) when given."""
        h = h.contiguous(memory_format=torch.channels_last)
        decoder = self.model.decoders[level]
        if decoder.kind == "upconv":
            out = decoder(h)
        elif decoder.kind == "interp":
            weight, bias = self._interp[level]
            out = fastops.pixel_shuffle2(F.conv2d(fastops.replicate_pad_channels_last(h, 1), weight, bias))
        else:
            out = fastops.pixel_shuffle2(decoder.conv(h))
            out = fastops.halfband5(out) if decoder.kind == "smooth" else out
        return out if size is None else out[..., : size[0], : size[1]]
