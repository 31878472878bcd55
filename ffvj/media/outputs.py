"""A show's outputs: every sink, fed the picture formats it wants, each on its own thread in a live show.

``Outputs(specs, size, fps, levels)`` opens every sink (``lN:SPEC`` shows feature level N through any of
them; a recording takes the show's sound, when there is some, through an audio tap); ``start(threaded)``
gives each sink that may have one a thread behind a one-slot, newest-wins mailbox (``SinkWorker``), so a
slow sink drops frames instead of stalling the show; ``send(pictures, slot, t_input)`` hands every sink
its picture (``pictures[(level, format)]``: one readback per distinct pair). A sink that fails mid-show
is dropped, said once, and named in ``failed`` while the others go on. Closing (the context manager)
stops the threads first, then closes every sink, each on its own.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from contextlib import ExitStack

from ..engine import pixfmt
from .base import SinkError
from .mailbox import Mailbox
from .sinks import open_sink, takes_audio

log = logging.getLogger(__name__)


class SinkWorker:
    """A sink on its own thread behind a newest-wins mailbox (realtime mode)."""

    def __init__(self, sink):
        self.sink = sink
        self.mailbox: Mailbox = Mailbox()
        self.failed: str | None = None
        self.latency_ms: float = 0.0
        self._thread = threading.Thread(target=self._loop, name=f"sink {sink.spec}", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while (item := self.mailbox.get()) is not None:
            frame, index, t_input, fmt = item
            try:
                self.sink.send(frame, index, fmt)
            except SinkError as exc:
                self.failed = str(exc)
                log.error("sink %s failed and was dropped: %s", self.sink.spec, exc)
                return
            self.latency_ms = (time.perf_counter() - t_input) * 1000

    def close(self) -> None:
        self.mailbox.close()
        self._thread.join(timeout=5)


_LEVEL_PREFIX = re.compile(r"l(\d+):(.+)", re.DOTALL)


def split_level(spec: str) -> tuple[int, str]:
    """``"l2:ndi:ffvj-l2"`` → ``(2, "ndi:ffvj-l2")``: a level view's sink; any other spec shows the
    picture, level 0 (no sink is called ``l`` and a number)."""
    m = _LEVEL_PREFIX.fullmatch(spec.strip()) if isinstance(spec, str) else None
    return (int(m[1]), m[2]) if m else (0, spec)


class Outputs:
    """Every sink of a show: the picture formats they want, their threads in a live show, and a sink
    that fails mid-show dropped while the others go on."""

    def __init__(self, specs: list[str], size: tuple[int, int], fps: float, levels: int, device_formats: bool = True,
                 audio=None):
        self._stack = ExitStack()
        self.sinks = []
        try:
            self.level = {}
            for spec in specs:
                level, sink_spec = split_level(spec)
                if level > levels:
                    raise ValueError(f"sink {spec!r}: level {level} is not one of the model's 0..{levels} "
                                     f"(l1:… to l{levels}:… show a feature level)")
                # A recording carries the sound when the show hears some (the first recording: one tap).
                sound = {"audio": audio.tap()} if audio is not None and takes_audio(sink_spec) and \
                    not any(getattr(s, "audio", None) for s in self.sinks) else {}
                sink = open_sink(sink_spec, size=size, fps=fps, **sound)
                self._stack.callback(_close_quietly, sink)
                self.sinks.append(sink)
                self.level[id(sink)] = level
        except BaseException:
            self._stack.close()
            raise
        # The picture format each sink gets: its own (4:2:0 for H.264 files and most virtual cameras),
        # converted on the engine's device, or RGB for all (``device_formats`` False; see RunConfig.device_formats).
        self.wanted = {id(s): (self.level[id(s)], s.preferred_format if device_formats else pixfmt.RGB24)
                       for s in self.sinks}
        self.formats = sorted(set(self.wanted.values())) or [(0, pixfmt.RGB24)]
        self.workers: list[SinkWorker] = []
        self.inline = list(self.sinks)
        self.inline_failures: list[tuple] = []

    def start(self, threaded: bool) -> None:
        """In a live show, each sink that may have a thread gets one (GUI and OpenGL sinks stay here)."""
        if threaded:
            self.workers = [SinkWorker(s) for s in self.sinks if s.own_thread]
            self.inline = [s for s in self.sinks if not s.own_thread]
            for w in self.workers:
                self._stack.callback(w.close)  # runs before the sinks close (ExitStack is LIFO)

    def send(self, pictures: dict, slot: int, t_input: float) -> None:
        for w in self.workers:
            if not w.failed:
                key = self.wanted[id(w.sink)]
                w.mailbox.put((pictures[key], slot, t_input, key[1]))
        for sink in list(self.inline):
            try:
                key = self.wanted[id(sink)]
                sink.send(pictures[key], slot, key[1])
            except SinkError as exc:
                log.error("sink %s failed and was dropped: %s", sink.spec, exc)
                self.inline.remove(sink)
                self.inline_failures.append((sink, str(exc)))

    @property
    def dropped(self) -> int:
        return sum(w.mailbox.dropped for w in self.workers)

    @property
    def failed(self) -> list[str]:
        """The sinks dropped mid-show, with why."""
        inline = [f"{s.spec}: {why}" for s, why in self.inline_failures]
        return inline + [f"{w.sink.spec}: {w.failed}" for w in self.workers if w.failed]

    def latencies(self) -> list[float]:
        return [w.latency_ms for w in self.workers]

    def health(self) -> list[dict]:
        """Each sink: its spec, whether it still runs, and why not."""
        failed = {id(s): why for s, why in self.inline_failures}
        failed.update({id(w.sink): w.failed for w in self.workers if w.failed})
        return [{"spec": s.spec, "ok": id(s) not in failed, **({"why": failed[id(s)]} if id(s) in failed else {})}
                for s in self.sinks]

    def __enter__(self) -> Outputs:
        return self

    def __exit__(self, *exc) -> None:
        self._stack.close()


def _close_quietly(sink) -> None:
    # A sink that already failed may fail again while flushing (a full disk): say so, close the rest.
    # (Sink.close turns any backend failure into SinkError.)
    try:
        sink.close()
    except SinkError as exc:
        log.error("sink %s did not close cleanly: %s", sink.spec, exc)
