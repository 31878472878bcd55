"""Choosing a torch device by name, with errors that say what is there instead."""

from __future__ import annotations

import torch

DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps and mps.is_available())


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA, then MPS, then the CPU; a named device that is absent raises ValueError."""
    base = name.split(":")[0]
    if base not in DEVICE_CHOICES:
        raise ValueError(f"unknown device {name!r}; choose from {', '.join(DEVICE_CHOICES)} (cuda:N also works)")
    if base == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps") if _mps_available() else torch.device("cpu")
    if base == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} asked for, but this torch ({torch.__version__}) sees no CUDA GPU; "
                         "use --device cpu, or install a CUDA build of torch")
    if base == "mps" and not _mps_available():
        raise ValueError(f"device {name!r} asked for, but MPS is not available here; use --device cpu")
    return torch.device(name)
