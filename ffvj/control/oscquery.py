"""OSCQuery: ffvj's OSC address space as HTTP JSON (Vidvox's OSCQuery proposal), announced over mDNS.

Contract
--------
``OscQueryServer(osc, port=9010, host=None, name="ffvj", mdns=None)`` describes exactly what the
running ``OscServer`` ``osc`` accepts (start the OSC server first: its bound port is announced). It is
a ``Service``: ``start()`` binds at once and raises if it cannot; ``close()`` is idempotent; context manager.
HTTP is served by ``http.server`` on its own thread on ``host`` (default: the OSC server's host, so
127.0.0.1 unless the show listens on the LAN with ``0.0.0.0``).

- ``GET /`` the whole namespace: nested ``CONTENTS``; every node has ``FULL_PATH``, ``ACCESS`` and
  ``DESCRIPTION``. A parameter node adds ``TYPE`` in the types feedback and ``/ffvj/dump`` send (``f``
  float; ``i`` int, bool 0/1, and enum by index, with ``VALS`` and the names in its description),
  ``RANGE`` (``[{"MIN", "MAX"}]``), ``VALUE`` (the current target: what was set, not where an LFO has
  it this frame), ``UNIT``, ``CLIPMODE`` ``["both"]`` and ``ACCESS`` 3; a float or int parameter has
  its 0..1 twin as the child node ``norm`` (``/ffvj/l0/zoom/norm``). Actions and the
  OSC server's commands are write-only (``ACCESS`` 2), with ``N`` for argument-less ones (``/ffvj/tap``),
  else their type tags, and a ``RANGE`` per argument; an action that sets a value (``/ffvj/bpm``) is
  readable too (``ACCESS`` 3, with its ``VALUE``). The readings (``readings.READINGS``: the music's level,
  bands, onset and beat, the clock's place in the bar) are read-only (``ACCESS`` 1).
- ``GET /ffvj/l0/zoom`` one node; ``GET /ffvj/l0/zoom?VALUE`` one attribute as ``{"VALUE": [...]}``;
  an attribute the node lacks answers 204, an unknown attribute 400, an unknown path 404.
- ``GET /?HOST_INFO`` ``{"NAME", "OSC_PORT", "OSC_TRANSPORT": "UDP", "EXTENSIONS", ["OSC_IP"]}``.

LISTEN (the proposal's WebSocket, on the same port): a client upgrades any GET to a WebSocket and sends
``{"COMMAND": "LISTEN", "DATA": "/ffvj/l0/zoom"}`` (``IGNORE`` to stop); every change of that value,
from any surface and from an LFO, then comes to it as a binary OSC message of the node's type (a
``/norm`` path gets the 0..1 value), at most 20 a second per path, latest value wins. At most 16
sessions at once (more are answered 503); a session's commands are ≤ 4 KiB each; one that stops reading
is closed after 5 s stuck, one that answers none of three pings (30 s) too. The WebSocket protocol is python-hyper's ``wsproto``, run on the
connection ``http.server`` accepted.

mDNS (``mdns=None``: when python-zeroconf is installed, ``pip install 'ffvj[oscquery]'``, and the
show listens beyond loopback, ``--osc-host 0.0.0.0``; zeroconf absent, a warning and HTTP still
served; ``True`` requires it, ``False`` never): ``_oscjson._tcp`` at the HTTP port and ``_osc._udp``
at the OSC port, registered on a background thread because probing takes seconds.
"""

from __future__ import annotations

import http.server
import ipaddress
import json
import logging
import socket
import sys
import threading
import time
import urllib.parse

from pythonosc.osc_message_builder import OscMessageBuilder
from wsproto import ConnectionType, WSConnection
from wsproto.events import (AcceptConnection, BytesMessage, CloseConnection, Ping, Request,
                            TextMessage)
from wsproto.utilities import LocalProtocolError, RemoteProtocolError

from .actions import Action
from .osc import NORM_SUFFIX, OscServer
from ..phi import ADDRESS_PREFIX, Param
from .readings import READINGS
from ..tally import RateLimitedLog
from .service import LimitedConnections, Listen, Service, browser_refusal, is_loopback, local_names, stop_server

log = logging.getLogger(__name__)

DEFAULT_PORT = 9010
EXTENSIONS = {"ACCESS": True, "VALUE": True, "RANGE": True, "DESCRIPTION": True, "UNIT": True, "CLIPMODE": True,
              "TAGS": False, "CRITICAL": False, "EXTENDED_TYPE": False, "LISTEN": True, "PATH_CHANGED": False,
              "PATH_RENAMED": False, "PATH_ADDED": False, "PATH_REMOVED": False, "HTML": False}
# The attributes a node may be asked for one at a time (``?VALUE``).
ATTRIBUTES = ("FULL_PATH", "CONTENTS", "TYPE", "ACCESS", "VALUE", "RANGE", "DESCRIPTION", "UNIT", "CLIPMODE")
MAX_LISTENERS = 16  # LISTEN sessions at once
MAX_COMMAND = 4096  # bytes of one LISTEN/IGNORE command
LISTEN_INTERVAL = 0.05  # s: a session sends what changed at most this often
SEND_TIMEOUT = 5.0  # s a send may be stuck before the session is closed
PING_INTERVAL = 10.0  # s between pings; a session that answers nothing for 3 of them is closed

class OscQueryServer(Service):
    def __init__(self, osc: OscServer, port: int = DEFAULT_PORT, host: str | None = None, name: str = "ffvj",
                 mdns: bool | None = None):
        super().__init__()
        self.osc = osc
        self.host = osc.host if host is None else host
        self._port = port
        self.name = name
        self.mdns = mdns
        self._names = local_names(self.host)  # Host names a request may carry besides addresses
        self.foreign = 0  # requests refused as another web site's (browser_refusal); the HTTP thread's
        self._http: http.server.ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._mdns_thread: threading.Thread | None = None
        self._zeroconf = None
        self._services: list = []
        self._mdns_lock = threading.Lock()
        self.announced = threading.Event()  # set once mDNS registration finished (or was skipped)
        self._sessions: set[_ListenSession] = set()
        self._sessions_lock = threading.Lock()
        self._by_path = {}  # OSC path → (param, normalized) for LISTEN
        for param in osc.params.values():
            self._by_path[param.address] = (param, False)
            if param.kind in ("float", "int"):
                self._by_path[param.address + NORM_SUFFIX] = (param, True)

    # -- lifecycle --

    def listens(self) -> tuple[Listen, ...]:
        return (Listen("--oscquery-port", self.host, self._port, "tcp"),)

    def _start(self) -> None:
        zeroconf = None
        if self.mdns is None and is_loopback(self.host):
            # Nothing on the LAN could reach a loopback server, and zeroconf would still bind
            # 0.0.0.0:5353: announce only when the show listens beyond this machine.
            log.debug("OSCQuery on loopback: not announced over mDNS")
        elif self.mdns is not False:
            try:
                import zeroconf
            except ImportError:
                if self.mdns:
                    raise ImportError("OSCQuery mDNS needs python-zeroconf: pip install 'ffvj[oscquery]'") from None
                log.warning("python-zeroconf is not installed: OSCQuery is served over HTTP but not announced "
                            "over mDNS (pip install 'ffvj[oscquery]')")
        handler = type("Handler", (_Handler,), {"owner": self})
        try:
            self._http = _HttpServer((self.host, self._port), handler, self)
        except OSError as exc:
            raise OSError(exc.errno, f"cannot serve OSCQuery on http {self.host}:{self._port}: {exc.strerror}; "
                                     "choose another --oscquery-port") from exc
        self.osc.store.add_listener(self._on_change)
        thread = threading.Thread(target=self._http.serve_forever, kwargs={"poll_interval": 0.1},
                                  name="ffvj-oscquery-http", daemon=True)
        thread.start()
        self._thread = thread  # set once it runs: close() then knows shutdown() will return
        log.info("OSCQuery on http://%s:%d/", self.host, self.port)
        if zeroconf is None:
            self.announced.set()
        else:
            self._mdns_thread = threading.Thread(target=self._announce, args=(zeroconf,), name="ffvj-oscquery-mdns",
                                                 daemon=True)
            self._mdns_thread.start()

    def _close(self) -> None:
        self.osc.store.remove_listener(self._on_change)
        with self._sessions_lock:
            sessions = list(self._sessions)
        for session in sessions:
            session.closing = True  # each ends within LISTEN_INTERVAL
        if self._mdns_thread is not None:
            self._mdns_thread.join(timeout=15)
        with self._mdns_lock:
            zc, self._zeroconf = self._zeroconf, None
        if zc is not None:
            try:
                zc.unregister_all_services()
            except OSError as exc:
                log.warning("OSCQuery mDNS goodbye failed: %s", exc)
            zc.close()
        if self._http is not None:
            if self._thread is not None:  # shutdown() waits for serve_forever: only where it runs
                stop_server(self._http, 2.0, "the OSCQuery server")
            self._http.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    @property
    def port(self) -> int:
        return self._http.server_address[1] if self._http else self._port

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/"

    # -- LISTEN --

    @property
    def sessions(self) -> int:
        with self._sessions_lock:
            return len(self._sessions)

    def _join(self, session: _ListenSession) -> bool:
        with self._sessions_lock:
            if len(self._sessions) >= MAX_LISTENERS or self._closed:
                return False
            self._sessions.add(session)
            return True

    def _leave(self, session: _ListenSession) -> None:
        with self._sessions_lock:
            self._sessions.discard(session)

    def report(self, name: str, value: float) -> None:
        """An LFO moved ``name``: its listeners hear where it is, not only where it was set."""
        self._on_change(name, value, "lfo")

    def _on_change(self, name: str, value: float, source: str) -> None:
        if not self._sessions:
            return
        param = self.osc.store.registry.get(name)
        if param is None:
            return
        if source != "lfo":
            value = self.osc.store.get(name)
        with self._sessions_lock:
            sessions = list(self._sessions)
        for session in sessions:
            session.changed(param, value)

    # -- mDNS --

    def _addresses(self) -> list[str]:
        if not _unspecified(self.host):
            return [socket.gethostbyname(self.host)]
        import ifaddr  # python-zeroconf's own dependency: the machine's IPv4 addresses

        found = [ip.ip for adapter in ifaddr.get_adapters() for ip in adapter.ips if isinstance(ip.ip, str)]
        return sorted(set(found)) or ["127.0.0.1"]

    def _announce(self, zeroconf) -> None:
        """Register both services (seconds of probing: off the caller's thread). A failure is a warning:
        the show goes on, and clients can still be pointed at the HTTP port by hand."""
        try:
            addresses = self._addresses()
            interfaces = zeroconf.InterfaceChoice.All if _unspecified(self.host) else addresses
            zc = zeroconf.Zeroconf(interfaces=interfaces, ip_version=zeroconf.IPVersion.V4Only)
            with self._mdns_lock:
                if self._closed:
                    zc.close()
                    return
                self._zeroconf = zc
            hostname = socket.gethostname().split(".")[0] or "ffvj"
            packed = [socket.inet_aton(a) for a in addresses]
            for kind, port in (("_oscjson._tcp.local.", self.port), ("_osc._udp.local.", self.osc.port)):
                info = zeroconf.ServiceInfo(kind, f"{self.name}.{kind}", addresses=packed, port=port,
                                            properties={"txtvers": "1"}, server=f"{hostname}.local.")
                zc.register_service(info, allow_name_change=True)
                self._services.append(info)
            log.info("OSCQuery announced over mDNS as %r (%s) on %s", self.name, ", ".join(
                s.type for s in self._services), ", ".join(addresses))
        except (zeroconf.Error, OSError, ValueError) as exc:
            log.warning("OSCQuery mDNS announcement failed (%s); HTTP is still served at %s", exc, self.url)
        finally:
            self.announced.set()

    # -- the namespace --

    def host_info(self) -> dict:
        info = {"NAME": self.name, "OSC_PORT": self.osc.port, "OSC_TRANSPORT": "UDP", "EXTENSIONS": EXTENSIONS}
        if not _unspecified(self.osc.host):
            info["OSC_IP"] = self.osc.host  # absent: the client uses the address it reached HTTP on
        return info

    def namespace(self) -> dict:
        """The whole tree, with current values."""
        values = self.osc.store.targets()
        root = {"FULL_PATH": "/", "ACCESS": 0, "DESCRIPTION": f"{self.name}: hierarchical neural video feedback",
                "CONTENTS": {}}

        def container(path: str) -> dict:
            node = root
            parts = [p for p in path.split("/") if p]
            for i, part in enumerate(parts):
                contents = node.setdefault("CONTENTS", {})
                if part not in contents:
                    contents[part] = {"FULL_PATH": "/" + "/".join(parts[:i + 1]), "ACCESS": 0, "DESCRIPTION": ""}
                node = contents[part]
            return node

        top = container(ADDRESS_PREFIX)
        top["DESCRIPTION"] = ("every parameter in native units; the same address + '/norm' takes 0..1 through the "
                              "parameter's curve (TouchOSC)")
        for address, param in self.osc.params.items():
            parent, _, leaf = address.rpartition("/")
            container(parent).setdefault("CONTENTS", {})[leaf] = _param_node(param, values[param.name])
        for address, action in self.osc.commands.items():
            parent, _, leaf = address.rpartition("/")
            container(parent).setdefault("CONTENTS", {})[leaf] = _action_node(action, self.osc.controls)
        for reading in READINGS.values():  # read only: what the music and the clock do (feedback sends them)
            parent, _, leaf = reading.address.rpartition("/")
            container(parent).setdefault("CONTENTS", {})[leaf] = {
                "FULL_PATH": reading.address, "TYPE": "f", "ACCESS": 1, "DESCRIPTION": reading.doc,
                "RANGE": [{"MIN": reading.min, "MAX": reading.max}], "UNIT": [reading.unit],
                "VALUE": [self.osc.reading(reading.address)]}
        return root

    def node(self, path: str) -> dict | None:
        node = self.namespace()
        for part in [p for p in path.split("/") if p]:
            node = node.get("CONTENTS", {}).get(part)
            if node is None:
                return None
        return node


def _unspecified(host: str) -> bool:
    """Whether ``host`` means every interface (0.0.0.0, ::); a host name never does."""
    try:
        return ipaddress.ip_address(host).is_unspecified
    except ValueError:
        return False


def _param_node(p: Param, value: float) -> dict:
    """A parameter as OSCQuery describes it, in the types feedback and ``/ffvj/dump`` send: ``f`` for
    floats, ``i`` for ints, enums (their index; the names are in VALS' order and the description)
    and bools (0/1). Float and int parameters list their 0..1 ``/norm`` twin as a child node."""
    node = {"FULL_PATH": p.address, "ACCESS": 3, "DESCRIPTION": p.doc, "UNIT": [p.unit], "CLIPMODE": ["both"]}
    if p.kind == "enum":
        names = ", ".join(f"{i} {name}" for i, name in enumerate(p.choices))
        node.update(TYPE="i", RANGE=[{"MIN": 0, "MAX": len(p.choices) - 1, "VALS": list(range(len(p.choices)))}],
                    VALUE=[int(round(value))], DESCRIPTION=f"{p.doc} ({names}; the name is accepted too)")
    elif p.kind == "bool":
        node.update(TYPE="i", RANGE=[{"MIN": 0, "MAX": 1}], VALUE=[int(value >= 0.5)])
    elif p.kind == "int":
        node.update(TYPE="i", RANGE=[{"MIN": int(p.min), "MAX": int(p.max)}], VALUE=[int(round(value))])
    else:
        node.update(TYPE="f", RANGE=[{"MIN": p.min, "MAX": p.max}], VALUE=[value])
    if p.kind in ("float", "int"):
        node["CONTENTS"] = {"norm": {
            "FULL_PATH": p.address + "/norm", "TYPE": "f", "ACCESS": 3, "RANGE": [{"MIN": 0.0, "MAX": 1.0}],
            "VALUE": [float(p.to_normalized(value))], "CLIPMODE": ["both"],
            "DESCRIPTION": f"{p.name} as 0..1 through its curve (TouchOSC faders)"}}
    return node


def osc_value(param: Param, value: float, normalized: bool) -> bytes:
    """One value as the OSC message LISTEN sends: the node's own type (``f``, or ``i`` for int, bool and
    enum), or the 0..1 float of a ``/norm`` path."""
    address = param.address + (NORM_SUFFIX if normalized else "")
    msg = OscMessageBuilder(address)
    if normalized:
        msg.add_arg(float(param.to_normalized(value)), "f")
    elif param.kind == "float":
        msg.add_arg(float(value), "f")
    else:
        msg.add_arg(int(round(value)), "i")
    return msg.build().dgram


class _ListenSession:
    """One LISTEN WebSocket: the paths it listens to and the latest value of each waiting to go out."""

    def __init__(self, owner: OscQueryServer):
        self.owner = owner
        self.paths: set[str] = set()
        self.names: dict[str, list[tuple[str, bool]]] = {}  # parameter name → its listened (path, normalized)
        self.pending: dict[str, tuple[Param, float, bool]] = {}
        self.lock = threading.Lock()
        self.closing = False

    def changed(self, param: Param, value: float) -> None:
        """Recorded only (this may be the render loop): the session's thread builds the messages."""
        with self.lock:
            for path, normalized in self.names.get(param.name, ()):
                self.pending[path] = (param, value, normalized)

    def command(self, text: str) -> str | None:
        """A LISTEN or IGNORE; returns why it was refused, or None."""
        try:
            cmd = json.loads(text)
        except (ValueError, RecursionError):
            return "not JSON"
        if not isinstance(cmd, dict) or cmd.get("COMMAND") not in ("LISTEN", "IGNORE") \
                or not isinstance(cmd.get("DATA"), str):
            return 'expected {"COMMAND": "LISTEN" or "IGNORE", "DATA": "/a/path"}'
        path = urllib.parse.unquote(cmd["DATA"])
        target = self.owner._by_path.get(path)
        if target is None:
            return f"no parameter at {path[:80]}"
        param, normalized = target
        with self.lock:
            listened = self.names.setdefault(param.name, [])
            if cmd["COMMAND"] == "LISTEN":
                if (path, normalized) not in listened:
                    listened.append((path, normalized))
            else:
                if (path, normalized) in listened:
                    listened.remove((path, normalized))
                self.pending.pop(path, None)
        return None

    def take(self) -> list[bytes]:
        with self.lock:
            out, self.pending = list(self.pending.values()), {}
        return [osc_value(param, value, normalized) for param, value, normalized in out]


def _action_node(action: Action, controls) -> dict:
    node = {"FULL_PATH": action.address, "TYPE": action.type_tags or "N", "ACCESS": 2, "DESCRIPTION": action.doc}
    if action.args:
        node["RANGE"] = [{"MIN": a.min, "MAX": a.max} if a.min is not None else {} for a in action.args]
    if action.value is not None:
        node.update(ACCESS=3, VALUE=[action.value(controls)], CLIPMODE=["both"] * len(action.args))
    return node


class _HttpServer(LimitedConnections, http.server.ThreadingHTTPServer):
    """At most 32 clients at once, the oldest closed to make room for a new one, 5 s each to send a
    request (see ``LimitedConnections``); the OSC server's ``--osc-allow`` decides who may ask; a
    client that hangs up early is not an error."""

    daemon_threads = True
    block_on_close = False
    max_connections = 32
    idle_timeout = 5.0
    when_full = "evict"
    request_queue_size = 64

    def __init__(self, address, handler, owner: OscQueryServer):
        self.owner = owner
        self._warn = RateLimitedLog(log)
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, handler)

    def admit(self, client_address) -> bool:
        return self.owner.osc._admit(client_address)

    def handler_failed(self, request, client_address) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError)):  # the client went away or said nothing
            log.debug("OSCQuery client %s: %s", client_address[0], exc)
            return
        log.debug("OSCQuery request from %s failed", client_address[0], exc_info=True)
        self._warn.warning("handler", "OSCQuery request from %s failed (%s: %s)", client_address[0],
                           type(exc).__name__, exc)


class _Handler(http.server.BaseHTTPRequestHandler):
    owner: OscQueryServer
    server_version = "ffvj-oscquery"
    timeout = _HttpServer.idle_timeout  # StreamRequestHandler sets it on the socket

    def do_GET(self) -> None:
        why = browser_refusal(self.headers.get("Host"), self.headers.get("Origin"), self.owner._names)
        if why is not None:  # a script of another web site, through the performer's browser
            self.owner.foreign += 1
            self.server._warn.warning("foreign", "OSCQuery request from %s refused: %s", self.client_address[0], why)
            return self._json(403, {"error": why})
        if self.headers.get("Upgrade", "").lower() == "websocket":
            return self._listen()
        url = urllib.parse.urlsplit(self.path)
        path = urllib.parse.unquote(url.path) or "/"
        attribute = url.query.split("&")[0].split("=")[0] if url.query else ""
        if attribute == "HOST_INFO":
            return self._json(200, self.owner.host_info())
        node = self.owner.node(path)
        if node is None:
            return self._json(404, {"error": f"no OSC node at {path}"})
        if not attribute:
            return self._json(200, node)
        if attribute not in ATTRIBUTES:
            return self._json(400, {"error": f"unknown attribute {attribute}; known: {', '.join(ATTRIBUTES)}"})
        if attribute not in node:
            self.send_response(204)
            self.end_headers()
            return None
        return self._json(200, {attribute: node[attribute]})

    def _listen(self) -> None:
        """The LISTEN WebSocket on this connection, until the client closes it or the server stops."""
        session = _ListenSession(self.owner)
        if not self.owner._join(session):
            return self._json(503, {"error": f"{MAX_LISTENERS} LISTEN sessions are open already"})
        sock = self.connection
        self.server._forget(sock)  # no longer a short request that a flood of new ones may evict
        self.close_connection = True
        try:
            ws = WSConnection(ConnectionType.SERVER)
            # http.server has read the request line and headers: wsproto runs the handshake from them.
            head = self.requestline + "\r\n" + "".join(f"{k}: {v}\r\n" for k, v in self.headers.items()) + "\r\n"
            try:
                ws.receive_data(head.encode("latin-1"))
                accepted = any(isinstance(e, Request) for e in ws.events())
            except RemoteProtocolError as exc:
                accepted, why = False, str(exc)
            else:
                why = "not a WebSocket handshake"
            if not accepted:  # RFC 6455: a bad handshake is answered, not dropped
                return self._json(400, {"error": f"LISTEN needs a WebSocket handshake ({why})"})
            self.wfile.write(ws.send(AcceptConnection()))
            self.wfile.flush()
            # What the client sent right behind its handshake may sit in http.server's buffered reader:
            # taken without waiting (the socket non-blocking for this one read), it is the first data.
            sock.setblocking(False)
            try:
                early = self.rfile.read1(65536) or b""
            except (BlockingIOError, InterruptedError):
                early = b""
            self._serve_session(ws, sock, session, early)
        except (LocalProtocolError, RemoteProtocolError) as exc:
            log.debug("OSCQuery LISTEN from %s: %s", self.client_address[0], exc)
        finally:
            self.owner._leave(session)

    def _serve_session(self, ws: WSConnection, sock: socket.socket, session: _ListenSession,
                       early: bytes = b"") -> None:
        text = ""
        heard = pinged = time.monotonic()
        while not session.closing:
            sock.settimeout(LISTEN_INTERVAL)
            if early:
                data, early = early, b""
            else:
                try:
                    data = sock.recv(65536)
                except TimeoutError:
                    data = None
            if data == b"":
                return
            now = time.monotonic()
            if now - heard > 3 * PING_INTERVAL:  # gone without a word (a client asleep, a dead link)
                self._send(sock, ws.send(CloseConnection(code=1001, reason="no answer to pings")))
                return
            if now - pinged > PING_INTERVAL:
                pinged = now
                self._send(sock, ws.send(Ping()))
            if data:
                heard = now
                ws.receive_data(data)
                for event in ws.events():
                    if isinstance(event, CloseConnection):
                        self._send(sock, ws.send(event.response()))
                        return
                    if isinstance(event, Ping):
                        self._send(sock, ws.send(event.response()))
                    elif isinstance(event, TextMessage):
                        text += event.data
                        if len(text) > MAX_COMMAND:
                            self._send(sock, ws.send(CloseConnection(code=1009, reason="command too long")))
                            return
                        if event.message_finished:
                            why, text = session.command(text), ""
                            if why is not None:
                                self.server._warn.warning("listen", "OSCQuery LISTEN from %s refused: %s",
                                                          self.client_address[0], why)
            for dgram in session.take():
                self._send(sock, ws.send(BytesMessage(dgram)))
        self._send(sock, ws.send(CloseConnection(code=1001, reason="ffvj is stopping")))

    @staticmethod
    def _send(sock: socket.socket, data: bytes) -> None:
        sock.settimeout(SEND_TIMEOUT)  # a client that stopped reading: TimeoutError ends the session
        sock.sendall(data)

    def _json(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, fmt, *args) -> None:
        log.debug("OSCQuery %s: " + fmt, self.address_string(), *args)  # http.server would print to stderr
