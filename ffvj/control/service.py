"""What every control service (the OSC server, the OSCQuery server, the MIDI input) shares.

``Service`` is their lifecycle, written once: ``start()`` binds or opens at once and raises there, at
start-up, if it cannot (having closed what it half-opened); ``close()`` is idempotent; a service is a
context manager. Subclasses implement ``_start`` and ``_close``. The render loop calls these hooks on
every service: ``poll()`` once per frame, ``report(name, value)`` for a value an LFO moved (no store
change announced it), ``status()`` for the status line, and, for surfaces that show the show (the web
page): ``picture_levels()`` once per frame then ``picture(slot, pictures)`` with the levels it asked for,
and ``show_status(figures)`` twice a second. Every hook runs on the render loop: each must be quick.

``LatestValueSender`` is how a service talks back without ever making the talker wait: the latest
value per key, sent from a thread of its own, each key at most once per ``interval``; a key's last
value always goes out. The OSC feedback and the MIDI LED echo are both one.

``stop_server(server, timeout)`` stops a ``socketserver`` server's ``serve_forever`` without waiting
for ever: socketserver's own ``shutdown()`` waits with no timeout for a handler that may be stuck.
``Listen``, ``port_in_use`` and ``check_ports``: the ports services will take, checked all at once at
start-up so that every busy one is named in one error. ``LimitedConnections`` bounds a threading
``socketserver`` (the OSC TCP server): connections at once, idle time, the listen backlog, and who may
connect (the HTTP surfaces have their own in ``control/http.py``). ``browser_refusal``: the rule that
keeps scripts of other web sites out of every HTTP surface. ``is_loopback(host)``: whether
a server on ``host`` is reachable from this machine only (OSCQuery's mDNS, the web page's token).
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import math
import socket
import threading
import time
import urllib.parse
from collections.abc import Callable, Hashable
from dataclasses import dataclass

log = logging.getLogger(__name__)


def is_loopback(host: str) -> bool:
    """Whether ``host`` is this machine only (127.0.0.1, ::1, localhost): who else could reach it."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def local_names(server_host: str) -> frozenset[str]:
    """The host names a request to a server on ``server_host`` may carry in its ``Host`` header besides
    an IP address: ``localhost``, the server's own host name, and this machine's name (with ``.local``,
    as ffvj announces it over mDNS, so an OSCQuery client that found the show there keeps working)."""
    machine = socket.gethostname().lower().rstrip(".")
    names = {"localhost", machine, f"{machine.split('.')[0]}.local"}
    if server_host:
        names.add(server_host.lower().strip("[]").rstrip("."))
    return frozenset(names)


def host_name(host: str) -> str:
    """A Host header's name without its port, lower case: "127.0.0.1:9020" → "127.0.0.1",
    "[::1]:9020" → "::1", "Studio.local." → "studio.local"."""
    if host.startswith("["):
        name = host[1:].split("]")[0]
    else:
        name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    return name.lower().rstrip(".")


def _is_address(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def browser_refusal(host: str | None, origin: str | None, names: frozenset[str] | None) -> str | None:
    """Why a request must be refused because a browser may be sending it for another site, or None.

    A browser lets any web page send requests and open WebSockets to 127.0.0.1 (no CORS for sockets),
    so a site the performer visits could play the show or stream its values. Three rules stop it:

    - ``Origin`` (browsers send it with every WebSocket and every cross-site request): it must be this
      server itself, ``http(s)://`` + the ``Host`` the request was sent to. ``null`` (an opaque origin:
      a sandboxed iframe on any site, a file) is refused: a page opened from the show never sends it.
    - ``Host`` (DNS rebinding: a site's own name made to resolve to 127.0.0.1 sends requests that are
      "same-origin" and carry no ``Origin`` at all): it must be an IP address or one of ``names``
      (``local_names``); None skips this rule (a server that asks for a secret token instead).
    - No ``Host`` at all: only a program, never a browser, leaves it out (HTTP/1.0 tools): admitted
      unless it claims an ``Origin``.
    """
    if origin is not None:
        if origin.strip().lower() == "null":
            return "a page with an opaque origin (a sandboxed frame, a local file) may not reach the show"
        parts = urllib.parse.urlsplit(origin.strip())
        if parts.scheme not in ("http", "https") or not host or parts.netloc.lower() != host.lower():
            return "a page of another site may not reach the show"
    if names is not None and host:
        name = host_name(host)
        if not _is_address(name) and name not in names:
            return f"this server answers to its own addresses and names, not {host[:80]!r}"
    return None


@dataclass(frozen=True)
class Listen:
    """A port a service will listen on, with the command line's option that chooses it."""

    flag: str  # "--web-port"
    host: str
    port: int
    transport: str = "tcp"  # or "udp"

    def __str__(self) -> str:
        return f"{self.flag} {self.port} ({self.transport} {self.host})"


def port_in_use(listen: Listen) -> bool:
    """Whether ``listen``'s port is taken now (by another ffvj, say), tried as its server will bind it:
    TCP with SO_REUSEADDR (a port left in TIME_WAIT by the last show is free), UDP without. Port 0 (any
    free port) never is; an address this machine lacks is left for the server's own error."""
    if listen.port == 0:
        return False
    family = socket.AF_INET6 if ":" in listen.host else socket.AF_INET
    kind = socket.SOCK_DGRAM if listen.transport == "udp" else socket.SOCK_STREAM
    with socket.socket(family, kind) as probe:
        if kind == socket.SOCK_STREAM:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((listen.host, listen.port))
        except OSError as exc:
            return exc.errno == errno.EADDRINUSE
    return False


def check_ports(listens) -> None:
    """Raise OSError naming every port of ``listens`` that is in use, with its option, all at once (a
    second ffvj once had to be started three times, learning of one busy port each time)."""
    taken = [listen for listen in listens if port_in_use(listen)]
    if taken:
        raise OSError("in use (is another ffvj running?): " + ", ".join(map(str, taken)) + "; choose other "
                      "ports with " + ", ".join(dict.fromkeys(t.flag for t in taken)) + ", or stop the other show")


def stop_server(server, timeout: float = 2.0, what: str = "server") -> bool:
    """``server.shutdown()`` bounded by ``timeout`` seconds; False (and logged) if it did not return:
    a handler is stuck, and the server's threads are daemons that end with the process."""
    stopper = threading.Thread(target=server.shutdown, name=f"stop {what}", daemon=True)
    stopper.start()
    stopper.join(timeout)
    if stopper.is_alive():
        log.error("%s did not stop within %.0f s (a handler is stuck); closing it anyway", what, timeout)
        return False
    return True


class LimitedConnections:
    """A mixin for ``socketserver.ThreadingMixIn`` servers: at most ``max_connections`` at once (one
    thread each), each closed after ``idle_timeout`` seconds without a byte, a listen backlog of
    ``request_queue_size``, and only clients ``admit(client_address)`` lets in. When full, a new
    connection is refused (``when_full = "refuse"``: long-lived controllers keep their links) or
    the oldest one is closed to make room (``"evict"``: short requests, so a flood of idle
    connections can never keep a real client out); either is counted in ``turned_away``.

    Without these, 1,029 idle connections exhausted the show's file descriptors (the video source
    froze, preset saves failed) and 3,000 were all accepted. A handler's failure goes to
    ``handler_failed``."""

    max_connections = 16
    idle_timeout = 10.0
    request_queue_size = 16
    when_full = "refuse"
    turned_away = 0  # connections refused or evicted because the server was full

    def admit(self, client_address) -> bool:
        return True

    def __init__(self, *args, **kwargs):
        self._links_lock = threading.Lock()
        self._links: dict = {}  # the open connections' sockets, oldest first (the values are unused)
        super().__init__(*args, **kwargs)  # the socketserver: binds and listens

    def handler_failed(self, request, client_address) -> None:
        log.debug("connection from %s failed", client_address, exc_info=True)

    def _forget(self, request) -> None:
        with self._links_lock:
            self._links.pop(request, None)

    @property
    def connections(self) -> int:
        with self._links_lock:
            return len(self._links)

    def verify_request(self, request, client_address) -> bool:
        if not self.admit(client_address):
            return False
        links = self._links
        evicted = None
        with self._links_lock:
            if len(links) >= self.max_connections:
                self.turned_away += 1
                if self.when_full != "evict":
                    return False
                evicted = next(iter(links))
                del links[evicted]
            links[request] = None
        if evicted is not None:
            try:
                evicted.shutdown(socket.SHUT_RDWR)  # its thread's read returns at once; the thread closes it
            except OSError:
                pass  # already gone
        request.settimeout(self.idle_timeout)
        return True

    def process_request(self, request, client_address) -> None:
        try:
            super().process_request(request, client_address)  # starts the connection's thread
        except BaseException:
            self._forget(request)  # no thread will: the slot would be lost for good
            raise

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._forget(request)

    def handle_error(self, request, client_address) -> None:
        self.handler_failed(request, client_address)


class Service:
    def __init__(self) -> None:
        self._started = self._closed = False

    def start(self):
        """Start (idempotent). Raises at once if it cannot, having closed what it had opened."""
        if self._closed:
            raise RuntimeError(f"this {type(self).__name__} was closed; make a new one")
        if not self._started:
            self._started = True
            try:
                self._start()
            except BaseException:
                try:
                    self.close()
                except Exception:  # noqa: BLE001 — the start's own error is the one to report
                    log.exception("%s: closing after a failed start failed too", type(self).__name__)
                raise
        return self

    def close(self) -> None:
        """Stop and release everything; safe to call more than once, and before ``start``."""
        if self._closed:
            return
        self._closed = True
        if self._started:
            self._close()

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def started(self) -> bool:
        return self._started

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    def listens(self) -> tuple[Listen, ...]:
        """The ports ``start`` will listen on (checked all at once before any service starts)."""
        return ()

    # The render loop's hooks: nothing to do unless a service says otherwise.
    def poll(self) -> None:
        """Once per frame, on the render loop (OSC applies its timetagged bundles that are due)."""

    def report(self, name: str, value: float) -> None:
        """A value that moved without a store change (an LFO's), for surfaces that show values."""

    def status(self) -> str | None:
        """A short part of the status line, or None."""
        return None

    def figures(self) -> dict[str, float]:
        """The numbers behind ``status``, named ``<surface>_<what>`` (``osc_packets``): what a monitor reads
        (``RunStats.figures``, ``--status-format json``) instead of parsing the line."""
        return {}

    def picture_levels(self) -> tuple[int, ...]:
        """The levels (0: the picture) whose picture this service would take this frame; asked once per
        frame, so a preview that wants 15 fps asks only every other frame of a 30 fps show."""
        return ()

    def picture(self, slot: int, pictures: dict) -> None:
        """``{level: (pixel format, array)}`` for the levels ``picture_levels`` asked for: arrays the
        render loop no longer touches (the sinks' own readback where one exists). Must only hand off."""

    def show_status(self, figures: dict) -> None:
        """The show's figures (``RunStats.figures`` with the surfaces' and sinks' health), twice a second."""

    def _start(self) -> None:
        raise NotImplementedError

    def _close(self) -> None:
        pass


class LatestValueSender:
    """``put(key, value)`` from any thread never waits on the sending; one thread calls
    ``send({key: value, ...})`` with what is ready: the latest value of each key whose last send is at
    least ``interval`` seconds ago. A failing ``send`` is logged with its traceback and the sender goes on
    (a service counts its own send errors inside ``send``)."""

    def __init__(self, send: Callable[[dict], None], interval: float, name: str) -> None:
        if not interval >= 0:
            raise ValueError(f"a send interval must be ≥ 0 seconds, not {interval}")
        self._send, self.interval = send, interval
        self._pending: dict[Hashable, object] = {}
        self._last_sent: dict[Hashable, float] = {}
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def put(self, key: Hashable, value: object) -> None:
        with self._cond:
            if not self._closed:
                self._pending[key] = value
                self._cond.notify()

    def _ready(self) -> dict | None:
        """Wait until some pending value may go out; None once closed."""
        with self._cond:
            while not self._closed:
                now = time.monotonic()
                ready = {k: v for k, v in self._pending.items()
                         if now - self._last_sent.get(k, -math.inf) >= self.interval}
                if ready:
                    for k in ready:
                        del self._pending[k]
                        self._last_sent[k] = now
                    # Keys that no longer hold anything back are forgotten: the table stays small
                    # however many keys (feedback subscribers, say) come and go.
                    self._last_sent = {k: t for k, t in self._last_sent.items() if now - t < self.interval}
                    return ready
                timeout = None
                if self._pending:  # sleep until the earliest pending value is allowed out
                    timeout = max(0.0, min(self._last_sent[k] for k in self._pending) + self.interval - now)
                self._cond.wait(timeout)
        return None

    def _run(self) -> None:
        while (ready := self._ready()) is not None:
            try:
                self._send(ready)
            except Exception:  # noqa: BLE001 — one bad batch must not end the feedback for the show
                log.exception("%s: sending failed", self._thread.name)

    def close(self, timeout: float = 1.0) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout)
