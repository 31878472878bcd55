"""Choosing a torch device by name, with errors that say what is there instead; the CPU's threads.

    resolve_device(name)      auto → CUDA, MPS, then the CPU
    use_cpu_threads(n)        a fixed thread count (``--threads``)
    ThreadTuner(candidates)   the count that renders fastest now, found while a live show runs
    CoreMeter()               how many cores other work leaves free (the tuner's guard against hitches)
"""

from __future__ import annotations

import logging
import os
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


class CoreMeter:
    """How many of this process's CPU cores are free of other work, from the kernel's own counts.

    ``sample(engine_cpu)`` (the render thread's CPU seconds, ``time.thread_time()``) records the cores'
    busy time from ``/proc/stat`` (only the cores this process may run on); ``free(threads)`` is the
    cores not kept busy by anything but the engine over the last few samples: everything busy, less the
    engine's own ``threads`` × the render thread's time (its other threads work alongside it). A busy
    encoder beside the show (OBS) counts as busy, as does this process's own work off the render thread
    (a recording's encoder). None where the kernel's counts cannot be read (not Linux)."""

    def __init__(self, path: str = "/proc/stat", clock=time.monotonic):
        self.path, self.clock = path, clock
        try:
            self.cpus = {f"cpu{i}" for i in os.sched_getaffinity(0)}
        except AttributeError:  # no affinity call: every core the kernel lists
            self.cpus = None
        self.cores = len(self.cpus) if self.cpus else (os.cpu_count() or 1)
        self._tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        self._samples: deque[tuple[float, float, float]] = deque(maxlen=4)

    def _busy_seconds(self) -> float | None:
        try:
            with open(self.path, encoding="ascii") as f:
                lines = f.read(1 << 16).splitlines()
        except OSError:
            return None
        busy = 0
        for line in lines:
            name, _, rest = line.partition(" ")
            if name.startswith("cpu") and name != "cpu" and (self.cpus is None or name in self.cpus):
                fields = [int(v) for v in rest.split()[:8]]  # user nice system idle iowait irq softirq steal
                busy += sum(fields) - fields[3] - fields[4]
        return busy / self._tick

    def sample(self, engine_cpu: float) -> None:
        busy = self._busy_seconds()
        if busy is not None:
            self._samples.append((self.clock(), busy, engine_cpu))

    def free(self, threads: int) -> float | None:
        if len(self._samples) < 2:
            return None
        (t0, busy0, cpu0), (t1, busy1, cpu1) = self._samples[0], self._samples[-1]
        if t1 - t0 < 0.5:
            return None
        others = ((busy1 - busy0) - threads * (cpu1 - cpu0)) / (t1 - t0)
        return min(float(self.cores), max(0.0, self.cores - max(0.0, others)))


class ThreadTuner:
    """Keeps a live show on the CPU thread count that renders fastest *now*, without a visible hitch.

    Why: torch's threads wait for each other at every operation, and OpenMP's spin while they wait.
    Alone on 2 cores, 2 threads render at 92 fps and 1 at 56; beside one busy encoder (what OBS
    does during a show) 2 threads fall to 23 fps with 190 ms stalls while 1 keeps 55. Which is
    better depends on what else runs, and that changes during a show, so it is measured: the loop
    reports each step's time (``record``); every ``probe_every`` seconds the tuner tries another
    count for ``probe_frames`` frames and keeps it if its median step is ``margin`` faster; a count
    that lost is tried again later and later (up to ``max_every``), so a settled show is disturbed rarely.

    A probe must never cost a visible hitch. Two threads sharing a core with an encoder took 250–680 ms
    a step, so a probe of *more* threads waits until that many cores are free of other work
    (``free_cores(threads)``, by default a ``CoreMeter``; asked again every ``probe_every`` seconds,
    so the show goes back to more threads soon after the encoder stops). And any probe ends on its first
    step over ``slow`` × the settled median (a competitor that started during it). Where the cores'
    use cannot be read (not Linux), a probe of more threads can still cost that one slow step.
    """

    def __init__(self, candidates, probe_every: float = 10.0, probe_frames: int = 24, margin: float = 0.1,
                 max_every: float = 80.0, clock=time.monotonic, set_threads=None, free_cores=None,
                 slow: float = 2.5, engine_cpu=time.thread_time):
        self.candidates = sorted({int(c) for c in candidates if int(c) >= 1}, reverse=True) or [1]
        self.probe_every, self.probe_frames, self.margin, self.max_every = probe_every, probe_frames, margin, max_every
        self.clock, self.slow, self.engine_cpu = clock, slow, engine_cpu
        self._set = set_threads or torch.set_num_threads
        self._meter = None
        if free_cores is None and len(self.candidates) > 1:
            self._meter = CoreMeter(clock=clock)
            free_cores = self._meter.free
        self.free_cores = free_cores or (lambda threads: None)
        self._next_sample = clock()
        self._next_urgent = clock()
        self.threads = self.candidates[0]
        self._set(self.threads)
        self._recent: deque[float] = deque(maxlen=probe_frames)
        self._probe: tuple[int, list[float]] | None = None
        self._interval = probe_every
        self._next = clock() + probe_every
        self.switches = 0
        self.probes = self.abandoned = self.postponed = 0  # probes begun, ended on a slow step, put off (busy cores)

    def record(self, step_ms: float) -> None:
        """One frame's step time at the thread count in force; may change the count for the next."""
        now = self.clock()
        if self._meter is not None and now >= self._next_sample:  # the cores' use, twice a second
            self._meter.sample(self.engine_cpu())
            self._next_sample = now + 0.5
        if self._probe is None:
            self._recent.append(step_ms)
            if len(self.candidates) > 1 and len(self._recent) >= self.probe_frames // 2:
                trial = self._trial(now)
                if trial is not None:
                    self._probe = (trial, [])
                    self.probes += 1
                    self._set(trial)
            return
        trial, samples = self._probe
        samples.append(step_ms)
        base = statistics.median(self._recent)
        if step_ms > self.slow * base:  # a visible hitch in the making: back at once
            self.abandoned += 1
            self._end_probe(now, keep=False)
            return
        settled = samples[2:]  # the first steps after a change wake the thread pool
        if len(settled) >= self.probe_frames:
            faster = statistics.median(settled) < base * (1 - self.margin)
            if faster:
                log.info("CPU threads %d → %d: %.1f ms a step instead of %.1f", self.threads, trial,
                         statistics.median(settled), base)
            self._end_probe(now, keep=faster)

    def _trial(self, now: float) -> int | None:
        """The thread count to probe now, or None. Fewer threads at once when other work has taken cores
        this count needs (an encoder just started: waiting for the schedule would mean seconds of
        hitches); more threads only when that many cores are free."""
        free = self.free_cores(self.threads)
        if free is not None and free < self.threads - 0.3 and now >= self._next_urgent:
            lower = [c for c in self.candidates if c < self.threads]
            if lower:
                self._next_urgent = now + self._interval  # a lost probe is not retried every frame
                return max([c for c in lower if c <= free + 0.3] or [min(lower)])
        if now < self._next:
            return None
        others = [c for c in self.candidates if c != self.threads]
        trial = others[self.switches % len(others)]
        if trial > self.threads and free is not None and free < trial - 0.3:  # it would share a core
            self.postponed += 1
            self._next = now + self.probe_every
            return None
        return trial

    def _end_probe(self, now: float, keep: bool) -> None:
        trial, samples = self._probe
        if keep:
            self.threads, self.switches = trial, self.switches + 1
            self._recent = deque(samples[2:], maxlen=self.probe_frames)
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
