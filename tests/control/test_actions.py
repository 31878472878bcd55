"""The actions table: typed arguments, the threads actions run on, and every surface generated from it."""

import logging
import threading

import pytest
import torch

from ffvj.control import actions as actions_module
from ffvj.control.actions import ACTIONS, LOOP, NOW, ActionQueue
from ffvj.control.controls import Controls
from ffvj.control.midi.mapping import ENTRY_KEYS, parse_target
from ffvj.control.osc import OSC_COMMANDS, OscServer
from ffvj.control.oscquery import OscQueryServer
from ffvj.control.params import build_registry
from ffvj.control.touchosc import _slot_action, validate_layout
from ffvj.engine.engine import FeedbackEngine
from ffvj.model.net import FeatureAutoencoder, ModelConfig
from ffvj.phi import Phi
from ffvj.reporting import RateLimitedLog

W, H = 45, 29


@pytest.fixture(autouse=True)
def fresh_action_log(monkeypatch):
    # The action log is module-wide and rate-limited: give every test its own so caplog sees each warning.
    monkeypatch.setattr(actions_module, "_warn", RateLimitedLog(actions_module.log))


@pytest.fixture
def controls(tmp_path):
    c = Controls.for_levels(3, presets_dir=str(tmp_path / "presets"))
    yield c
    c.close()


@pytest.fixture
def engine():
    torch.manual_seed(0)
    e = FeedbackEngine(FeatureAutoencoder(ModelConfig(channels=(3, 6, 8, 10))).eval(), W, H)
    e.guard.patience = 10**9  # tiny random models may flatten; these tests are about states, not looks
    return e


def held(controls) -> dict:
    """φ with every level frozen: a step changes nothing itself."""
    phi = controls.store.advance(0)
    return dict(phi, **{name: 1.0 for name in phi if name.endswith(".freeze")})


def run_frame(controls, engine):
    controls.next_phi(engine, 1 / 30, 0.0)
    controls.close()  # waits for preset files being written (a FILES action)


def test_arguments_are_typed_checked_and_defaulted():
    recall = ACTIONS["snapshot.recall"]
    assert recall.address == "/ffvj/snapshot/recall" and recall.type_tags == "iff"
    assert recall.bind([2]) == {"slot": 2, "seconds": 0.0, "quantum": -1.0}
    assert recall.bind([2.0, 1.5, 4]) == {"slot": 2, "seconds": 1.5, "quantum": 4.0}  # OSC sends slots as floats too
    assert recall.bind((), {"slot": 3, "seconds": 4}) == {"slot": 3, "seconds": 4.0, "quantum": -1.0}
    assert recall.bind([1, -3.0]) == {"slot": 1, "seconds": 0.0, "quantum": -1.0}  # a fade time is clamped into range
    assert ACTIONS["bpm"].bind([900]) == {"bpm": 300.0}  # and so is a tempo
    for bad, what in (([9], "slot = 9 is outside 0..7"), (["x"], "slot must be a finite number"),
                      ([], "needs slot"), ([1, 2, 3, 4], "at most 3"), ([float("nan")], "finite")):
        with pytest.raises(ValueError, match=what):
            recall.bind(bad)
    with pytest.raises(ValueError, match="no argument fade"):
        recall.bind((), {"slot": 1, "fade": 2})
    with pytest.raises(ValueError, match="non-empty string"):
        ACTIONS["preset.save"].bind([""])


def test_buttons_fire_on_a_press_and_ignore_the_release():
    reset = ACTIONS["reset"]
    assert reset.bind([]) == {} and reset.bind([1]) == {} and reset.bind([True]) == {} and reset.bind([None]) == {}
    assert reset.bind([0]) is None and reset.bind([False]) is None  # the release: nothing to do
    with pytest.raises(ValueError):
        reset.bind([1, 2])


def test_loop_actions_wait_for_the_render_loop(controls, engine):
    source = torch.rand(1, 3, H, W) * 2 - 1
    engine.step(Phi.of(controls.store.advance(0)), source)
    assert controls.fire("snapshot.store", 1) is True
    assert controls.snapshots.occupied() == []  # queued, not run: the engine belongs to the render loop
    run_frame(controls, engine)
    assert controls.snapshots.occupied() == [1]
    kept = [s.clone() for s in engine.states]
    controls.fire("reset")
    run_frame(controls, engine)
    new_source = torch.rand(1, 3, H, W) * 2 - 1
    engine.step(Phi.of(held(controls)), new_source, dt=1.0)  # the re-seed runs with the frame being made: a crossfade
    assert torch.allclose(engine.states[0], new_source)  # ... that ends on that frame's source (0.5 s < 1 s)
    controls.fire("snapshot.recall", 1.0)
    run_frame(controls, engine)
    assert all(torch.equal(a, b) for a, b in zip(engine.states, kept))
    controls.fire("snapshot.recall", slot=1, seconds=1.0)
    run_frame(controls, engine)
    assert engine.fading
    controls.fire("reset", 1)
    run_frame(controls, engine)
    engine.step(Phi.of(held(controls)), source, dt=1 / 30)  # panic: its re-seed replaces the snapshot's crossfade
    assert engine.fading and torch.equal(engine._fade.target[0], source)  # heading for the source, not slot 1


def test_preset_actions_run_off_the_render_loop(controls, engine):
    store = controls.store
    store.set("drive", 3.0)
    controls.fire("preset.save", "live")
    seen = []
    original = controls.presets.save
    controls.presets.save = lambda name: seen.append(threading.current_thread().name) or original(name)
    run_frame(controls, engine)
    assert seen == ["ffvj files"] and (controls.presets.directory / "live.toml").is_file()
    store.set("drive", 1.0)
    controls.fire("preset.recall", "live", 0.5)
    run_frame(controls, engine)
    assert controls.presets.morphing


def test_now_actions_run_on_the_callers_thread(controls):
    controls.fire("bpm", 128)
    assert controls.tempo.bpm == 128
    controls.fire("tap", 0)  # a release: no tap
    controls.tempo.tap(now=0.0)
    assert controls.actions.drain() == []  # nothing waits for the render loop


def test_problems_are_said_and_the_show_goes_on(controls, engine, caplog):
    with pytest.raises(ValueError, match="unknown action 'explode'.*reset"):
        controls.fire("explode")
    with pytest.raises(ValueError, match="bad preset name"):  # refused as it is fired, by any surface
        controls.fire("preset.save", "../x")
    controls.snapshots = None
    with caplog.at_level(logging.WARNING, logger="ffvj.control.actions"):
        controls.fire("preset.recall", "absent")
        controls.fire("snapshot.store", 0)
        controls.fire("learn")
        run_frame(controls, engine)
    text = caplog.text
    assert "no preset 'absent'" in text and "no snapshots in this show" in text
    assert "MIDI learn is not running" in text


def test_the_queue_is_bounded():
    queue = ActionQueue(maxlen=4)
    for slot in range(6):
        queue.post(ACTIONS["snapshot.store"], {"slot": slot})
    assert [args["slot"] for _, args in queue.drain()] == [2, 3, 4, 5] and queue.dropped == 2


def test_resets_fired_before_a_frame_are_one_reset():
    """B7: 200 panics a second were 200 re-seeds (20 → 6 fps); before one frame they are one."""
    queue = ActionQueue()
    for _ in range(50):
        queue.post(ACTIONS["reset"], {})
    queue.post(ACTIONS["snapshot.store"], {"slot": 1})
    for slot in (2, 3):
        queue.post(ACTIONS["snapshot.recall"], {"slot": slot, "seconds": 1.0})
    assert [(a.name, args) for a, args in queue.drain()] == [
        ("reset", {}), ("snapshot.store", {"slot": 1}), ("snapshot.recall", {"slot": 3, "seconds": 1.0})]
    assert queue.coalesced == 50 and queue.dropped == 0
    queue.post(ACTIONS["reset"], {})  # the next frame gets its own
    assert len(queue.drain()) == 1


def test_threads_are_as_documented():
    assert {a.name for a in ACTIONS.values() if a.thread == NOW} == {"tap", "bpm", "learn"}
    assert {a.name for a in ACTIONS.values() if a.thread == LOOP} == {"reset", "snapshot.store", "snapshot.recall"}


def test_no_parameter_or_command_shares_an_action_address():
    params = {p.address for p in build_registry(5).values()}
    actions = [a.address for a in (*ACTIONS.values(), *OSC_COMMANDS.values())]
    assert len(set(actions)) == len(actions) and not params & set(actions)


@pytest.fixture(scope="module")
def tablet(tmp_path_factory):
    """The addresses a generated TouchOSC layout uses."""
    pytest.importorskip("py2tosc")
    from ffvj.control.touchosc import generate_layout

    registry = build_registry(3)
    path = generate_layout(registry, tmp_path_factory.mktemp("tosc") / "layout.tosc")
    return set(validate_layout(path, registry))


@pytest.mark.parametrize("name", list(ACTIONS))
def test_every_action_reaches_every_surface(name, controls, tablet):
    """Declared once, in the table: OSC answers it, OSCQuery lists it with its type tags, MIDI maps it
    (its first argument after a colon, the others as entry keys), and the TouchOSC layout has a button
    for it unless it needs a name or a free number (preset recall, bpm, model)."""
    action = ACTIONS[name]
    osc = OscServer(controls)
    assert osc.commands[action.address] is action
    node = OscQueryServer(osc).namespace()
    for part in action.address.strip("/").split("/"):
        node = node["CONTENTS"][part]
    assert node["TYPE"] == (action.type_tags or "N") and node["DESCRIPTION"] == action.doc
    example = {int: "1", float: "120", str: "random" if name == "model" else "dawn"}  # a model must be bundled
    target = name + (f":{example[action.args[0].kind]}" if action.args else "")
    assert parse_target(target, controls.store.registry)[1] is action
    assert all(arg.name in ENTRY_KEYS for arg in action.args[1:])
    on_tablet = (action.button and not action.args) or _slot_action(action)
    assert (action.address in tablet) == on_tablet
    assert on_tablet == (name not in ("bpm", "preset.recall", "preset.save", "model"))


def test_actions_that_fail_are_counted_for_the_status_line(tmp_path):
    """An unknown preset or an empty snapshot slot is logged, and now counted too."""
    from ffvj.control.controls import Controls
    from tests.helpers import wait_until

    controls = Controls.for_levels(3, presets_dir=str(tmp_path))
    assert controls.status() is None
    controls.fire("preset.recall", "nothere")
    controls.fire("snapshot.recall", 5)

    class Engine:
        states = []

    controls.next_phi(Engine(), 1 / 30, 0.0)
    wait_until(lambda: controls.failed_actions == 2, 10)
    assert controls.status() == "2 actions failed"
    controls.close()


def test_a_coalesced_action_takes_the_place_of_its_latest_firing():
    queue = ActionQueue()
    queue.post(ACTIONS["snapshot.recall"], {"slot": 1, "seconds": 0.0})
    queue.post(ACTIONS["reset"], {})
    queue.post(ACTIONS["snapshot.recall"], {"slot": 2, "seconds": 0.0})
    assert [(a.name, args.get("slot")) for a, args in queue.drain()] == [("reset", None), ("snapshot.recall", 2)]


def test_a_model_switch_names_a_bundled_model_or_is_refused_at_once(controls):
    """A name from a network client never becomes a path: only bundled models, checked as it is fired."""
    with pytest.raises(ValueError, match="no bundled model '../secret'; bundled: crisp, default, random, smooth"):
        controls.fire("model", "../secret")
    assert controls.fire("model", "random", 0.5)


def test_a_fifo_or_a_hung_disk_never_wedges_the_file_worker(controls, engine, monkeypatch):
    """A FIFO named x.toml, then /ffvj/preset/recall s x: every later save, recall and model switch was
    lost and SIGTERM took 8.9 s. A FIFO is refused at once; a file operation that hangs (a network mount)
    is abandoned after the worker's job time and the requests behind it go on; closing stays bounded."""
    import os
    import time

    from ffvj.control.controls import _FileWorker
    from tests.helpers import wait_until

    presets = controls.presets.directory
    presets.mkdir(parents=True, exist_ok=True)
    os.mkfifo(presets / "x.toml")
    controls.fire("preset.recall", "x")
    controls.fire("preset.save", "after")
    run_frame(controls, engine)
    wait_until(lambda: (presets / "after.toml").is_file(), 10, "a save after the FIFO's recall")
    assert controls.failed_actions == 1  # the FIFO's recall, refused

    # A read that hangs: the job is abandoned after job_timeout, the next ones run on a fresh thread.
    monkeypatch.setattr(controls, "_files", _FileWorker(job_timeout=0.5))
    hung = threading.Event()
    original = controls.presets.recall
    controls.presets.recall = lambda name, seconds=0.0: hung.wait() if name == "hung" else original(name, seconds)
    controls.presets.save("hung")
    controls.fire("preset.recall", "hung")
    controls.fire("preset.save", "later")
    controls.next_phi(engine, 1 / 30, 0.0)
    wait_until(lambda: (presets / "later.toml").is_file(), 10, "a save queued behind a hung recall")
    assert controls._files.stuck == 1 and "1 file operations stuck" in controls.status()
    t = time.monotonic()
    controls.close()
    assert time.monotonic() - t < 3
    hung.set()


def test_a_quantised_change_waits_for_its_beat_and_starts_in_the_frame_nearest_it():
    from ffvj.control.controls import Controls

    controls = Controls.for_levels(3)
    controls.tempo.start(0.0)  # 120 BPM: a bar is 2 s
    controls.snapshots.store = None  # (no engine here: the recall is what is watched)
    ran = []
    controls._perform = lambda action, args, engine=None: ran.append((action.name, args, frame)) or True
    fps = 30
    for frame in range(200):
        now = frame / fps
        if frame == 10:
            controls.fire("snapshot.recall", 2, 0.0, 4)  # the next bar: beat 4, at 2 s
        if frame == 12:
            controls.store.set("tempo.quantum", "beat")
            controls.fire("snapshot.recall", 3)  # the show's quantum: replaces the one waiting
        if frame == 70:
            controls.fire("snapshot.recall", 5, 0.0, 0)  # at once
        controls.next_phi(None, 1 / fps, now)
    assert ran[0] == ("snapshot.recall", {"slot": 3, "seconds": 0.0}, 15)  # beat 1 at 0.5 s is frame 15
    assert ran[1] == ("snapshot.recall", {"slot": 5, "seconds": 0.0}, 70)
    assert len(ran) == 2
    # Ahead by the output latency: the audience sees it on the line.
    controls.output_latency = 0.1
    ran.clear()
    frame = 80
    controls.fire("snapshot.recall", 1, 0.0, 4)
    for frame in range(80, 130):
        controls.next_phi(None, 1 / fps, frame / fps)
    assert ran == [("snapshot.recall", {"slot": 1, "seconds": 0.0}, 117)]  # 4 s − 0.1 s, nearest frame (3.9 s)
    assert controls.waiting() == {}
