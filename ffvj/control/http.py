"""One HTTP and WebSocket server for the surfaces served over HTTP (the web page, OSCQuery): aiohttp on a
thread and event loop of its own, with one set of limits and one rule for who may ask.

Contract
--------
``HttpServer(what, host, port, flag, fix, allow=None, names=None, on_denied=None, limits=Limits(),
tasks=())`` is a ``Service``: ``start()`` binds at once and raises ``OSError`` naming ``flag`` and
``fix`` if it cannot; ``close()`` is idempotent and returns within a few seconds whatever the clients
do. Before ``start`` its owner adds its routes to ``app`` (an ``aiohttp.web.Application``); ``tasks``
are coroutine functions run on the server's loop while it serves (cancelled at ``close``);
``call_soon(fn, *args)`` runs ``fn`` on that loop from any thread (nothing once it has stopped).
``stats``: what it refused and closed; ``connections``: the plain HTTP connections open now.

Who may ask (every request, every route, before its handler; each refusal a 403, counted and logged
rate-limited): a client outside ``allow`` (the show's ``--osc-allow``; None: anyone who can reach the
port; ``on_denied(peer)`` hears of each one refused), and any request ``service.browser_refusal`` finds
a browser sends for another web site (a foreign or opaque ``Origin``; a ``Host`` that is neither an
address nor one of ``names``, against DNS rebinding; ``names=None`` skips that rule, for a server that
asks for a secret token instead). A server that needs a token (the web page beyond loopback) checks it
in its own handlers: its page's files are fetched without one.

The limits (``Limits``; docs/RELIABILITY.md lists them): at most ``max_connections`` plain HTTP
connections at once, a new one closing the oldest (a flood of idle ones can never keep a real client
out or use up the show's descriptors), each closed ``connection_time`` seconds after it opened (slow
requests and idle keep-alive alike); request lines and headers as aiohttp bounds them, bodies ≤
``max_body``; a malformed request is answered 400, counted and said in one rate-limited line.
WebSocket sessions leave the plain pool: ``sessions(limit, what)`` caps one kind of them (one more is
answered 503), ``websocket(max_message)`` makes a socket with the shared rules (messages ≤
``max_message``, else closed 1009; a ping after ``ping_interval`` s without a word, and closed if the
answer is not there within half that; no compression), ``upgraded(request, ws)`` runs a session, and
``send(request, ws, data)`` sends with a bound: stuck ``send_timeout`` seconds, the connection is
aborted and ``Dropped`` raised. At ``close`` every open session is closed with 1001.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from ..reporting import Counts, RateLimitedLog
from .service import Service, browser_refusal

log = logging.getLogger(__name__)

STAT_KEYS = ("denied", "foreign", "malformed", "http_closed", "refused", "slow_closed")
CLOSE_TIMEOUT = 1.0  # s a WebSocket's closing handshake may take (a client that never answers it)


@dataclass(frozen=True)
class Limits:
    """The one set of bounds for every HTTP surface (the stricter of the two stacks' where they differed)."""

    max_connections: int = 32  # plain HTTP connections at once; a new one closes the oldest
    connection_time: float = 5.0  # s a plain HTTP connection may stay open, asking or idle
    backlog: int = 64  # connections the kernel may hold unaccepted
    max_body: int = 16 * 1024  # bytes of a request body (both serve GETs only: a bound, not a need)
    max_line: int = 8190  # bytes of the request line and of one header (aiohttp's own defaults)
    max_headers: int = 128
    send_timeout: float = 5.0  # s a send to a WebSocket may be stuck before its connection is aborted
    ping_interval: float = 10.0  # s without a word before a WebSocket is pinged; unanswered for half that: closed


class Dropped(Exception):
    """A WebSocket session ended by a send: its client stopped reading (aborted) or went away."""


class Sessions:
    """The open WebSocket sessions of one kind (the web page's pages, OSCQuery's LISTENs): at most
    ``limit`` at once, a place taken before the handshake and kept until the session ends."""

    def __init__(self, limit: int, what: str, counts: Counts):
        self.limit, self.what, self._counts = limit, what, counts
        self.open = 0  # (changed on the server's loop only)

    def __len__(self) -> int:
        return self.open

    @contextlib.contextmanager
    def place(self):
        """Hold a place for the ``with`` block; when all are held, answer 503 (counted ``refused``)."""
        if self.open >= self.limit:
            self._counts.add("refused")
            raise web.HTTPServiceUnavailable(text=f"{self.limit} {self.what} are open already\n")
        self.open += 1
        try:
            yield
        finally:
            self.open -= 1


class HttpServer(Service):
    def __init__(self, what: str, host: str, port: int, flag: str, fix: str, *,
                 allow: frozenset[str] | None = None, names: frozenset[str] | None = None,
                 on_denied: Callable[[str], None] | None = None, limits: Limits | None = None,
                 tasks: tuple[Callable[[], Coroutine], ...] = ()):
        super().__init__()
        self.what, self.host, self._port, self.flag, self.fix = what, host, port, flag, fix
        self.allow, self.names, self.on_denied = allow, names, on_denied
        self.limits = limits = limits or Limits()
        self._tasks = tasks
        self._counts = Counts(*STAT_KEYS)
        self._warn = RateLimitedLog(log, interval=5.0)
        self.app = web.Application(client_max_size=limits.max_body, middlewares=[self._admission])
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._listener: asyncio.AbstractServer | None = None
        self._bound_port: int | None = None
        self._plain: dict = {}  # plain HTTP connections (aiohttp's RequestHandler) → when each opened
        self._sockets: dict = {}  # the connections that became a WebSocket session → its socket

    # -- lifecycle --

    def _start(self) -> None:
        started = threading.Event()
        failure: list[BaseException] = []
        self._thread = threading.Thread(target=self._serve, args=(started, failure), daemon=True,
                                        name=f"ffvj-http-{self.flag.lstrip('-')}")
        self._thread.start()
        if not started.wait(15):
            raise OSError(f"{self.what}'s server did not start within 15 s on {self.host}:{self._port}")
        if failure:
            exc = failure[0]
            if isinstance(exc, OSError):
                raise OSError(exc.errno, f"cannot serve {self.what} on http {self.host}:{self._port}: "
                                         f"{exc.strerror}; {self.fix}") from exc
            raise exc

    def _serve(self, started: threading.Event, failure: list) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._bind())
        except BaseException as exc:  # noqa: BLE001 — handed to start(), which raises it on its thread
            failure.append(exc)
            loop.run_until_complete(self._unbind())  # before start() hears of it and closes the server
            loop.close()
            started.set()
            return
        started.set()
        tasks = [loop.create_task(self._close_old())] + [loop.create_task(task()) for task in self._tasks]
        try:
            loop.run_forever()
        finally:
            for task in tasks:
                task.cancel()
            loop.run_until_complete(self._unbind())
            loop.close()

    async def _bind(self) -> None:
        limits = self.limits
        self._runner = web.AppRunner(self.app, access_log=None, handle_signals=False, shutdown_timeout=1.0,
                                     logger=_ServerLog(self), max_line_size=limits.max_line,
                                     max_field_size=limits.max_line, max_headers=limits.max_headers)
        await self._runner.setup()
        # Served by asyncio itself (not aiohttp's TCPSite) so that each connection passes _connection,
        # which bounds them: aiohttp alone accepts every connection and keeps it.
        self._listener = await asyncio.get_running_loop().create_server(
            self._connection, self.host, self._port, backlog=limits.backlog, reuse_address=True)
        self._bound_port = self._listener.sockets[0].getsockname()[1]

    async def _unbind(self) -> None:
        if self._listener is not None:
            self._listener.close()
        sockets = list(self._sockets.items())
        if sockets:  # all at once, each bounded: a client that never reads cannot hold the others up
            await asyncio.gather(*(self._goodbye(handler, ws) for handler, ws in sockets))
        if self._runner is not None:
            await self._runner.cleanup()

    async def _goodbye(self, handler, ws: web.WebSocketResponse) -> None:
        try:
            await asyncio.wait_for(ws.close(code=1001, message=b"ffvj is stopping"), CLOSE_TIMEOUT)
        except (asyncio.TimeoutError, ConnectionError):
            if handler.transport is not None:
                handler.transport.abort()

    def _close(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is not None and thread is not None and thread.is_alive():
            try:
                loop.call_soon_threadsafe(loop.stop)
            except RuntimeError:  # the loop closed itself already (a failed start)
                pass
            thread.join(timeout=5)
            if thread.is_alive():
                log.error("%s's server did not stop within 5 s; closing it anyway", self.what)

    @property
    def port(self) -> int:
        return self._bound_port or self._port

    @property
    def stats(self) -> dict[str, int]:
        return self._counts.snapshot()

    @property
    def connections(self) -> int:
        """Plain HTTP connections open now (WebSocket sessions are not among them)."""
        runner = self._runner
        return 0 if runner is None or runner.server is None else len(runner.server.connections) - len(self._sockets)

    def call_soon(self, callback: Callable, *args) -> None:
        """Run ``callback(*args)`` on the server's loop, from any thread; nothing once it has stopped."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(callback, *args)
            except RuntimeError:  # the loop closed in between: the show is stopping
                pass

    # -- connections --

    def _connection(self):
        """A new connection's protocol (aiohttp's request handler), after making room for it."""
        now = time.monotonic()
        # Forget the closed ones (a new one has no transport for a moment: kept a second).
        self._plain = {h: t for h, t in self._plain.items() if h.transport is not None or now - t < 1.0}
        plain = list(self._plain)
        for handler in plain[:max(0, len(plain) - self.limits.max_connections + 1)]:  # the oldest first
            self._drop(handler)
        handler = self._runner.server()
        self._plain[handler] = now
        return handler

    def _drop(self, handler) -> None:
        self._plain.pop(handler, None)
        self._counts.add("http_closed")
        if handler.transport is not None:
            handler.transport.close()
        else:  # accepted in the same burst, its connection_made is queued: close it right after that
            self._loop.call_soon(self._shut, handler)

    @staticmethod
    def _shut(handler) -> None:
        # (aiohttp's force_close alone, before connection_made, leaves the socket open for good)
        if handler.transport is not None:
            handler.transport.close()
        else:
            handler.force_close()

    async def _close_old(self) -> None:
        while True:
            await asyncio.sleep(min(1.0, self.limits.connection_time / 2))
            now = time.monotonic()
            for handler, opened in list(self._plain.items()):
                if now - opened > self.limits.connection_time:
                    self._drop(handler)

    # -- who may ask --

    @web.middleware
    async def _admission(self, request: web.Request, handler):
        peer = request.remote or ""
        if self.allow is not None and peer not in self.allow:
            self._refused("denied", peer, "not on the show's --osc-allow list")
            raise web.HTTPForbidden(text="this address is not on the show's --osc-allow list\n")
        why = browser_refusal(request.headers.get("Host"), request.headers.get("Origin"), self.names)
        if why is not None:  # a script of another web site, through the performer's browser
            self._refused("foreign", peer, why)
            raise web.HTTPForbidden(text=why + "\n")
        return await handler(request)

    def _refused(self, key: str, peer: str, why: str) -> None:
        self._counts.add(key)
        self._warn.warning(key, "%s: a request from %s refused: %s", self.what, peer, why)
        if key == "denied" and self.on_denied is not None:
            self.on_denied(peer)

    # -- WebSocket sessions --

    def sessions(self, limit: int, what: str) -> Sessions:
        return Sessions(limit, what, self._counts)

    def websocket(self, max_message: int, *, ping_interval: float | None = None,
                  autoping: bool = True) -> web.WebSocketResponse:
        """A WebSocket with the shared rules; ``autoping=False`` for a server that paces pings itself."""
        # No compression: what goes out (JPEGs, OSC floats) would not shrink, and deflating costs the show's CPU.
        return web.WebSocketResponse(max_msg_size=max_message, timeout=CLOSE_TIMEOUT, compress=False,
                                     heartbeat=ping_interval or self.limits.ping_interval, autoping=autoping)

    @contextlib.asynccontextmanager
    async def upgraded(self, request: web.Request, ws: web.WebSocketResponse):
        """Answer the handshake and hold the session for the ``async with`` block: it leaves the plain
        connections (never closed for their limits) and is closed with 1001 when the server stops."""
        handler = request.protocol
        opened = self._plain.pop(handler, None)
        self._sockets[handler] = ws
        try:
            await ws.prepare(request)
            yield ws
        finally:
            self._sockets.pop(handler, None)
            if not ws.prepared and opened is not None:  # a failed handshake: a plain connection again
                self._plain[handler] = opened

    async def send(self, request: web.Request, ws: web.WebSocketResponse, data: str | bytes) -> None:
        """Send ``data``; a send stuck ``send_timeout`` seconds aborts the connection (no closing handshake:
        it would wait on the same full buffer). Raises ``Dropped`` when the session is over."""
        sending = ws.send_str(data) if isinstance(data, str) else ws.send_bytes(data)
        try:
            await asyncio.wait_for(sending, self.limits.send_timeout)
        except asyncio.TimeoutError:
            self._counts.add("slow_closed")
            self._warn.warning("slow", "%s: the WebSocket of %s stopped reading: closed", self.what, request.remote)
            if request.transport is not None:
                request.transport.abort()
            raise Dropped("stopped reading") from None
        except ConnectionError as exc:  # it went away: nothing to say
            raise Dropped(str(exc)) from exc


class _ServerLog(logging.LoggerAdapter):
    """aiohttp's own server log. It logged every malformed request (no ``Host``, a bad ``Content-Length``)
    with a 10-line traceback, unlimited: 4.4 MB in 12 s from one client. Here a malformed request is
    counted and said in one line, rate-limited; anything else aiohttp catches is said in one line too,
    rate-limited, its traceback at debug level."""

    def __init__(self, server: HttpServer):
        super().__init__(log, {})
        self._server = server

    def exception(self, msg, *args, exc_info=True, **kwargs) -> None:
        server = self._server
        exc = exc_info if isinstance(exc_info, BaseException) else sys.exc_info()[1]
        text = getattr(exc, "message", None) or str(exc)  # HttpProcessingError's str starts "400, message:"
        first = next((line.strip() for line in str(text).splitlines() if line.strip()), "")[:120]
        if isinstance(exc, HttpProcessingError):
            server._counts.add("malformed")
            server._warn.warning("malformed", "%s's port: a malformed HTTP request refused (%s)", server.what, first)
            return
        log.debug(msg, *args, exc_info=exc)
        server._warn.warning(f"server:{type(exc).__name__}", "%s's server: %s (%s: %s)", server.what,
                             msg % args if args else msg, type(exc).__name__, first)
