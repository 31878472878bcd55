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


def use_cpu_threads(threads: int | None) -> int:
    """Run the engine's CPU arithmetic on ``threads`` threads (None: torch's default, one per core);
    returns the number in force. Beside another busy program (OBS encoding, a browser), fewer threads
    than cores is faster: torch's threads wait for one another at every operation, so one that shares
    its core with another program holds up the rest. On the 2-core development machine with one core
    kept busy, the engine ran at 26 fps with a 184 ms p99 on 2 threads and at 64 fps with a 24 ms p99
    on 1 (docs/PERFORMANCE.md). Process-wide, like ``keep_freed_host_memory``: the command line's call."""
    if threads is not None:
        if threads < 1:
            raise ValueError(f"threads must be at least 1, got {threads}")
        torch.set_num_threads(threads)
    return torch.get_num_threads()


# glibc mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


def keep_freed_host_memory() -> bool:
    """Ask glibc's malloc to keep freed memory for reuse instead of handing it back to the kernel.

    A CPU frame allocates and frees tensors of a few MB dozens of times. By default glibc serves
    blocks that large with fresh ``mmap`` calls, and trims the heap top after frees, so every frame
    page-faults its working set in again; on the 2-core development machine that costs 13-15% of
    the engine step (docs/PERFORMANCE.md). With both thresholds raised, the heap keeps those pages
    and reuses them. The cost: the process keeps its peak memory (a few hundred MB), as a show
    process should. Only the command-line entry points call this: it changes the whole process.
    Returns False where it does not apply (not glibc) or was refused.
    """
    import ctypes
    import ctypes.util
    import platform

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        # 32 MiB is the largest mmap threshold glibc accepts on 64-bit; bigger blocks are rare here.
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, 32 << 20)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, 1 << 30))
    except (OSError, AttributeError):
        return False
