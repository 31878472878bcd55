"""``ffvj render SHOW``: a recorded show (``showfile``) rendered again, offline, at any size, on any device.

Frame by frame it does what the live loop did, in the same order, from the show file instead of the
surfaces: a re-seed the source asked for, the actions the render loop performed, the model it switched
to, the targets that changed (then ``--set`` on top), smoothing by the frame's own ``dt``, the LFOs and
audio slots on the recorded beat, clock and music, one step of the engine on the recorded source frame
(resized to the render's size), the grade and the flash limiter, the picture to the file.

At the recorded size, on the recorded device and thread count, the film is the live show frame for frame
(bit for bit where the arithmetic is the same: docs/SHOWFILE.md). At another size every event lands on
the same frame; the picture is the same show with more pixels (the loop is chaotic, so its details are
its own). ``--from``/``--to`` trim the film, not the replay: the loop is rendered from the show's first
frame so it reaches the cut as it was.
"""

from __future__ import annotations

import csv
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from .audio.analysis import AudioFeatures
from .options import (
    check_choices,
    device_option,
    model_option,
    option,
    settings_option,
    size,
)
from .showfile import SNAPSHOTS, ShowFile, ShowFileError

log = logging.getLogger(__name__)


@dataclass
class RenderConfig:
    """``ffvj render``'s options (each field with an ``option`` is also its flag: ``ffvj.options``)."""

    show: str = ""  # the show file's folder (the command's one argument)
    out: str = option("render.mp4", "the film to write (H.264)")
    width: int | None = option(None, "the film's size (default: the show's)", flag="--size", parse=size,
                               joins=("width", "height"), show_default=False)
    height: int | None = None
    start: float = option(0.0, "seconds into the show where the film starts", flag="--from")
    end: float | None = option(None, "seconds into the show where the film ends (default: the end)", flag="--to")
    model: str | None = model_option("the show's own")
    device: str = device_option()
    settings: dict = settings_option("hold a parameter at a value for the whole show, whatever was played")
    level: int = option(0, "render feature level N's view (its principal components) instead of the picture")
    timeline: str | None = option(None, "write the show's control timeline (every change and action, by frame and "
                                        "time) to PATH.json or PATH.csv instead of rendering", metavar="PATH")
    progress: bool = option(True, "no progress bar")
    fps: float | None = option(None, "the film's frame rate (default: the show's): the show's frames taken at it, "
                                     "repeated or skipped (the loop runs at the show's own rate: its motion is per "
                                     "frame)")

    def __post_init__(self) -> None:
        check_choices(self)


def _heard(record: dict) -> AudioFeatures | None:
    heard = record.get("heard")
    if heard is None:
        return None
    return AudioFeatures(**{k: tuple(v) if isinstance(v, list) else v for k, v in heard.items()})


def timeline(show: ShowFile) -> list[dict]:
    """Every change and action of the show, in order: frame, seconds into the show, kind, name, value."""
    rows, t0 = [], show.frames[0]["t"] if show.frames else 0.0
    for record in show.frames:
        at = {"frame": record["f"], "seconds": round(record["t"] - t0, 4)}
        if record.get("reseed"):
            rows.append({**at, "kind": "reseed", "name": "", "value": ""})
        for name, args in record.get("do", []):
            rows.append({**at, "kind": "action", "name": name, "value": json.dumps(args)})
        if "model" in record:
            rows.append({**at, "kind": "model", "name": record["model"][0], "value": record["model"][1]})
        for name, value in record.get("set", {}).items():
            rows.append({**at, "kind": "set", "name": name, "value": value})
    return rows


def write_timeline(show: ShowFile, path: Path) -> int:
    rows = timeline(show)
    if path.suffix.lower() == ".csv":
        with open(path, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=["frame", "seconds", "kind", "name", "value"])
            writer.writeheader()
            writer.writerows(rows)
    else:
        path.write_text(json.dumps({"show": str(show.path), "fps": show.header["fps"], "events": rows}, indent=1))
    return len(rows)


class _Sources:
    """The recorded source frames in order, each as the loop at this size takes it."""

    def __init__(self, show: ShowFile, width: int, height: int, device):
        self._frames = show.source_frames()
        self.index, self.frame, self.size, self.device = -1, None, (width, height), device
        self._tensor = None

    def at(self, index: int | None):
        from .engine import pixfmt

        if index is None:
            return None
        while self.index < index:
            frame = next(self._frames, None)
            self.index += 1
            if frame is not None:  # (past the video's end: the last frame holds)
                if (frame.shape[1], frame.shape[0]) != self.size:
                    frame = cv2.resize(frame, self.size, interpolation=cv2.INTER_CUBIC if frame.shape[1] < self.size[0]
                                       else cv2.INTER_AREA)
                self.frame, self._tensor = frame, None
        if self._tensor is None and self.frame is not None:
            self._tensor = pixfmt.from_rgb24(self.frame, self.device)
        return self._tensor


class _RecordedSound:
    """The show's recorded sound as the film's sink takes it (an ``AudioTap``'s contract): every sample up
    to ``until`` seconds of the film, the film starting ``start`` seconds into the show."""

    aligned = True

    def __init__(self, samples: np.ndarray, rate: int, start: float):
        self.samples, self.rate = samples, rate
        self._start = self._next = int(round(start * rate))

    def take(self, until: float) -> np.ndarray:
        end = min(len(self.samples), self._start + int(round(until * self.rate)))
        out = self.samples[self._next:end]
        self._next = max(self._next, end)
        return np.array(out, np.float32)


def render(cfg: RenderConfig, on_frame=None) -> dict:
    """Render the show (see the module docstring); ``on_frame(index, rgb)`` sees every frame written. Returns
    what was done: frames rendered and written, seconds, fps."""
    from .control.actions import ACTIONS, perform
    from .control.controls import Controls
    from .control.model_switch import ModelSwitcher
    from .engine import pixfmt
    from .engine.device import resolve_device
    from .engine.engine import FeedbackEngine
    from .engine.flashes import FlashLimiter
    from .engine.grade import grade
    from .media.sinks import open_sink
    from .model import checkpoint
    from .model.data import read_luminance
    from .phi import Phi

    show = ShowFile(cfg.show)
    head = show.header
    if not show.frames:
        raise ShowFileError(f"{show.path}: no frames recorded")
    if cfg.timeline:
        n = write_timeline(show, Path(cfg.timeline))
        return {"timeline": cfg.timeline, "events": n, "frames": len(show.frames)}
    device = resolve_device(cfg.device)
    width, height = cfg.width or head["width"], cfg.height or head["height"]
    fps = head["fps"]  # the loop's
    film_fps = cfg.fps or fps
    model, card = checkpoint.load(cfg.model or head["model"], device)
    if cfg.model is None and head.get("model_sha256") and card.get("weights_sha256") != head["model_sha256"]:
        log.warning("model %s is not the one the show ran (its weights differ): the picture will differ", head["model"])
    if model.levels != head["levels"]:
        raise ShowFileError(f"model {cfg.model or head['model']} has {model.levels} levels; the show was played on "
                            f"{head['levels']}")
    controls = Controls.for_levels(model.levels, seed=head["seed"])
    switcher = ModelSwitcher(model.levels, str(device))  # the show's model switches, on their frames
    store = controls.store
    for name, value in head["start"].items():
        if name in store.registry:
            store.set(name, value, source="show")
    for name, value in cfg.settings.items():
        if name not in store.registry or not store.set(name, value, source="--set"):
            raise ValueError(f"--set {name}={value}: not a parameter and value this show's model takes")
    store.advance(0)
    map_image = read_luminance(head["map_image"]) if head.get("map_image") else None
    engine = FeedbackEngine(model, width, height, device, seed=head["seed"], map_image=map_image,
                            precision=head.get("precision", "fp32"), scales=checkpoint.scales(card),
                            views=checkpoint.views(card))
    if (show.path / SNAPSHOTS).is_file() and controls.snapshots is not None:  # the slots the show began with
        controls.snapshots.load(show.path / SNAPSHOTS, engine)  # (at another size: skipped, and said)
    if not 0 <= cfg.level <= model.levels:
        raise ValueError(f"--level {cfg.level}: the model's levels are 0..{model.levels}")
    t0 = show.frames[0]["t"]
    # The show's time is its schedule's: slot n at n / fps (a live show that fell behind skipped slots; the
    # film holds a frame across the slots after it, as the live recording did).
    slots = [record["slot"] for record in show.frames]
    shown_seconds = (slots[-1] + 1) / fps
    if cfg.start < 0 or (cfg.end is not None and cfg.end <= cfg.start) or film_fps <= 0:
        raise ValueError(f"--from {cfg.start:g} --to {cfg.end} --fps {film_fps:g}: a film needs 0 ≤ from < to and a "
                         "rate above 0")
    first = next((i for i, slot in enumerate(slots) if slot >= cfg.start * fps - 1e-9), len(slots))
    last = len(slots) if cfg.end is None else sum(1 for slot in slots if slot < cfg.end * fps - 1e-9)
    if first >= last:
        raise ValueError(f"--from {cfg.start:g}: the show is {shown_seconds:.1f} s long")
    origin = slots[first]  # the film's time 0
    sources = _Sources(show, width, height, device)
    limiter = FlashLimiter(fps)  # (on the loop's frames, as live)
    sound = show.sound()  # the music as the show heard it, under the film
    sink = open_sink(f"file:{cfg.out}", size=(width, height), fps=film_fps,
                     **({"audio": _RecordedSound(*sound, start=origin / fps)} if sound is not None else {}))
    bar = None
    if cfg.progress:
        from tqdm import tqdm
        bar = tqdm(total=last, unit="frame", desc=f"render {width}x{height}", dynamic_ncols=True)
    started, written = time.perf_counter(), 0
    try:
        for record in show.frames[:last]:
            source = sources.at(record["src"])
            if record.get("reseed"):
                engine.reseed()
            for name, args in record.get("do", []):
                perform(ACTIONS[name], args, controls, engine)
            if "model" in record and switcher.load(*record["model"]):  # (as live: its crossfade too)
                switcher.apply(engine)
            for name, value in record.get("set", {}).items():
                if name not in cfg.settings:  # a parameter held for the whole show stays where --set put it
                    store.set(name, value, source="show")
            values = store.advance(record["dt"])
            values = controls.modulation.apply(values, record["beat"], record["t"], _heard(record))
            phi = Phi.of(values)
            engine.step(phi, source, record["dt"])
            shown = grade(engine.states[0], phi.grade) if cfg.level == 0 else engine.view(cfg.level)
            picture = limiter.limit(shown, phi.output.flash_limit)
            # The film's frames whose time falls in this show frame's (from its slot to the next frame's):
            # one each at the show's rate; at another, or across skipped slots, this frame repeated or skipped.
            ends = ((slots[record["f"] + 1] if record["f"] + 1 < last else record["slot"] + 1) - origin) / fps
            frame = rgb = None
            while record["f"] >= first and written / film_fps < ends - 1e-9:
                if frame is None:  # one readback a show frame, however often the film holds it
                    frame = engine.readback(sink.preferred_format, picture)
                    rgb = engine.readback(pixfmt.RGB24, picture) if on_frame is not None else None
                sink.send(frame, written, sink.preferred_format)
                if on_frame is not None:
                    on_frame(record["f"], rgb)
                written += 1
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
        sink.close()
    seconds = time.perf_counter() - started
    return {"out": cfg.out, "size": f"{width}x{height}", "frames": last, "written": written,
            "seconds": round(seconds, 2), "fps": round(last / seconds, 2) if seconds > 0 else 0.0,
            "show_seconds": round(show.frames[last - 1]["t"] - t0, 2) if last else 0.0}
