"""MIDI ports: the show's inputs against a fake backend, and real ports on a JACK server.

The end-to-end tests start a real JACK server (Debian's jackd2, dummy driver) under a unique name,
open ffvj's virtual input through python-rtmidi's JACK API, and drive it from another process."""

from __future__ import annotations

import json
import logging
import signal
import subprocess
import sys
import threading
import time
import uuid

import mido
import pytest

from ffvj.control.midi.learn import learn_session
from ffvj.control.midi.mapping import load_mapping
from ffvj.control.midi.ports import MidiError, MidiInput

from tests.jack import FIND_AND_SEND, JACK_BACKEND, jack_server, peer, stop_peer  # noqa: F401 (a fixture)

from .rig import MAPPINGS, REG, FakePort, cc, mapping, poll_until, wait_until


# ------------------------------------------------------------------------------- ports (fake backend)

class FakeBackend:
    """The part of mido.Backend that MidiInput uses, with ports the test can drive."""

    def __init__(self, inputs=(), outputs=(), fail=None, virtual=True):
        self.inputs, self.outputs, self.fail, self.virtual = list(inputs), list(outputs), fail, virtual
        self.opened: dict[str, FakePort] = {}

    def get_input_names(self):
        if self.fail:
            raise self.fail
        return self.inputs

    def get_output_names(self):
        return self.outputs

    def open_input(self, name, virtual=False, callback=None, client_name=None):
        if virtual and not self.virtual:
            raise NotImplementedError("virtual ports are not supported by the Windows MultiMedia API")
        port = FakePort(name)
        port.callback = callback
        self.opened[name] = port
        return port

    def open_output(self, name):
        port = FakePort(name)
        self.opened["out:" + name] = port
        return port


def test_midi_input_wires_ports_mappings_and_echo(rig):
    store = rig.store
    nano = load_mapping(MAPPINGS / "nanokontrol2.toml", store.registry)
    generic = load_mapping(MAPPINGS / "generic.toml", store.registry)
    b = FakeBackend(inputs=["nanoKONTROL2:nanoKONTROL2 MIDI 1 20:0", "Other Synth:out 24:0"],
                    outputs=["nanoKONTROL2:nanoKONTROL2 MIDI 1 20:0", "Other Synth:in 24:0"])
    with MidiInput(rig, [nano, generic], ports=["other synth"], backend=b) as midi:
        assert set(midi.connected) == {"ffvj", "Other Synth:out 24:0", "nanoKONTROL2:nanoKONTROL2 MIDI 1 20:0"}
        nano_in = b.opened["nanoKONTROL2:nanoKONTROL2 MIDI 1 20:0"]
        nano_in.callback(cc(4, 127))  # nanoKONTROL2 fader 5: input.mix
        assert store.get("input.mix") == pytest.approx(1.0)
        nano_in.callback(cc(1, 127, ch=1))  # CC 1 is generic's mod wheel, but this port is a nanoKONTROL2
        assert store.get("l0.warp") == REG["l0.warp"].default
        b.opened["Other Synth:out 24:0"].callback(cc(1, 127))  # matches no device: gets generic
        assert store.get("l0.warp") == pytest.approx(REG["l0.warp"].max)
        b.opened["ffvj"].callback(cc(11, 0))  # the virtual port: generic (expression → drive) ...
        assert store.get("drive") == pytest.approx(REG["drive"].min)
        b.opened["ffvj"].callback(cc(5, 127))  # ... not the nanoKONTROL2's fader 6, also drive
        assert store.get("drive") == pytest.approx(REG["drive"].min)
        out = b.opened["out:nanoKONTROL2:nanoKONTROL2 MIDI 1 20:0"]
        nano_in.callback(cc(55, 127))  # M8: freeze toggle → its LED lit on the nanoKONTROL2 output
        wait_until(lambda: cc(55, 127) in out.sent)
    assert all(p.closed for p in b.opened.values())
    midi.close()  # idempotent


def test_midi_input_unknown_port_lists_available(rig):
    b = FakeBackend(inputs=["nanoKONTROL2 MIDI 1", "Launch Control XL"])
    with pytest.raises(MidiError) as err:
        MidiInput(rig, [], ports=["X-Touch"], backend=b, rescan_s=None).start()
    assert "unknown MIDI port 'X-Touch'" in str(err.value)
    assert "nanoKONTROL2 MIDI 1, Launch Control XL" in str(err.value)
    assert all(p.closed for p in b.opened.values())


def test_a_named_port_not_there_yet_is_waited_for(rig, caplog):
    b = FakeBackend(inputs=["Launch Control XL"])
    with caplog.at_level(logging.WARNING, logger="ffvj.control.midi"):
        with MidiInput(rig, [], ports=["X-Touch"], backend=b, rescan_s=0.05) as midi:
            assert "'X-Touch' is not there yet" in caplog.text and "Launch Control XL" in caplog.text
            b.inputs = ["Launch Control XL", "X-Touch One:X-Touch One MIDI 1 24:0"]
            wait_until(lambda: "X-Touch One:X-Touch One MIDI 1 24:0" in midi.connected, 10)


def test_midi_input_without_virtual_ports(rig, caplog):
    store = rig.store
    b = FakeBackend(inputs=["MIDI Mix 1"], virtual=False)
    mix = load_mapping(MAPPINGS / "midimix.toml", store.registry)
    with caplog.at_level(logging.WARNING, logger="ffvj.control.midi"):
        with MidiInput(rig, [mix], backend=b) as midi:
            assert midi.connected == ["MIDI Mix 1"]
    assert any("no virtual input" in r.getMessage() for r in caplog.records)


def test_hot_plug_reconnects_an_unplugged_controller_under_its_new_name(rig, caplog):
    """Unplug mid-show: the port is closed; plug back in (ALSA gives it a new client number): it is
    connected again with the same mapping; a controller plugged in late is connected too."""
    store = rig.store
    nano = load_mapping(MAPPINGS / "nanokontrol2.toml", store.registry)
    b = FakeBackend(inputs=[])
    with MidiInput(rig, [nano], backend=b, rescan_s=None) as midi:
        assert midi.connected == ["ffvj"]  # nothing plugged in yet
        b.inputs = ["nanoKONTROL2:nanoKONTROL2 MIDI 1 20:0"]
        midi.rescan()
        first = b.opened["nanoKONTROL2:nanoKONTROL2 MIDI 1 20:0"]
        assert midi.connected == ["ffvj", first.name]
        first.callback(cc(4, 127))
        assert store.get("input.mix") == pytest.approx(1.0)
        with caplog.at_level(logging.WARNING, logger="ffvj.control.midi"):
            b.inputs = []
            midi.rescan()
        assert first.closed and midi.connected == ["ffvj"]
        assert any("went away" in r.getMessage() for r in caplog.records)
        b.inputs = ["nanoKONTROL2:nanoKONTROL2 MIDI 1 24:0"]
        midi.rescan()
        again = b.opened["nanoKONTROL2:nanoKONTROL2 MIDI 1 24:0"]
        assert not again.closed and midi.connected == ["ffvj", again.name]
        again.callback(cc(4, 0))  # soft takeover: the value was set before this link: held
        assert store.get("input.mix") == pytest.approx(1.0)
        again.callback(cc(4, 127))  # picked up where the value is,
        again.callback(cc(4, 0))  # then it follows
        assert store.get("input.mix") == pytest.approx(0.0)
        assert midi.stats()["messages"] == 4  # the unplugged port's count is kept
        midi.rescan()  # nothing changed: nothing reopened
        assert b.opened[again.name] is again
    assert again.closed


def test_a_refused_virtual_port_is_tried_again(rig, caplog):
    """A JACK server busy with other clients can refuse the virtual port at start: the show starts
    anyway, says so, and the watcher opens the port once the server accepts it."""

    class Refusing(FakeBackend):
        refusals = 5

        def open_input(self, name, virtual=False, callback=None, client_name=None):
            if virtual and self.refusals:
                self.refusals -= 1
                raise OSError("Cannot create new client")
            return super().open_input(name, virtual, callback, client_name)

    b = Refusing()
    with caplog.at_level(logging.WARNING, logger="ffvj.control.midi"):
        with MidiInput(rig, [], backend=b, rescan_s=0.01) as midi:
            assert midi.available
            wait_until(lambda: midi.connected == ["ffvj"], 10)
            b.opened["ffvj"].callback(cc(7, 127))  # generic is the fallback: CC 7 is input.mix
    assert any("refused the virtual input" in r.getMessage() for r in caplog.records)
    assert b.opened["ffvj"].closed


def test_a_backend_that_says_virtual_ports_are_not_supported_is_told_once(rig, caplog):
    """mido's portmidi and pygame backends answer a virtual port with a ValueError: that is
    "never", not "busy": one warning, no retries, no rescans of it."""

    class PortMidiLike(FakeBackend):
        tries = 0

        def open_input(self, name, virtual=False, callback=None, client_name=None):
            if virtual:
                PortMidiLike.tries += 1
                raise ValueError("virtual ports are not supported by the PortMidi backend")
            return super().open_input(name, virtual, callback, client_name)

    with caplog.at_level(logging.WARNING, logger="ffvj.control.midi"):
        with MidiInput(rig, [], backend=PortMidiLike(), rescan_s=None) as midi:
            midi.rescan()
            midi.rescan()
            assert midi.connected == []
    assert PortMidiLike.tries == 1
    assert sum("no virtual input port" in r.getMessage() for r in caplog.records) == 1


def test_concurrent_rescans_open_a_port_once(rig):
    """The watcher and a direct rescan at the same moment: one link, one open port."""
    store = rig.store
    nano = load_mapping(MAPPINGS / "nanokontrol2.toml", store.registry)

    class Slow(FakeBackend):
        opens = 0

        def open_input(self, name, virtual=False, callback=None, client_name=None):
            if not virtual:
                Slow.opens += 1
                time.sleep(0.05)  # widen the window two rescans could both open in
            return super().open_input(name, virtual, callback, client_name)

    b = Slow(inputs=[])
    with MidiInput(rig, [nano], backend=b, rescan_s=None) as midi:
        b.inputs = ["nanoKONTROL2:nanoKONTROL2 MIDI 1 20:0"]
        threads = [threading.Thread(target=midi.rescan) for _ in range(4)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        assert midi.connected == ["ffvj", "nanoKONTROL2:nanoKONTROL2 MIDI 1 20:0"]
        assert Slow.opens == 1 and len(midi.mappers) == 2


def test_no_midi_api_runs_on_with_one_warning(rig, caplog, monkeypatch):
    # The real case on this machine: no JACK server under this name, and JACK must not autostart one.
    monkeypatch.setenv("JACK_NO_START_SERVER", "1")
    monkeypatch.setenv("JACK_DEFAULT_SERVER", f"ffvj-absent-{uuid.uuid4().hex[:8]}")
    for backend in ("mido.backends.rtmidi/UNIX_JACK", "mido.backends.no_such_backend",
                    FakeBackend(fail=OSError("MidiInAlsa::initialize: error creating ALSA sequencer client"))):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="ffvj.control.midi"):
            with MidiInput(rig, [], backend=backend) as midi:
                assert not midi.available and midi.connected == []
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1 and "MIDI disabled" in warnings[0].getMessage()
    # Naming a port explicitly where MIDI cannot work is a setup error, said loudly.
    with pytest.raises(MidiError, match="no usable MIDI API"):
        MidiInput(rig, [], ports=["nanoKONTROL2"], backend="mido.backends.no_such_backend").start()


# --------------------------------------------------------------------------------- real JACK server

def start_midi(expected: list[str], *args, **kwargs) -> MidiInput:
    """MidiInput on the test's JACK server. A JACK server starved of CPU by other tests can refuse a
    new client for seconds ("Cannot create new client"); that is the machine, not ffvj: retry."""
    for attempt in range(4):
        midi = MidiInput(*args, backend=JACK_BACKEND, **kwargs).start()
        if midi.available and midi.connected == expected:
            return midi
        midi.close()
        time.sleep(1.0 + attempt)
    pytest.fail(f"could not open {expected} on the JACK server (available={midi.available}, "
                f"connected={midi.connected})")


def test_jack_virtual_port_end_to_end(jack_server, rig):
    store = rig.store
    virtual = f"ffvj{uuid.uuid4().hex[:6]}"
    m = mapping({"param": "l0.zoom", "type": "cc", "number": 21, "min": 0.9, "max": 1.1, "curve": "linear"},
                {"param": "bound", "type": "note", "number": 36, "value": "sine"})
    with start_midi([virtual], rig, [m], virtual_name=virtual) as midi:
        msgs = [{"type": "control_change", "control": 21, "value": 127},
                {"type": "note_on", "note": 36, "velocity": 100}, {"type": "note_on", "note": 36, "velocity": 0}]
        proc = peer(jack_server, FIND_AND_SEND, virtual, json.dumps(msgs))
        moved = poll_until(lambda: store.get("l0.zoom") == pytest.approx(1.1) and store.get("bound") == 2.0, 30)
        out, err = stop_peer(proc)
        assert proc.returncode == 0, err
        assert out.strip() == f"{virtual}:{virtual}"  # how JACK names rtmidi's virtual port: client:port
        assert moved, midi.stats()


def test_jack_auto_connect_and_led_echo(jack_server, rig):
    """A peer pretends to be a controller: ffvj finds its output by the mapping's ``match``, and the
    LED of the pressed button comes back on the peer's input port."""
    store = rig.store
    client = f"ctl{uuid.uuid4().hex[:6]}"
    controller = """
        import threading
        client = sys.argv[1]
        lit = mido.Message("note_on", note=16, velocity=127)
        got = []
        with retry(b.open_output, "out", virtual=True, client_name=client) as out, \\
                retry(b.open_input, "leds", virtual=True, client_name=client + "-leds", callback=got.append):
            print("ready", flush=True)
            sys.stdin.readline()  # ffvj is connected
            deadline = time.monotonic() + 20
            while lit not in got and time.monotonic() < deadline:
                out.send(mido.Message("note_on", note=16, velocity=127))
                out.send(mido.Message("note_on", note=16, velocity=0))
                out.send(mido.Message("control_change", control=9, value=0))
                time.sleep(0.2)
            print(json.dumps([m.hex() for m in got]), flush=True)
    """
    proc = peer(jack_server, controller, client)
    try:
        assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
        m = mapping({"param": "bound", "type": "note", "number": 16, "value": "sine"},
                    {"param": "input.mix", "type": "cc", "number": 9},
                    match=client, output=f"{client}-leds")
        with start_midi([f"{client}:out"], rig, [m], virtual_name=None) as midi:
            assert midi.outputs, "no LED echo port"
            proc.stdin.write("go\n")
            proc.stdin.flush()
            out, err = proc.communicate(timeout=40)
            assert proc.returncode == 0, err
            echoed = [mido.Message.from_hex(h) for h in json.loads(out.strip().splitlines()[-1])]
            assert mido.Message("note_on", note=16, velocity=127) in echoed  # the pressed button's LED
            wait_until(lambda: store.get("bound") == 2.0 and store.get("input.mix") == 0.0)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_jack_hot_plug(jack_server, rig):
    """A controller on JACK that appears after the show started, goes away and comes back is
    connected, dropped and connected again, with its mapping working each time."""
    store = rig.store
    client = f"hot{uuid.uuid4().hex[:6]}"
    controller = """
        client, values = sys.argv[1], [int(v) for v in sys.argv[2].split(",")]
        with retry(b.open_output, "out", virtual=True, client_name=client) as out:
            print("ready", flush=True)
            while not sys.stdin.readline().startswith("stop"):  # "send": once more; "stop": unplug
                for value in values:
                    out.send(mido.Message("control_change", control=9, value=value))
                    time.sleep(0.01)
    """
    m = mapping({"param": "input.mix", "type": "cc", "number": 9}, match=client)
    with start_midi([], rig, [m], virtual_name=None, rescan_s=0.2) as midi:
        # Plug in, move the fader, unplug; twice. The second time the value was set before the link
        # (by the first): soft takeover holds the fader until it passes the value (127), then follows.
        for moves in ("127", "127,0"):
            value = int(moves.split(",")[-1])
            proc = peer(jack_server, controller, client, moves)
            try:
                assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
                wait_until(lambda: midi.connected == [f"{client}:out"], 30, f"a connection to {client}:out")
                want = value / 127

                def moved() -> bool:
                    proc.stdin.write("send\n")  # JACK may miss the first message on a new connection
                    proc.stdin.flush()
                    return store.get("input.mix") == pytest.approx(want)

                wait_until(moved, 30, interval=0.2)
                _, err = proc.communicate("stop\n", timeout=30)
                assert proc.returncode == 0, err
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
            wait_until(lambda: midi.connected == [], 30, "the port let go")


def test_jack_learn_session(jack_server, tmp_path):
    virtual = f"learn{uuid.uuid4().hex[:6]}"
    out_path = tmp_path / "learned.toml"
    lines: list[str] = []
    result = {}

    def run():
        result["mapping"] = learn_session(["l0.zoom"], None, out_path, timeout=20, backend=JACK_BACKEND,
                                          virtual_name=virtual, print_fn=lines.append)

    thread = threading.Thread(target=run)
    thread.start()
    msgs = [{"type": "control_change", "control": 21, "value": v, "channel": 4} for v in (40, 42, 45, 49, 52)]
    proc = peer(jack_server, FIND_AND_SEND, virtual, json.dumps(msgs))
    thread.join(timeout=40)
    _, err = stop_peer(proc)
    assert proc.returncode == 0, err
    assert any("move a control for l0.zoom" in line for line in lines)
    entries = load_mapping(out_path, REG).entries
    # (mido counts channels from 0: its channel 4 is MIDI channel 5, as the file writes it)
    assert [(e.target, e.type, e.channel, e.number, e.mode) for e in entries] == [("l0.zoom", "cc", 5, 21, "absolute")]
    assert result["mapping"].entries[0].number == 21


@pytest.mark.slow
def test_a_controller_on_jack_drives_a_running_show(jack_server):
    """The whole path: another process sends CC 7 to the virtual `ffvj` port of a running `ffvj run`
    on a JACK server; the generic mapping moves input.mix, and OSC feedback reports the new value."""
    import socket

    from pythonosc.osc_message import OscMessage

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        osc_port = probe.getsockname()[1]
    feedback = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    feedback.bind(("127.0.0.1", 0))
    feedback.settimeout(0.5)
    show = subprocess.Popen([sys.executable, "-m", "ffvj.cli", "run", "--source", "generator", "--sink", "null",
                             "--size", "96x64", "--pace", "realtime", "--midi-backend", "jack", "--osc-port",
                             str(osc_port), "--osc-feedback", f"127.0.0.1:{feedback.getsockname()[1]}",
                             "--no-oscquery", "--no-web", "--midi-mapping", "generic"],
                            env=jack_server, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    # The show's log, read on a thread: the sender starts once the show says its port is open (on a
    # loaded machine importing torch alone can take longer than any fixed wait), and a failure shows it.
    log_lines: list[str] = []
    reader = threading.Thread(target=lambda: log_lines.extend(iter(show.stderr.readline, "")), daemon=True)
    reader.start()
    opened = poll_until(lambda: show.poll() is not None or any("virtual input 'ffvj' open" in line
                                                               for line in log_lines), 120)
    sender = peer(jack_server, FIND_AND_SEND, "ffvj", json.dumps([{"type": "control_change", "control": 7,
                                                                   "value": 127, "channel": 0}]), "60")
    try:
        assert opened and show.poll() is None, "the show did not open its MIDI port:\n" + "".join(log_lines)[-3000:]
        value, deadline = None, time.monotonic() + 60
        while time.monotonic() < deadline and value != 1.0:
            try:
                msg = OscMessage(feedback.recv(65536))
            except (socket.timeout, ValueError):
                continue
            if msg.address == "/ffvj/input/mix":
                value = round(msg.params[0], 4)
    finally:
        _, sender_err = stop_peer(sender)
        show.send_signal(signal.SIGTERM)
        try:
            show.wait(timeout=30)
        finally:
            show.kill()
            reader.join(timeout=10)
            feedback.close()
    show_log = "".join(log_lines)[-3000:]
    assert value == 1.0, f"no feedback for input.mix\nsender: {sender_err[-1500:]}\nshow: {show_log}"
    assert show.returncode == 0, show_log
