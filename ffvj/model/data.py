"""Training and evaluation pictures: image folders, frames sampled across video files, and a built-in
set of natural photos that ships inside scikit-image (the ``train`` extra), so training needs no
download.

Every loader returns RGB uint8 arrays (H, W, 3); ``to_tensor`` turns one into the model's h⁰ range.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"}

# The photos inside scikit-image's wheel (skimage/data). The test split is never trained on or
# validated with: it is what the model card's eval table reports. The motorcycle pair is a stereo
# pair, so both halves sit in the same split.
BUILTIN_SPLITS = {
    "train": [
        "astronaut", "hubble_deep_field", "immunohistochemistry", "retina", "camera", "brick",
        "grass", "gravel", "moon", "coins", "text", "page", "cell", "microaneurysms", "clock",
    ],
    "val": ["rocket"],
    "test": ["chelsea", "coffee", "motorcycle_left", "motorcycle_right"],
}


def builtin_photos(split: str = "train") -> dict[str, np.ndarray]:
    """The scikit-image photos of one split, by name, as RGB uint8 (grey ones copied to 3 channels)."""
    if split not in BUILTIN_SPLITS:
        raise ValueError(f"unknown split {split!r}; choose from {sorted(BUILTIN_SPLITS)}")
    try:
        from skimage import data as skdata
    except ImportError as exc:
        raise RuntimeError(
            "the built-in photo set lives in scikit-image; install it with: pip install 'ffvj[train]'"
        ) from exc
    photos = {}
    for name in BUILTIN_SPLITS[split]:
        if name == "motorcycle_left" or name == "motorcycle_right":
            left, right, _ = skdata.stereo_motorcycle()
            img = left if name == "motorcycle_left" else right
        else:
            img = getattr(skdata, name)()
        photos[name] = as_rgb8(img)
    return photos


def as_rgb8(img: np.ndarray) -> np.ndarray:
    """Any grey, grey+alpha, RGB or RGBA array (uint8 or float in [0, 1]) as RGB uint8."""
    img = np.asarray(img)
    if img.dtype == bool:
        img = img.astype(np.uint8) * 255
    elif img.dtype != np.uint8:
        img = np.clip(img.astype(np.float64) * (255.0 if img.max() <= 1.0 else 1.0), 0, 255).astype(np.uint8)
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    elif img.shape[2] == 2:
        img = np.repeat(img[:, :, :1], 3, axis=2)
    elif img.shape[2] == 4:
        img = img[:, :, :3]
    return np.ascontiguousarray(img)


def read_image(path: Path) -> np.ndarray:
    """One picture file as RGB uint8; a file OpenCV cannot decode raises naming the file."""
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError(f"{path}: not a picture OpenCV can read")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def read_luminance(path: str | Path) -> torch.Tensor:
    """A picture file's luminance in [0, 1] as (1, 1, H, W): a modulation map (``map.kind = image``)."""
    return torch.from_numpy(read_image(Path(path)).mean(axis=2, dtype=np.float32) / 255)[None, None]


def image_folder(path: Path) -> dict[str, np.ndarray]:
    """Every picture under a folder (recursively), by relative path."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such folder of images")
    files = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ValueError(f"{path}: no pictures ({', '.join(sorted(IMAGE_SUFFIXES))}) in this folder")
    return {str(p.relative_to(path)): read_image(p) for p in files}


def video_frames(path: Path, count: int = 32) -> dict[str, np.ndarray]:
    """``count`` frames spread evenly across a video file (all of them if it is shorter)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such video file")
    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            raise ValueError(f"{path}: OpenCV cannot open this video")
        # Decode straight through and keep the wanted indices: frame counts in containers are often
        # estimates, and seeking by frame index is inexact for many codecs.
        total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        wanted = set(np.linspace(0, max(total - 1, 0), num=min(count, max(total, 1))).round().astype(int))
        frames, index = {}, 0
        while True:
            ok, bgr = cap.read()
            if not ok:
                break
            if index in wanted or total <= 0:
                frames[f"{path.name}#{index}"] = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            index += 1
    finally:
        cap.release()
    if not frames:
        raise ValueError(f"{path}: no frames could be decoded")
    if total <= 0 and len(frames) > count:  # no count in the container: thin out what was read
        keys = list(frames)
        keep = np.linspace(0, len(keys) - 1, num=count).round().astype(int)
        frames = {keys[i]: frames[keys[i]] for i in keep}
    return frames


def load_sources(specs: list[str], video_frame_count: int = 32) -> dict[str, np.ndarray]:
    """Pictures from ``builtin[:SPLIT]``, folders and video files, by a unique name each."""
    pictures: dict[str, np.ndarray] = {}
    for spec in specs:
        if spec == "builtin" or spec.startswith("builtin:"):
            split = spec.partition(":")[2] or "train"
            found = {f"builtin:{k}": v for k, v in builtin_photos(split).items()}
        else:
            path = Path(spec)
            if path.is_dir():
                found = {f"{path}/{k}": v for k, v in image_folder(path).items()}
            elif path.is_file():
                found = video_frames(path, video_frame_count) if path.suffix.lower() not in IMAGE_SUFFIXES \
                    else {str(path): read_image(path)}
            else:
                raise FileNotFoundError(
                    f"training source {spec!r} is neither 'builtin[:train|val|test]', a folder nor a file"
                )
        pictures.update(found)
    return pictures


def to_tensor(rgb8: np.ndarray) -> torch.Tensor:
    """RGB uint8 (H, W, 3) → float (3, H, W) in [-1, 1], the model's h⁰ range."""
    return torch.from_numpy(np.ascontiguousarray(rgb8)).permute(2, 0, 1).float().div(127.5).sub(1.0)


def to_rgb8(state: torch.Tensor) -> np.ndarray:
    """float (3, H, W) in [-1, 1] → RGB uint8 (H, W, 3), clamped."""
    return state.detach().clamp(-1, 1).add(1).mul(127.5).round().byte().permute(1, 2, 0).cpu().numpy()


@dataclass
class CropSampler:
    """Random crops with random horizontal and vertical flips from a set of pictures.

    Each picture is drawn with probability proportional to its area, so one big photo is not
    outweighed by many small ones. Pictures smaller than the crop are scaled up to fit.
    """

    pictures: dict[str, np.ndarray]
    crop: int
    tensors: list[torch.Tensor] = field(init=False)
    weights: torch.Tensor = field(init=False)

    def __post_init__(self) -> None:
        if not self.pictures:
            raise ValueError("no training pictures")
        self.tensors = []
        for rgb in self.pictures.values():
            h, w = rgb.shape[:2]
            if min(h, w) < self.crop:
                scale = self.crop / min(h, w)
                rgb = cv2.resize(rgb, (max(self.crop, round(w * scale)), max(self.crop, round(h * scale))),
                                 interpolation=cv2.INTER_CUBIC)
            self.tensors.append(to_tensor(rgb))
        self.weights = torch.tensor([t.shape[1] * t.shape[2] for t in self.tensors], dtype=torch.float64)

    def sample(self, batch: int, generator: torch.Generator) -> torch.Tensor:
        which = torch.multinomial(self.weights, batch, replacement=True, generator=generator)
        crops = []
        for i in which.tolist():
            t = self.tensors[i]
            y = int(torch.randint(0, t.shape[1] - self.crop + 1, (1,), generator=generator))
            x = int(torch.randint(0, t.shape[2] - self.crop + 1, (1,), generator=generator))
            c = t[:, y : y + self.crop, x : x + self.crop]
            flips = torch.randint(0, 2, (2,), generator=generator).tolist()
            if flips[0]:
                c = c.flip(-1)
            if flips[1]:
                c = c.flip(-2)
            crops.append(c)
        return torch.stack(crops)

    def fixed_crops(self, per_picture: int, seed: int = 0) -> torch.Tensor:
        """The same crops every call (for validation)."""
        g = torch.Generator().manual_seed(seed)
        out = []
        for t in self.tensors:
            for _ in range(per_picture):
                y = int(torch.randint(0, t.shape[1] - self.crop + 1, (1,), generator=g))
                x = int(torch.randint(0, t.shape[2] - self.crop + 1, (1,), generator=g))
                out.append(t[:, y : y + self.crop, x : x + self.crop])
        return torch.stack(out)
