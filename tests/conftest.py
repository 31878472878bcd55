"""Shared fixtures: small pictures and models made at test time (nothing downloaded)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from .helpers import smooth_picture

torch.set_num_threads(min(2, torch.get_num_threads()))


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
    from ffvj.model.net import FeatureAutoencoder, ModelConfig

    torch.manual_seed(0)
    return FeatureAutoencoder(ModelConfig(channels=(3, 6, 8, 10))).eval()
