"""Picture formats made on the engine's device: checked against a plain numpy statement of the
BT.601/BT.709 limited-range formulas, against OpenCV's own RGB → I420, and for layout."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from ffvj.engine import pixfmt


def reference_yuv420(rgb: np.ndarray, matrix: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Y, U, V planes from RGB bytes, straight from the textbook formulas, in float64."""
    kr, kb = pixfmt.MATRICES[matrix]
    kg = 1 - kr - kb
    x = rgb.astype(np.float64) / 255.0
    h, w, _ = x.shape
    y = kr * x[..., 0] + kg * x[..., 1] + kb * x[..., 2]
    blocks = x.reshape(h // 2, 2, w // 2, 2, 3).mean(axis=(1, 3))
    yb = kr * blocks[..., 0] + kg * blocks[..., 1] + kb * blocks[..., 2]
    cb = (blocks[..., 2] - yb) / (2 * (1 - kb))
    cr = (blocks[..., 0] - yb) / (2 * (1 - kr))
    return 16 + 219 * y, 128 + 224 * cb, 128 + 224 * cr


def picture(h=36, w=64, seed=0) -> torch.Tensor:
    torch.manual_seed(seed)
    return torch.rand(1, 3, h, w) * 2 - 1


def test_rgb24_rounds_each_level():
    p = picture()
    expected = p[0].add(1).mul(127.5).add(0.5).clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
    assert np.array_equal(pixfmt.convert(p, "rgb24").numpy(), expected)


@pytest.mark.parametrize("matrix", sorted(pixfmt.MATRICES))
@pytest.mark.parametrize("layout", pixfmt.LAYOUTS)
def test_yuv420_matches_the_formulas(layout, matrix):
    p = picture()
    h, w = p.shape[-2:]
    exact = ((p[0].permute(1, 2, 0).double().numpy() + 1) * 127.5)  # the picture's RGB, unrounded
    y, u, v = reference_yuv420(exact, matrix)
    out = pixfmt.convert(p, f"{layout}:{matrix}").numpy()
    assert out.shape == pixfmt.frame_shape(f"{layout}:{matrix}", w, h) == (h * 3 // 2, w)
    assert np.abs(out[:h].astype(float) - y).max() <= 0.5 + 1e-3  # rounded to the nearest code
    chroma = out[h:].reshape(-1)
    if layout == "i420":
        got_u, got_v = chroma[: h * w // 4], chroma[h * w // 4:]
    else:
        got_u, got_v = chroma[0::2], chroma[1::2]
    assert np.abs(got_u.astype(float) - u.reshape(-1)).max() <= 0.5 + 1e-3
    assert np.abs(got_v.astype(float) - v.reshape(-1)).max() <= 0.5 + 1e-3


def test_bt601_agrees_with_opencv_on_a_smooth_picture():
    """OpenCV's RGB → I420 (BT.601, limited range) sites chroma differently, so on a smooth
    picture, where siting hardly matters, the planes agree within a few codes."""
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 36), torch.linspace(-1, 1, 64), indexing="ij")
    p = torch.stack([xx, yy, xx * yy])[None]
    ours = pixfmt.convert(p, "i420:bt601").numpy().astype(int)
    theirs = cv2.cvtColor(pixfmt.convert(p, "rgb24").numpy(), cv2.COLOR_RGB2YUV_I420).astype(int)
    assert np.abs(ours[:36] - theirs[:36]).max() <= 1
    assert np.abs(ours[36:] - theirs[36:]).max() <= 5


def test_bad_formats_and_odd_sizes_are_refused():
    with pytest.raises(ValueError, match="unknown picture format 'yuv444'"):
        pixfmt.convert(picture(), "yuv444")
    with pytest.raises(ValueError, match="even width and height, got 63x36"):
        pixfmt.convert(picture(36, 63), "i420:bt709")
    assert pixfmt.convert(picture(35, 63), "rgb24").shape == (35, 63, 3)
