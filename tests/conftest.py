"""Shared fixtures: small pictures and models made at test time (nothing downloaded)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

torch.set_num_threads(min(2, torch.get_num_threads()))


def smooth_picture(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A photo-like RGB uint8 picture: smooth colour fields plus a few hard-edged shapes."""
    coarse = rng.random((max(2, height // 16), max(2, width // 16), 3)).astype(np.float32)
    img = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
    for _ in range(4):
        color = rng.random(3).tolist()
        center = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        cv2.circle(img, center, int(rng.integers(3, max(4, min(height, width) // 3))), color, -1)
    return (np.clip(img, 0, 1) * 255).astype(np.uint8)


@pytest.fixture
def picture_dir(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    folder = tmp_path / "pictures"
    folder.mkdir()
    for i in range(6):
        rgb = smooth_picture(rng, 72 + 5 * i, 96 + 3 * i)
        cv2.imwrite(str(folder / f"p{i}.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return folder


@pytest.fixture
def small_model():
    from ffvj.model import FeatureAutoencoder, ModelConfig

    torch.manual_seed(0)
    return FeatureAutoencoder(ModelConfig(channels=(3, 6, 8, 10))).eval()
