"""OSCQuery: HTTP GETs on 127.0.0.1 against a real OSC server; mDNS inside a private network
namespace (``unshare -n`` with multicast on lo), skipped where that cannot be made."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request

import pytest
from pythonosc.udp_client import SimpleUDPClient

from ffvj.control.controls import Controls
from ffvj.control.osc import OscConfig, OscServer
from ffvj.control.oscquery import OscQueryServer
from ffvj.control.params import ParamStore, build_registry
from ffvj.control.tempo import Tempo
from tests.helpers import REPO



def get(server: OscQueryServer, path: str) -> tuple[int, dict | None]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}{path}", timeout=15) as resp:
            body = resp.read()
            return resp.status, json.loads(body) if body else None
    except urllib.error.HTTPError as exc:
        return exc.code, None


@pytest.fixture
def controls():
    return Controls(ParamStore(build_registry(3)), tempo=Tempo(bpm=128))


@pytest.fixture
def store(controls):
    return controls.store


@pytest.fixture
def osc(controls):
    with OscServer(controls, OscConfig(port=0)) as srv:
        yield srv


@pytest.fixture
def query(osc):
    with OscQueryServer(osc, port=0, mdns=False) as q:
        yield q


def walk(node: dict):
    yield node
    for child in node.get("CONTENTS", {}).values():
        yield from walk(child)


def test_namespace_describes_every_parameter(query, store):
    status, root = get(query, "/")
    assert status == 200
    assert root["FULL_PATH"] == "/" and "DESCRIPTION" in root
    zoom = root["CONTENTS"]["ffvj"]["CONTENTS"]["l0"]["CONTENTS"]["zoom"]
    zoom = dict(zoom)
    norm = zoom.pop("CONTENTS")["norm"]
    assert zoom == {"FULL_PATH": "/ffvj/l0/zoom", "TYPE": "f", "ACCESS": 3, "VALUE": [pytest.approx(1.012)],
                    "RANGE": [{"MIN": 0.8, "MAX": 1.25}], "DESCRIPTION": store.registry["l0.zoom"].doc,
                    "UNIT": ["x"], "CLIPMODE": ["both"]}
    assert norm["FULL_PATH"] == "/ffvj/l0/zoom/norm" and norm["TYPE"] == "f" and norm["RANGE"] == [
        {"MIN": 0.0, "MAX": 1.0}] and norm["VALUE"] == [pytest.approx(store.registry["l0.zoom"].to_normalized(1.012))]
    nodes = {n["FULL_PATH"]: n for n in walk(root)}
    # In the types feedback and /ffvj/dump send: an enum by index, a bool as 0/1.
    assert nodes["/ffvj/bound"]["TYPE"] == "i" and nodes["/ffvj/bound"]["VALUE"] == [0]
    assert nodes["/ffvj/bound"]["RANGE"] == [{"MIN": 0, "MAX": 5, "VALS": [0, 1, 2, 3, 4, 5]}]
    assert "0 tanh, 1 sigmoid, 2 sine" in nodes["/ffvj/bound"]["DESCRIPTION"]
    assert "/ffvj/bound/norm" not in nodes
    assert nodes["/ffvj/map/invert"]["TYPE"] == "i" and nodes["/ffvj/map/invert"]["VALUE"] == [0]
    assert nodes["/ffvj/l1/period"]["TYPE"] == "i" and nodes["/ffvj/l1/period"]["VALUE"] == [2]
    assert nodes["/ffvj/tap"]["TYPE"] == "N" and nodes["/ffvj/tap"]["ACCESS"] == 2
    assert nodes["/ffvj/snapshot/recall"]["TYPE"] == "iff"
    assert nodes["/ffvj/bpm"]["VALUE"] == [128.0]
    for node in nodes.values():
        assert {"FULL_PATH", "ACCESS", "DESCRIPTION"} <= set(node)
    expected = {p.address for p in store.registry.values()} | {
        p.address + "/norm" for p in store.registry.values() if p.kind in ("float", "int")}
    described = {path for path, n in nodes.items() if n["ACCESS"] == 3 and path != "/ffvj/bpm"}
    assert described == expected  # every parameter, readable and writable
    assert nodes["/ffvj/reset"]["ACCESS"] == 2 and nodes["/ffvj/reset"]["TYPE"] == "N"  # the panic: write-only
    assert nodes["/ffvj/snapshot/recall"]["RANGE"] == [{"MIN": 0, "MAX": 7}, {"MIN": 0.0, "MAX": 600.0},
                                                      {"MIN": -1.0, "MAX": 64.0}]
    assert nodes["/ffvj/bpm"]["ACCESS"] == 3 and nodes["/ffvj/bpm"]["RANGE"] == [{"MIN": 20.0, "MAX": 300.0}]


def test_host_info(query, osc):
    status, info = get(query, "/?HOST_INFO")
    assert status == 200
    assert info["NAME"] == "ffvj"
    assert info["OSC_PORT"] == osc.port
    assert info["OSC_TRANSPORT"] == "UDP"
    assert info["OSC_IP"] == "127.0.0.1"
    assert info["EXTENSIONS"]["VALUE"] is True and info["EXTENSIONS"]["LISTEN"] is True


def test_values_follow_the_store_and_osc(query, osc, store):
    assert get(query, "/ffvj/l0/zoom?VALUE") == (200, {"VALUE": [pytest.approx(1.012)]})
    store.set("l0.zoom", 1.1)
    assert get(query, "/ffvj/l0/zoom?VALUE") == (200, {"VALUE": [pytest.approx(1.1)]})
    SimpleUDPClient("127.0.0.1", osc.port).send_message("/ffvj/color/perm", "gbr")
    deadline = time.monotonic() + 15
    gbr = store.registry["color.perm"].choices.index("gbr")
    while get(query, "/ffvj/color/perm?VALUE")[1] != {"VALUE": [gbr]}:  # enums by index, as feedback
        assert time.monotonic() < deadline, "the OSC change never showed in OSCQuery"
        time.sleep(0.02)
    status, node = get(query, "/ffvj/l0/zoom")
    assert status == 200 and node["VALUE"] == [pytest.approx(1.1)] and list(node["CONTENTS"]) == ["norm"]
    assert get(query, "/ffvj/l0?FULL_PATH") == (200, {"FULL_PATH": "/ffvj/l0"})


def test_errors(query):
    assert get(query, "/ffvj/nope")[0] == 404
    assert get(query, "/ffvj/l0/zoom/norm")[0] == 200  # the /norm twins are listed
    assert get(query, "/ffvj/bound/norm")[0] == 404  # an enum has none
    assert get(query, "/ffvj/l0/zoom?BOGUS")[0] == 400
    assert get(query, "/ffvj/l0?VALUE") == (204, None)  # a container has no value


def test_without_zeroconf_http_is_still_served(osc, controls, monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "zeroconf", None)  # import zeroconf now raises ImportError
    with caplog.at_level(logging.WARNING, logger="ffvj.oscquery"):
        with OscQueryServer(osc, port=0) as q:  # on loopback: nothing to announce to, nothing to say
            assert q.announced.is_set() and q._zeroconf is None
            assert get(q, "/?HOST_INFO")[0] == 200
        assert "zeroconf" not in caplog.text
        with OscServer(controls, OscConfig(host="0.0.0.0", port=0)) as lan, OscQueryServer(lan, port=0) as q:
            assert q.announced.is_set()
            assert get(q, "/?HOST_INFO")[0] == 200
    assert "zeroconf is not installed" in caplog.text
    with pytest.raises(ImportError, match="ffvj\\[oscquery\\]"):
        OscQueryServer(osc, port=0, mdns=True).start()


def test_port_in_use_fails_at_setup(query, osc):
    with pytest.raises(OSError, match="oscquery-port"):
        OscQueryServer(osc, port=query.port, mdns=False).start()
    query.close()
    query.close()


# -- mDNS, inside a network namespace of our own ---------------------------------------------------

MDNS_SCRIPT = textwrap.dedent("""
    import json, time, urllib.request
    from zeroconf import IPVersion, ServiceBrowser, Zeroconf
    from ffvj.control.controls import Controls
    from ffvj.control.osc import OscConfig, OscServer
    from ffvj.control.oscquery import OscQueryServer
    from ffvj.control.params import ParamStore, build_registry

    controls = Controls(ParamStore(build_registry(3)))
    with OscServer(controls, OscConfig(port=0)) as osc, OscQueryServer(osc, port=0, name="ffvj-test", mdns=True) as q:
        assert q.announced.wait(30)
        found = {}

        class Listener:
            def add_service(self, zc, kind, name):
                found[kind] = name
            def update_service(self, zc, kind, name):
                pass
            def remove_service(self, zc, kind, name):
                pass

        zc = Zeroconf(interfaces=["127.0.0.1"], ip_version=IPVersion.V4Only)
        browsers = [ServiceBrowser(zc, kind, Listener()) for kind in ("_oscjson._tcp.local.", "_osc._udp.local.")]
        deadline = time.monotonic() + 30
        while len(found) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        result = {}
        for kind, name in found.items():
            info = zc.get_service_info(kind, name, timeout=10000)
            result[kind] = [name, info.parsed_addresses()[0], info.port]
        host, port = result["_oscjson._tcp.local."][1:]
        with urllib.request.urlopen(f"http://{host}:{port}/?HOST_INFO", timeout=10) as resp:
            result["host_info"] = json.load(resp)
        result["osc_port"] = osc.port
        for b in browsers:
            b.cancel()
        zc.close()
    print("RESULT " + json.dumps(result))
""")


def _namespace_problem() -> str | None:
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return "unshare or ip (iproute2) is not installed"
    try:
        import zeroconf  # noqa: F401
    except ImportError:
        return "python-zeroconf is not installed (pip install 'ffvj[oscquery]')"
    probe = subprocess.run(["unshare", "-n", "sh", "-c", "ip link set lo up && ip link set lo multicast on "
                            "&& ip route add 224.0.0.0/4 dev lo"], capture_output=True, text=True, timeout=30)
    if probe.returncode != 0:
        return f"cannot make a network namespace with multicast on lo here: {probe.stderr.strip()}"
    return None


@pytest.mark.slow
def test_mdns_announcement_inside_a_network_namespace():
    problem = _namespace_problem()
    if problem:
        pytest.skip(problem)
    setup = "ip link set lo up && ip link set lo multicast on && ip route add 224.0.0.0/4 dev lo"
    proc = subprocess.run(["unshare", "-n", "sh", "-c", f'{setup} && exec "$0" -c "$1"', sys.executable,
                           MDNS_SCRIPT], capture_output=True, text=True, timeout=120, cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(line for line in proc.stdout.splitlines() if line.startswith("RESULT "))
    result = json.loads(line[len("RESULT "):])
    name, address, port = result["_oscjson._tcp.local."]
    assert name == "ffvj-test._oscjson._tcp.local." and address == "127.0.0.1"
    assert result["_osc._udp.local."][2] == result["osc_port"]
    assert result["host_info"]["OSC_PORT"] == result["osc_port"]


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts descriptors in /proc")
def test_idle_connections_cannot_exhaust_descriptors_or_keep_a_client_out(query, caplog):
    """B5: 1,029 idle connections once exhausted the show's descriptors. Now at most 32 are held
    (the oldest closed to make room), and a real request is still answered at once."""
    import socket

    before = _open_fds()
    idle = []
    try:
        for _ in range(300):
            idle.append(socket.create_connection(("127.0.0.1", query.port), timeout=5))
        # What the server holds beyond the test's own 300 sockets. Its count of connections can read 32
        # while a burst it accepted (up to the backlog, 64) still waits for connection_made or for the
        # close of the ones it evicted: wait for the descriptors themselves to settle.
        def held() -> int:
            return _open_fds() - before - len(idle)

        deadline = time.monotonic() + 20
        while (query.http.connections > 32 or held() > 40) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert held() <= 40, f"the server holds {held()} descriptors after 300 idle connections (limit 32)"
        start = time.monotonic()
        status, body = get(query, "/?HOST_INFO")
        assert status == 200 and body["NAME"] == "ffvj" and time.monotonic() - start < 2.0
        assert query.http.stats["http_closed"] >= 300 - 32
    finally:
        for s in idle:
            s.close()


@pytest.mark.slow
def test_http_0_9_and_clients_that_hang_up_early_are_answered_or_dropped_quietly(query, capsys, caplog):
    import socket

    with caplog.at_level(logging.DEBUG, logger="ffvj.control.oscquery"):
        with socket.create_connection(("127.0.0.1", query.port), timeout=15) as s:
            s.sendall(b"GET /\r\n")  # HTTP/0.9: no version, no headers (http.server waits for some)
            answer = s.recv(1 << 16)  # then the idle timeout closes it
        assert b"FULL_PATH" in answer or answer == b""
        for request in (b"GET /?HOST_INFO HTTP/1.1\r\n", b"\x16\x03\x01garbage\r\n\r\n", b""):
            with socket.create_connection(("127.0.0.1", query.port), timeout=5) as s:
                s.sendall(request)  # then hang up before the answer (or before asking at all)
        assert get(query, "/?HOST_INFO")[0] == 200
    assert "Traceback" not in capsys.readouterr().err
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_osc_allow_covers_oscquery(controls):
    with OscServer(controls, OscConfig(port=0, allow=("10.9.8.7",))) as osc, \
            OscQueryServer(osc, port=0, mdns=False) as q:
        with pytest.raises((urllib.error.URLError, ConnectionError)):
            urllib.request.urlopen(f"http://127.0.0.1:{q.port}/?HOST_INFO", timeout=5).read()
        assert osc.stats["denied"] >= 1


# -- LISTEN: the OSCQuery WebSocket, with aiohttp's client and with frames written by hand --

def _listen_session(query, commands, then, timeout: float = 10.0):
    """Connect a LISTEN WebSocket to ``query``, send ``commands``, call ``then()``, and return the
    OSC messages (address, args) received until ``timeout`` or until ``then`` returns a count reached."""
    import asyncio

    import aiohttp
    from pythonosc.osc_message import OscMessage

    async def go():
        got = []
        async with aiohttp.ClientSession() as s, s.ws_connect(f"http://127.0.0.1:{query.port}/") as ws:
            for c in commands:
                await ws.send_str(c if isinstance(c, str) else json.dumps(c))
            await asyncio.sleep(0.3)  # the session has read them
            want = then()
            deadline = time.monotonic() + timeout
            while len(got) < want and time.monotonic() < deadline:
                try:
                    msg = await ws.receive(timeout=deadline - time.monotonic())
                except asyncio.TimeoutError:
                    break
                if msg.type != aiohttp.WSMsgType.BINARY:
                    break
                m = OscMessage(msg.data)
                got.append((m.address, m.params))
        return got

    return asyncio.run(go())


def test_listen_pushes_changes_from_every_surface_as_osc(query, osc, store):
    assert get(query, "/?HOST_INFO")[1]["EXTENSIONS"]["LISTEN"] is True
    zoom = store.registry["l0.zoom"]
    commands = [{"COMMAND": "LISTEN", "DATA": "/ffvj/l0/zoom"}, {"COMMAND": "LISTEN", "DATA": "/ffvj/l0/zoom/norm"},
                {"COMMAND": "LISTEN", "DATA": "/ffvj/bound"}, {"COMMAND": "LISTEN", "DATA": "/ffvj/l1/rotate"},
                {"COMMAND": "IGNORE", "DATA": "/ffvj/l1/rotate"},
                "not json", {"COMMAND": "LISTEN", "DATA": "/no/such/path"}, {"COMMAND": "EXPLODE", "DATA": "/"}]

    def then():
        SimpleUDPClient("127.0.0.1", osc.port).send_message("/ffvj/l0/zoom", 1.04)  # a real OSC packet
        store.set("bound", "sine", source="midi")
        store.set("l1.rotate", 0.5, source="osc")  # ignored: not listened to
        return 3

    got = dict(_listen_session(query, commands, then))
    assert got["/ffvj/l0/zoom"] == [pytest.approx(1.04)]
    assert got["/ffvj/l0/zoom/norm"] == [pytest.approx(zoom.to_normalized(1.04), abs=1e-6)]
    assert got["/ffvj/bound"] == [store.registry["bound"].choices.index("sine")]
    assert "/ffvj/l1/rotate" not in got


def test_listen_hears_lfo_moved_values(query, osc, store):
    got = _listen_session(query, [{"COMMAND": "LISTEN", "DATA": "/ffvj/l2/zoom"}],
                          lambda: (query.report("l2.zoom", 1.011), 1)[1])
    assert got == [("/ffvj/l2/zoom", [pytest.approx(1.011)])]


def test_listen_sessions_are_bounded_and_not_evicted_by_a_flood(query, store):
    """16 sessions at once (the 17th answered 503); a flood of idle HTTP connections evicts short
    requests, never a LISTEN session."""
    import asyncio
    import socket

    import aiohttp
    from pythonosc.osc_message import OscMessage

    from ffvj.control.oscquery import MAX_LISTENERS

    async def go():
        async with aiohttp.ClientSession() as s:
            sessions = [await s.ws_connect(f"http://127.0.0.1:{query.port}/") for _ in range(MAX_LISTENERS)]
            with pytest.raises(aiohttp.WSServerHandshakeError) as exc:
                await s.ws_connect(f"http://127.0.0.1:{query.port}/")
            assert exc.value.status == 503
            await sessions[0].send_str(json.dumps({"COMMAND": "LISTEN", "DATA": "/ffvj/l0/blur"}))
            idle = [socket.create_connection(("127.0.0.1", query.port), timeout=5) for _ in range(100)]
            try:
                await asyncio.sleep(0.5)
                store.set("l0.blur", 0.25, source="osc")
                msg = await sessions[0].receive(timeout=10)
                assert OscMessage(msg.data).params == [pytest.approx(0.25)]
            finally:
                for sock in idle:
                    sock.close()
            for ws in sessions:
                await ws.close()

    asyncio.run(go())
    deadline = time.monotonic() + 5
    while query.sessions and time.monotonic() < deadline:
        time.sleep(0.05)
    assert query.sessions == 0


def test_a_bad_handshake_is_answered_and_a_silent_session_closed(query, monkeypatch):
    import base64
    import socket

    import ffvj.control.oscquery as oq

    with socket.create_connection(("127.0.0.1", query.port), timeout=10) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")  # no key
        assert s.recv(4096).split(b" ", 2)[1] == b"400"  # (in the request's HTTP version)
    monkeypatch.setattr(oq, "PING_INTERVAL", 0.2)
    with socket.create_connection(("127.0.0.1", query.port), timeout=10) as s:
        key = base64.b64encode(os.urandom(16)).decode()
        s.sendall((f"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                   f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
        assert b" 101 " in s.recv(4096)
        deadline = time.monotonic() + 10
        while query.sessions and time.monotonic() < deadline:  # it never answers the pings
            time.sleep(0.05)
        assert query.sessions == 0


def test_a_listen_sent_with_the_handshake_is_heard(query, store):
    """A client that sends LISTEN in the same packet as its handshake (before the 101): not lost in
    http.server's buffer."""
    import base64
    import socket
    import struct

    from pythonosc.osc_message import OscMessage

    key = base64.b64encode(os.urandom(16)).decode()
    command = json.dumps({"COMMAND": "LISTEN", "DATA": "/ffvj/l0/noise"}).encode()
    mask = os.urandom(4)
    frame = bytes([0x81, 0x80 | len(command)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(command))
    with socket.create_connection(("127.0.0.1", query.port), timeout=10) as s:
        s.sendall((f"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                   f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode() + frame)
        head = b""
        while b"\r\n\r\n" not in head:
            head += s.recv(1)
        assert b" 101 " in head
        time.sleep(0.3)
        store.set("l0.noise", 0.02, source="osc")
        first = s.recv(2)
        assert first[0] == 0x82  # a binary frame: the value
        length = first[1] & 0x7F
        if length == 126:
            length = struct.unpack(">H", s.recv(2))[0]
        payload = b""
        while len(payload) < length:
            payload += s.recv(length - len(payload))
        assert OscMessage(payload).address == "/ffvj/l0/noise"


def test_another_web_site_is_refused_and_programs_keep_working(query):
    """OSCQuery answered any web site: a foreign or opaque Origin (a script of another site, a sandboxed
    frame) and a foreign Host (DNS rebinding) are refused with 403, on a GET and on a LISTEN upgrade;
    clients that send no Origin (VDMX, Chataigne, ossia) and this machine's own names keep working."""
    import socket as socketlib

    def ask(headers: dict, upgrade: bool = False) -> int:
        request = urllib.request.Request(f"http://127.0.0.1:{query.port}/ffvj/l0/zoom?VALUE", headers=headers)
        if upgrade:
            request.add_header("Upgrade", "websocket")
            request.add_header("Connection", "Upgrade")
            request.add_header("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
            request.add_header("Sec-WebSocket-Version", "13")
        try:
            with urllib.request.urlopen(request, timeout=15) as resp:
                return resp.status
        except urllib.error.HTTPError as exc:
            return exc.code

    here = f"127.0.0.1:{query.port}"
    for upgrade in (False, True):
        assert ask({"Origin": "null"}, upgrade) == 403
        assert ask({"Origin": "https://evil.example"}, upgrade) == 403
        assert ask({"Host": f"rebound.example:{query.port}"}, upgrade) == 403
        assert ask({"Host": f"rebound.example:{query.port}", "Origin": f"http://rebound.example:{query.port}"},
                   upgrade) == 403
    assert query.foreign == 8
    assert ask({}) == 200  # a program: no Origin
    assert ask({"Origin": f"http://{here}"}) == 200  # a page of the server's own origin
    assert ask({"Host": f"localhost:{query.port}"}) == 200
    assert ask({"Host": f"{socketlib.gethostname()}.local:{query.port}"}) == 200  # found over mDNS
    with socketlib.create_connection(("127.0.0.1", query.port), timeout=15) as raw:  # HTTP/1.0: no Host at all
        raw.sendall(b"GET /ffvj/l0/zoom?VALUE HTTP/1.0\r\n\r\n")
        assert raw.recv(64).startswith(b"HTTP/1.0 200")
