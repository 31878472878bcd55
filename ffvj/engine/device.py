"""Choosing a torch device by name, with errors that say what is there instead; the CPU's threads.

    resolve_device(name)      auto → CUDA, MPS, then the CPU
    use_cpu_threads(n)        a fixed thread count (``--threads``)
    ThreadTuner(candidates)   the count that renders fastest now, found while a live show runs
"""

from __future__ import annotations

import logging
import statistics
import time
from collections import deque

import torch

log = logging.getLogger(__name__)

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


class ThreadTuner:
    """Keeps a live show on the CPU thread count that renders fastest *now*.

    Why: torch's threads wait for each other at every operation, and OpenMP's spin while they wait.
    Alone on 2 cores, 2 threads render at 92 fps and 1 at 56; beside one busy encoder (what OBS
    does during a show) 2 threads fall to 23 fps with 190 ms stalls while 1 keeps 55. Which is
    better depends on what else runs, and that changes during a show, so it is measured: the loop
    reports each step's time (``record``); every ``probe_every`` seconds the tuner tries another
    count for ``probe_frames`` frames and keeps it if its median step is ``margin`` faster. A probe
    that is clearly worse (two steps in a row over 3× the median) ends at once; a count that lost is tried
    again later and later (up to ``max_every``), so a settled show is disturbed rarely.
    """

    def __init__(self, candidates, probe_every: float = 10.0, probe_frames: int = 24, margin: float = 0.1,
                 max_every: float = 80.0, clock=time.monotonic, set_threads=None):
        self.candidates = sorted({int(c) for c in candidates if int(c) >= 1}, reverse=True) or [1]
        self.probe_every, self.probe_frames, self.margin, self.max_every = probe_every, probe_frames, margin, max_every
        self.clock = clock
        self._set = set_threads or torch.set_num_threads
        self.threads = self.candidates[0]
        self._set(self.threads)
        self._recent: deque[float] = deque(maxlen=probe_frames)
        self._probe: tuple[int, list[float]] | None = None
        self._interval = probe_every
        self._next = clock() + probe_every
        self.switches = 0

    def record(self, step_ms: float) -> None:
        """One frame's step time at the thread count in force; may change the count for the next."""
        now = self.clock()
        if self._probe is None:
            self._recent.append(step_ms)
            if len(self.candidates) > 1 and now >= self._next and len(self._recent) >= self.probe_frames // 2:
                others = [c for c in self.candidates if c != self.threads]
                trial = others[self.switches % len(others)]
                self._probe = (trial, [])
                self._set(trial)
            return
        trial, samples = self._probe
        samples.append(step_ms)
        base = statistics.median(self._recent)
        settled = samples[2:]  # the first steps after a change wake the thread pool
        clearly_worse = len(settled) >= 2 and min(settled[-2:]) > 3 * base  # two in a row: not one spike
        if clearly_worse or len(settled) >= self.probe_frames:
            if len(settled) >= self.probe_frames and statistics.median(settled) < base * (1 - self.margin):
                log.info("CPU threads %d → %d: %.1f ms a step instead of %.1f", self.threads, trial,
                         statistics.median(settled), base)
                self.threads, self.switches = trial, self.switches + 1
                self._recent = deque(settled, maxlen=self.probe_frames)
                self._interval = self.probe_every
            else:
                self._set(self.threads)
                self._interval = min(self._interval * 2, self.max_every)
            self._probe = None
            self._next = now + self._interval


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
