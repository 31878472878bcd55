"""``ffvj bench``: how fast the engine runs, next to the plain reference and the machine's limits.

Everything is measured in one process, one run: the engine step (median, p99, fps) and per-level
costs, the reference step (``engine.reference_step``, the eager fp32 oracle of the tests) on the
same parameters, end-to-end runs through the real show (generator → null, generator → H.264 file,
video file → H.264 file), peak memory, and a floor: the bytes a step must move and the arithmetic it
must do, over this machine's measured copy bandwidth and convolution rate.

Contended: the engine again beside a competing program the bench starts itself, a single-threaded
x264 encode running flat out (what OBS does during a show), on a fixed thread count (one per core)
and as a live show runs it (``engine.device.ThreadTuner``), against the quiet rate. Then a whole live
show beside it for ``live_seconds`` (``_live_contended``): the frames it delivers and its slowest steps
against the same show alone on one thread.

With pages: the live run again with the web page's server, ``web_pages`` pages reading everything it
sends (the preview at 15 fps, values, status) from another process, as a tablet would, and
``web_stalled`` pages that connect and never read; late slots and memory against the run without.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .control.params import ParamStore, build_registry, close_matches
from .engine.delta import StepInputs, reference_step, updates_on
from .engine.device import ThreadTuner, resolve_device
from .engine.engine import PRECISIONS, FeedbackEngine
from .model import checkpoint
from .options import (
    check_choices,
    device_option,
    model_option,
    option,
    positive_int,
    settings_option,
    size,
)
from .phi import Phi


@dataclass
class BenchConfig:
    """``ffvj bench``'s runs (each field with an ``option`` is also its flag: ``ffvj.options``)."""

    width: int = option(640, "the picture's size", flag="--size", parse=size, joins=("width", "height"))
    height: int = 360
    device: str = device_option()
    model: str | None = model_option()
    frames: int = option(120, "timed engine steps", parse=positive_int)
    warmup: int = 16
    compile: bool = option(False, "compile the fused kernels with torch.compile")
    end_to_end: bool = option(True, "skip the show's (source → sink) runs")
    precision: str = option("fp32", "the engine's precision (the reference stays fp32)", choices=tuple(PRECISIONS))
    fps: float = option(60.0, "the live end-to-end run's rate, for its latency")
    contended: bool = option(True, "skip the run beside a competing encoder (one x264 thread, as OBS runs during a "
                                   "show)")
    settings: dict = settings_option("a parameter for every run, e.g. l0.amplify=0.06")
    # A look to time (its values under ``settings``; its model unless ``model``).
    preset: str | None = option(None, "time this look (a factory or saved preset, on its model)", metavar="NAME")
    web_pages: int = option(1, "pages reading the web page's socket during a second live run (0 with --web-stalled "
                               "0: no such run)")
    web_stalled: int = option(0, "pages that connect and never read, beside them")
    live_seconds: float = option(60.0, "the live show beside the competing encoder, once settled (0: none)")
    audio: str | None = option(None, "the end-to-end shows hear this (file:PATH, a device): what hearing music costs",
                               metavar="SPEC")

    def __post_init__(self) -> None:
        check_choices(self)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time_ms(fn, device: torch.device, repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        _sync(device)
        t = time.perf_counter()
        fn()
        _sync(device)
        out.append((time.perf_counter() - t) * 1000)
    return out


def _summary(ms: list[float]) -> dict:
    a = np.asarray(ms)
    return {"median_ms": round(float(np.median(a)), 3), "p99_ms": round(float(np.percentile(a, 99)), 3),
            "mean_ms": round(float(a.mean()), 3), "fps": round(1000.0 / float(a.mean()), 1)}


def _machine_rates(device: torch.device) -> dict:
    """Copy bandwidth (GB/s, read + write) and a convolution's arithmetic rate (GFLOP/s)."""
    n = 64 * 1024 * 1024 // 4  # 64 MiB: far beyond the caches
    a = torch.empty(n, device=device)
    b = torch.empty_like(a)
    b.copy_(a)
    ms = min(_time_ms(lambda: b.copy_(a), device, 10))
    bandwidth = 2 * a.numel() * 4 / (ms / 1000) / 1e9
    x = torch.randn(1, 64, 256, 256, device=device)
    w = torch.randn(64, 64, 3, 3, device=device)
    F.conv2d(x, w, padding=1)
    ms = min(_time_ms(lambda: F.conv2d(x, w, padding=1), device, 5))
    flops = 2 * 64 * 64 * 9 * 256 * 256
    return {"bandwidth_gbs": round(bandwidth, 1), "conv_gflops": round(flops / (ms / 1000) / 1e9, 1)}


def _step_floor(model, sizes: list[tuple[int, int]], phi: Phi, itemsize: int = 4) -> dict:
    """What one average step must do: each level's update, weighted by how often it runs, needs its
    own state read, the encoding of the level below and the decoding of the level above (convolution
    arithmetic), and its new state written; level 0 also reads the source and writes the output."""
    channels = model.channels
    k = model.config.kernel_size
    flops = bytes_ = 0.0
    for lvl, (h, w) in enumerate(sizes):
        rate = 1.0 / max(1, phi.level[lvl].period)
        n = channels[lvl] * h * w
        lvl_bytes = 2 * n * itemsize  # read h^ℓ, write the new h^ℓ
        lvl_flops = 30 * n  # resampling, mixing, bounding: ~30 operations per element
        if lvl > 0:  # γ_{ℓ-1}: convolution at level ℓ-1's size, reading h^{ℓ-1}
            hp, wp = sizes[lvl - 1]
            lvl_flops += 2 * channels[lvl - 1] * channels[lvl] * k * k * hp * wp
            lvl_bytes += channels[lvl - 1] * hp * wp * itemsize
        if lvl < len(sizes) - 1:  # γ_ℓ⁻¹: convolution at level ℓ+1's size to 4·C_ℓ, reading h^{ℓ+1}
            hn, wn = sizes[lvl + 1]
            lvl_flops += 2 * channels[lvl + 1] * 4 * channels[lvl] * k * k * hn * wn
            lvl_bytes += channels[lvl + 1] * hn * wn * itemsize
        if lvl == 0:
            lvl_bytes += 3 * h * w * (4 + 1)  # the source in, the uint8 picture out
        flops += rate * lvl_flops
        bytes_ += rate * lvl_bytes
    return {"bytes": int(bytes_), "flops": int(flops)}


def _end_to_end(cfg: BenchConfig, device: torch.device, tmp: Path) -> dict:
    from .media.sinks import open_sink
    from .media.sources import open_source
    from .show import RunConfig, run

    frames = max(60, cfg.frames)
    common = dict(width=cfg.width, height=cfg.height, fps=30, frames=frames, model=cfg.model, device=str(device),
                  pace="offline", status_interval=1e9, compile=cfg.compile, precision=cfg.precision,
                  settings=dict(cfg.settings), audio=cfg.audio)
    out = {}
    out["generator_null_fps"] = round(run(RunConfig(source="generator", sinks=["null"], **common)).fps, 1)
    # The same show recorded (--record-show): what recording costs the render loop a frame (the source
    # frame's copy into the encoder's queue, the frame's line), and the show's rate beside its encoder.
    recorded = run(RunConfig(source="generator", sinks=["null"], record_show=str(tmp / "show"), **common))
    out["record_show_ms"] = recorded.record_ms
    out["generator_null_recorded_fps"] = round(recorded.fps, 1)
    out["generator_file_fps"] = round(run(RunConfig(source="generator", sinks=[f"file:{tmp / 'g.mp4'}"],
                                                    **common)).fps, 1)
    clip = tmp / "clip.mp4"  # a real H.264 clip to decode, as a VJ's loop would be
    with open_source("generator:rings", size=(cfg.width, cfg.height), fps=30) as gen, \
            open_sink(f"file:{clip}", size=(cfg.width, cfg.height), fps=30) as sink:
        for _ in range(90):
            sink.send(gen.read())
    out["video_file_fps"] = round(run(RunConfig(source=f"video:{clip}", sinks=[f"file:{tmp / 'v.mp4'}"],
                                                **common)).fps, 1)
    # A live show: paced at cfg.fps, the sink on its own thread. Latency is source read → sink done,
    # so one frame period or less means the pipeline adds at most one frame of delay.
    live = dict(common, fps=cfg.fps, frames=int(max(60, 2 * cfg.fps)), pace="realtime")
    stats = run(RunConfig(source="generator", sinks=["null"], **live))
    latency = np.asarray(stats.latency_ms)
    out["realtime"] = {"target_fps": cfg.fps, "fps": round(stats.fps, 1), "frames": stats.frames,
                       "slots": stats.slots, "late_slots": stats.late, "latency_median_ms": round(float(np.median(latency)), 2),
                       "latency_p99_ms": round(float(np.percentile(latency, 99)), 2),
                       "latency_frames": round(float(np.median(latency)) * cfg.fps / 1000, 2)}
    if cfg.web_pages or cfg.web_stalled:
        out["realtime_with_pages"] = _live_with_pages(cfg, live)
    return out


# Pages in another process, as on a tablet: N read everything, M upgrade and never read a byte more.
# On one machine their own work still shares its cores with the show, at the lowest priority.
PAGES = r"""
import asyncio, base64, json, os, socket, sys, time
import aiohttp
url, pages, stalled, seconds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
os.nice(19)  # the pages stand for other devices (tablets): they take what the show leaves
host, port = url.split("//")[1].split("/")[0].split(":")
stuck = []
for _ in range(stalled):
    s = socket.create_connection((host, int(port)))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall(("GET /ws HTTP/1.1\r\nHost: " + host + ":" + port + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               "Sec-WebSocket-Key: " + key + "\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
    stuck.append(s)
got = {"pictures": 0, "texts": 0}
async def page(session):
    async with session.ws_connect(url) as ws:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                msg = await ws.receive(timeout=deadline - time.monotonic())
            except asyncio.TimeoutError:
                break
            if msg.type == aiohttp.WSMsgType.BINARY: got["pictures"] += 1
            elif msg.type == aiohttp.WSMsgType.TEXT: got["texts"] += 1
            else: break
async def main():
    async with aiohttp.ClientSession() as session:
        await asyncio.gather(*(page(session) for _ in range(pages)))
print("connected", flush=True)
asyncio.run(main())
print(json.dumps(got), flush=True)
"""


def rss_mb() -> float | None:
    """This process's resident memory now, in MB (None where /proc is missing)."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024
    except (OSError, StopIteration):
        return None


def _live_with_pages(cfg: BenchConfig, live: dict) -> dict:
    """The live run again, with the web page's server and its pages (see the module docstring)."""
    from .control.controls import Controls
    from .show import RunConfig, run
    from .web import WebConfig, WebServer

    model, _card = checkpoint.load(cfg.model, "cpu")
    controls = Controls.for_levels(model.levels)
    web = WebServer(controls, WebConfig(port=0, max_clients=max(32, cfg.web_pages + cfg.web_stalled + 1)),
                    size=(cfg.width, cfg.height), fps=cfg.fps).start()
    seconds = live["frames"] / cfg.fps + 30  # the pages outlast the run; they are stopped after it
    pages = subprocess.Popen([sys.executable, "-c", PAGES, f"http://127.0.0.1:{web.port}/ws", str(cfg.web_pages),
                              str(cfg.web_stalled), str(seconds)], stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while web.pages < cfg.web_pages + cfg.web_stalled and time.monotonic() < deadline:
            time.sleep(0.05)
        connected = web.pages
        rss = rss_mb()
        stats = run(RunConfig(source="generator", sinks=["null"], **live), controls=controls, services=[web])
        rss_after = rss_mb()
        st = web.stats
    finally:
        web.close()
        pages.terminate()
        pages.wait(10)
    return {"pages": cfg.web_pages, "stalled": cfg.web_stalled, "connected": connected, "fps": round(stats.fps, 1),
            "frames": stats.frames, "slots": stats.slots, "late_slots": stats.late,
            "previews_sent": st["previews_sent"], "slow_closed": st["slow_closed"],
            "rss_growth_mb": None if rss is None or rss_after is None else round(rss_after - rss, 1)}


# The competitor: libx264 on one thread, veryfast, 640x360, as fast as it goes, until killed.
COMPETITOR = """
import av, numpy as np
out = av.open("/dev/null", "w", format="mp4")
s = out.add_stream("libx264", rate=30, options={"preset": "veryfast", "threads": "1"})
s.width, s.height, s.pix_fmt = 640, 360, "yuv420p"
rng = np.random.default_rng(0)
frames = [av.VideoFrame.from_ndarray(rng.integers(0, 255, (360, 640, 3), dtype=np.uint8),
                                     format="rgb24").reformat(format="yuv420p") for _ in range(8)]
i = 0
while True:
    f = frames[i % 8]
    f.pts = i
    i += 1
    s.encode(f)
"""


def _contended(step, device: torch.device, frames: int) -> dict:
    """Engine steps beside the competing encoder: on a fixed count of threads, then tuned as a live
    show tunes them (its probes sped up, so it settles in seconds rather than a minute)."""
    threads = torch.get_num_threads()
    competitor = subprocess.Popen([sys.executable, "-c", COMPETITOR], stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
    try:
        time.sleep(1.0)  # the encoder running flat out
        if competitor.poll() is not None:
            return {"error": "the competing encoder did not start (PyAV with libx264 needed)"}
        for _ in range(8):
            step()
        fixed = _summary(_time_ms(step, device, frames))
        result = {"competitor": "libx264 veryfast, 1 thread, 640x360", "fixed_threads": threads,
                  "fixed_fps": fixed["fps"], "fixed_p99_ms": fixed["p99_ms"]}
        if device.type == "cpu" and threads > 1:
            tuner = ThreadTuner((threads, 1), probe_every=1.0, max_every=1.0)
            deadline = time.monotonic() + 6.0
            while time.monotonic() < deadline:  # settle
                tuner.record(_time_ms(step, device, 1)[0])
            # The settled rate. (A show's tuner then probes again after 10, 20, 40, 80 s: a few
            # slower frames each time, left out here.)
            torch.set_num_threads(tuner.threads)
            for _ in range(8):
                step()
            tuned = _summary(_time_ms(step, device, frames))
            result.update(tuned_threads=tuner.threads, tuned_fps=tuned["fps"], tuned_p99_ms=tuned["p99_ms"])
        return result
    finally:
        competitor.kill()
        competitor.wait()
        torch.set_num_threads(threads)


def _live_run(cfg: BenchConfig, device: torch.device, seconds: float, threads: int | None,
              competitor: bool) -> tuple[list[float], list[float], int | None]:
    """A live show (generator → null, paced at ``cfg.fps``) for ``seconds``: each frame's time (when the
    sinks had it), each engine step's ms, and the threads the tuner chose (None: fixed)."""
    import collections
    import threading

    from .show import RunConfig, RunStats, run

    rival = subprocess.Popen([sys.executable, "-c", COMPETITOR], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL) if competitor else None
    try:
        if rival is not None:
            time.sleep(1.0)  # the encoder running flat out
            if rival.poll() is not None:
                raise RuntimeError("the competing encoder did not start (PyAV with libx264 needed)")
        times: list[float] = []
        stats = RunStats(engine_ms=collections.deque())  # every step, not the last few hundred
        stop = threading.Event()
        timer = threading.Timer(seconds, stop.set)
        timer.start()
        try:
            run(RunConfig(source="generator", sinks=["null"], width=cfg.width, height=cfg.height, fps=cfg.fps,
                          model=cfg.model, device=str(device), pace="realtime", status_interval=1e9, threads=threads,
                          compile=cfg.compile, precision=cfg.precision, settings=dict(cfg.settings)),
                stop=stop, stats=stats, on_frame=lambda *args: times.append(time.perf_counter()))
        finally:
            timer.cancel()
        return times, list(stats.engine_ms), stats.threads
    finally:
        if rival is not None:
            rival.kill()
            rival.wait()


def _live_contended(cfg: BenchConfig, device: torch.device) -> dict:
    """What the audience gets beside OBS: a live show at ``cfg.fps`` beside the competing encoder, its
    threads tuned as ``ffvj run`` tunes them, over ``live_seconds`` once settled (the first 10 s left
    out; the tuner's later probes are in), against the same show alone on one thread (the rate the
    contended show could at best keep with the one core the encoder leaves it). Delivered frames a
    second, and the steps' p99 against the one-thread median (a hitch is a step far over it)."""
    settle = min(10.0, cfg.live_seconds / 4)
    quiet_s = max(5.0, min(20.0, cfg.live_seconds / 3))
    threads = torch.get_num_threads()
    try:
        quiet_times, quiet_ms, _ = _live_run(cfg, device, quiet_s + 2, 1, competitor=False)
        torch.set_num_threads(threads)
        times, steps, tuned = _live_run(cfg, device, settle + cfg.live_seconds, None, competitor=True)
    except RuntimeError as exc:
        return {"error": str(exc)}
    finally:
        torch.set_num_threads(threads)

    def delivered(stamps: list[float], skip: float) -> tuple[float, int]:
        first = next((i for i, t in enumerate(stamps) if t - stamps[0] >= skip), len(stamps) - 1)
        kept = stamps[first:]
        return ((len(kept) - 1) / (kept[-1] - kept[0]) if len(kept) > 1 and kept[-1] > kept[0] else 0.0), first

    quiet_fps, quiet_first = delivered(quiet_times, 2.0)
    fps, first = delivered(times, settle)
    one_median = float(np.median(quiet_ms[quiet_first:] or quiet_ms))
    settled = np.asarray(steps[first:] or steps)
    p99 = float(np.percentile(settled, 99))
    return {"competitor": "libx264 veryfast, 1 thread, 640x360", "target_fps": cfg.fps, "seconds": cfg.live_seconds,
            "one_thread_quiet_fps": round(quiet_fps, 1), "one_thread_median_ms": round(one_median, 2),
            "fps": round(fps, 1), "of_quiet": round(fps / quiet_fps, 3) if quiet_fps else None,
            "step_median_ms": round(float(np.median(settled)), 2), "step_p99_ms": round(p99, 1),
            "step_max_ms": round(float(settled.max()), 1), "p99_over_one_thread_median": round(p99 / one_median, 2),
            "threads": tuned}


def _with_preset(cfg: BenchConfig) -> BenchConfig:
    """``cfg`` with its preset's values folded into ``settings`` (``--set`` wins) and its model, so every run
    of the bench (engine, end to end, live) times the look as a show recalling it would run it."""
    if cfg.preset is None:
        return cfg
    from .control.presets import PresetBank, default_presets_dir, factory_presets_dir

    bank = PresetBank(ParamStore(build_registry(3)), default_presets_dir(), factory=factory_presets_dir())
    values = bank.load(cfg.preset)  # PresetError names the file and what is wrong
    return replace(cfg, settings={**values, **cfg.settings}, model=cfg.model or bank.last_model)


@torch.no_grad()
def _audio_analysis(seconds: float = 10.0) -> dict:
    """What the music's analysis costs: CPU time of its thread's work (``audio.analysis.Analyser``) on
    ``seconds`` of a noisy signal fed in 256-sample blocks, as a share of one core."""
    from .audio.analysis import SAMPLE_RATE, Analyser

    rng = np.random.default_rng(0)
    samples = (rng.standard_normal(int(seconds * SAMPLE_RATE)) * 0.1).astype(np.float32)
    analyser = Analyser()
    t = time.process_time()
    for i in range(0, len(samples), 256):
        analyser.feed(samples[i:i + 256])
    cpu = time.process_time() - t
    return {"seconds": seconds, "cpu_s": round(cpu, 3), "core_percent": round(100 * cpu / seconds, 2)}


def bench(cfg: BenchConfig) -> dict:
    device = resolve_device(cfg.device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    cfg = _with_preset(cfg)
    model, card = checkpoint.load(cfg.model, device)
    scales = checkpoint.scales(card)  # as a show bounds its levels
    store = ParamStore(build_registry(model.levels))
    for name, value in cfg.settings.items():
        if name not in store.registry:
            raise ValueError(f"--set {name}: no such parameter{close_matches(name, store.registry)}; 'ffvj params' "
                             "lists them")
        if not store.set(name, value, source="--set"):
            raise ValueError(f"--set {name}={value}: not a value {name} takes (see 'ffvj params')")
    phi = Phi.of(store.advance(0))
    source = torch.rand(1, 3, cfg.height, cfg.width, device=device) * 2 - 1
    t = time.perf_counter()
    engine = FeedbackEngine(model, cfg.width, cfg.height, device, compile=cfg.compile, precision=cfg.precision,
                            scales=scales)
    startup_s = time.perf_counter() - t

    def engine_step():
        engine.step(phi, source)
        engine.readback()

    for _ in range(cfg.warmup):
        engine_step()
    engine_ms = _time_ms(engine_step, device, cfg.frames)

    ref_states = [s.float().clone() for s in engine.states]  # the oracle runs fp32 whatever the engine does
    noise = torch.Generator(device=device).manual_seed(0)
    frame = {"i": engine.frame_index}

    def reference():
        nonlocal ref_states
        ref_states = reference_step(model, ref_states, StepInputs(phi, source, None, frame["i"], noise,
                                                                    scales=scales))
        ref_states[0].add(1).mul(127.5).clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu()
        frame["i"] += 1

    for _ in range(max(4, cfg.warmup // 2)):
        reference()
    reference_ms = _time_ms(reference, device, max(24, cfg.frames // 2))

    levels = []
    sizes = engine.sizes
    for lvl in range(model.levels):
        h = engine.states[lvl]
        up = engine.states[lvl + 1]
        # The engine's own γ and γ⁻¹ (the model's fast path), in the layouts the engine keeps.
        enc = _summary(_time_ms(lambda: engine.fast.encode(lvl, h), device, 20))["median_ms"]
        dec = _summary(_time_ms(lambda: engine.fast.decode(lvl, up, sizes[lvl]), device, 20))["median_ms"]
        levels.append({"level": lvl, "size": f"{sizes[lvl][1]}x{sizes[lvl][0]}", "channels": model.channels[lvl],
                       "period": phi.level[lvl].period, "encode_ms": enc, "decode_ms": dec})
    levels.append({"level": model.levels, "size": f"{sizes[-1][1]}x{sizes[-1][0]}", "channels": model.channels[-1],
                   "period": phi.level[model.levels].period})
    for row in levels:  # the cost of updating this level alone (all others frozen), per update
        lvl = row["level"]
        alone = replace(phi, level=tuple(replace(lv, freeze=i != lvl, period=1 if i == lvl else lv.period)
                                         for i, lv in enumerate(phi.level)))
        row["update_ms"] = _summary(_time_ms(lambda: engine.step(alone, source), device, 12))["median_ms"]

    eng, ref = _summary(engine_ms), _summary(reference_ms)
    rates = _machine_rates(device)
    floor = _step_floor(model, sizes, phi, engine.dtype.itemsize)
    floor_ms = max(floor["bytes"] / (rates["bandwidth_gbs"] * 1e9), floor["flops"] / (rates["conv_gflops"] * 1e9)) * 1e3
    result = {
        "size": f"{cfg.width}x{cfg.height}",
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else _cpu_name(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "model": cfg.model or checkpoint.DEFAULT_MODEL,
        "compile": cfg.compile,
        "precision": cfg.precision,
        "settings": dict(cfg.settings),
        "preset": cfg.preset,
        "startup_s": round(startup_s, 2),
        "engine_fps": eng["fps"],
        "engine": eng,
        "reference_fps": ref["fps"],
        "reference": ref,
        "speedup": round(ref["mean_ms"] / eng["mean_ms"], 2),
        "levels": levels,
        "floor": {**floor, **rates, "floor_ms": round(floor_ms, 3),
                  "engine_over_floor": round(eng["mean_ms"] / floor_ms, 1)},
        "updates_per_frame": [round(np.mean([updates_on(f, r["period"]) for f in range(64)]), 3) for r in levels],
    }
    if cfg.contended:
        contended = _contended(engine_step, device, cfg.frames)
        best = contended.get("tuned_fps", contended.get("fixed_fps"))
        if best is not None:
            contended["of_quiet"] = round(best / eng["fps"], 2)
        result["contended"] = contended
    result["audio_analysis"] = _audio_analysis()
    if cfg.end_to_end:
        with tempfile.TemporaryDirectory() as tmp:
            result["end_to_end"] = _end_to_end(cfg, device, Path(tmp))
            result["end_to_end"]["audio"] = cfg.audio
        if cfg.contended and device.type == "cpu" and torch.get_num_threads() > 1 and cfg.live_seconds > 0:
            result["live_contended"] = _live_contended(cfg, device)
    result["peak_memory_mb"] = round(
        torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda"
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    result["peak_memory_kind"] = "cuda allocated" if device.type == "cuda" else "process max RSS"
    return result


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip() + f" ({os.cpu_count()} cores visible)"
    except OSError:
        pass
    return f"cpu ({os.cpu_count()} cores visible)"


def format_report(r: dict) -> str:
    lines = [
        f"ffvj bench — {r['size']} on {r['device']} ({r['device_name']}), {r['threads']} threads, "
        f"torch {r['torch']}, model {r['model']}, compile {r['compile']}, precision {r.get('precision', 'fp32')}",
        f"engine     {r['engine']['median_ms']:7.2f} ms median, {r['engine']['p99_ms']:7.2f} p99  "
        f"→ {r['engine_fps']:.1f} fps",
        f"reference  {r['reference']['median_ms']:7.2f} ms median, {r['reference']['p99_ms']:7.2f} p99  "
        f"→ {r['reference_fps']:.1f} fps   speedup {r['speedup']:.2f}×",
        "level  size       ch  period  encode ms  decode ms  update ms (alone)",
    ]
    for row in r["levels"]:  # the top level has no encoder into, nor decoder from, a level above
        enc, dec = (f"{row[k]:9.2f}" if k in row else f"{'—':>9}" for k in ("encode_ms", "decode_ms"))
        lines.append(f"{row['level']:>5}  {row['size']:<9} {row['channels']:>3}  {row['period']:>6}  "
                     f"{enc}  {dec}  {row['update_ms']:9.2f}")
    f = r["floor"]
    lines.append(f"floor      {f['bytes'] / 1e6:.1f} MB and {f['flops'] / 1e9:.2f} GFLOP per step over "
                 f"{f['bandwidth_gbs']} GB/s and {f['conv_gflops']} GFLOP/s → {f['floor_ms']:.2f} ms; "
                 f"the engine takes {f['engine_over_floor']}× that")
    c = r.get("contended")
    if c and "error" in c:
        lines.append(f"contended  {c['error']}")
    elif c:
        tuned = (f"; tuned as a live show: {c['tuned_fps']:.1f} fps on {c['tuned_threads']} thread(s), "
                 f"{c['tuned_p99_ms']:.1f} ms p99" if "tuned_fps" in c else "")
        lines.append(f"contended  beside {c['competitor']}: {c['fixed_fps']:.1f} fps on {c['fixed_threads']} "
                     f"thread(s), {c['fixed_p99_ms']:.1f} ms p99{tuned}; {c['of_quiet']:.0%} of the quiet rate")
    if "end_to_end" in r:
        e = r["end_to_end"]
        lines.append(f"end to end generator→null {e['generator_null_fps']} fps, generator→H.264 "
                     f"{e['generator_file_fps']} fps, video→H.264 {e['video_file_fps']} fps")
        lines.append(f"recording the show (--record-show) costs the render loop {e['record_show_ms']:.3f} ms a frame; "
                     f"generator→null with it {e['generator_null_recorded_fps']} fps")
        rt = e["realtime"]
        lines.append(f"live at {rt['target_fps']:g} fps: {rt['fps']} fps, {rt['frames']} frames in {rt['slots']} slots "
                     f"({rt['late_slots']} skipped, late), latency {rt['latency_median_ms']} ms median "
                     f"({rt['latency_frames']} frames), {rt['latency_p99_ms']} ms p99")
        wp = e.get("realtime_with_pages")
        if wp:
            lines.append(f"live with {wp['pages']} web page(s) reading and {wp['stalled']} never reading "
                         f"({wp['connected']} connected): {wp['fps']} fps, {wp['late_slots']} skipped of "
                         f"{wp['slots']} slots (without: {rt['late_slots']}), {wp['previews_sent']} previews sent, "
                         f"{wp['slow_closed']} stalled pages closed, memory {wp['rss_growth_mb']:+} MB over the run")
    lc = r.get("live_contended")
    if lc and "error" in lc:
        lines.append(f"live contended  {lc['error']}")
    elif lc:
        lines.append(f"live at {lc['target_fps']:g} fps beside {lc['competitor']}, {lc['seconds']:g} s settled: "
                     f"{lc['fps']} fps ({lc['of_quiet']:.0%} of the same show alone on 1 thread, "
                     f"{lc['one_thread_quiet_fps']} fps); steps {lc['step_median_ms']} ms median, p99 "
                     f"{lc['step_p99_ms']} ms ({lc['p99_over_one_thread_median']}× the 1-thread median "
                     f"{lc['one_thread_median_ms']} ms), max {lc['step_max_ms']} ms; tuned to {lc['threads']} thread(s)")
    a = r.get("audio_analysis")
    if a:
        lines.append(f"audio analysis {a['core_percent']}% of one core ({a['cpu_s']} s of CPU for {a['seconds']:g} s "
                     f"of sound){'; the shows above heard ' + r['end_to_end']['audio'] if r.get('end_to_end', {}).get('audio') else ''}")
    lines.append(f"peak memory {r['peak_memory_mb']} MB ({r['peak_memory_kind']}); engine start-up {r['startup_s']} s")
    return "\n".join(lines)

