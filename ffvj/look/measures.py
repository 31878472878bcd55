"""Measures of a picture over time: what ``ffvj look`` reports and what the output's flash limiter counts.

Every measure takes RGB uint8 frames (H, W, 3), or feature states as float arrays, and is plain numpy:

``lattice_excess(plane)``
    A screen-locked pattern (the checkerboard a sub-pixel decoder can imprint) lives on the frequency
    lattice of multiples of 1/8 cycle per pixel. Its strength is the power on each of those lattice bins
    above the power of its neighbours off the lattice (what the picture has there anyway), as the sum of
    the amplitudes of the excess, in the plane's own units (8-bit levels for a picture): a 2-pixel
    checkerboard of ±a gives a; a pattern spread over many lattice frequencies, the sum of theirs. A
    photo gives about one level.
``ssim(a, b)``
    Structural similarity of two frames (the model's own, ``model.evaluate.ssim``).
``change(a, b)``
    Mean absolute difference in 8-bit levels; a frozen picture changes by less than ``FROZEN`` a frame.
``FlashCounter``
    General and red flashes by the rules of ITU-R BT.1702 and WCAG 2.3.1 (``engine.flashes``, the very
    rules the output's flash limiter keeps): more than 3 flashes in any one second is the risk.
``hue_share(frame)``
    The share of the whole frame taken by saturated pixels of its most common hue (six hues, 60° each):
    a picture burnt to one colour has a large one.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import torch

from ..engine.flashes import FlashTracker, flashes_in

LATTICE = 8  # periods 2, 4 and 8 pixels: the lattice of multiples of 1/8 cycle per pixel
FROZEN = 0.5  # 8-bit levels per frame: below this the picture is not moving


def _periodic_spectrum(x: np.ndarray) -> np.ndarray:
    """The 2-D spectrum of ``x`` without its edges: the DFT treats a picture as a tile, so a top edge unlike
    the bottom one (or left unlike right) is a step that leaks power along the frequency axes, 1/f, lattice
    bins included: a high-contrast picture read as a lattice that was never there. Moisan's periodic plus
    smooth decomposition (J. Math. Imaging Vis. 2011) takes out the smooth part that carries those steps
    (a harmonic image set by the edges' differences) and keeps the periodic part, whose spectrum is the
    picture's own. Neither numpy nor OpenCV has it; written here (a Poisson solve in the
    DFT basis, a dozen lines)."""
    h, w = x.shape
    edges = np.zeros_like(x)
    edges[0, :] = x[-1, :] - x[0, :]
    edges[-1, :] = -edges[0, :]
    edges[:, 0] += x[:, -1] - x[:, 0]
    edges[:, -1] += x[:, 0] - x[:, -1]
    q, r = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    denominator = 2 * np.cos(2 * np.pi * q / h) + 2 * np.cos(2 * np.pi * r / w) - 4
    denominator[0, 0] = 1.0
    smooth = np.fft.fft2(edges) / denominator
    smooth[0, 0] = 0.0
    spectrum = np.fft.fft2(x) - smooth
    spectrum[0, 0] = 0.0  # the mean
    return spectrum


def lattice_excess(plane: np.ndarray, period: int = LATTICE) -> float:
    """The amplitude of ``plane`` (H, W) on the 1/``period`` frequency lattice above its neighbours', summed
    over the lattice's frequencies."""
    h, w = (plane.shape[0] // period) * period, (plane.shape[1] // period) * period
    if h < 2 * period or w < 2 * period:
        raise ValueError(f"a plane of {plane.shape} is too small to measure a lattice of period {period}")
    power = np.abs(_periodic_spectrum(plane[:h, :w].astype(np.float64))) ** 2
    ys, xs = np.meshgrid(np.arange(period) * (h // period), np.arange(period) * (w // period), indexing="ij")
    ys, xs = ys.ravel()[1:], xs.ravel()[1:]  # every lattice bin but the mean
    offsets = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3) if (dy, dx) != (0, 0)]
    around = np.stack([power[(ys + dy) % h, (xs + dx) % w] for dy, dx in offsets], 1)
    excess = np.clip(power[ys, xs] - np.median(around, 1), 0, None)
    # A bin's amplitude is |F|/N: a cosine of amplitude A puts A/2 in each of its two (conjugate) bins.
    return float(np.sqrt(excess).sum() / (h * w))


def frame_lattice(frame: np.ndarray) -> float:
    """``lattice_excess`` of an RGB frame, RMS over its channels (8-bit levels)."""
    return float(math.sqrt(np.mean([lattice_excess(frame[..., c]) ** 2 for c in range(frame.shape[2])])))


def state_lattice(state: np.ndarray) -> float:
    """``lattice_excess`` of a feature state (C, H, W) in [-1, 1], in the picture's 8-bit units, RMS over
    its channels."""
    return float(math.sqrt(np.mean([lattice_excess(c * 127.5) ** 2 for c in state])))


def ssim(a: np.ndarray, b: np.ndarray) -> float:


    from ..model.data import to_tensor
    from ..model.evaluate import ssim as model_ssim

    return float(model_ssim(to_tensor(a)[None], to_tensor(b)[None])[0])


def change(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute difference of two frames in 8-bit levels."""
    return float(np.abs(a.astype(np.int16) - b).mean())


def longest_run(flags, fps: float) -> float:
    """The longest run of true flags, in seconds."""
    best = run = 0
    for flag in flags:
        run = run + 1 if flag else 0
        best = max(best, run)
    return best / fps


def hue_share(frame: np.ndarray) -> float:
    """The share of the frame's pixels that are saturated (S ≥ ½, V ≥ ¼) and of its most common hue."""
    hsv = cv2.cvtColor(frame, cv2.COLOR_RGB2HSV)  # H in 0..179 (2° steps)
    saturated = (hsv[..., 1] >= 128) & (hsv[..., 2] >= 64)
    hues = ((hsv[..., 0][saturated].astype(np.int32) * 2 + 30) // 60) % 6  # six bins centred on R, Y, G, C, B, M
    return float(np.bincount(hues, minlength=6).max() / saturated.size) if hues.size else 0.0


class FlashCounter:
    """Counts general and red transitions frame by frame, by the limiter's own rules and tracker.
    ``add(frame)`` returns this frame's (general, red) transition: +1, −1 or 0."""

    def __init__(self, fps: float):
        self.tracker = FlashTracker(fps)

    def add(self, frame: np.ndarray) -> tuple[int, int]:
        picture = torch.from_numpy(np.ascontiguousarray(frame)).permute(2, 0, 1)[None].float().div_(127.5).sub_(1.0)
        return self.tracker.add(picture)

    def flashes(self, kind: str = "general") -> float:
        """Flashes in the last second."""
        return flashes_in(self.tracker.events[kind])
