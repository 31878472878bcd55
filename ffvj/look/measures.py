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

Texture and life (issue 22: is the learned hierarchy what the audience sees?):

``texture_stats(frame)`` and ``texture_distance(a, b)``
    A picture's structure as statistics that do not care where things are, only what they are like:
    the power in each octave band of its luminance (a Laplacian pyramid), the histograms of its gradients'
    magnitudes and orientations, and its colour's means and spreads. Two runs of one chaotic process
    differ in every pixel but little in these; a hierarchy that hands down texture changes them.
``detail(frame)``
    Mean luminance gradient magnitude (8-bit levels a pixel): what drains away when a look blurs out.
``dead_area(frame)``
    The share of 16×16 blocks whose luminance barely varies (std < 2 levels): flat, dead fields.
``complexity(frame)``
    Bits per pixel of the frame as a JPEG at quality 85 (compression size, the computational-aesthetics
    proxy for visual complexity).
``flicker(a, b, c)``
    Mean absolute second difference in time of three frames (levels): motion is smooth, flicker is not.
``colourfulness(frame)``
    Hasler and Süsstrunk's measure of how colourful a picture looks (0 grey, about 30 a photo).
``grid_structure(frames)``
    Structure phase-locked to the levels' pooling grids (2, 4 and 8 pixels): how unevenly the luminance
    steps, averaged over a run's frames, fall on the grid's phases (0: evenly; a photo reads about 0.05;
    bars on the 8-pixel grid 0.2). Content passing over the grid averages out; a grid stays.
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


# --- texture and life (issue 22) -------------------------------------------------------------------

_LUMA = np.array([0.299, 0.587, 0.114], np.float32)
BANDS = 6  # octave bands of the Laplacian pyramid: 1–2, 2–4, … 32–64 pixel periods, then the rest
GRADIENT_BINS = 8
DEAD_BLOCK, DEAD_STD = 16, 2.0


def luma(frame: np.ndarray) -> np.ndarray:
    return frame.astype(np.float32) @ _LUMA


def _gradients(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    gx = cv2.Sobel(y, cv2.CV_32F, 1, 0, ksize=3) / 8.0  # /8: a step of one level reads one level a pixel
    gy = cv2.Sobel(y, cv2.CV_32F, 0, 1, ksize=3) / 8.0
    return gx, gy


def detail(frame: np.ndarray) -> float:
    """Mean luminance gradient magnitude, in 8-bit levels a pixel."""
    gx, gy = _gradients(luma(frame))
    return float(np.sqrt(gx * gx + gy * gy).mean())


def dead_area(frame: np.ndarray) -> float:
    """The share of ``DEAD_BLOCK``² blocks whose luminance std is under ``DEAD_STD`` levels."""
    y = luma(frame)
    h, w = (y.shape[0] // DEAD_BLOCK) * DEAD_BLOCK, (y.shape[1] // DEAD_BLOCK) * DEAD_BLOCK
    blocks = y[:h, :w].reshape(h // DEAD_BLOCK, DEAD_BLOCK, w // DEAD_BLOCK, DEAD_BLOCK)
    return float((blocks.std(axis=(1, 3)) < DEAD_STD).mean())


def complexity(frame: np.ndarray) -> float:
    """Bits per pixel of the frame as a quality-85 JPEG."""
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(frame, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 85])
    return 8.0 * len(data) / (frame.shape[0] * frame.shape[1]) if ok else 0.0


def flicker(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> float:
    """Mean |a − 2b + c| / 2 over the pixels, in 8-bit levels: 0 for a steady or steadily moving picture,
    the swing of a frame that alternates."""
    return float(np.abs(a.astype(np.int16) - 2 * b.astype(np.int16) + c).mean() / 2)


def grid_profiles(frame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The mean luminance step between neighbouring rows (and columns): what ``grid_structure`` reads."""
    y = luma(frame)
    return np.abs(np.diff(y, axis=0)).mean(axis=1), np.abs(np.diff(y, axis=1)).mean(axis=0)


def grid_structure(frames, periods=(2, 4, 8)) -> float:
    """How strongly the luminance steps of ``frames`` (one frame, or several of one run: the steps are
    averaged over them first, so only structure that stays on the grid counts, not content that passes
    over it) fall on the phases of a 2-, 4- or 8-pixel grid: for each axis and period p, the mean step
    at each phase k mod p; the spread of those p means (largest − smallest) over the mean step. The
    largest over axes and periods: 0 for steps spread evenly, about 0.05 on a photo; bars on the
    8-pixel pooling grid read 0.2 and more."""
    frames = [frames] if isinstance(frames, np.ndarray) and frames.ndim == 3 else list(frames)
    return grid_structure_of_profiles([grid_profiles(f) for f in frames], periods)


def grid_structure_of_profiles(profiles, periods=(2, 4, 8)) -> float:
    """``grid_structure`` from frames' ``grid_profiles`` (kept instead of the frames)."""
    worst = 0.0
    for axis in (0, 1):
        profile = np.mean([p[axis] for p in profiles], axis=0)
        for p in periods:
            usable = (len(profile) // p) * p
            if usable < 2 * p:
                continue
            phases = profile[:usable].reshape(-1, p).mean(0)
            # (+ 0.5 level: on a nearly flat picture a spread of a tenth of a level is no grid anyone sees)
            worst = max(worst, float((phases.max() - phases.min()) / (profile[:usable].mean() + 0.5)))
    return worst


def texture_stats(frame: np.ndarray) -> dict[str, np.ndarray]:
    """The structure of a frame (see the module docstring), as groups of numbers on comparable scales."""
    y = luma(frame)
    bands, current = [], y
    for _ in range(BANDS - 1):
        down = cv2.pyrDown(current)
        up = cv2.pyrUp(down, dstsize=(current.shape[1], current.shape[0]))
        bands.append(float(np.mean((current - up) ** 2)))
        current = down
    bands.append(float(np.var(current)))
    gx, gy = _gradients(y)
    magnitude = np.sqrt(gx * gx + gy * gy)
    mag_hist = np.histogram(np.log2(1 + magnitude), bins=GRADIENT_BINS, range=(0, 6))[0].astype(np.float64)
    theta = np.mod(np.arctan2(gy, gx), np.pi)
    orient_hist = np.histogram(theta, bins=GRADIENT_BINS, range=(0, np.pi), weights=magnitude)[0]
    rgb = frame.reshape(-1, 3).astype(np.float32) / 255
    opponent = np.stack([rgb @ _LUMA, rgb[:, 0] - rgb[:, 1], 0.5 * (rgb[:, 0] + rgb[:, 1]) - rgb[:, 2]], 1)
    return {"bands": np.log10(1 + np.asarray(bands)),  # about 0..4
            "magnitudes": mag_hist / max(1.0, mag_hist.sum()),
            "orientations": orient_hist / max(1e-9, orient_hist.sum()),
            "colour": np.concatenate([opponent.mean(0), opponent.std(0)])}


def mean_stats(stats: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """The average of several frames' ``texture_stats`` (a settled stretch of a run)."""
    return {k: np.mean([s[k] for s in stats], 0) for k in stats[0]}


def colourfulness(frame: np.ndarray) -> float:
    """Hasler and Süsstrunk's colourfulness (2003): the spread and strength of the opponent colours rg and
    yb, in 8-bit levels: about 0 for grey, 30 for a natural photo, 60 and more for a vivid, saturated one."""
    rgb = frame.reshape(-1, 3).astype(np.float32)
    rg = rgb[:, 0] - rgb[:, 1]
    yb = 0.5 * (rgb[:, 0] + rgb[:, 1]) - rgb[:, 2]
    return float(np.hypot(rg.std(), yb.std()) + 0.3 * np.hypot(rg.mean(), yb.mean()))


STRUCTURE = ("bands", "magnitudes", "orientations")  # what a picture is made of; its colour is apart
_GROUP_WEIGHTS = {"bands": 1.0, "magnitudes": 4.0, "orientations": 4.0, "colour": 4.0}


def texture_distance(a: dict[str, np.ndarray], b: dict[str, np.ndarray], groups=STRUCTURE) -> float:
    """How different two ``texture_stats`` are in ``groups``: the mean absolute difference within each
    group (the bands' log-power; the histograms' shares ×4, so a quarter of the mass moved reads like a
    tenfold band; the colour's [0, 1] statistics ×4), summed. By default the structure alone: a colour
    change is a palette, which a mixer downstream could add to anything."""
    return float(sum(_GROUP_WEIGHTS[k] * np.abs(a[k] - b[k]).mean() for k in groups))
