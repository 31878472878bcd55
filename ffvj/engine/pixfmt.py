"""Picture formats: what sinks take, made on the engine's device before the one readback per frame,
and the source frames' way in (``from_rgb24``).

A format is a string:

    rgb24            (H, W, 3) RGB bytes, what every sink takes
    i420:bt709       (H·3/2, W) bytes: the Y plane, then U (H/2 × W/2), then V; limited range
    nv12:bt709       (H·3/2, W) bytes: the Y plane, then U and V interleaved (H/2 × W/2 × 2)
    i420:bt601, nv12:bt601   the same with BT.601 weights (what webcams and v4l2loopback readers assume)

A 4:2:0 picture is half the bytes of RGB, so a sink that takes one natively (H.264 files, a
v4l2loopback or OBS virtual camera) gets it converted where the picture already is — on a GPU,
before it crosses the bus — instead of by the sink's library on the CPU afterwards. Chroma is the
mean of each 2×2 block (centre-sited); 4:2:0 needs an even width and height.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from .kernels import constant

RGB24 = "rgb24"
LAYOUTS = ("i420", "nv12")
MATRICES = {"bt601": (0.299, 0.114), "bt709": (0.2126, 0.0722)}  # (Kr, Kb); Kg = 1 − Kr − Kb
FORMATS = (RGB24,) + tuple(f"{layout}:{matrix}" for layout in LAYOUTS for matrix in MATRICES)


def check_format(fmt: str, width: int, height: int) -> None:
    """ValueError naming the problem unless ``fmt`` is a format here that fits width × height."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown picture format {fmt!r}; choose from {', '.join(FORMATS)}")
    if fmt != RGB24 and (width % 2 or height % 2):
        raise ValueError(f"{fmt} needs an even width and height, got {width}x{height}")


def frame_shape(fmt: str, width: int, height: int) -> tuple[int, ...]:
    """The numpy shape of one frame in ``fmt``."""
    return (height, width, 3) if fmt == RGB24 else (height * 3 // 2, width)


@functools.lru_cache(maxsize=16)
def _weights(matrix: str, device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Y and (Cb, Cr) rows acting on a picture in [−1, 1], in 8-bit limited-range code values.

    With r = (p + 1)/2: Y' = 16 + 219·(Kr·r + Kg·g + Kb·b) = 125.5 + 109.5·(K·p), because K sums to
    1; C' = 128 + 224·(row·r) = 128 + 112·(row·p), because each chroma row sums to 0."""
    kr, kb = MATRICES[matrix]
    kg = 1.0 - kr - kb
    luma = torch.tensor([[kr, kg, kb]], dtype=torch.float64)
    cb = (torch.tensor([[0.0, 0.0, 1.0]], dtype=torch.float64) - luma) / (2 * (1 - kb))
    cr = (torch.tensor([[1.0, 0.0, 0.0]], dtype=torch.float64) - luma) / (2 * (1 - kr))
    return ((luma * 109.5).to(device, dtype), (torch.cat([cb, cr]) * 112.0).to(device, dtype))


def convert(picture: torch.Tensor, fmt: str) -> torch.Tensor:
    """A (1, 3, H, W) picture in [−1, 1] as one frame of ``fmt``: a uint8 tensor on the picture's
    device of shape ``frame_shape(fmt, W, H)``. Values are rounded to the nearest code."""
    _, _, h, w = picture.shape
    check_format(fmt, w, h)
    if fmt == RGB24:
        # (x + 1)·127.5 + 0.5 = 127.5·x + 128 in one pass; the cast, then the HWC transpose of bytes.
        levels = torch.add(constant((128.0,), picture.device, picture.dtype), picture[0], alpha=127.5).clamp_(0, 255)
        return levels.to(torch.uint8).permute(1, 2, 0).contiguous()
    layout, matrix = fmt.split(":")
    luma, chroma = _weights(matrix, picture.device, picture.dtype)
    out = torch.empty(h * w * 3 // 2, dtype=torch.uint8, device=picture.device)
    # The offsets carry + 0.5: the cast's truncation then rounds (values are clamped to [0, 255] first).
    y = torch.addmm(constant((125.5 + 0.5,), picture.device, picture.dtype).view(1, 1), luma,
                    picture[0].reshape(3, -1))
    out[: h * w].copy_(y.clamp_(0, 255).view(-1))
    blocks = F.avg_pool2d(picture[:1], 2)[0].reshape(3, -1)  # the mean RGB of each 2×2 block
    uv = torch.addmm(constant((128.0 + 0.5,), picture.device, picture.dtype).view(1, 1), chroma,
                     blocks).clamp_(0, 255)  # (2, H/2 · W/2): Cb then Cr
    if layout == "i420":
        out[h * w:].copy_(uv.view(-1))
    else:
        out[h * w:].view(-1, 2).copy_(uv.t())
    return out.view(h * 3 // 2, w)


def from_rgb24(frame, device: torch.device) -> torch.Tensor:
    """A source's RGB uint8 (H, W, 3) frame as a (1, 3, H, W) float picture in [-1, 1] on ``device``
    (uploaded as bytes: a quarter of the float's)."""
    t = torch.from_numpy(frame).to(device, non_blocking=True)
    return t.permute(2, 0, 1)[None].float().mul_(2 / 255).sub_(1)
