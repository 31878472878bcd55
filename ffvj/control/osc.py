"""OSC control: every parameter of the registry at its own address, over UDP (and TCP with SLIP).

Contract
--------
``OscServer(controls, OscConfig(host="127.0.0.1", port=9000, tcp_port=None, allow=(), feedback=(),
feedback_rate=30.0))`` is a ``Service``: ``start()`` binds and raises at once (port in use, unknown host);
``close()`` is idempotent; it is a context manager. The render loop calls ``poll()`` once per frame.
Nothing here touches a tensor.

Addresses (``/ffvj`` is ``params.ADDRESS_PREFIX``):

- ``param.address`` (``/ffvj/drive``, ``/ffvj/l0/zoom``) takes one value in the parameter's native
  units. Enums take an int index or a choice name (``/ffvj/bound s sine``); bools take 0/1 or T/F.
- ``param.address + "/norm"`` takes a 0..1 value through the parameter's curve: the convention for
  TouchOSC and other 0..1 controllers (``/ffvj/l0/zoom/norm f 0.5``).
- OSC 1.0 patterns dispatch to every matching parameter: ``*``, ``?``, ``[0-2]``, ``[!0]``,
  ``{zoom,rotate}`` (``/ffvj/l*/zoom``, ``/ffvj/l[0-2]/gain_self/norm``). Patterns never reach the
  triggers below: a stray ``/ffvj/*`` must not fire a panic. OSC 1.1's ``//`` is not supported.
- Every action of ``actions.ACTIONS`` at its address, exact addresses only, with its arguments in
  order: ``/ffvj/reset``, ``/ffvj/tap``, ``/ffvj/bpm f``, ``/ffvj/preset/recall s [f seconds]``,
  ``/ffvj/snapshot/recall i [f seconds]``, ... Buttons (reset, tap, learn) fire with no argument or a
  non-zero one; ``0``/``F`` is a button's release and is ignored. Absent seconds are 0 (jump).
- The server's own commands (``OSC_COMMANDS``): ``/ffvj/feedback/subscribe [i port]`` and
  ``/ffvj/feedback/unsubscribe [i port]``: the sender's IP, at the given port or else at the port it
  sent from, starts (stops) receiving feedback, and gets a full dump at once. Over TCP the port is
  required (feedback always goes out over UDP). ``/ffvj/dump``: every current value is sent back to
  the asker (over UDP to its source address, over TCP on its connection), in the feedback format below.

Feedback: every accepted change from any surface (OSC, MIDI, presets) is sent to each ``feedback``
target and each subscriber on the parameter's own address, in native units (``f`` for float
parameters, ``i`` for int, enum index and bool), and for float and int parameters also as 0..1 on
``address/norm`` so TouchOSC faders follow. It is capped at ``feedback_rate`` messages per second
per parameter; the latest value wins and the last one is always sent. Changes are echoed to the
client that sent them too: a surface then always shows the server's value (clamped, rounded,
fanned out by a pattern, or moved by another surface), and TouchOSC does not re-send what it
receives, so the echo cannot loop.

Timetags: a bundle whose timetag is in the future is not slept on (python-osc's default dispatcher
sleeps in the handler thread); its messages wait in a bounded, time-ordered list until ``poll(now)``
passes their time. ``now`` is wall-clock seconds (``time.time()``), because OSC timetags are NTP
wall-clock. Immediate and past timetags apply at once; one more than ``max_ahead`` seconds ahead is
taken for a skewed client clock and applied at once, counted. Replies to a deferred ``/ffvj/dump``
are dropped.

Robustness: malformed packets, unknown addresses, wrong argument types or counts, NaN and values
the store refuses are counted in ``stats`` and logged rate-limited; clients outside ``allow`` are
dropped and counted. Nothing raises into a server thread or the render loop, nothing blocks.
``stats`` counts packets, messages, applied (parameter sets), triggers (actions and commands),
unknown_address, bad_args (wrong type or count, bad pattern), bad_value (NaN/inf), rejected (refused by the store),
malformed, denied, scheduled, schedule_full, timetag_skew, feedback_sent, feedback_errors,
subscribers_dropped and errors (a handler bug caught by socketserver's last resort).
``host="0.0.0.0"`` is the one way to listen on the LAN (a tablet); the default is loopback.
"""

from __future__ import annotations

import collections
import heapq
import ipaddress
import itertools
import logging
import math
import socket
import socketserver
import struct
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass

from pythonosc import osc_message, osc_server, slip
from pythonosc.osc_message_builder import build_msg
from pythonosc.parsing import osc_types

from ..tally import Counts, RateLimitedLog
from .actions import ACTIONS, Action, Arg
from .osc_pattern import compile_pattern, is_pattern
from .readings import READINGS
from ..phi import Param
from .service import LatestValueSender, LimitedConnections, Listen, Service, stop_server

log = logging.getLogger(__name__)

# python-osc reports content it skips (an unknown type tag, a bundle item of no known kind) with
# logging.warning on the root logger, once per packet and without a source: a stream of such
# packets would flood the show's console. While a server parses a packet, this filter on the root
# logger turns those records into that server's counted, rate-limited "malformed" report.
_parsing = threading.local()


class _PythonOscReports(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        current = getattr(_parsing, "current", None)
        if current is None or record.name != "root" or "pythonosc" not in record.pathname.replace("\\", "/"):
            return True
        server, client = current
        server._problem("malformed", client, "content python-osc skipped (%s)", record.getMessage())
        return False


_PYTHONOSC_REPORTS = _PythonOscReports()

NORM_SUFFIX = "/norm"
STAT_KEYS = ("packets", "messages", "applied", "triggers", "unknown_address", "bad_args", "bad_value",
             "rejected", "malformed", "denied", "scheduled", "schedule_full", "timetag_skew",
             "feedback_sent", "feedback_errors", "subscribers_dropped", "over_budget", "errors")
MAX_UDP_PACKET = 65507
MAX_TCP_FRAME = MAX_UDP_PACKET  # a SLIP frame larger than any datagram is not from a controller: drop the link
# OSC over TCP: connections at once and how long one may sit silent (a tablet between touches).
# With the frame cap, what the links can buffer is bounded too: 16 × (64 KiB + one 64 KiB read).
MAX_TCP_CONNECTIONS = 16
TCP_IDLE_SECONDS = 120.0
BUNDLE_PREFIX = b"#bundle\0"
MAX_BUNDLE_DEPTH = 8  # bundles in bundles: a controller nests one or two
# What one packet may cost the OSC thread: a bundle of more messages than MAX_MESSAGES_PER_PACKET
# is malformed and dropped whole; sets and new patterns beyond theirs are counted over_budget and
# skipped. A controller sends a handful of messages a packet; a 65 KB bundle of 2,728 "/ffvj/*/*" once made
# 253,704 parameter sets and 2.2 s of OSC-thread time, starving the render loop of the GIL.
MAX_MESSAGES_PER_PACKET = 256
MAX_PATTERN_SETS_PER_PACKET = 512  # parameter sets reached through patterns
MAX_NEW_PATTERNS_PER_PACKET = 16  # patterns not yet in the cache, each matched over every address
# And what all clients together may cost a second: every message and every parameter set takes
# one unit (about 15 µs of the OSC thread, which holds the GIL the render loop needs too). A busy
# TouchOSC page moves 20 faders at 60 Hz, 1,200 a second; a flood past this budget is dropped
# whole, before parsing, counted over_budget, and the render loop keeps its frame rate.
WORK_PER_SECOND = 10_000
NEW_PATTERN_WORK = 40  # a pattern not in the cache, matched over every address: up to 0.6 ms
MAX_CACHED_PATTERNS = 128  # the patterns' matches, kept: surfaces repeat the same few
DUMP_INTERVAL = 1.0  # seconds between full dumps to one client IP (/dump, subscribe)
MAX_DUMP_CLIENTS = 1024  # client IPs remembered for that


# -- setup helpers --------------------------------------------------------------------------------

def parse_host_port(text: str | tuple) -> tuple[str, int]:
    """``"host:port"`` (or a ``(host, port)`` pair) as a checked ``(host, port)``; ValueError if not."""
    if isinstance(text, tuple):
        host, port = text
    else:
        host, sep, port = str(text).rpartition(":")
        if not sep or not host:
            raise ValueError(f"feedback target {text!r} is not HOST:PORT (e.g. 192.168.1.20:9001)")
    try:
        port = int(port)
    except ValueError:
        raise ValueError(f"feedback target {text!r}: port {port!r} is not a number") from None
    if not 0 < port < 65536:
        raise ValueError(f"feedback target {text!r}: port {port} is not in 1..65535")
    return str(host), port


def _resolve_udp(host: str, port: int) -> tuple[str, int]:
    try:
        infos = socket.getaddrinfo(host, port, socket.AF_INET, socket.SOCK_DGRAM)
    except socket.gaierror as exc:
        raise ValueError(f"feedback target {host}:{port}: cannot resolve {host!r} ({exc})") from None
    return infos[0][4][0], port


def _normalize_allow(allow: Iterable[str] | None) -> frozenset[str] | None:
    if not allow:
        return None
    good, bad = set(), []
    for item in allow:
        try:
            good.add(str(ipaddress.ip_address(str(item).strip())))
        except ValueError:
            bad.append(str(item))
    if bad:
        raise ValueError(f"--osc-allow takes IP addresses; not addresses: {', '.join(bad)}")
    return frozenset(good)


@dataclass(frozen=True)
class OscConfig:
    """What a show's OSC surface listens on and talks back to (the CLI's ``--osc-*`` options).
    ``query_port``: OSCQuery's HTTP port, None for no OSCQuery; ``mdns``: see ``oscquery``."""

    host: str = "127.0.0.1"  # 0.0.0.0 lets a tablet on the LAN in
    port: int = 9000
    tcp_port: int | None = None
    allow: tuple[str, ...] = ()  # only these client IPs may send (empty: anyone who can reach the port)
    feedback: tuple[str, ...] = ()  # HOST:PORT targets of every change
    feedback_rate: float = 30.0  # feedback messages per second per parameter
    query_port: int | None = 9010
    mdns: bool | None = None


@dataclass(frozen=True)
class _Client:
    """Where a message came from: its address, and whether it came over UDP or TCP."""
    address: tuple[str, int]
    transport: str = "udp"

    @property
    def source(self) -> str:
        return f"osc {self.address[0]}:{self.address[1]}"


# -- packets --------------------------------------------------------------------------------------

class _WorkBudget:
    """A token bucket of OSC work (see WORK_PER_SECOND), shared by the server's threads."""

    def __init__(self, rate: float = WORK_PER_SECOND, clock=time.monotonic):
        self.rate, self.clock = rate, clock
        self._level, self._when = rate, clock()
        self._lock = threading.Lock()

    def _refill(self) -> None:
        now = self.clock()
        self._level = min(self.rate, self._level + (now - self._when) * self.rate)
        self._when = now

    def available(self) -> bool:
        with self._lock:
            self._refill()
            return self._level > 0

    def spend(self, units: int) -> None:
        with self._lock:
            self._level -= units  # may go below 0: the packet in hand finishes, the next waits


class _Malformed(Exception):
    """A packet that is not well-formed OSC; its text says why."""


@dataclass
class _Budget:
    """What is left of one packet's allowance (see MAX_*_PER_PACKET)."""
    messages: int = MAX_MESSAGES_PER_PACKET
    sets: int = MAX_PATTERN_SETS_PER_PACKET
    new_patterns: int = MAX_NEW_PATTERNS_PER_PACKET


def _bundle_items(data: bytes, depth: int = 1) -> list[tuple[float, osc_message.OscMessage]]:
    """Every message of a bundle (and of the bundles inside it) with its timetag, checked whole.

    Parsed here rather than by python-osc, whose parser loops for ever on an element size of -4 (a
    20-byte packet froze the OSC thread and the show's shutdown with it): every size must be positive,
    a multiple of 4 and inside the packet, and bundles nest at most MAX_BUNDLE_DEPTH deep."""
    if depth > MAX_BUNDLE_DEPTH:
        raise _Malformed(f"bundles nested more than {MAX_BUNDLE_DEPTH} deep")
    if len(data) < 16:
        raise _Malformed(f"a bundle of {len(data)} bytes is shorter than its header")
    due, index = osc_types.get_date(data, len(BUNDLE_PREFIX))
    items: list[tuple[float, osc_message.OscMessage]] = []
    while index < len(data):
        if index + 4 > len(data):
            raise _Malformed("a bundle element's size is cut off")
        (size,) = struct.unpack_from(">i", data, index)
        index += 4
        if size <= 0 or size % 4 or index + size > len(data):
            raise _Malformed(f"a bundle element of {size} bytes at byte {index - 4} of {len(data)}")
        element = data[index:index + size]
        index += size
        if element.startswith(BUNDLE_PREFIX):
            items += _bundle_items(element, depth + 1)
        elif element[:1] == b"/":
            items.append((due, osc_message.OscMessage(element)))
        else:
            raise _Malformed("a bundle element that is neither a message nor a bundle")
        if len(items) > MAX_MESSAGES_PER_PACKET:
            raise _Malformed(f"more than {MAX_MESSAGES_PER_PACKET} messages in one bundle")
    return items


# -- the socket servers (python-osc's UDP server; a small SLIP server on socketserver) --------------

class _UdpServer(osc_server.BlockingOSCUDPServer):
    """python-osc's blocking UDP server (one thread, packets in order) with ffvj's packet handler as
    its dispatcher. Every datagram reaches the handler, so garbage is counted, not silently dropped
    by python-osc's pre-check; the allow-list is checked first."""

    max_packet_size = MAX_UDP_PACKET  # socketserver's default of 8192 would truncate big bundles

    def __init__(self, address: tuple[str, int], owner: OscServer):
        self.owner = owner
        super().__init__(address, owner)  # python-osc calls owner.call_handlers_for_packet

    def verify_request(self, request, client_address) -> bool:
        return self.owner._admit(client_address)

    def handle_error(self, request, client_address) -> None:
        self.owner._handler_failed(client_address)


class _SlipHandler(socketserver.BaseRequestHandler):
    """OSC 1.1 over TCP: packets framed by SLIP END bytes (single or double END both work)."""

    def handle(self) -> None:
        server: _TcpServer = self.server
        owner, sock = server.owner, self.request
        client = _Client(tuple(self.client_address[:2]), "tcp")
        server.track(sock, True)
        buf = bytearray()
        try:
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    return
                buf += chunk
                while (end := buf.find(slip.END)) >= 0:
                    frame = bytes(buf[:end])
                    del buf[:end + 1]
                    if not frame:
                        continue  # the leading END of a double-END frame
                    try:
                        packet = slip.decode(frame)
                    except slip.ProtocolError:
                        owner._malformed(client, "bad SLIP escape")
                        continue
                    for reply in owner._handle(packet, client):
                        sock.sendall(slip.encode(reply))
                if len(buf) > MAX_TCP_FRAME:
                    owner._malformed(client, f"SLIP frame over {MAX_TCP_FRAME} bytes; closing the connection")
                    return
        except OSError:
            return  # the client went away, or close() shut the socket: either way this link is done
        finally:
            server.track(sock, False)


class _TcpServer(LimitedConnections, socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    block_on_close = False
    max_connections = MAX_TCP_CONNECTIONS
    idle_timeout = TCP_IDLE_SECONDS

    def __init__(self, address: tuple[str, int], owner: OscServer):
        self.owner = owner
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _SlipHandler)

    def admit(self, client_address) -> bool:
        return self.owner._admit(client_address)

    def handler_failed(self, request, client_address) -> None:
        self.owner._handler_failed(client_address)

    def track(self, sock: socket.socket, is_open: bool) -> None:
        with self._open_lock:
            (self._open.add if is_open else self._open.discard)(sock)

    def close_connections(self) -> None:
        with self._open_lock:
            conns = list(self._open)
        for sock in conns:
            try:
                sock.shutdown(socket.SHUT_RDWR)  # wakes the handler's recv with b""
            except OSError:
                pass  # already closed by the peer


# -- the server -----------------------------------------------------------------------------------

class OscServer(Service):
    """The OSC surface of one show. See the module docstring for addresses and conventions."""

    def __init__(self, controls, config: OscConfig | None = None, *, feedback_norm: bool = True,
                 max_scheduled: int = 256, max_ahead: float = 60.0, max_subscribers: int = 16, clock=time.time):
        super().__init__()
        config = config or OscConfig()
        if not config.feedback_rate > 0:
            raise ValueError(f"feedback_rate must be > 0 messages per second, not {config.feedback_rate}")
        self.controls, self.store = controls, controls.store
        self.host, self._port, self._tcp_port = config.host, config.port, config.tcp_port
        self.allow = _normalize_allow(config.allow)
        self._feedback_spec = [parse_host_port(t) for t in config.feedback]
        self.feedback_interval = 1.0 / config.feedback_rate
        self.feedback_norm = feedback_norm
        self.max_scheduled, self.max_ahead, self.max_subscribers = max_scheduled, max_ahead, max_subscribers
        self.clock = clock

        # Parameters by address (native and /norm), and the actions and commands by address.
        self.params: dict[str, Param] = {p.address: p for p in self.store.registry.values()}
        self._targets: dict[str, tuple[Param, bool]] = {}
        for addr, p in self.params.items():
            self._targets[addr] = (p, False)
            self._targets[addr + NORM_SUFFIX] = (p, True)
        self._by_name = {p.name: p for p in self.params.values()}
        self.commands: dict[str, Action] = {a.address: a for a in (*ACTIONS.values(), *OSC_COMMANDS.values())}
        self._valued = [a for a in ACTIONS.values() if a.value is not None]  # /ffvj/bpm: in dumps and feedback
        self._readings: dict[str, float] = {}  # readings' addresses → their last values (``report``)
        self._action_values: dict[str, float] = {}

        self._work = _WorkBudget()
        self._pattern_cache: collections.OrderedDict[str, tuple] = collections.OrderedDict()
        self._pattern_lock = threading.Lock()
        self._counts = Counts(*STAT_KEYS)
        self._warn = RateLimitedLog(log)

        # Future timetagged messages: a heap of (due, seq, message, client), bounded.
        self._scheduled: list = []
        self._sched_lock = threading.Lock()
        self._seq = itertools.count()

        self._subscribers: dict[tuple[str, int], float] = {}  # insertion-ordered: oldest first
        self._last_dump: dict[tuple[str, str], float] = {}  # (client IP, command) → its last full dump
        self._subscribers_lock = threading.Lock()
        self._feedback_targets: list[tuple[str, int]] = []
        self._feedback: LatestValueSender | None = None

        self._udp: _UdpServer | None = None
        self._tcp: _TcpServer | None = None
        self._threads: list[threading.Thread] = []
        self._serving: list = []  # the servers whose serve_forever thread started
        self._listening = False

    # -- lifecycle --

    def listens(self) -> tuple[Listen, ...]:
        tcp = () if self._tcp_port is None else (Listen("--osc-tcp-port", self.host, self._tcp_port, "tcp"),)
        return (Listen("--osc-port", self.host, self._port, "udp"),) + tcp

    def _start(self) -> None:
        """Bind and start the threads. Raises OSError/ValueError at once if it cannot."""
        self._feedback_targets = [_resolve_udp(h, p) for h, p in self._feedback_spec]
        try:
            self._udp = _UdpServer((self.host, self._port), self)
        except OSError as exc:
            raise OSError(exc.errno, f"cannot listen for OSC on udp {self.host}:{self._port}: {exc.strerror}; "
                                     "is another ffvj running? choose another --osc-port") from exc
        if self._tcp_port is not None:
            try:
                self._tcp = _TcpServer((self.host, self._tcp_port), self)
            except OSError as exc:
                raise OSError(exc.errno, f"cannot listen for OSC on tcp {self.host}:{self._tcp_port}: "
                                         f"{exc.strerror}; choose another --osc-tcp-port") from exc
        self._listening = True
        if _PYTHONOSC_REPORTS not in logging.getLogger().filters:
            logging.getLogger().addFilter(_PYTHONOSC_REPORTS)  # inert outside a server's parsing
        self._feedback = LatestValueSender(self._send_feedback, self.feedback_interval, "ffvj-osc-feedback")
        self.store.add_listener(self._on_change)
        for srv, name in ((self._udp, "ffvj-osc-udp"), (self._tcp, "ffvj-osc-tcp")):
            if srv is not None:
                thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.1}, name=name,
                                          daemon=True)
                thread.start()
                self._threads.append(thread)
                self._serving.append(srv)
        log.info("OSC on udp %s:%d%s; feedback to %s", self.host, self.port,
                 f" and tcp (SLIP) {self.host}:{self.tcp_port}" if self._tcp else "",
                 ", ".join(f"{h}:{p}" for h, p in self._feedback_targets) or "subscribers only")

    def _close(self) -> None:
        self._listening = False
        self.store.remove_listener(self._on_change)
        if self._feedback is not None:
            self._feedback.close()
        for srv in self._serving:  # shutdown() waits for serve_forever: only where it runs
            stop_server(srv, 2.0, "the OSC server")
        if self._tcp is not None:
            self._tcp.close_connections()
        for t in self._threads:
            t.join(timeout=2)
        for srv in (self._udp, self._tcp):
            if srv is not None:
                srv.server_close()

    @property
    def port(self) -> int:
        """The UDP port actually bound (useful with ``port=0``)."""
        return self._udp.server_address[1] if self._udp else self._port

    @property
    def tcp_port(self) -> int | None:
        return self._tcp.server_address[1] if self._tcp else self._tcp_port

    @property
    def stats(self) -> dict[str, int]:
        return self._counts.snapshot()

    @property
    def subscribers(self) -> list[tuple[str, int]]:
        with self._subscribers_lock:
            return list(self._subscribers)

    @property
    def feedback_targets(self) -> list[tuple[str, int]]:
        return list(self._feedback_targets)

    # -- the render loop's side --

    def poll(self, now: float | None = None) -> int:
        """Apply the timetagged messages now due; call once per frame. Returns how many applied.
        ``now`` is wall-clock seconds (default ``clock()``, i.e. ``time.time()``)."""
        self._echo_action_values()
        if not self._scheduled:  # the common case: nothing waiting, no lock taken
            return 0
        now = self.clock() if now is None else now
        due = []
        with self._sched_lock:
            while self._scheduled and self._scheduled[0][0] <= now:
                due.append(heapq.heappop(self._scheduled))
        # On the render loop: every due message of this frame shares one packet's budget, and the
        # work budget is asked first (a bundle of 256 timetagged "/ffvj/*/*" once made 25,344 sets
        # in one poll). Replies (a deferred /dump) have nowhere to go: dropped.
        budget = _Budget()
        for _due, _seq, msg, client in due:
            if not self._work.available():
                self._problem("over_budget", client, "a timetagged message dropped: over the work budget")
                continue
            try:
                self._dispatch(msg, client, budget)
            except (ValueError, TypeError, RecursionError) as exc:  # what a handler may still raise on odd args
                self._problem("bad_args", client, "timetagged message refused (%s)", type(exc).__name__)
        return len(due)

    # -- counting and logging --

    def _count(self, key: str, n: int = 1) -> None:
        self._counts.add(key, n)

    def _problem(self, key: str, client: _Client, what: str, *args) -> None:
        self._count(key)
        self._warn.warning(f"{key}:{what}", "OSC from %s: " + what, f"{client.address[0]}:{client.address[1]}", *args)

    def _malformed(self, client: _Client, why: str) -> None:
        self._problem("malformed", client, "malformed packet (%s)", why)

    def _admit(self, client_address) -> bool:
        if not self._listening:
            return False
        if self.allow is None or client_address[0] in self.allow:
            return True
        self._count("denied")
        self._warn.warning(f"denied:{client_address[0]}", "OSC from %s dropped: not in --osc-allow",
                           client_address[0])
        return False

    def _handler_failed(self, client_address) -> None:
        # socketserver's last resort: a bug, or a send to a client that vanished. Counted and
        # logged (rate-limited, with the traceback), and the server goes on.
        self._count("errors")
        self._warn.logger.debug("OSC handler error for %s", client_address, exc_info=True)
        self._warn.warning("handler", "OSC handler failed for %s (see debug log)", client_address)

    # -- packets --

    def call_handlers_for_packet(self, data: bytes, client_address) -> list:
        """The hook python-osc's UDP server calls for every datagram; returns replies as
        ``(address, *args)`` tuples, which python-osc sends back to the client."""
        client = _Client(tuple(client_address[:2]), "udp")
        return self._handle_messages(data, client)

    def _handle(self, data: bytes, client: _Client) -> list[bytes]:
        """One packet (a TCP frame); replies as encoded datagrams."""
        return [build_msg(r[0], list(r[1:])).dgram for r in self._handle_messages(data, client)]

    def _handle_messages(self, data: bytes, client: _Client) -> list[tuple]:
        self._count("packets")
        replies: list[tuple] = []
        if not self._work.available():
            self._problem("over_budget", client, "more than %d messages and parameter sets a second: packets "
                          "dropped until the rate falls", WORK_PER_SECOND)
            return replies
        _parsing.current = (self, client)
        try:
            if data.startswith(BUNDLE_PREFIX):
                items = _bundle_items(data)  # the whole bundle checked before any of it applies
                budget = _Budget()
                now = self.clock()
                for due, msg in items:
                    if due == osc_types.IMMEDIATELY or due <= now:
                        replies += self._dispatch(msg, client, budget)
                    elif due - now > self.max_ahead:
                        self._problem("timetag_skew", client, "timetag %.1f s ahead: is the client's clock "
                                      "wrong? applied now", due - now)
                        replies += self._dispatch(msg, client, budget)
                    else:
                        self._schedule(due, msg, client)
            elif data[:1] == b"/":
                replies += self._dispatch(osc_message.OscMessage(data), client, _Budget())
            else:
                self._malformed(client, "neither an OSC message nor a bundle")
        except _Malformed as exc:
            self._malformed(client, str(exc))
        except (osc_message.ParseError, osc_types.ParseError, ValueError, IndexError, struct.error,
                RecursionError) as exc:
            # ValueError covers undecodable UTF-8 in an address or string argument; RecursionError an
            # argument of thousands of nested arrays ("[[[...]]]"), whose repr cannot even be made.
            self._malformed(client, type(exc).__name__)
        finally:
            _parsing.current = None
        return replies

    def _schedule(self, due: float, msg, client: _Client) -> None:
        with self._sched_lock:
            if len(self._scheduled) >= self.max_scheduled:
                full = True
            else:
                full = False
                heapq.heappush(self._scheduled, (due, next(self._seq), msg, client))
        if full:
            self._problem("schedule_full", client, "%d timetagged messages already waiting; dropped %s",
                          self.max_scheduled, msg.address)
        else:
            self._count("scheduled")

    def _dispatch(self, msg, client: _Client, budget: _Budget) -> list[tuple]:
        """One message: a trigger, a parameter, or a pattern over parameters; ``budget`` is what is
        left of its packet's (for timetagged messages, of the frame's that ``poll`` applies them in)."""
        self._count("messages")
        self._work.spend(1)
        budget.messages -= 1
        if budget.messages < 0:
            self._problem("over_budget", client, "more than %d messages in one packet; the rest skipped",
                          MAX_MESSAGES_PER_PACKET)
            return []
        address, args = msg.address, msg.params
        command = self.commands.get(address)
        if command is not None:
            return self._command(command, args, client)
        target = self._targets.get(address)
        if target is not None:
            self._set(target[0], target[1], args, client)
            return []
        if is_pattern(address):
            matches = self._pattern_targets(address, client, budget)
            if matches is None:
                return []
            if len(matches) > budget.sets:
                self._problem("over_budget", client, "patterns in one packet reach more than %d parameters; "
                              "%s skipped", MAX_PATTERN_SETS_PER_PACKET, address[:64])
                budget.sets = 0
                return []
            budget.sets -= len(matches)
            self._work.spend(len(matches))
            for param, normalized in matches:
                self._set(param, normalized, args, client)
            if matches:
                return []
        self._problem("unknown_address", client, "unknown address %s", address[:64])
        return []

    def _pattern_targets(self, pattern: str, client: _Client, budget: _Budget) -> tuple | None:
        """The parameters a pattern reaches, from the bounded cache or matched now (linear time:
        ``osc_pattern``); None when malformed or over the packet's budget (counted)."""
        with self._pattern_lock:
            hit = self._pattern_cache.get(pattern)
            if hit is not None:
                self._pattern_cache.move_to_end(pattern)
                return hit
        if budget.new_patterns <= 0:
            self._problem("over_budget", client, "more than %d new patterns in one packet; %s skipped",
                          MAX_NEW_PATTERNS_PER_PACKET, pattern[:64])
            return None
        budget.new_patterns -= 1
        self._work.spend(NEW_PATTERN_WORK)
        try:
            compiled = compile_pattern(pattern)
        except ValueError as exc:
            self._problem("bad_args", client, "bad address pattern %s: %s", pattern[:64], exc)
            return None
        hit = tuple(t for a, t in self._targets.items() if compiled.matches(a))
        with self._pattern_lock:
            self._pattern_cache[pattern] = hit
            while len(self._pattern_cache) > MAX_CACHED_PATTERNS:
                self._pattern_cache.popitem(last=False)
        return hit

    def _set(self, param: Param, normalized: bool, args: list, client: _Client) -> None:
        where = param.address + (NORM_SUFFIX if normalized else "")
        if len(args) != 1:
            self._problem("bad_args", client, "%s takes one value, got %d", where, len(args))
            return
        value = args[0]
        if isinstance(value, str):
            if normalized or param.kind != "enum":
                self._problem("bad_args", client, "%s takes a number, got the string %r", where, value)
                return
        elif isinstance(value, (int, float)):  # bool (T/F) is an int
            if not math.isfinite(value):
                self._problem("bad_value", client, "%s: ignored non-finite value", where)
                return
        else:
            self._problem("bad_args", client, "%s takes a number, got %s", where, type(value).__name__)
            return
        if self.store.set(param.name, value, normalized=normalized, source=client.source):
            self._count("applied")
        else:
            self._count("rejected")  # the store said why (rate-limited)

    # -- actions and the server's own commands --

    def _command(self, action: Action, args: list, client: _Client) -> list[tuple]:
        # Arguments beyond those declared are ignored: a button or a bang sends a value of its own.
        keep = len(action.args) or (1 if action.button else 0)
        try:
            bound = action.bind(args[:keep])
        except ValueError as exc:
            self._problem("bad_args", client, "%s: %s", action.address, exc)
            return []
        if bound is None:  # a button's release
            return []
        if action.name in OSC_COMMANDS:
            return action.run(self, client, **bound) or []  # counted by the command, once it is done
        self.controls.fire(action.name, **bound)
        self._count("triggers")
        return []

    def _subscriber(self, client: _Client, port: int | None, what: str) -> tuple[str, int] | None:
        if port is not None:
            return client.address[0], port
        if client.transport == "tcp":
            self._problem("bad_args", client, "%s over TCP needs the UDP port to send feedback to", what)
            return None
        return client.address

    def _subscribe(self, client: _Client, port: int | None) -> None:
        target = self._subscriber(client, port, "/ffvj/feedback/subscribe")
        if target is None:
            return
        dropped = None
        with self._subscribers_lock:
            self._subscribers.pop(target, None)
            self._subscribers[target] = time.monotonic()
            if len(self._subscribers) > self.max_subscribers:
                dropped = next(iter(self._subscribers))
                del self._subscribers[dropped]
        if self._feedback is not None and self._dump_allowed(client, "/ffvj/feedback/subscribe"):
            self._feedback.put(("dump", target), None)  # a full dump, from the feedback thread
        if dropped is not None:
            self._problem("subscribers_dropped", client, "more than %d feedback subscribers: dropped %s",
                          self.max_subscribers, dropped)
        log.info("OSC feedback subscriber %s:%d", *target)
        self._count("triggers")

    def _unsubscribe(self, client: _Client, port: int | None) -> None:
        target = self._subscriber(client, port, "/ffvj/feedback/unsubscribe")
        if target is not None:
            with self._subscribers_lock:
                self._subscribers.pop(target, None)
            self._count("triggers")

    def _dump_allowed(self, client: _Client, what: str) -> bool:
        """A full dump (thousands of bytes for a 16-byte request) at most once a second per client IP
        and command, so a LAN-exposed ffvj cannot be used to reflect traffic at someone else."""
        now = time.monotonic()
        key = (client.address[0], what)
        with self._subscribers_lock:
            if len(self._last_dump) >= MAX_DUMP_CLIENTS and key not in self._last_dump:
                # Forget only those whose second is over; a flood of (spoofed) sources past that waits.
                self._last_dump = {k: t for k, t in self._last_dump.items() if now - t < DUMP_INTERVAL}
            if now - self._last_dump.get(key, -math.inf) < DUMP_INTERVAL or len(self._last_dump) >= MAX_DUMP_CLIENTS:
                allowed = False
            else:
                self._last_dump[key] = now
                allowed = True
        if not allowed:
            self._problem("over_budget", client, "%s more than once a second: a dump skipped", what)
        else:
            self._work.spend(2 * len(self.params))  # what a dump costs: a message or two per parameter
        return allowed

    def _dump(self, client: _Client | None) -> list[tuple]:
        if client is not None:  # asked for by a client (not a new subscriber's dump)
            if not self._dump_allowed(client, "/ffvj/dump"):
                return []
            self._count("triggers")
        targets = self.store.targets()
        return [m for name, param in self._by_name.items() for m in self._feedback_messages(param, targets[name])] + [
            (a.address, float(a.value(self.controls))) for a in self._valued] + list(dict(self._readings).items())

    # -- feedback --

    def _feedback_messages(self, param: Param, value: float) -> list[tuple]:
        native = float(value) if param.kind == "float" else int(round(value))
        out = [(param.address, native)]
        if self.feedback_norm and param.kind in ("float", "int"):
            out.append((param.address + NORM_SUFFIX, float(param.to_normalized(value))))
        return out

    def status(self) -> str:
        """One short part of the show's status line."""
        st = self.stats
        bad = sum(st[k] for k in ("unknown_address", "bad_args", "bad_value", "rejected", "malformed", "denied",
                                  "over_budget", "errors"))
        return f"osc {st['packets']} packets, {st['messages']} msgs, {bad} bad"

    def report(self, name: str, value: float) -> None:
        """Send a value that moved without a store change (an LFO's output, a reading) as feedback,
        rate-capped like every other change. Called by the render loop; never blocks."""
        reading = READINGS.get(name)
        if reading is not None:
            self._readings[reading.address] = value
            if self._listening and self._feedback is not None:
                self._feedback.put(("value", reading.address), value)
            return
        self._on_change(name, value, "lfo")

    def reading(self, address: str) -> float:
        """A reading's last value (0 before the first report)."""
        return float(self._readings.get(address, 0.0))

    def _on_change(self, name: str, value: float, source: str) -> None:
        """The store's listener: runs on whichever thread set the value, so it only records it."""
        if not self._listening or name not in self._by_name:
            return
        if source != "lfo":
            # The store's value, not the argument: listeners of two racing sets may run in either
            # order, but whichever runs last reads the value that won, so feedback ends true.
            value = self.store.get(name)
        self._feedback.put(name, value)

    def _echo_action_values(self) -> None:
        """Values actions set (the tempo: tap, /ffvj/bpm, MIDI clock) are no store changes: the render
        loop's poll notices them moving and sends them as feedback, rate-capped like the rest."""
        if self._feedback is None:
            return
        for action in self._valued:
            value = float(action.value(self.controls))
            if self._action_values.get(action.address) != value:
                self._action_values[action.address] = value
                self._feedback.put(("value", action.address), value)

    def _send_feedback(self, ready: dict) -> None:
        """The feedback thread: changed values to every target and subscriber, full dumps to new subscribers."""
        dumps = [key[1] for key in ready if isinstance(key, tuple) and key[0] == "dump"]
        dgrams = [build_msg(a, [v]).dgram for name, value in ready.items() if not isinstance(name, tuple)
                  for a, v in self._feedback_messages(self._by_name[name], value)]
        dgrams += [build_msg(key[1], [float(value)]).dgram for key, value in ready.items()
                   if isinstance(key, tuple) and key[0] == "value"]
        if dgrams:
            for target in self._feedback_targets + [t for t in self.subscribers if t not in self._feedback_targets]:
                self._send(target, dgrams)
        if dumps:
            full = [build_msg(a, [v]).dgram for a, v in self._dump(None)]
            for target in dumps:
                self._send(target, full)

    def _send(self, target: tuple[str, int], dgrams: list[bytes]) -> None:
        sock = self._udp.socket
        sent = 0
        for d in dgrams:
            try:
                sock.sendto(d, target)
                sent += 1
            except OSError as exc:
                # A tablet that left the network: count it, tell the log now and then, go on.
                self._count("feedback_errors")
                self._warn.warning(f"feedback:{target}", "OSC feedback to %s:%d failed: %s", *target, exc)
                break
        self._count("feedback_sent", sent)


# The server's own commands (not show actions: they act on this server and the client that sent them).
# ``run(server, client, **args)``.
_PORT = Arg("port", int, "UDP port to send feedback to (absent: the port the message came from)", default=None,
            min=1, max=65535)
OSC_COMMANDS: dict[str, Action] = {a.name: a for a in (
    Action("feedback.subscribe", "send every change to this client's IP at PORT, and a full dump now",
           OscServer._subscribe, (_PORT,), thread="osc"),
    Action("feedback.unsubscribe", "stop sending feedback to this client's IP at PORT", OscServer._unsubscribe,
           (_PORT,), thread="osc"),
    Action("dump", "send every current value back to the asker", OscServer._dump, thread="osc"),
)}
