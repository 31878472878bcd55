"""OSC server: real datagrams on 127.0.0.1, with liblo's oscsend/oscdump as an independent peer.

No test sleeps to prove something happened: each waits (generously) until it has, because two
loaded cores can stall any thread for a while. Absence is asserted only after a later message from
the same client has been handled, since the server handles one client's datagrams in order.
"""

from __future__ import annotations

import math
import queue
import random
import shutil
import logging
import socket
import struct
import subprocess
import threading
import time

import pytest
from pythonosc import osc_bundle_builder, osc_message, slip
from pythonosc.osc_message_builder import build_msg
from pythonosc.tcp_client import SimpleTCPClient
from pythonosc.udp_client import SimpleUDPClient

from ffvj.control.controls import Controls
from ffvj.control.osc import NORM_SUFFIX, OscConfig, OscServer, parse_host_port
from ffvj.control.osc_pattern import MAX_PATTERN, compile_pattern
from ffvj.control.params import ParamStore, build_registry
from tests.helpers import free_udp_port, wait_until

TIMEOUT = 15.0


def match(pattern: str, addresses) -> list[str]:
    compiled = compile_pattern(pattern)
    return [a for a in addresses if compiled.matches(a)]


def queued(controls: Controls) -> list[tuple[str, dict]]:
    """What the render loop would drain: (action name, arguments)."""
    return [(action.name, args) for action, args in controls.actions.drain()]


class Peer:
    """A UDP socket that sends to the server and collects what comes back (feedback, replies)."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.received: list[tuple[str, list]] = []

    def send(self, port: int, address: str, *args) -> None:
        self.sock.sendto(build_msg(address, list(args)).dgram, ("127.0.0.1", port))

    def collect_until(self, pred, timeout: float = TIMEOUT) -> list[tuple[str, list]]:
        deadline = time.monotonic() + timeout
        while not pred(self.received):
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out; received {self.received[-10:]}")
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            msg = osc_message.OscMessage(data)
            self.received.append((msg.address, msg.params))
        return self.received

    def values(self, address: str) -> list:
        return [args[0] for a, args in self.received if a == address]

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def controls():
    return Controls(ParamStore(build_registry(3)))


@pytest.fixture
def store(controls):
    return controls.store


@pytest.fixture
def tempo(controls):
    return controls.tempo


@pytest.fixture
def server(controls):
    with OscServer(controls, OscConfig(port=0, tcp_port=0)) as srv:
        yield srv


@pytest.fixture
def peer():
    p = Peer()
    yield p
    p.close()


def send(server: OscServer, address: str, *args) -> None:
    SimpleUDPClient("127.0.0.1", server.port).send_message(address, list(args))


def sync(server: OscServer, store: ParamStore) -> None:
    """Send a marker change from the same client path and wait for it: everything sent before
    it has then been handled (one UDP handler thread, datagrams in order on loopback)."""
    marker = 0.5 if store.get("input.threshold") != 0.5 else 0.25
    send(server, "/ffvj/input/threshold", marker)
    wait_until(lambda: store.get("input.threshold") == marker, what="the sync marker")


# -- independent peers: liblo's oscsend and oscdump ------------------------------------------------

needs_liblo = pytest.mark.skipif(not (shutil.which("oscsend") and shutil.which("oscdump")),
                                 reason="liblo-tools (oscsend, oscdump) not installed")


@needs_liblo
def test_oscsend_sets_a_parameter(server, store):
    subprocess.run(["oscsend", "localhost", str(server.port), "/ffvj/l0/zoom", "f", "1.1"], check=True, timeout=30)
    wait_until(lambda: store.get("l0.zoom") == pytest.approx(1.1, abs=1e-6) and server.stats["applied"] == 1,
               what="l0.zoom = 1.1")


@needs_liblo
def test_oscdump_receives_feedback(controls, store):
    port = free_udp_port()
    dump = subprocess.Popen(["oscdump", "-L", str(port)], stdout=subprocess.PIPE, text=True)
    lines: queue.Queue[list[str]] = queue.Queue()
    reader = threading.Thread(target=lambda: [lines.put(line.split()) for line in dump.stdout], daemon=True)
    reader.start()
    seen: list[list[str]] = []  # oscdump prints "<timetag> /ffvj/l0/zoom f 1.100000"

    def printed(address: str) -> list[list[str]]:
        return [words for words in seen if words[1:2] == [address]]

    try:
        with OscServer(controls, OscConfig(port=0, feedback=(f"127.0.0.1:{port}",))) as srv:
            # oscdump may not be bound yet when the first feedback leaves: keep changing the value from
            # an independent sender until oscdump has printed both datagrams (native and /norm).
            deadline = time.monotonic() + TIMEOUT
            value = 1.2
            while not (printed("/ffvj/l0/zoom") and printed("/ffvj/l0/zoom/norm")):
                assert time.monotonic() < deadline, f"oscdump printed {seen}"
                value = 1.1 if value == 1.2 else 1.2
                subprocess.run(["oscsend", "localhost", str(srv.port), "/ffvj/l0/zoom", "f", str(value)],
                               check=True, timeout=30)
                try:
                    while True:
                        seen.append(lines.get(timeout=0.5))
                except queue.Empty:
                    pass
    finally:
        dump.terminate()
        dump.wait(timeout=10)
    native = printed("/ffvj/l0/zoom")[-1]
    assert native[2] == "f" and float(native[3]) in (pytest.approx(1.1, abs=1e-5), pytest.approx(1.2, abs=1e-5))
    assert 0.0 < float(printed("/ffvj/l0/zoom/norm")[-1][3]) < 1.0


# -- values, conventions, patterns -----------------------------------------------------------------

def test_native_and_normalized_values(server, store):
    zoom = store.registry["l0.zoom"]
    send(server, "/ffvj/l1/zoom", 1.05)
    send(server, "/ffvj/l0/zoom" + NORM_SUFFIX, 0.5)
    send(server, "/ffvj/l0/period/norm", 1.0)
    wait_until(lambda: store.get("l0.period") == 16.0, what="l0.period = 16")
    assert store.get("l1.zoom") == pytest.approx(1.05, abs=1e-6)
    assert store.get("l0.zoom") == pytest.approx(zoom.from_normalized(0.5))  # exp curve: the geometric mean
    assert store.get("l0.zoom") == pytest.approx(math.sqrt(0.8 * 1.25), rel=1e-6)


def test_enum_by_name_index_and_bool(server, store):
    send(server, "/ffvj/bound", "sine")
    send(server, "/ffvj/color/perm", 3)
    send(server, "/ffvj/map/invert", True)
    send(server, "/ffvj/l2/freeze", 1)
    send(server, "/ffvj/input/mode", "nonsense")  # not a choice: the store refuses it
    sync(server, store)
    assert store.get("bound") == 2.0
    assert store.get("color.perm") == 3.0
    assert store.get("map.invert") == 1.0
    assert store.get("l2.freeze") == 1.0
    assert store.get("input.mode") == 0.0
    assert server.stats["rejected"] == 1


def test_patterns_follow_osc_1_0():
    addresses = [f"/ffvj/l{i}/{n}" for i in range(4) for n in ("zoom", "rotate", "gain_self")]
    assert match("/ffvj/l*/zoom", addresses) == [f"/ffvj/l{i}/zoom" for i in range(4)]
    assert match("/ffvj/l[0-2]/gain_self", addresses) == [f"/ffvj/l{i}/gain_self" for i in range(3)]
    assert match("/ffvj/l[!0-2]/zoom", addresses) == ["/ffvj/l3/zoom"]
    assert match("/ffvj/l?/{zoom,rotate}", addresses) == [
        a for a in addresses if not a.endswith("gain_self")]
    assert match("/ffvj/*", addresses) == []  # * never crosses a /
    assert match("/ffvj/l1/*o*", addresses) == ["/ffvj/l1/zoom", "/ffvj/l1/rotate"]
    assert match("/ffvj/l**1/*", addresses) == [a for a in addresses if a.startswith("/ffvj/l1/")]
    assert match("/ffvj/l{1,2}/z{o,oo}m", addresses) == ["/ffvj/l1/zoom", "/ffvj/l2/zoom"]
    assert match("/ffvj/l?/z?", addresses) == []
    for bad in ("/ffvj/l[0-2/zoom", "/ffvj/l{0,1/zoom", "/ffvj/l]/zoom", "/ffvj/l[]/zoom", "/ffvj/l[2-0]/x",
                "/ffvj/l{0/1}/x", "/ffvj/" + "*" * MAX_PATTERN):
        with pytest.raises(ValueError):
            compile_pattern(bad)


@pytest.mark.parametrize("pattern", ["/ffvj/*/" + "*" * 26 + "!", "/ffvj/*/" + "*a" * 60 + "!",
                                     "/ffvj/" + "{,}*" * 60 + "!", "/" + "?*" * 120 + "!"])
def test_patterns_that_backtrack_a_regex_match_in_linear_time(pattern):
    """B2: a regex of 26 stars backtracks for hours holding the GIL; the segment matcher is linear."""
    compiled = compile_pattern(pattern)
    address = "/ffvj/l0/" + "a" * 40
    start = time.process_time()
    for _ in range(20):
        assert not compiled.matches(address)
    assert time.process_time() - start < 1.0  # 20 matches; a backtracking regex takes minutes for one


def test_wildcards_dispatch_to_every_match(server, store, controls):
    send(server, "/ffvj/l*/zoom", 1.05)
    send(server, "/ffvj/l[0-2]/gain_self", 1.5)
    send(server, "/ffvj/l{1,3}/noise/norm", 1.0)
    send(server, "/ffvj/l?/temporal", 0.5)
    send(server, "/ffvj/*", 0)  # every global parameter, but never a trigger (reset)
    send(server, "/ffvj/l[0-/zoom", 1.0)  # malformed pattern: counted, nothing changes
    sync(server, store)
    assert [store.get(f"l{i}.zoom") for i in range(4)] == [pytest.approx(1.05, abs=1e-6)] * 4
    assert [store.get(f"l{i}.gain_self") for i in range(4)] == [1.5, 1.5, 1.5, 1.0]
    assert [store.get(f"l{i}.noise") for i in range(4)] == [0.0, pytest.approx(0.3), 0.0, pytest.approx(0.3)]
    assert all(store.get(f"l{i}.temporal") == 0.5 for i in range(4))
    assert store.get("drive") == 0.25  # /ffvj/drive 0, clamped to its minimum
    assert queued(controls) == []
    assert server.stats["bad_args"] == 1


def test_bad_input_is_counted_and_survived(server, store):
    before = store.get("l0.zoom")
    send(server, "/ffvj/l0/zoom", "fast")            # wrong type
    send(server, "/ffvj/l0/zoom", 1.0, 1.1)          # wrong count
    send(server, "/ffvj/l0/zoom")                    # no value
    send(server, "/ffvj/l0/zoom", float("nan"))      # NaN
    send(server, "/ffvj/l0/zoom/norm", "half")       # /norm takes numbers only
    send(server, "/ffvj/l9/zoom", 1.0)               # no such level
    send(server, "/nothing/here", 1)
    sync(server, store)
    stats = server.stats
    assert stats["bad_args"] == 4
    assert stats["bad_value"] == 1
    assert stats["unknown_address"] == 2
    assert store.get("l0.zoom") == before


def test_malformed_datagrams_are_counted(server, store):
    raw = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    garbage = [b"\x00\x01\x02garbage", b"hello world", b"/ffvj/l0/zoom\x00\x00\x00,f",  # truncated float
               b"/\xff\xfe\x00,f\x00\x00\x00\x00\x00\x00",  # address not UTF-8
               b"#bundle\x00\x00\x00",  # truncated bundle
               b"/ffvj/l0/zoom\x00\x00\x00f\x00\x00\x00"]  # type tags without the comma
    for data in garbage:
        raw.sendto(data, ("127.0.0.1", server.port))
    raw.close()
    sync(server, store)
    assert server.stats["malformed"] == len(garbage)
    assert server.stats["errors"] == 0


def test_content_python_osc_skips_is_counted_not_spilled_on_the_root_logger(server, store, caplog):
    """An unknown type tag: python-osc skips the argument and warns on the root logger, once per
    packet. Here it is this server's rate-limited "malformed" report, and nothing reaches root."""
    raw = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with caplog.at_level(logging.WARNING):
        for _ in range(20):
            raw.sendto(b"/ffvj/l0/zoom\x00\x00\x00,X\x00\x00", ("127.0.0.1", server.port))
        raw.close()
        sync(server, store)
    assert server.stats["malformed"] == 20
    assert not [r for r in caplog.records if r.name == "root"]
    reports = [r for r in caplog.records if r.name == "ffvj.control.osc" and "python-osc skipped" in r.getMessage()]
    assert 1 <= len(reports) <= 2  # rate-limited


def test_a_message_of_an_unknown_type_is_dropped_before_python_osc_reads_it(controls, store, caplog):
    """OSC 1.0: a message with a type tag the reader does not know is discarded. python-osc would skip
    the tag (with a warning on the root logger) and read the arguments after it from the wrong bytes;
    the transport passes on only the tags python-osc reads, and python-osc reads each of them silently."""
    from ffvj.control.osc_transport import PYTHON_OSC_TYPE_TAGS, read_packet

    def message(tags: str, payload: bytes) -> bytes:
        tag_string = ("," + tags).encode() + b"\0"
        return b"/a\0\0" + tag_string + b"\0" * (-len(tag_string) % 4) + payload

    sizes = {"i": 4, "h": 8, "f": 4, "d": 8, "s": 4, "b": 4, "r": 4, "m": 4, "t": 8}  # zeros: 0, "", an empty blob
    with caplog.at_level(logging.DEBUG):
        for tag in PYTHON_OSC_TYPE_TAGS.decode().replace("[", "").replace("]", ""):
            [(_due, msg)] = read_packet(message(tag, b"\0" * sizes.get(tag, 0)))
            assert len(msg.params) == 1, tag
        [(_due, msg)] = read_packet(message("[i]", b"\0" * 4))
        assert msg.params == [[0]]
    assert not caplog.records

    srv = OscServer(controls, OscConfig(port=0))  # the handler alone
    before = store.get("l0.zoom")
    unknown_then_float = build_msg("/ffvj/l0/zoom", [1.2, 1.1]).dgram.replace(b",ff", b",Xf")
    srv.call_handlers_for_packet(unknown_then_float, ("127.0.0.1", 1))  # python-osc skipped X and read its 1.2 as the zoom
    assert store.get("l0.zoom") == before
    assert srv.stats["malformed"] == 1 and srv.stats["messages"] == 0


def test_allow_list_drops_other_clients(controls, store):
    with pytest.raises(ValueError, match="not-an-ip"):
        OscServer(controls, OscConfig(allow=("10.0.0.2", "not-an-ip")))
    with OscServer(controls, OscConfig(port=0, allow=("10.9.8.7",))) as srv:
        send(srv, "/ffvj/l0/zoom", 1.1)
        wait_until(lambda: srv.stats["denied"] == 1, what="the packet to be denied")
        assert store.get("l0.zoom") == pytest.approx(1.012)
        assert srv.stats["packets"] == 0
    with OscServer(controls, OscConfig(port=0, allow=("127.0.0.1",))) as srv:
        send(srv, "/ffvj/l0/zoom", 1.1)
        wait_until(lambda: store.get("l0.zoom") == pytest.approx(1.1, abs=1e-6), what="the allowed client")


def test_tcp_slip(server, store):
    with SimpleTCPClient("127.0.0.1", server.tcp_port, timeout=TIMEOUT) as client:
        client.send_message("/ffvj/l0/rotate", 2.0)
        wait_until(lambda: store.get("l0.rotate") == 2.0, what="l0.rotate over TCP")
        client.send_message("/ffvj/dump", [])
        replies = {}
        deadline = time.monotonic() + TIMEOUT
        while "/ffvj/l0/rotate" not in replies or "/ffvj/drive" not in replies:
            assert time.monotonic() < deadline
            for packet in client.receive(timeout=1.0):
                if packet:
                    msg = osc_message.OscMessage(packet)
                    replies[msg.address] = msg.params
    assert replies["/ffvj/l0/rotate"] == [pytest.approx(2.0)]
    # A liblo-style sender: single END after each packet, two packets in one write; then a bad escape.
    with socket.create_connection(("127.0.0.1", server.tcp_port), timeout=TIMEOUT) as sock:
        sock.sendall(build_msg("/ffvj/l1/rotate", [1.0]).dgram + slip.END
                     + build_msg("/ffvj/l2/rotate", [-1.0]).dgram + slip.END + b"\xdb\x01" + slip.END)
        wait_until(lambda: store.get("l2.rotate") == -1.0 and server.stats["malformed"] == 1, what="TCP frames")
    assert store.get("l1.rotate") == 1.0


def test_future_bundle_waits_for_poll(server, store):
    due = time.time() + 30.0
    builder = osc_bundle_builder.OscBundleBuilder(due)
    builder.add_content(build_msg("/ffvj/l0/zoom", [1.2]))
    builder.add_content(build_msg("/ffvj/l1/zoom", [1.2]))
    nested = osc_bundle_builder.OscBundleBuilder(osc_bundle_builder.IMMEDIATELY)
    nested.add_content(build_msg("/ffvj/l3/zoom", [0.9]))
    now_bundle = osc_bundle_builder.OscBundleBuilder(osc_bundle_builder.IMMEDIATELY)
    now_bundle.add_content(build_msg("/ffvj/l2/zoom", [1.1]))
    now_bundle.add_content(nested.build())
    client = SimpleUDPClient("127.0.0.1", server.port)
    client.send(builder.build())
    client.send(now_bundle.build())
    wait_until(lambda: store.get("l3.zoom") == pytest.approx(0.9, abs=1e-6) and server.stats["scheduled"] == 2,
               what="the immediate bundle and the scheduled one")
    assert store.get("l2.zoom") == pytest.approx(1.1, abs=1e-6)
    assert store.get("l0.zoom") == pytest.approx(1.012)  # not yet: its time has not come
    assert server.poll(due - 1.0) == 0
    assert store.get("l0.zoom") == pytest.approx(1.012)
    assert server.poll(due + 0.001) == 2
    assert store.get("l0.zoom") == pytest.approx(1.2, abs=1e-6)
    assert store.get("l1.zoom") == pytest.approx(1.2, abs=1e-6)
    assert server.poll() == 0


def test_bundle_far_ahead_is_applied_now_and_the_schedule_is_bounded(controls, store):
    with OscServer(controls, OscConfig(port=0), max_scheduled=2, max_ahead=60.0) as srv:
        client = SimpleUDPClient("127.0.0.1", srv.port)
        skewed = osc_bundle_builder.OscBundleBuilder(time.time() + 3600)
        skewed.add_content(build_msg("/ffvj/drive", [2.0]))
        client.send(skewed.build())
        wait_until(lambda: store.get("drive") == 2.0, what="the skewed bundle")
        assert srv.stats["timetag_skew"] == 1
        later = osc_bundle_builder.OscBundleBuilder(time.time() + 30)
        for i in range(3):
            later.add_content(build_msg(f"/ffvj/l{i}/zoom", [1.1]))
        client.send(later.build())
        wait_until(lambda: srv.stats["schedule_full"] == 1, what="the third message to be dropped")
        assert srv.stats["scheduled"] == 2


def test_actions(server, store, controls, tempo):
    client = SimpleUDPClient("127.0.0.1", server.port)
    client.send_message("/ffvj/reset", [])
    client.send_message("/ffvj/reset", 0)  # a button's release: ignored
    client.send_message("/ffvj/snapshot/store", 3)
    client.send_message("/ffvj/snapshot/recall", [3, 2.5])
    client.send_message("/ffvj/snapshot/recall", 1)
    client.send_message("/ffvj/snapshot/recall", -1)  # not a slot: counted
    client.send_message("/ffvj/bpm", 128.0)
    sync(server, store)
    assert queued(controls) == [
        ("reset", {}),
        ("snapshot.store", {"slot": 3}),
        ("snapshot.recall", {"slot": 1, "seconds": 0.0, "quantum": -1.0}),  # two recalls before a frame: the latest wins
    ]
    assert tempo.bpm == 128.0
    assert server.stats["bad_args"] == 1
    for _ in range(3):
        client.send_message("/ffvj/tap", 1)
    sync(server, store)
    assert tempo.source == "tap"


def test_preset_actions(server, store, controls):
    client = SimpleUDPClient("127.0.0.1", server.port)
    client.send_message("/ffvj/preset/recall", ["dusk", 4.0])
    client.send_message("/ffvj/preset/recall", "dawn")
    client.send_message("/ffvj/preset/save", "noon")
    client.send_message("/ffvj/preset/recall", 7)  # not a name: counted
    sync(server, store)
    assert queued(controls) == [
        ("preset.recall", {"name": "dusk", "seconds": 4.0, "quantum": -1.0}),
        ("preset.recall", {"name": "dawn", "seconds": 0.0, "quantum": -1.0}),
        ("preset.save", {"name": "noon"}),
    ]
    assert server.stats["bad_args"] == 1
    assert server.stats["errors"] == 0


def test_dump_and_subscribe_with_echo(server, store, peer):
    peer.send(server.port, "/ffvj/dump")
    expected = {p.address for p in server.params.values()} | {
        p.address + NORM_SUFFIX for p in server.params.values() if p.kind in ("float", "int")} | {"/ffvj/bpm"}
    peer.collect_until(lambda got: {a for a, _ in got} >= expected)
    assert len(peer.received) == len(expected)
    assert peer.values("/ffvj/l0/zoom") == [pytest.approx(1.012)]
    assert peer.values("/ffvj/bound") == [0]
    assert peer.values("/ffvj/l0/zoom/norm")[0] == pytest.approx(store.registry["l0.zoom"].to_normalized(1.012))
    peer.received.clear()

    peer.send(server.port, "/ffvj/feedback/subscribe")  # at the address it sends from
    peer.collect_until(lambda got: any(a == "/ffvj/drive" for a, _ in got))  # the dump on subscribing
    assert server.subscribers == [("127.0.0.1", peer.port)]
    peer.send(server.port, "/ffvj/l0/zoom/norm", 1.0)  # its own change comes back: the echo policy
    store.set("l1.rotate", -10.0, source="midi")       # and so does any other surface's
    peer.collect_until(lambda got: 1.25 in peer.values("/ffvj/l0/zoom") and -10.0 in peer.values("/ffvj/l1/rotate")
                       and 0.0 in peer.values("/ffvj/l1/rotate/norm"))  # native and /norm: two datagrams

    peer.send(server.port, "/ffvj/feedback/unsubscribe")
    wait_until(lambda: server.subscribers == [], what="the unsubscribe")


def test_subscribe_to_a_given_port(server, store, peer):
    other = Peer()
    try:
        peer.send(server.port, "/ffvj/feedback/subscribe", other.port)
        wait_until(lambda: server.subscribers == [("127.0.0.1", other.port)], what="the subscription")
        store.set("color.hue", 12.0)
        other.collect_until(lambda got: 12.0 in other.values("/ffvj/color/hue"))
    finally:
        other.close()


def test_feedback_is_rate_capped_and_the_last_value_arrives(controls, store, peer):
    rate = 5.0
    with OscServer(controls, OscConfig(port=0, feedback=(f"127.0.0.1:{peer.port}",), feedback_rate=rate)) as srv:
        start = time.monotonic()
        values = [0.8 + 0.005 * i for i in range(60)]
        for v in values:
            store.set("l0.zoom", v)
        peer.collect_until(lambda got: peer.values("/ffvj/l0/zoom") and
                           peer.values("/ffvj/l0/zoom")[-1] == pytest.approx(values[-1]))
        elapsed = time.monotonic() - start
        sent = peer.values("/ffvj/l0/zoom")
        # At most one per 1/rate seconds (plus the first), however many changes came in.
        assert len(sent) <= 2 + elapsed * rate
        assert len(sent) < len(values)
        assert srv.stats["feedback_errors"] == 0


def test_lifecycle_and_setup_errors(controls):
    srv = OscServer(controls, OscConfig(port=0))
    srv.close()  # never started: fine
    srv.close()
    with OscServer(controls, OscConfig(port=0)) as first:
        with pytest.raises(OSError, match="osc-port"):
            OscServer(controls, OscConfig(port=first.port)).start()
        assert first.start() is first  # idempotent
    first.close()
    with pytest.raises(ValueError, match="HOST:PORT"):
        OscServer(controls, OscConfig(feedback=("nohostport",)))
    with pytest.raises(ValueError, match="1..65535"):
        parse_host_port("127.0.0.1:70000")
    with pytest.raises(ValueError):
        OscServer(controls, OscConfig(feedback_rate=0))
    assert parse_host_port("tablet.local:9001") == ("tablet.local", 9001)


def test_a_closed_server_stops_feeding_back(controls, store, peer):
    with OscServer(controls, OscConfig(port=0, feedback=(f"127.0.0.1:{peer.port}",))) as srv:
        store.set("drive", 2.0)
        peer.collect_until(lambda got: 2.0 in peer.values("/ffvj/drive"))
    sent = srv.stats["feedback_sent"]
    assert sent >= 1
    assert store.set("drive", 3.0)  # the store may keep the listener (it has no remove): inert now
    assert srv.stats["feedback_sent"] == sent
    with pytest.raises(RuntimeError):
        srv.start()


def test_mutated_packets_never_escape_the_handler(controls):
    """Seeded fuzzing through the hook python-osc's server calls: every packet is handled or counted."""
    rng = random.Random(0)
    later = osc_bundle_builder.OscBundleBuilder(time.time() + 5)
    later.add_content(build_msg("/ffvj/l0/zoom", [1.1]))
    seeds = [build_msg("/ffvj/l0/zoom", [1.1]).dgram, build_msg("/ffvj/bound", ["sine"]).dgram,
             build_msg("/ffvj/l*/rotate/norm", [0.3]).dgram, build_msg("/ffvj/snapshot/recall", [2, 1.0]).dgram,
             build_msg("/ffvj/dump", []).dgram, later.build().dgram]
    srv = OscServer(controls, OscConfig(port=0))  # not started: the handler needs no socket
    for _ in range(3000):
        data = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 4)):
            where = rng.randrange(len(data) + 1)
            op = rng.random()
            if op < 0.4 and where < len(data):
                data[where] = rng.randrange(256)
            elif op < 0.6:
                del data[where:]
            else:
                data[where:where] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        srv.call_handlers_for_packet(bytes(data), ("127.0.0.1", 1))
    srv.poll(time.time() + 10)
    stats = srv.stats
    assert stats["packets"] == 3000 and stats["errors"] == 0
    assert stats["malformed"] > 0 and stats["applied"] > 0
    srv.close()


def test_extra_arguments_to_actions_and_commands_are_ignored_and_counts_are_honest(controls):
    """A bang or a button sends a value of its own: /ffvj/dump 1 still dumps, /ffvj/reset 1 2 still
    fires. A command refused (subscribe over TCP without a port) counts as bad, not as a trigger."""
    from ffvj.control.osc_transport import Client as _Client

    srv = OscServer(controls, OscConfig(port=0))  # not started: the handler needs no socket
    udp, tcp = _Client(("127.0.0.1", 5000)), _Client(("127.0.0.1", 5001), "tcp")
    replies = srv._handle_messages(build_msg("/ffvj/dump", [1]).dgram, udp)
    assert len(replies) == sum(2 if p.kind in ("float", "int") else 1 for p in srv.params.values()) + 1  # + bpm
    srv._handle_messages(build_msg("/ffvj/reset", [1, 2]).dgram, udp)
    assert queued(controls) == [("reset", {})]
    srv._handle_messages(build_msg("/ffvj/feedback/subscribe", []).dgram, tcp)
    stats = srv.stats
    assert stats["triggers"] == 2 and stats["bad_args"] == 1
    srv.close()


def test_a_bundle_element_of_negative_size_is_malformed_not_an_endless_loop(server, store):
    """B1: python-osc's bundle parser loops for ever on an element size of -4 (20 bytes froze the show)."""
    raw = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    bad = [b"#bundle\0" + b"\0" * 7 + b"\1" + struct.pack(">i", -4),
           b"#bundle\0" + b"\0" * 7 + b"\1" + struct.pack(">i", 0),
           b"#bundle\0" + b"\0" * 7 + b"\1" + struct.pack(">i", 6) + b"/a\0\0,\0",  # not a multiple of 4
           b"#bundle\0" + b"\0" * 7 + b"\1" + struct.pack(">i", 1 << 30)]
    for data in bad:
        raw.sendto(data, ("127.0.0.1", server.port))
    raw.close()
    sync(server, store)  # the OSC thread is alive and answers
    assert server.stats["malformed"] == len(bad)


def _nested(depth: int) -> bytes:
    inner = build_msg("/ffvj/l0/zoom", [1.1]).dgram
    for _ in range(depth):
        inner = b"#bundle\0" + b"\0" * 7 + b"\1" + struct.pack(">i", len(inner)) + inner
    return inner


def test_bundles_nest_a_few_deep_and_no_deeper(controls, store):
    srv = OscServer(controls, OscConfig(port=0))  # the handler alone
    srv.call_handlers_for_packet(_nested(3), ("127.0.0.1", 1))
    assert store.get("l0.zoom") == pytest.approx(1.1)
    srv.call_handlers_for_packet(_nested(500), ("127.0.0.1", 1))
    assert srv.stats["malformed"] == 1 and srv.stats["errors"] == 0


def test_a_packets_wildcard_fan_out_is_bounded(controls, store):
    """B6: one bundle of 2,728 "/ffvj/*/*" once made 253,704 parameter sets. (A bundle of more than
    MAX_MESSAGES_PER_PACKET messages is malformed; this one is just under.)"""
    from pythonosc.osc_bundle_builder import IMMEDIATELY, OscBundleBuilder

    from ffvj.control.osc import MAX_CACHED_PATTERNS, MAX_PATTERN_SETS_PER_PACKET

    srv = OscServer(controls, OscConfig(port=0))
    bundle = OscBundleBuilder(IMMEDIATELY)
    for _ in range(250):
        bundle.add_content(build_msg("/ffvj/*/*", [0.5]))
    srv.call_handlers_for_packet(bundle.build().dgram, ("127.0.0.1", 1))
    st = srv.stats
    assert 0 < st["applied"] + st["rejected"] + st["bad_args"] <= MAX_PATTERN_SETS_PER_PACKET
    assert st["over_budget"] > 0 and st["errors"] == 0
    # Many distinct patterns: a few new ones per packet, and the cache stays bounded.
    for k in range(40):
        many = OscBundleBuilder(IMMEDIATELY)
        for j in range(50):
            many.add_content(build_msg(f"/ffvj/l[0-3]/zoom{'*' * (k % 7)}{{,x{k}_{j}}}", [1.0]))
        srv.call_handlers_for_packet(many.build().dgram, ("127.0.0.1", 1))
    assert len(srv._pattern_cache) <= MAX_CACHED_PATTERNS
    assert store.get("l0.zoom") == pytest.approx(1.0)  # the patterns that were matched did apply


def test_tcp_links_are_capped_bounded_and_time_out(controls, store, monkeypatch):
    """B4: 3,000 idle TCP connections were all accepted, and 300 each holding 1 MiB kept 302 MB."""
    from ffvj.control import osc_transport as osc_module

    cap = osc_module.MAX_TCP_CONNECTIONS
    with OscServer(controls, OscConfig(port=0, tcp_port=0)) as srv:
        links = [socket.create_connection(("127.0.0.1", srv.tcp_port), timeout=TIMEOUT) for _ in range(40)]
        try:
            wait_until(lambda: srv._tcp.connections + srv._tcp.turned_away >= 40, what="every link answered")
            assert srv._tcp.connections == cap and srv._tcp.turned_away == 40 - cap
            # A frame without an END byte larger than any datagram: that link is dropped.
            try:
                links[0].sendall(b"\x01" * (osc_module.MAX_TCP_FRAME + 70000))
            except OSError:
                pass  # the server may already have closed it
            wait_until(lambda: srv.stats["malformed"] == 1 and srv._tcp.connections == cap - 1,
                       what="the oversized frame's link closed")
        finally:
            for link in links:
                link.close()
    # A link that stays silent is closed after the idle time.
    monkeypatch.setattr(osc_module._TcpServer, "idle_timeout", 0.5)
    with OscServer(controls, OscConfig(port=0, tcp_port=0)) as srv:
        with socket.create_connection(("127.0.0.1", srv.tcp_port), timeout=TIMEOUT) as sock:
            assert sock.recv(10) == b""  # closed by the server, not by the test's timeout
            assert srv.stats["errors"] == 0
        with socket.create_connection(("127.0.0.1", srv.tcp_port), timeout=TIMEOUT) as sock:
            sock.sendall(build_msg("/ffvj/l1/rotate", [3.0]).dgram + slip.END)
            wait_until(lambda: store.get("l1.rotate") == 3.0, what="a link that talks")


def test_full_dumps_are_rate_limited_per_client(controls):
    """A 16-byte /ffvj/dump answers with thousands of bytes: at most once a second per IP."""
    srv = OscServer(controls, OscConfig(port=0))
    dump = build_msg("/ffvj/dump", []).dgram
    first = srv.call_handlers_for_packet(dump, ("10.0.0.5", 1))
    again = srv.call_handlers_for_packet(dump, ("10.0.0.5", 2))
    other = srv.call_handlers_for_packet(dump, ("10.0.0.6", 1))
    assert len(first) > 100 and again == [] and len(other) == len(first)
    assert srv.stats["over_budget"] == 1


def test_tempo_changes_are_fed_back(controls, peer):
    """/ffvj/bpm, tap and MIDI clock move the tempo without a store change: the poll sends it on."""
    with OscServer(controls, OscConfig(port=0, feedback=(f"127.0.0.1:{peer.port}",))) as srv:
        controls.tempo.set_bpm(131.0)
        srv.poll()
        peer.collect_until(lambda got: 131.0 in peer.values("/ffvj/bpm"))


def test_a_flood_is_dropped_whole_past_the_work_budget(controls, store):
    """However the work is packed (many small packets, or big bundles), the OSC thread spends at
    most WORK_PER_SECOND messages and sets a second: the render loop keeps the GIL it needs."""
    from ffvj.control.osc import WORK_PER_SECOND, _WorkBudget

    now = [0.0]
    srv = OscServer(controls, OscConfig(port=0))
    srv._work = _WorkBudget(clock=lambda: now[0])
    dgram = build_msg("/ffvj/l*/zoom", [1.1]).dgram  # 4 sets and 1 message: 5 units
    for _ in range(3 * WORK_PER_SECOND // 5):
        srv.call_handlers_for_packet(dgram, ("127.0.0.1", 1))
    st = srv.stats
    assert st["applied"] <= WORK_PER_SECOND and st["over_budget"] >= WORK_PER_SECOND // 5
    now[0] += 1.0  # a second later the budget is back
    store.set("l0.zoom", 1.0)
    srv.call_handlers_for_packet(dgram, ("127.0.0.1", 1))
    assert store.get("l0.zoom") == pytest.approx(1.1)


def test_what_review_found_stays_fixed(controls, store):
    """Wide character ranges cost nothing to compile; timetagged messages share one budget a frame;
    an argument of thousands of nested arrays is malformed, not a handler error."""
    from pythonosc.osc_bundle_builder import OscBundleBuilder

    from ffvj.control.osc import MAX_PATTERN_SETS_PER_PACKET

    start = time.process_time()
    compiled = compile_pattern("/ffvj/" + "[\x01-\u3001]" * 50)
    assert time.process_time() - start < 0.5 and not compiled.matches("/ffvj/l0")
    assert compile_pattern("/ffvj/l[\x01-\u3001]/zoom").matches("/ffvj/l0/zoom")

    now = [1000.0]
    srv = OscServer(controls, OscConfig(port=0), clock=lambda: now[0])
    later = OscBundleBuilder(now[0] + 0.5)
    for _ in range(200):
        later.add_content(build_msg("/ffvj/*/*", [0.5]))
    srv.call_handlers_for_packet(later.build().dgram, ("127.0.0.1", 1))
    now[0] += 1.0
    srv.poll()
    st = srv.stats
    assert st["applied"] + st["rejected"] + st["bad_args"] <= MAX_PATTERN_SETS_PER_PACKET and st["over_budget"] > 0

    nested = b"/ffvj/bpm\0\0\0" + b"," + b"[" * 3000 + b"]" * 3000
    nested += b"\0" * (4 - len(nested) % 4)
    srv.call_handlers_for_packet(nested, ("127.0.0.1", 1))
    assert srv.stats["errors"] == 0
