"""OSC control: every parameter of the registry at its own address, over UDP (and TCP with SLIP).

This module is the address space: what each address does (parameters, actions, the server's own
commands), feedback, subscriptions and timetagged messages. The sockets, the SLIP framing and the
wire format of a packet are ``osc_transport``'s; ``OscServer`` owns its listeners and hands them
its packet handler, and nothing flows back into the transport but replies.

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
dropped and counted. Nothing raises into a server thread or the render loop, nothing blocks. What
one packet may cost is bounded by ``osc_transport`` (its size, bundle depth, 256 messages) and
here (the sets and new patterns it may reach), and what all clients together may cost a second
by ``WORK_PER_SECOND``.
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
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass

from pythonosc.osc_message import OscMessage
from pythonosc.osc_message_builder import build_msg
from pythonosc.parsing import osc_types

from ..options import option
from ..options import port as port_number
from ..phi import Param
from ..reporting import Counts, RateLimitedLog
from .actions import ACTIONS, Action, Arg
from .osc_pattern import compile_pattern, is_pattern
from .osc_transport import (
    MAX_MESSAGES_PER_PACKET,
    Client,
    Malformed,
    Receiver,
    TcpListener,
    UdpListener,
    read_packet,
)
from .readings import READINGS
from .service import LatestValueSender, Listen, Service

log = logging.getLogger(__name__)

NORM_SUFFIX = "/norm"
STAT_KEYS = ("packets", "messages", "applied", "triggers", "unknown_address", "bad_args", "bad_value",
             "rejected", "malformed", "denied", "scheduled", "schedule_full", "timetag_skew",
             "feedback_sent", "feedback_errors", "subscribers_dropped", "over_budget", "errors")
# What one packet may cost the OSC thread besides its messages (at most MAX_MESSAGES_PER_PACKET, or
# the transport calls it malformed): sets and new patterns beyond these are counted over_budget and
# skipped. A 65 KB bundle of 2,728 "/ffvj/*/*" once made 253,704 parameter sets and 2.2 s of
# OSC-thread time, starving the render loop of the GIL.
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

    host: str = option("127.0.0.1", "address to listen on; 0.0.0.0 lets a tablet on the LAN in")
    port: int = option(9000, "UDP port (default: 9000, or a free one, said at start, when another show has it)",
                       parse=port_number, asked=True)
    tcp_port: int | None = option(None, "also listen on TCP with SLIP framing", parse=port_number)
    allow: tuple[str, ...] = option((), "only these clients may send (repeatable; default: anyone who can reach the "
                                        "port)", metavar="IP", repeat=True)
    feedback: tuple[str, ...] = option((), "send every parameter change here (repeatable)", metavar="HOST:PORT",
                                       repeat=True)
    feedback_rate: float = option(30.0, "feedback messages/s per parameter")
    query_port: int | None = option(9010, "OSCQuery HTTP port (default: 9010, or a free one when another show has "
                                          "it)", flag="--oscquery-port", parse=port_number, asked=True)
    mdns: bool | None = None  # None: when zeroconf is there and the show listens beyond loopback (``oscquery``)


# -- what work may cost ---------------------------------------------------------------------------

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


@dataclass
class _PacketBudget:
    """What is left of one packet's allowance (see MAX_*_PER_PACKET); ``poll`` gives the timetagged
    messages due in one frame one allowance between them."""
    messages: int = MAX_MESSAGES_PER_PACKET
    sets: int = MAX_PATTERN_SETS_PER_PACKET
    new_patterns: int = MAX_NEW_PATTERNS_PER_PACKET


# -- the server's state, each part with its own lock ----------------------------------------------

class _PatternCache:
    """The targets each address pattern reached, for the MAX_CACHED_PATTERNS patterns used last:
    matching a new pattern walks every address, and surfaces repeat the same few."""

    def __init__(self) -> None:
        self._targets: collections.OrderedDict[str, tuple] = collections.OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._targets)

    def get(self, pattern: str) -> tuple | None:
        with self._lock:
            targets = self._targets.get(pattern)
            if targets is not None:
                self._targets.move_to_end(pattern)
            return targets

    def put(self, pattern: str, targets: tuple) -> None:
        with self._lock:
            self._targets[pattern] = targets
            while len(self._targets) > MAX_CACHED_PATTERNS:
                self._targets.popitem(last=False)


class _Waiting:
    """Messages whose timetag is still ahead, earliest first (a heap of (due, seq, message,
    client)); at most ``limit``. The OSC threads add, the render loop's ``poll`` takes."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._heap: list = []
        self._lock = threading.Lock()
        self._seq = itertools.count()  # equal timetags keep their order, and messages are never compared

    def __bool__(self) -> bool:
        return bool(self._heap)  # without the lock: poll's every-frame check, exact enough

    def add(self, due: float, msg: OscMessage, client: Client) -> bool:
        """False when ``limit`` messages already wait (the message is not kept)."""
        with self._lock:
            if len(self._heap) >= self.limit:
                return False
            heapq.heappush(self._heap, (due, next(self._seq), msg, client))
            return True

    def take_due(self, now: float) -> list[tuple[OscMessage, Client]]:
        with self._lock:
            due = []
            while self._heap and self._heap[0][0] <= now:
                _when, _seq, msg, client = heapq.heappop(self._heap)
                due.append((msg, client))
            return due


class _Subscribers:
    """The feedback subscribers' (IP, port), oldest first, at most ``limit``: the feedback thread
    reads them while the OSC threads add and remove."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._targets: dict[tuple[str, int], None] = {}  # a dict as an insertion-ordered set
        self._lock = threading.Lock()

    def __iter__(self):
        with self._lock:
            return iter(list(self._targets))

    def add(self, target: tuple[str, int]) -> tuple[str, int] | None:
        """Add (or renew) ``target``; returns the oldest subscriber, dropped to stay under ``limit``."""
        with self._lock:
            self._targets.pop(target, None)
            self._targets[target] = None
            if len(self._targets) <= self.limit:
                return None
            oldest = next(iter(self._targets))
            del self._targets[oldest]
            return oldest

    def remove(self, target: tuple[str, int]) -> None:
        with self._lock:
            self._targets.pop(target, None)


class _DumpTimes:
    """When each (client IP, command) last had a full dump: one a DUMP_INTERVAL at most, because a
    dump is thousands of bytes for a 16-byte request and a LAN-exposed ffvj must not be usable to
    reflect traffic at someone else. Remembers MAX_DUMP_CLIENTS at most."""

    def __init__(self) -> None:
        self._last: dict[tuple[str, str], float] = {}
        self._lock = threading.Lock()

    def allow(self, ip: str, what: str, now: float) -> bool:
        key = (ip, what)
        with self._lock:
            if len(self._last) >= MAX_DUMP_CLIENTS and key not in self._last:
                # Forget only those whose interval is over; a flood of (spoofed) sources past that waits.
                self._last = {k: t for k, t in self._last.items() if now - t < DUMP_INTERVAL}
            if now - self._last.get(key, -math.inf) < DUMP_INTERVAL or len(self._last) >= MAX_DUMP_CLIENTS:
                return False
            self._last[key] = now
            return True


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
        self.max_ahead, self.clock = max_ahead, clock

        # The address space: parameters (at their address and at address/norm), actions and commands.
        self.params: dict[str, Param] = {p.address: p for p in self.store.registry.values()}
        self._targets: dict[str, tuple[Param, bool]] = {}  # address → (parameter, normalized?)
        for addr, p in self.params.items():
            self._targets[addr] = (p, False)
            self._targets[addr + NORM_SUFFIX] = (p, True)
        self._by_name = {p.name: p for p in self.params.values()}
        self.commands: dict[str, Action] = {a.address: a for a in (*ACTIONS.values(), *OSC_COMMANDS.values())}
        self._valued = [a for a in ACTIONS.values() if a.value is not None]  # /ffvj/bpm: in dumps and feedback
        self._readings: dict[str, float] = {}  # readings' addresses → their last values (``report``)
        self._action_values: dict[str, float] = {}  # valued actions' addresses → the value last fed back

        self._work = _WorkBudget()
        self._pattern_cache = _PatternCache()
        self._waiting = _Waiting(max_scheduled)
        self._subscribers = _Subscribers(max_subscribers)
        self._dump_times = _DumpTimes()
        self._counts = Counts(*STAT_KEYS)
        self._warn = RateLimitedLog(log)

        self._feedback_targets: list[tuple[str, int]] = []  # the resolved ``feedback`` targets
        self._feedback: LatestValueSender | None = None
        self._udp: UdpListener | None = None
        self._tcp: TcpListener | None = None
        self._listening = False

    # -- lifecycle --

    def listens(self) -> tuple[Listen, ...]:
        tcp = () if self._tcp_port is None else (Listen("--osc-tcp-port", self.host, self._tcp_port, "tcp"),)
        return (Listen("--osc-port", self.host, self._port, "udp"),) + tcp

    def _start(self) -> None:
        """Bind and start the threads. Raises OSError/ValueError at once if it cannot."""
        self._feedback_targets = [_resolve_udp(h, p) for h, p in self._feedback_spec]
        receiver = Receiver(self._handle_messages, self._admit, self._problem)
        self._udp = _bind(UdpListener, self.host, self._port, receiver,
                          "is another ffvj running? choose another --osc-port")
        if self._tcp_port is not None:
            self._tcp = _bind(TcpListener, self.host, self._tcp_port, receiver, "choose another --osc-tcp-port")
        self._listening = True  # before the threads start: until now, ``_admit`` turns every client away
        self._feedback = LatestValueSender(self._send_feedback, self.feedback_interval, "ffvj-osc-feedback")
        self.store.add_listener(self._on_change)
        for listener in self._listeners():
            listener.start()
        log.info("OSC on udp %s:%d%s; feedback to %s", self.host, self.port,
                 f" and tcp (SLIP) {self.host}:{self.tcp_port}" if self._tcp else "",
                 ", ".join(f"{h}:{p}" for h, p in self._feedback_targets) or "subscribers only")

    def _close(self) -> None:
        self._listening = False
        self.store.remove_listener(self._on_change)
        if self._feedback is not None:
            self._feedback.close()  # before the UDP socket it sends from
        for listener in self._listeners():
            listener.close()

    def _listeners(self) -> list:
        return [listener for listener in (self._udp, self._tcp) if listener is not None]

    @property
    def port(self) -> int:
        """The UDP port actually bound (useful with ``port=0``)."""
        return self._udp.port if self._udp else self._port

    @property
    def tcp_port(self) -> int | None:
        return self._tcp.port if self._tcp else self._tcp_port

    @property
    def stats(self) -> dict[str, int]:
        return self._counts.snapshot()

    @property
    def subscribers(self) -> list[tuple[str, int]]:
        return list(self._subscribers)

    @property
    def feedback_targets(self) -> list[tuple[str, int]]:
        return list(self._feedback_targets)

    # -- the render loop's side --

    def poll(self, now: float | None = None) -> int:
        """Apply the timetagged messages now due; call once per frame. Returns how many applied.
        ``now`` is wall-clock seconds (default ``clock()``, i.e. ``time.time()``)."""
        self._echo_action_values()
        if not self._waiting:  # the common case: nothing waiting, no lock taken
            return 0
        due = self._waiting.take_due(self.clock() if now is None else now)
        # On the render loop: every due message of this frame shares one packet's budget, and the
        # work budget is asked first (a bundle of 256 timetagged "/ffvj/*/*" once made 25,344 sets
        # in one poll). Replies (a deferred /dump) have nowhere to go: dropped.
        budget = _PacketBudget()
        for msg, client in due:
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

    def _problem(self, key: str, client: Client, what: str, *args) -> None:
        self._count(key)
        self._warn.warning(f"{key}:{what}", "OSC from %s: " + what, f"{client.address[0]}:{client.address[1]}", *args)

    def _malformed(self, client: Client, why: str) -> None:
        self._problem("malformed", client, "malformed packet (%s)", why)

    def count_denied(self) -> None:
        """A client another port of the show turned away by this server's ``allow`` list (OSCQuery's HTTP):
        counted with OSC's own denials, as every port that list guards is."""
        self._count("denied")

    def _admit(self, client_address) -> bool:
        """Whether a client may send (OSC, and OSCQuery's HTTP): only while listening, and only from
        ``allow`` where one is given."""
        if not self._listening:
            return False
        if self.allow is None or client_address[0] in self.allow:
            return True
        self._count("denied")
        self._warn.warning(f"denied:{client_address[0]}", "OSC from %s dropped: not in --osc-allow",
                           client_address[0])
        return False

    # -- packets --

    def call_handlers_for_packet(self, data: bytes, client_address) -> list[tuple]:
        """One datagram from ``client_address`` handled as if it had come in over UDP, without a
        socket; replies as ``(address, *args)`` tuples. (The name is python-osc's dispatcher hook.)"""
        return self._handle_messages(data, Client(tuple(client_address[:2]), "udp"))

    def _handle_messages(self, data: bytes, client: Client) -> list[tuple]:
        """The listeners' handler: one packet, checked whole before any of it applies; the replies
        as ``(address, *args)`` tuples."""
        self._count("packets")
        if not self._work.available():
            self._problem("over_budget", client, "more than %d messages and parameter sets a second: packets "
                          "dropped until the rate falls", WORK_PER_SECOND)
            return []
        replies: list[tuple] = []
        try:
            items = read_packet(data)
            budget, now = _PacketBudget(), self.clock()
            for due, msg in items:
                replies += self._at_its_time(due, msg, client, budget, now)
        except Malformed as exc:
            self._malformed(client, str(exc))
        except (ValueError, RecursionError) as exc:
            # What a handler may still raise on arguments python-osc parsed: thousands of nested
            # arrays ("[[[...]]]") make even the error message's repr fail.
            self._malformed(client, type(exc).__name__)
        return replies

    def _at_its_time(self, due: float, msg: OscMessage, client: Client, budget: _PacketBudget,
                     now: float) -> list[tuple]:
        """A message now, or kept for ``poll`` until its timetag if that is ahead (and not so far
        ahead that the client's clock must be wrong)."""
        if due == osc_types.IMMEDIATELY or due <= now:
            return self._dispatch(msg, client, budget)
        if due - now > self.max_ahead:
            self._problem("timetag_skew", client, "timetag %.1f s ahead: is the client's clock wrong? applied now",
                          due - now)
            return self._dispatch(msg, client, budget)
        if self._waiting.add(due, msg, client):
            self._count("scheduled")
        else:
            self._problem("schedule_full", client, "%d timetagged messages already waiting; dropped %s",
                          self._waiting.limit, msg.address)
        return []

    def _dispatch(self, msg: OscMessage, client: Client, budget: _PacketBudget) -> list[tuple]:
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
        elif not (is_pattern(address) and self._set_matching(address, args, client, budget)):
            self._problem("unknown_address", client, "unknown address %s", address[:64])
        return []

    def _set_matching(self, pattern: str, args: list, client: Client, budget: _PacketBudget) -> bool:
        """Set every parameter a pattern reaches, within the packet's budget. False if it reaches
        none, which makes it an unknown address; a pattern that is malformed or over the budget is
        counted here (True: dealt with)."""
        matches = self._pattern_targets(pattern, client, budget)
        if matches is None:
            return True
        if len(matches) > budget.sets:
            self._problem("over_budget", client, "patterns in one packet reach more than %d parameters; "
                          "%s skipped", MAX_PATTERN_SETS_PER_PACKET, pattern[:64])
            budget.sets = 0
            return True
        budget.sets -= len(matches)
        self._work.spend(len(matches))
        for param, normalized in matches:
            self._set(param, normalized, args, client)
        return bool(matches)

    def _pattern_targets(self, pattern: str, client: Client, budget: _PacketBudget) -> tuple | None:
        """The parameters a pattern reaches, from the bounded cache or matched now (linear time:
        ``osc_pattern``); None when malformed or over the packet's budget (counted)."""
        cached = self._pattern_cache.get(pattern)
        if cached is not None:
            return cached
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
        matches = tuple(t for a, t in self._targets.items() if compiled.matches(a))
        self._pattern_cache.put(pattern, matches)
        return matches

    def _set(self, param: Param, normalized: bool, args: list, client: Client) -> None:
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

    def _command(self, action: Action, args: list, client: Client) -> list[tuple]:
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

    def _subscriber(self, client: Client, port: int | None, what: str) -> tuple[str, int] | None:
        if port is not None:
            return client.address[0], port
        if client.transport == "tcp":
            self._problem("bad_args", client, "%s over TCP needs the UDP port to send feedback to", what)
            return None
        return client.address

    def _subscribe(self, client: Client, port: int | None) -> None:
        target = self._subscriber(client, port, "/ffvj/feedback/subscribe")
        if target is None:
            return
        dropped = self._subscribers.add(target)
        if self._feedback is not None and self._dump_allowed(client, "/ffvj/feedback/subscribe"):
            self._feedback.put(("dump", target), None)  # a full dump, from the feedback thread
        if dropped is not None:
            self._problem("subscribers_dropped", client, "more than %d feedback subscribers: dropped %s",
                          self._subscribers.limit, dropped)
        log.info("OSC feedback subscriber %s:%d", *target)
        self._count("triggers")

    def _unsubscribe(self, client: Client, port: int | None) -> None:
        target = self._subscriber(client, port, "/ffvj/feedback/unsubscribe")
        if target is not None:
            self._subscribers.remove(target)
            self._count("triggers")

    def _dump_allowed(self, client: Client, what: str) -> bool:
        """A full dump at most once a DUMP_INTERVAL per client IP and command (see ``_DumpTimes``)."""
        if not self._dump_times.allow(client.address[0], what, time.monotonic()):
            self._problem("over_budget", client, "%s more than once a second: a dump skipped", what)
            return False
        self._work.spend(2 * len(self.params))  # what a dump costs: a message or two per parameter
        return True

    def _dump(self, client: Client | None) -> list[tuple]:
        """Every current value as ``(address, value)``: asked for by ``client``, or (None) for a new
        subscriber, which ``_subscribe`` has already rate-limited."""
        if client is not None:
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

    def figures(self) -> dict[str, float]:
        st = self.stats
        bad = sum(st[k] for k in ("unknown_address", "bad_args", "bad_value", "rejected", "malformed", "denied",
                                  "over_budget", "errors"))
        return {"osc_packets": st["packets"], "osc_messages": st["messages"], "osc_bad": bad}

    def status(self) -> str:
        """One short part of the show's status line."""
        f = self.figures()
        return f"osc {f['osc_packets']} packets, {f['osc_messages']} msgs, {f['osc_bad']} bad"

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
        """The feedback thread: changed values to every target and subscriber, full dumps to new
        subscribers. ``ready`` maps a parameter's name, ("value", address) or ("dump", target) to
        its latest value."""
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
        sent = 0
        for dgram in dgrams:
            try:
                self._udp.send(dgram, target)
                sent += 1
            except OSError as exc:
                # A tablet that left the network: count it, tell the log now and then, go on.
                self._count("feedback_errors")
                self._warn.warning(f"feedback:{target}", "OSC feedback to %s:%d failed: %s", *target, exc)
                break
        self._count("feedback_sent", sent)


def _bind(listener: type[UdpListener | TcpListener], host: str, port: int, receiver: Receiver, hint: str):
    """A listener bound at once, or OSError saying which port and what to do (the CLI's flag)."""
    try:
        return listener(host, port, receiver)
    except OSError as exc:
        raise OSError(exc.errno, f"cannot listen for OSC on {listener.protocol} {host}:{port}: {exc.strerror}; "
                                 f"{hint}") from exc


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
