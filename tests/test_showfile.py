"""The show recorder (``ffvj run --record-show``) and ``ffvj render``: a show played live on every surface
renders again frame for frame; at another size every event lands on the same frame; a show killed with
-9 replays up to its last second; the format refuses what it cannot read, in one line.

Run as a module, the scenario is the closing note's measurement (60 s at 640×360)::

    python3 -m tests.test_showfile --seconds 60 --size 640x360 --big 1920x1080
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from pythonosc.osc_message_builder import OscMessageBuilder

from ffvj.control.controls import Controls
from ffvj.control.midi.ports import MidiConfig
from ffvj.control.osc import OscConfig
from ffvj.render import RenderConfig, render, timeline
from ffvj.show import RunConfig, StartupError, run
from ffvj.showfile import ShowFile, ShowFileError
from ffvj.web import WebConfig
from tests.helpers import free_tcp_port, free_udp_port, wait_until
from tests.jack import FIND_AND_SEND, jack_server, peer, stop_peer  # noqa: F401 (the fixture)

FPS = 30


def _osc(port: int, address: str, *args) -> None:
    msg = OscMessageBuilder(address)
    for a in args:
        msg.add_arg(a)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(msg.build().dgram, ("127.0.0.1", port))


def _web_set(port: int, name: str, value: float) -> None:
    import aiohttp

    async def send():
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(f"http://127.0.0.1:{port}/ws", origin=f"http://127.0.0.1:{port}") as ws:
                await ws.receive(timeout=10)  # hello
                await ws.send_str(json.dumps({"type": "set", "name": name, "value": value}))
                await asyncio.sleep(0.3)

    asyncio.run(send())


def play(path: Path, seconds: float, size: tuple[int, int], jack_env: dict, frames_out=None) -> dict:
    """A live show (realtime, 30 fps) recorded into ``path`` while it is played on every surface: an LFO
    from the start, OSC, the web page, a MIDI controller over JACK, a preset morph, a model switch and a
    re-seed, spread over ``seconds``. ``frames_out(slot, rgb)`` sees every live frame. Returns when each
    was sent (seconds into the show)."""
    osc_port, web_port = free_udp_port(), free_tcp_port()
    controls = Controls.for_levels(3)
    started: dict = {}
    sent: dict = {}
    midi_peer = []

    def at(fraction: float) -> float:
        return started["t"] + fraction * seconds

    def drive():
        plan = [(0.1, "osc", lambda: _osc(osc_port, "/ffvj/l0/rotate", 2.0)),
                (0.15, "store", lambda: _osc(osc_port, "/ffvj/snapshot/store", 1)),
                (0.25, "web", lambda: _web_set(web_port, "l1.turn", 20.0)),
                (0.35, "midi", lambda: midi_peer.append(peer(jack_env, FIND_AND_SEND, "ffvj", json.dumps(
                    [{"type": "control_change", "control": 1, "value": 90}]), str(seconds)))),
                (0.45, "preset", lambda: _osc(osc_port, "/ffvj/preset/recall", "deep", 2.0)),
                (0.6, "model", lambda: _osc(osc_port, "/ffvj/model", "crisp", 1.0)),
                (0.75, "reset", lambda: _osc(osc_port, "/ffvj/reset")),
                (0.9, "recall", lambda: _osc(osc_port, "/ffvj/snapshot/recall", 1, 0.0))]
        for fraction, what, act in plan:
            while time.monotonic() < at(fraction):
                time.sleep(0.01)
            act()
            sent[what] = time.monotonic() - started["t"]

    def on_frame(slot, picture, source, engine):
        if "t" not in started:
            started["t"] = time.monotonic()
            threading.Thread(target=drive, daemon=True).start()
        if frames_out is not None:
            frames_out(slot, picture)

    try:
        run(RunConfig(source="generator", sinks=["null"], width=size[0], height=size[1], fps=FPS,
                      frames=round(seconds * FPS), pace="realtime", threads=1, record_show=str(path),
                      status_interval=1e9, settings={"lfo1.target": "l1.zoom", "lfo1.depth": 0.4},
                      osc=OscConfig(port=osc_port, query_port=None, mdns=False),
                      web=WebConfig(port=web_port),
                      midi=MidiConfig(backend="jack", mappings=("generic",))),
            controls=controls, on_frame=on_frame)
    finally:
        for p in midi_peer:
            stop_peer(p)
    return sent


class _Changes:
    """Each frame's mean change from the one before, on a 64-wide thumbnail (any size compares), kept as
    the frames go by (a 60 s film at 1080p does not fit in memory)."""

    def __init__(self):
        self.values, self._last = [], None

    def add(self, rgb: np.ndarray) -> None:
        import cv2

        small = cv2.resize(rgb, (64, 36), interpolation=cv2.INTER_AREA).astype(np.float32)
        self.values.append(0.0 if self._last is None else float(np.abs(small - self._last).mean()))
        self._last = small


def check(path: Path, live, big: tuple[int, int] | None, out: Path) -> dict:
    """Render the show again at its size (held to the live frames as they come) and, if asked, at ``big``:
    the figures the test and the closing note read."""
    show = ShowFile(path)
    diff = {"max": 0, "sum": 0.0, "n": 0}
    live_change = _Changes()

    def same_frame(i, rgb):
        if diff["n"] > i:  # (a frame held across slots the live show skipped: compared once)
            return
        d = np.abs(live[i].astype(np.int16) - rgb.astype(np.int16))
        diff["max"], diff["sum"], diff["n"] = max(diff["max"], int(d.max())), diff["sum"] + float(d.mean()), diff["n"] + 1
        live_change.add(live[i])

    same = render(RenderConfig(show=str(path), out=str(out / "same.mp4"), progress=False), on_frame=same_frame)
    result = {"frames_live": len(live), "frames_show": len(show.frames), "frames_again": diff["n"],
              "max_diff": diff["max"], "mean_diff": diff["sum"] / max(1, diff["n"]), "same_fps": same["fps"],
              "events": timeline(show), "live_change": np.array(live_change.values)}
    if big is not None:
        big_change = _Changes()
        grown = render(RenderConfig(show=str(path), out=str(out / "big.mp4"), width=big[0], height=big[1],
                                    progress=False),
                       on_frame=lambda i, rgb: len(big_change.values) == i and big_change.add(rgb))
        result.update(big_fps=grown["fps"], frames_big=len(big_change.values), big_change=np.array(big_change.values))
    return result


def _event_frames(events: list, kind: str, name: str = "") -> list[int]:
    return [e["frame"] for e in events if e["kind"] == kind and (not name or e["name"] == name)]


@pytest.mark.slow
def test_a_show_played_on_every_surface_renders_again_frame_for_frame(jack_server, tmp_path):
    live = []
    sent = play(tmp_path / "show", 9.0, (192, 108), jack_server, lambda slot, rgb: live.append(rgb.copy()))
    assert set(sent) == {"osc", "store", "web", "midi", "preset", "model", "reset", "recall"}
    r = check(tmp_path / "show", live, (384, 216), tmp_path)
    events = r["events"]
    # Every surface's change is in the show file, on a frame of its own.
    for name in ("l0.rotate", "l1.turn", "l0.warp"):  # OSC, the web page, the mod wheel (generic mapping)
        assert _event_frames(events, "set", name), (name, [e for e in events if e["kind"] == "set"][:20])
    morph = _event_frames(events, "set", "l3.rotate")  # deep's own values, a frame at a time over its morph
    assert len(morph) >= 10, morph
    assert _event_frames(events, "model", "crisp") and _event_frames(events, "action", "reset")
    # At the same size, frame for frame: bit for bit (the same arithmetic: docs/SHOWFILE.md).
    assert r["frames_again"] == r["frames_live"] == r["frames_show"]
    assert r["max_diff"] == 0, (r["max_diff"], r["mean_diff"])
    # At twice the size, the snapshot recalled without a fade cuts back on the very frame it did live: the
    # biggest change of the frames around it, in both.
    cut = _event_frames(events, "action", "snapshot.recall")[0]
    window = slice(cut - 5, cut + 6)
    assert int(np.argmax(r["live_change"][window])) == int(np.argmax(r["big_change"][window])) == 5, (
        r["live_change"][window], r["big_change"][window])


SHOW_AND_KILL = """
import sys
from ffvj.cli import main
sys.exit(main(["run", "--source", "generator", "--sink", "null", "--size", "160x96", "--fps", "30",
               "--pace", "realtime", "--threads", "1", "--no-osc", "--no-midi", "--no-web",
               "--record-show", sys.argv[1]]))
"""


@pytest.mark.slow
def test_a_show_killed_with_9_replays_up_to_its_last_second(tmp_path):
    path = tmp_path / "show"
    proc = subprocess.Popen([sys.executable, "-c", SHOW_AND_KILL, str(path)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: (path / "frames.jsonl").is_file() and (path / "frames.jsonl").stat().st_size > 0, 60,
                   what="the show file to start")
        time.sleep(6.0)
        lines = (path / "frames.jsonl").read_text().count("\n")
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    show = ShowFile(path)
    assert len(show.frames) >= lines - FPS - 1  # at most the last second lost
    seconds = show.frames[-1]["t"] - show.frames[0]["t"]
    assert seconds >= 4.0, seconds
    result = render(RenderConfig(show=str(path), out=str(tmp_path / "again.mp4"), progress=False))
    # Every show frame replayed, and the film as long as the show: a slot the live show skipped (a slow host,
    # a late start) is its last frame held, so the film has one frame per slot, not per show frame.
    assert result["frames"] == len(show.frames)
    assert result["written"] == show.frames[-1]["slot"] - show.frames[0]["slot"] + 1
    # Every source frame the replayed frames use decodes.
    decoded = sum(1 for _ in show.source_frames())
    assert decoded >= max(r["src"] for r in show.frames if r["src"] is not None) + 1 - FPS


def test_a_show_file_of_a_newer_version_is_refused_in_one_line(tmp_path):
    (tmp_path / "show.json").write_text(json.dumps({"format": "ffvj-show", "version": 99}))
    with pytest.raises(ShowFileError, match="version 99, newer than this ffvj reads.*update ffvj"):
        ShowFile(tmp_path)
    with pytest.raises(ShowFileError, match="not a show file"):
        ShowFile(tmp_path / "nowhere")


def test_a_show_is_never_recorded_over_another(tmp_path):
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "show.json").write_text("{}")
    with pytest.raises(StartupError, match="not an empty folder"):
        run(RunConfig(source="generator", sinks=["null"], width=64, height=48, frames=2, pace="offline",
                      record_show=str(tmp_path / "old")))
    # A show that fails to start (a typo in a sink) leaves the folder for the corrected command.
    with pytest.raises(StartupError, match="nosuchsink"):
        run(RunConfig(source="generator", sinks=["nosuchsink"], width=64, height=48, frames=2, pace="offline",
                      record_show=str(tmp_path / "new")))
    assert not (tmp_path / "new").exists() or not any((tmp_path / "new").iterdir())


def test_a_recorded_show_renders_again_trimmed_held_and_as_a_timeline(tmp_path):
    path = tmp_path / "show"
    controls = Controls.for_levels(3)
    live = []

    def on_frame(slot, picture, source, engine):
        live.append(picture.copy())
        if slot == 10:
            controls.store.set("l0.rotate", 3.0, source="test")
        if slot == 20:
            controls.fire("snapshot.store", 1)
        if slot == 30:
            controls.fire("snapshot.recall", 1, 0.3)

    run(RunConfig(source="generator", sinks=["null"], width=96, height=64, fps=FPS, frames=45, pace="offline",
                  record_show=str(path), settings={"lfo1.target": "l0.zoom", "lfo1.depth": 0.3}),
        controls=controls, on_frame=on_frame)
    again = []
    render(RenderConfig(show=str(path), out=str(tmp_path / "a.mp4"), progress=False),
           on_frame=lambda i, rgb: again.append(rgb))
    assert len(again) == 45 and all(np.array_equal(a, b) for a, b in zip(live, again))
    trimmed = []
    result = render(RenderConfig(show=str(path), out=str(tmp_path / "t.mp4"), start=0.5, end=1.0, progress=False),
                    on_frame=lambda i, rgb: trimmed.append((i, rgb)))
    assert result["written"] == 15 and [i for i, _ in trimmed] == list(range(15, 30))
    assert all(np.array_equal(rgb, live[i]) for i, rgb in trimmed)  # the cut is the show as it was there
    held = []
    render(RenderConfig(show=str(path), out=str(tmp_path / "h.mp4"), settings={"l0.rotate": -3.0}, progress=False),
           on_frame=lambda i, rgb: held.append(rgb))
    assert not np.array_equal(held[20], live[20])  # l0.rotate held at -3 from the start, not 0 then 3
    at_60 = []
    result = render(RenderConfig(show=str(path), out=str(tmp_path / "60.mp4"), fps=60, progress=False),
                    on_frame=lambda i, rgb: at_60.append(i))
    assert result["written"] == 90 and at_60 == [i for i in range(45) for _ in (0, 1)]  # each frame twice
    at_10 = []
    render(RenderConfig(show=str(path), out=str(tmp_path / "10.mp4"), fps=10, progress=False),
           on_frame=lambda i, rgb: at_10.append(i))
    assert at_10 == list(range(0, 45, 3))  # every third
    render(RenderConfig(show=str(path), timeline=str(tmp_path / "t.csv"), progress=False))
    rows = (tmp_path / "t.csv").read_text().splitlines()
    assert rows[0] == "frame,seconds,kind,name,value" and any(",set,l0.rotate,3.0" in r for r in rows)
    render(RenderConfig(show=str(path), timeline=str(tmp_path / "t.json"), progress=False))
    events = json.loads((tmp_path / "t.json").read_text())["events"]
    # (fired after frames 20 and 30 were shown: performed by the render loop on the frames after)
    assert [e["frame"] for e in events if e["kind"] == "action"] == [21, 31]


def test_the_snapshot_slots_a_show_began_with_are_in_its_show_file(tmp_path):
    slots = tmp_path / "slots.safetensors"
    first = Controls.for_levels(3)
    run(RunConfig(source="generator:rings", sinks=["null"], width=96, height=64, frames=20, pace="offline",
                  snapshots=str(slots)),
        controls=first, on_frame=lambda slot, *_: slot == 10 and first.fire("snapshot.store", 2))
    controls, live = Controls.for_levels(3), []

    def on_frame(slot, picture, source, engine):
        live.append(picture.copy())
        if slot == 15:
            controls.fire("snapshot.recall", 2, 0.0)

    run(RunConfig(source="generator", sinks=["null"], width=96, height=64, frames=30, pace="offline",
                  snapshots=str(slots), record_show=str(tmp_path / "show")), controls=controls, on_frame=on_frame)
    again = []
    render(RenderConfig(show=str(tmp_path / "show"), out=str(tmp_path / "a.mp4"), progress=False),
           on_frame=lambda i, rgb: again.append(rgb))
    assert (tmp_path / "show" / "snapshots.safetensors").is_file()
    assert len(again) == 30 and all(np.array_equal(a, b) for a, b in zip(live, again))


def test_a_show_that_hears_music_keeps_its_sound_and_the_film_carries_it(tmp_path):
    """The music is in the show file as heard (sample for sample, from a file), its features move the
    picture again in the re-render, and the film has the sound under it."""
    import av

    from tests.audio.signals import RATE, drum_clip, write_wav

    clip = drum_clip(seconds=4, seed=1)[0]
    write_wav(tmp_path / "drums.wav", clip)
    live = []
    run(RunConfig(source="generator", sinks=["null"], width=96, height=64, fps=FPS, frames=60, pace="offline",
                  audio=f"file:{tmp_path / 'drums.wav'}", record_show=str(tmp_path / "show"),
                  settings={"audio1.target": "l0.zoom", "audio1.depth": 0.5}),
        on_frame=lambda slot, picture, source, engine: live.append(picture.copy()))
    samples, rate = ShowFile(tmp_path / "show").sound()
    assert rate == RATE and len(samples) == 2 * RATE  # 60 frames: 2 s
    assert np.abs(samples - np.round(clip[:len(samples)] * 32767) / 32768).max() < 1e-4  # (the WAV is 16-bit)
    again = []
    render(RenderConfig(show=str(tmp_path / "show"), out=str(tmp_path / "film.mp4"), progress=False),
           on_frame=lambda i, rgb: again.append(rgb))
    assert len(again) == 60 and all(np.array_equal(a, b) for a, b in zip(live, again))
    with av.open(str(tmp_path / "film.mp4")) as film:
        assert [s.type for s in film.streams] == ["video", "audio"]
        assert abs(float(film.streams.audio[0].duration * film.streams.audio[0].time_base) - 2.0) < 0.1


def test_ffvj_render_takes_its_options_from_the_command_line(tmp_path):
    from ffvj.cli import main as ffvj

    run(RunConfig(source="generator", sinks=["null"], width=64, height=48, fps=FPS, frames=30, pace="offline",
                  record_show=str(tmp_path / "show")))
    assert ffvj(["render", str(tmp_path / "show"), "--from", "0.2", "--to", "0.6", "--fps", "15", "--size", "96x64",
                 "--out", str(tmp_path / "film.mp4"), "--no-progress", "--json"]) == 0
    assert ffvj(["render", str(tmp_path / "show"), "--from", "5", "--no-progress"]) == 2  # past the end: one line


def test_a_live_show_that_fell_behind_keeps_its_time_in_the_film(tmp_path):
    """Slots a live show skipped are held by the frame before, as the live recording did: the film lasts
    as long as the show, and a trim is in the show's seconds."""
    path = tmp_path / "show"
    run(RunConfig(source="generator", sinks=["null"], width=64, height=48, fps=FPS, frames=20, pace="offline",
                  record_show=str(path)))
    lines = (path / "frames.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    for r in records[10:]:
        r["slot"] += 10  # as if the show had been 10 slots (1/3 s) late after frame 10
    (path / "frames.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    shown = []
    result = render(RenderConfig(show=str(path), out=str(tmp_path / "a.mp4"), progress=False),
                    on_frame=lambda i, rgb: shown.append(i))
    assert result["written"] == 30 and shown == list(range(9)) + [9] * 11 + list(range(10, 20))
    trimmed = []
    render(RenderConfig(show=str(path), out=str(tmp_path / "b.mp4"), start=0.5, progress=False),
           on_frame=lambda i, rgb: trimmed.append(i))
    assert trimmed == list(range(10, 20))  # 0.5 s = slot 15: the first frame at or after it is frame 10 (slot 20)


def main() -> None:
    from ffvj.options import size
    from tests.jack import _jack_server

    parser = argparse.ArgumentParser(description="the show recorder's measurement (docs/SHOWFILE.md)")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--size", type=size, default=(640, 360))
    parser.add_argument("--big", type=size, default=None)
    parser.add_argument("--out", default="/tmp/ffvj-showfile")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"show-{int(time.time())}"

    class Factory:  # _jack_server wants pytest's tmp_path_factory
        @staticmethod
        def mktemp(name):
            p = out / name
            p.mkdir(exist_ok=True)
            return p

    env_gen = _jack_server(Factory())
    env = next(env_gen)
    frames = np.lib.format.open_memmap(out / "live.npy", "w+", np.uint8,
                                       (round(args.seconds * FPS), args.size[1], args.size[0], 3))
    try:
        shown = iter(range(len(frames)))  # the frames in the order they were shown (slots skip when late)
        sent = play(path, args.seconds, args.size, env, lambda slot, rgb: frames.__setitem__(next(shown), rgb))
    finally:
        for _ in env_gen:
            pass
    r = check(path, frames, args.big, out)
    events = r.pop("events")
    kinds = {k: sum(1 for e in events if e["kind"] == k) for k in ("set", "action", "model", "reseed")}
    if args.big is not None:
        cut = _event_frames(events, "action", "snapshot.recall")[0]
        window = slice(cut - 5, cut + 6)
        r["cut_frame"] = cut
        r["cut_found_live"] = cut - 5 + int(np.argmax(r["live_change"][window]))
        r["cut_found_big"] = cut - 5 + int(np.argmax(r["big_change"][window]))
    r = {k: v for k, v in r.items() if not isinstance(v, np.ndarray)}
    print(json.dumps({"show": str(path), "sent": sent, "events": kinds, **r}, indent=1))


if __name__ == "__main__":
    main()
