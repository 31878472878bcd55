"""How well the hierarchy reconstructs pictures, against the honest baseline, and pictures of it.

For every level ℓ: the PSNR and SSIM of the round trip decode∘…∘encode through ℓ levels, next to
bicubic resampling down and up by 2^ℓ on the same pictures (the same amount of spatial reduction with
no learning). Also the original experiment's visual checks: reconstruction sheets, first-level
filters and activations.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from .data import to_rgb8, to_tensor
from .net import FeatureAutoencoder


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB per picture, for batches in [-1, 1] (clamped, as displayed)."""
    a01 = a.clamp(-1, 1).add(1).div(2)
    b01 = b.clamp(-1, 1).add(1).div(2)
    mse = (a01 - b01).pow(2).flatten(1).mean(1).clamp_min(1e-12)
    return -10.0 * torch.log10(mse)


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float64) - size // 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :]).float()


def ssim(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Structural similarity per picture (Wang et al. 2004: 11×11 Gaussian σ=1.5, K1=0.01, K2=0.03),
    computed per channel on [0, 1] values and averaged over channels and positions."""
    a01 = a.clamp(-1, 1).add(1).div(2)
    b01 = b.clamp(-1, 1).add(1).div(2)
    c = a01.shape[1]
    win = _gaussian_window().to(a01)[None, None].expand(c, 1, -1, -1)

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(t, win, groups=c)

    mu_a, mu_b = blur(a01), blur(b01)
    var_a = blur(a01 * a01) - mu_a**2
    var_b = blur(b01 * b01) - mu_b**2
    cov = blur(a01 * b01) - mu_a * mu_b
    c1, c2 = 0.01**2, 0.03**2
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return s.flatten(1).mean(1)


def bicubic_roundtrip(x: torch.Tensor, factor: int) -> torch.Tensor:
    """Bicubic down by ``factor`` (antialiased, to the hierarchy's ceil size) and back up."""
    h, w = x.shape[-2:]
    small = F.interpolate(x, size=(-(-h // factor), -(-w // factor)), mode="bicubic", antialias=True,
                          align_corners=False)
    return F.interpolate(small, size=(h, w), mode="bicubic", align_corners=False)


@torch.no_grad()
def evaluate(model: FeatureAutoencoder, pictures: dict[str, np.ndarray], device: str | torch.device = "cpu"
             ) -> dict:
    """The eval table: one row per level with the model's and bicubic's mean PSNR and SSIM."""
    if not pictures:
        raise ValueError("no pictures to evaluate on")
    model = model.to(device).eval()
    sums = {lvl: np.zeros(4) for lvl in range(1, model.levels + 1)}
    for rgb in pictures.values():
        x = to_tensor(rgb)[None].to(device)
        for lvl in sums:
            ours = model.reconstruct(x, lvl)
            base = bicubic_roundtrip(x, 2**lvl)
            sums[lvl] += [psnr(ours, x).item(), ssim(ours, x).item(), psnr(base, x).item(), ssim(base, x).item()]
    rows = []
    for lvl, s in sums.items():
        p, q, bp, bq = (s / len(pictures)).tolist()
        rows.append({"level": lvl, "scale": 2**lvl, "psnr": round(p, 3), "ssim": round(q, 4),
                     "bicubic_psnr": round(bp, 3), "bicubic_ssim": round(bq, 4), "gain_db": round(p - bp, 3)})
    return {"images": len(pictures), "levels": rows}


def format_table(result: dict) -> str:
    lines = ["| level | scale | PSNR (dB) | bicubic PSNR | gain (dB) | SSIM | bicubic SSIM |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in result["levels"]:
        lines.append(f"| {r['level']} | 1/{r['scale']} | {r['psnr']:.2f} | {r['bicubic_psnr']:.2f} | "
                     f"{r['gain_db']:+.2f} | {r['ssim']:.3f} | {r['bicubic_ssim']:.3f} |")
    return "\n".join(lines)


# --- pictures ------------------------------------------------------------------------------------

def _label(tile: np.ndarray, text: str) -> np.ndarray:
    out = tile.copy()
    cv2.putText(out, text, (3, 12), cv2.FONT_HERSHEY_PLAIN, 0.8, (0, 0, 0), 2, cv2.LINE_AA)
    cv2.putText(out, text, (3, 12), cv2.FONT_HERSHEY_PLAIN, 0.8, (255, 255, 255), 1, cv2.LINE_AA)
    return out


def _write_rgb(path: Path, rgb: np.ndarray) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)):
        raise OSError(f"{path}: could not write the picture")
    return path


def _center_crop(rgb: np.ndarray, size: int) -> np.ndarray:
    h, w = rgb.shape[:2]
    if min(h, w) < size:
        rgb = cv2.resize(rgb, (max(size, w * size // min(h, w)), max(size, h * size // min(h, w))))
        h, w = rgb.shape[:2]
    y, x = (h - size) // 2, (w - size) // 2
    return rgb[y : y + size, x : x + size]


@torch.no_grad()
def reconstruction_sheet(model: FeatureAutoencoder, pictures: dict[str, np.ndarray], path: Path,
                         crop: int = 160, limit: int = 4) -> Path:
    """A grid: one row per picture; the original, then per level the round trip and bicubic."""
    model = model.eval()
    device = next(model.parameters()).device
    rows = []
    for rgb in list(pictures.values())[:limit]:
        patch = _center_crop(rgb, crop)
        x = to_tensor(patch)[None].to(device)
        tiles = [_label(patch, "original")]
        for lvl in range(1, model.levels + 1):
            ours, base = model.reconstruct(x, lvl), bicubic_roundtrip(x, 2**lvl)
            tiles.append(_label(to_rgb8(ours[0]), f"L{lvl} {psnr(ours, x).item():.1f}dB"))
            tiles.append(_label(to_rgb8(base[0]), f"bicubic/{2**lvl} {psnr(base, x).item():.1f}dB"))
        rows.append(np.concatenate(tiles, axis=1))
    return _write_rgb(path, np.concatenate(rows, axis=0))


def filter_sheet(model: FeatureAutoencoder, path: Path, zoom: int = 24) -> Path:
    """The first level's convolution filters as RGB tiles, each scaled to its own range."""
    w = model.encoders[0].conv.weight.detach().cpu().float()  # (C1, 3, k, k)
    tiles = []
    for f in w:
        f = (f - f.min()) / (f.max() - f.min()).clamp_min(1e-8)
        tile = (f.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        tile = cv2.resize(tile, None, fx=zoom, fy=zoom, interpolation=cv2.INTER_NEAREST)
        tiles.append(np.pad(tile, ((2, 2), (2, 2), (0, 0)), constant_values=40))
    return _write_rgb(path, np.concatenate(tiles, axis=1))


@torch.no_grad()
def activation_sheet(model: FeatureAutoencoder, rgb: np.ndarray, path: Path, crop: int = 256) -> Path:
    """Every channel of every level for one picture, as grey tiles (one row per level)."""
    model = model.eval()
    device = next(model.parameters()).device
    states = model.encode_all(to_tensor(_center_crop(rgb, crop))[None].to(device))
    rows = []
    width = crop * 3
    for lvl, h in enumerate(states[1:], start=1):
        chans = h[0].cpu()
        size = max(16, crop // 2**lvl)
        tiles = []
        for c in chans:
            g = ((c.clamp(-1, 1) + 1) * 127.5).round().byte().numpy()
            g = cv2.resize(g, (size, size), interpolation=cv2.INTER_NEAREST)
            tiles.append(np.pad(g, 1, constant_values=0))
        per_row = max(1, width // tiles[0].shape[1])
        lines = [np.concatenate(tiles[i : i + per_row] + [np.zeros_like(tiles[0])] * (per_row - len(tiles[i : i + per_row])),
                                axis=1) for i in range(0, len(tiles), per_row)]
        block = np.concatenate(lines, axis=0)
        rows.append(np.pad(block, ((0, 4), (0, max(0, width - block.shape[1]))), constant_values=255))
    full_w = max(r.shape[1] for r in rows)
    grey = np.concatenate([np.pad(r, ((0, 0), (0, full_w - r.shape[1])), constant_values=255) for r in rows])
    return _write_rgb(path, np.repeat(grey[:, :, None], 3, axis=2))
