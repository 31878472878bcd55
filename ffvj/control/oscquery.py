"""OSCQuery: ffvj's OSC address space as HTTP JSON (Vidvox's OSCQuery proposal), announced over mDNS.

Contract
--------
``OscQueryServer(osc, port=9010, host=None, name="ffvj", mdns=None)`` describes exactly what the
running ``OscServer`` ``osc`` accepts (start the OSC server first: its bound port is announced). It is
a ``Service``: ``start()`` binds at once and raises if it cannot; ``close()`` is idempotent; context manager.
HTTP is served by aiohttp on a thread of its own (``control/http.py``, the web page's stack: its limits,
and its rule for who may ask: the OSC server's ``--osc-allow``, and no script of another web site) on
``host`` (default: the OSC server's host, so 127.0.0.1 unless the show listens on the LAN with ``0.0.0.0``).

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
sessions at once (more are answered 503); a session's commands are ≤ 4 KiB each (a longer one closes
it, 1009); one that stops reading is closed after 5 s stuck; one silent for 10 s is pinged, and closed
if its answer is not there within 5 s.

mDNS (``mdns=None``: when python-zeroconf is installed, ``pip install 'ffvj[oscquery]'``, and the
show listens beyond loopback, ``--osc-host 0.0.0.0``; zeroconf absent, a warning and HTTP still
served; ``True`` requires it, ``False`` never): ``_oscjson._tcp`` at the HTTP port and ``_osc._udp``
at the OSC port, registered on a background thread because probing takes seconds.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import socket
import threading
import urllib.parse

from aiohttp import WSMsgType, web
from pythonosc.osc_message_builder import OscMessageBuilder

from ..phi import ADDRESS_PREFIX, Param
from ..reporting import RateLimitedLog
from .actions import Action
from .http import Dropped, HttpServer, Limits
from .osc import NORM_SUFFIX, OscServer
from .readings import READINGS
from .service import Listen, Service, is_loopback, local_names

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
# The shared rule (control/http.py: a ping after this many seconds of silence, unanswered for half
# that: closed), read when a session opens: a test shortens it here.
PING_INTERVAL = Limits.ping_interval


class OscQueryServer(Service):
    def __init__(self, osc: OscServer, port: int = DEFAULT_PORT, host: str | None = None, name: str = "ffvj",
                 mdns: bool | None = None):
        super().__init__()
        self.osc = osc
        self.host = osc.host if host is None else host
        self.name = name
        self.mdns = mdns
        # The shared server: the OSC server's --osc-allow, and the browser rule with this machine's names.
        self.http = HttpServer("OSCQuery", self.host, port, "--oscquery-port", "choose another --oscquery-port",
                               allow=osc.allow, names=local_names(self.host), on_denied=self._denied)
        self.http.app.router.add_get("/{path:.*}", self._get)
        self._listeners = self.http.sessions(MAX_LISTENERS, "LISTEN sessions")
        self._warn = RateLimitedLog(log, interval=5.0)
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
        return (Listen("--oscquery-port", self.host, self.http.port, "tcp"),)

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
        self.http.start()
        self.osc.store.add_listener(self._on_change)
        log.info("OSCQuery on http://%s:%d/", self.host, self.port)
        if zeroconf is None:
            self.announced.set()
        else:
            self._mdns_thread = threading.Thread(target=self._announce, args=(zeroconf,), name="ffvj-oscquery-mdns",
                                                 daemon=True)
            self._mdns_thread.start()

    def _close(self) -> None:
        self.osc.store.remove_listener(self._on_change)
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
        self.http.close()  # every LISTEN session closed with 1001

    @property
    def port(self) -> int:
        return self.http.port

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/"

    @property
    def foreign(self) -> int:
        """Requests refused as another web site's (``service.browser_refusal``)."""
        return self.http.stats["foreign"]

    def _denied(self, peer: str) -> None:
        # The OSC server's --osc-allow turned it away: counted with OSC's own denials (its "denied", in
        # its status line's "bad").
        self.osc.count_denied()

    # -- HTTP --

    async def _get(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("Upgrade", "").lower() == "websocket":
            return await self._listen(request)
        attribute = request.query_string.split("&")[0].split("=")[0]
        if attribute == "HOST_INFO":
            return web.json_response(self.host_info())
        path = request.path
        node = self.node(path)
        if node is None:
            return web.json_response({"error": f"no OSC node at {path[:200]}"}, status=404)
        if not attribute:
            return web.json_response(node)
        if attribute not in ATTRIBUTES:
            return web.json_response({"error": f"unknown attribute {attribute[:80]}; known: {', '.join(ATTRIBUTES)}"},
                                     status=400)
        if attribute not in node:
            return web.Response(status=204)
        return web.json_response({attribute: node[attribute]})

    # -- LISTEN --

    async def _listen(self, request: web.Request) -> web.StreamResponse:
        """The LISTEN WebSocket on this connection, until the client closes it or the server stops."""
        ws = self.http.websocket(MAX_COMMAND, ping_interval=PING_INTERVAL)
        if not ws.can_prepare(request).ok:  # RFC 6455: a bad handshake is answered, not dropped
            return web.json_response({"error": "LISTEN needs a WebSocket handshake (Sec-WebSocket-Key, version 13)"},
                                     status=400)
        with self._listeners.place():  # 503 when MAX_LISTENERS are open
            session = _ListenSession(self)
            async with self.http.upgraded(request, ws):
                with self._sessions_lock:
                    self._sessions.add(session)
                feeder = asyncio.get_running_loop().create_task(self._feed(request, ws, session))
                try:
                    async for msg in ws:
                        if msg.type == WSMsgType.TEXT:
                            why = session.command(msg.data)
                            if why is not None:
                                self._warn.warning("listen", "OSCQuery LISTEN from %s refused: %s",
                                                   request.remote, why)
                        elif msg.type == WSMsgType.ERROR:  # too long (closed 1009), unanswered pings
                            log.debug("OSCQuery LISTEN from %s: %s", request.remote, ws.exception())
                finally:
                    with self._sessions_lock:
                        self._sessions.discard(session)
                    feeder.cancel()
        return ws

    async def _feed(self, request: web.Request, ws: web.WebSocketResponse, session: _ListenSession) -> None:
        """What changed, every LISTEN_INTERVAL: each path's latest value, as one binary OSC message."""
        try:
            while not ws.closed:
                await asyncio.sleep(LISTEN_INTERVAL)
                for dgram in session.take():
                    await self.http.send(request, ws, dgram)
        except Dropped:
            pass  # the reading side sees the connection end and closes the session

    @property
    def sessions(self) -> int:
        with self._sessions_lock:
            return len(self._sessions)

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

    def changed(self, param: Param, value: float) -> None:
        """Recorded only (this may be the render loop): the session's feeder builds the messages."""
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
