"""``WebServer``: the page, its WebSocket, and the live preview, served off the render loop.

Contract
--------
``WebServer(controls, WebConfig(host="127.0.0.1", port=9020, token=None, preview_fps=15), allow=None)``
is a ``Service``: ``start()`` binds at once and raises if it cannot (port in use, a LAN host without a
token); ``close()`` is idempotent. Served by ``control/http.py`` (aiohttp on a thread and event loop of
its own; OSCQuery's stack too, with the same limits and the same rule for who may ask).

- ``GET /`` the page; ``GET /page/NAME`` its script and style; ``GET /ws`` the page's WebSocket.
  Reachable from this machine only unless ``host`` says otherwise; beyond loopback every request needs
  ``?token=TOKEN`` (made up at start and printed in the URL when none is given), and only clients the
  OSC allow-list admits (``--osc-allow``) may connect.
- The WebSocket, server → page: ``{"type": "hello", "groups", "actions", "values", ...}`` once, then
  ``{"type": "values", "values": {name: value}}`` for every change from any surface (LFO-moved values
  too), ``{"type": "status", ...}`` twice a second (the status line's figures, the surfaces' counts,
  the sinks' health), ``{"type": "error", "message"}`` for what the page sent that was refused, and
  binary messages: one byte of level, then a JPEG (the preview, ≤ ``preview_fps``; level views ≤ 5 fps).
- Page → server (text, JSON, ≤ 16 KiB a message, ≤ 200 messages a second a page, 1,000 for all pages:
  faster, a page is read more slowly, and closed after 2 s of it): ``{"type": "set",
  "name", "value"}`` (native units) or ``"norm"`` (0..1 through the parameter's curve); ``{"type":
  "fire", "action", "args": [...]}``; ``{"type": "learn", "name"}`` (MIDI learn: the next MIDI control
  moved binds to ``name``); ``{"type": "levels", "levels": [0, 2], "fps": 5}`` (which pictures to
  preview, and at most how often: ``fps`` ≤ ``preview_fps``, optional).
  After a ``preset.save`` from a page every page gets ``{"type": "actions", ...}``, its menus anew.

Bounds: at most ``max_clients`` pages at once (more are answered 503); the shared server's limits
(``control.http.Limits``: ``max_connections`` plain HTTP connections, a new one closing the oldest, each
closed ``http_idle`` seconds after it opened; a ping after 10 s of silence). Every send to a page is
latest-value-wins (pending values merge into one dict, a newer preview replaces an unsent one), so a
page that stops reading holds one message's worth and is closed after ``send_timeout`` seconds stuck;
the show never waits on a page. What a page sends that is refused is counted in ``stats`` and logged,
rate-limited.
"""

from __future__ import annotations

import asyncio
import collections
import importlib.resources
import json
import logging
import math
import secrets
import threading
import time
from dataclasses import dataclass

from aiohttp import WSMsgType, web

from .. import __version__
from ..control.http import Dropped, HttpServer, Limits
from ..control.readings import READINGS
from ..control.service import Listen, Service, is_loopback, local_names
from ..options import option
from ..options import port as port_number
from ..reporting import Counts, RateLimitedLog
from . import layout
from .preview import Preview

log = logging.getLogger(__name__)

DEFAULT_PORT = 9020
MAX_MESSAGE = 16 * 1024  # bytes of one message from a page: the longest legitimate one is a preset name
MAX_RATE = 200.0  # message units a second from one page (a slider dragged sends ~60 messages)
MAX_TOTAL_RATE = 1000.0  # message units a second from all pages together
UNIT_BYTES = 1024  # a message costs one unit, plus one per KiB (a 16 KiB message costs 17)
FLOOD_SECONDS = 2.0  # a page held back by its rate this long without a pause is closed
LEVEL_VIEW_FPS = 5.0  # feature-level previews: each costs a projection and a readback of its own
MAX_PAGE_FPS = 60.0
VALUE_PUSH_HZ = 30.0  # value changes are gathered and sent to the pages at most this often
STAT_KEYS = ("connections", "messages", "bad_json", "bad_message", "rejected", "over_rate", "previews_sent",
             "flood_closed")  # and the shared server's (control.http.STAT_KEYS): refused, slow_closed, ...
PAGE_FILES = {"app.js": "text/javascript", "style.css": "text/css"}


@dataclass(frozen=True)
class WebConfig:
    # This machine only; "0.0.0.0" for a tablet on the LAN (then a token is required).
    host: str = option("127.0.0.1", "address to serve on; 0.0.0.0 lets a tablet on the LAN open it, with a token")
    port: int = option(DEFAULT_PORT, f"HTTP port (default: {DEFAULT_PORT}, or a free one, said at start, when another "
                                     "show has it)", parse=port_number, asked=True)
    # None: none on loopback, a random one beyond it (printed in the URL).
    token: str | None = option(None, "the token a page beyond this machine must give (default: made up at start, "
                                     "printed in the page's URL)", metavar="TOKEN")
    preview_fps: float = option(15.0, "the page's preview rate, at most")
    preview_quality: int = 70
    preview_width: int = 960  # wider pictures are scaled down for the page
    max_clients: int = 32
    # The shared limits (control.http.Limits) unless a test or a bench says otherwise:
    send_timeout: float = Limits.send_timeout  # seconds a send to a page may be stuck before the page is closed
    max_connections: int = Limits.max_connections  # plain HTTP connections (the page's files) at once
    http_idle: float = Limits.connection_time  # seconds a plain HTTP connection may stay open


class _Page:
    """One connected page: what waits to be sent to it (latest values only) and its message budget."""

    def __init__(self, ws: web.WebSocketResponse, request: web.Request):
        self.ws, self.request = ws, request
        self.values: dict[str, float] = {}
        self.status: dict | None = None
        self.pictures: dict[int, bytes] = {}
        self.texts: collections.deque = collections.deque(maxlen=8)  # replies (errors, learn state)
        self.wake = asyncio.Event()
        self.levels: set[int] = {0}
        self.fps = MAX_PAGE_FPS  # the preview rate this page asked for (capped by the server's)
        self.last_picture: dict[int, float] = {}
        self.budget = _Bucket(MAX_RATE)
        self.held_since: float | None = None  # since when every message has had to wait for the rate


class _Bucket:
    """A token bucket that makes a sender wait instead of dropping it: ``delay(cost)`` takes ``cost``
    units and returns how long to wait before the message they pay for may be handled (0: at once)."""

    def __init__(self, rate: float):
        self.rate, self.allowance, self.last = rate, rate, time.monotonic()

    def delay(self, cost: float, now: float) -> float:
        self.allowance = min(self.rate, self.allowance + (now - self.last) * self.rate) - cost
        self.last = now
        return max(0.0, -self.allowance / self.rate)


class WebServer(Service):
    def __init__(self, controls, config: WebConfig | None = None, *, allow: frozenset[str] | None = None,
                 size: tuple[int, int] | None = None, fps: float | None = None):
        super().__init__()
        self.controls, self.store = controls, controls.store
        self.config = config = config or WebConfig()
        if not 0 < config.preview_fps <= 60:
            raise ValueError(f"--web-preview-fps must be in (0, 60], not {config.preview_fps}")
        if not 1 <= config.preview_quality <= 100:
            raise ValueError(f"the preview's JPEG quality must be 1..100, not {config.preview_quality}")
        self.host, self._port = config.host, config.port
        self.token = config.token or (None if is_loopback(config.host) else secrets.token_urlsafe(12))
        self.allow = allow
        self.size, self.fps = size, fps
        self.levels = max((p.level for p in self.store.registry.values() if p.level is not None), default=0)
        self._layout = layout.groups(self.store.registry)
        self._counts = Counts(*STAT_KEYS)
        self._budget = _Bucket(MAX_TOTAL_RATE)  # all pages together
        self._warn = RateLimitedLog(log, interval=5.0)
        self._pages: set[_Page] = set()
        self._pending_lock = threading.Lock()
        self._pending: dict[str, float] = {}
        self._status: dict | None = None
        self._wanted: frozenset[int] = frozenset()  # levels some page previews (read by the render loop)
        self._wanted_fps = config.preview_fps  # the fastest rate a page asked for
        self._last_offer: dict[int, float] = {}
        self._preview: Preview | None = None
        self._actions_due = False  # a refresh of the pages' action menus is scheduled
        # The shared server: the OSC allow-list; a token beyond loopback (checked by the page's own
        # handlers), else the Host must name this machine (against DNS rebinding).
        limits = Limits(max_connections=config.max_connections, connection_time=config.http_idle,
                        send_timeout=config.send_timeout)
        self.http = HttpServer("the web page", config.host, config.port, "--web-port",
                               "choose another --web-port (or --no-web)", allow=allow,
                               names=None if self.token is not None else local_names(config.host),
                               limits=limits, tasks=(self._push_values,))
        self.http.app.router.add_get("/", self._index)
        self.http.app.router.add_get("/page/{name}", self._page_file)
        self.http.app.router.add_get("/ws", self._socket)
        self.http.app.router.add_get("/favicon.ico", _no_icon)
        self._page_places = self.http.sessions(config.max_clients, "pages")

    # -- lifecycle --

    def listens(self) -> tuple[Listen, ...]:
        return (Listen("--web-port", self.host, self._port, "tcp"),)

    def _start(self) -> None:
        self._preview = Preview(self._publish_picture, self.config.preview_quality, self.config.preview_width)
        self.http.start()
        self.store.add_listener(self._on_change)
        if self.controls.learner is not None:
            self.controls.learner.on_learned.append(self._learned)
        log.info("web page on %s", self.url)

    def _close(self) -> None:
        self.store.remove_listener(self._on_change)
        learner = self.controls.learner
        if learner is not None and self._learned in learner.on_learned:
            learner.on_learned.remove(self._learned)
        self.http.close()  # every page closed with 1001
        if self._preview is not None:
            self._preview.close()

    @property
    def port(self) -> int:
        return self.http.port

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else "[::1]" if self.host == "::" else self.host
        host = f"[{host}]" if ":" in host and not host.startswith("[") else host
        return f"http://{host}:{self.port}/" + (f"?token={self.token}" if self.token else "")

    @property
    def stats(self) -> dict[str, int]:
        return {**self._counts.snapshot(), **self.http.stats}

    @property
    def pages(self) -> int:
        return len(self._pages)

    # -- the render loop's side (every call here only records and hands off) --

    def picture_levels(self) -> tuple[int, ...]:
        wanted = self._wanted
        if not wanted or self._preview is None or not self._preview.idle:
            return ()
        now = time.monotonic()
        fps = self._wanted_fps
        # 0.8: the render loop's frames come a little early or late; "two frames" must count as two.
        due = tuple(lvl for lvl in sorted(wanted) if now - self._last_offer.get(lvl, -math.inf)
                    >= 0.8 / (fps if lvl == 0 else min(LEVEL_VIEW_FPS, fps)))
        return due

    def picture(self, slot: int, pictures: dict) -> None:
        now = time.monotonic()
        for lvl in pictures:
            self._last_offer[lvl] = now
        self._preview.offer(slot, pictures)

    def show_status(self, figures: dict) -> None:
        self._status = figures
        if self._pages:
            self.http.call_soon(self._publish_status, figures)

    def report(self, name: str, value: float) -> None:
        self._on_change(name, value, "lfo")

    def figures(self) -> dict[str, float]:
        st = self.stats
        bad = st["bad_json"] + st["bad_message"] + st["rejected"] + st["over_rate"] + st["foreign"] + st["malformed"]
        return {"web_pages": len(self._pages), "web_messages": st["messages"], "web_bad": bad}

    def status(self) -> str | None:
        f = self.figures()
        return f"web {f['web_pages']} pages, {f['web_messages']} msgs, {f['web_bad']} bad"

    # -- value changes: any thread → the loop, gathered --

    def _on_change(self, name: str, value: float, source: str) -> None:
        if source != "lfo":
            value = self.store.get(name)  # whichever listener runs last reads the value that won
        with self._pending_lock:
            self._pending[name] = value

    async def _push_values(self) -> None:
        while True:
            await asyncio.sleep(1 / VALUE_PUSH_HZ)
            with self._pending_lock:
                pending, self._pending = self._pending, {}
            if pending:
                for page in self._pages:
                    page.values.update(pending)
                    page.wake.set()

    def _publish_status(self, figures: dict) -> None:
        for page in self._pages:
            page.status = figures
            page.wake.set()

    def _publish_picture(self, level: int, slot: int, jpeg: bytes) -> None:
        """From the encoder thread."""
        self.http.call_soon(self._deliver_picture, level, jpeg)

    def _deliver_picture(self, level: int, jpeg: bytes) -> None:
        message = bytes((level,)) + jpeg  # one message for every page: the level's byte, then the JPEG
        now = time.monotonic()
        for page in self._pages:
            # 0.8: a picture a little early still counts, or jitter would halve a page's rate.
            if level in page.levels and now - page.last_picture.get(level, -math.inf) >= 0.8 / page.fps:
                page.last_picture[level] = now
                page.pictures[level] = message  # replaces one not yet sent: a slow page skips pictures
                page.wake.set()

    # -- HTTP --

    def _admit(self, request: web.Request) -> None:
        """The page and its socket, beyond loopback, need the token (the shared server has already held
        every request to the allow-list and the browser rule; the page's files are fetched without it)."""
        if self.token is not None and not secrets.compare_digest(request.query.get("token", "").encode(),
                                                                 self.token.encode()):
            raise web.HTTPForbidden(text="this page needs the show's token: open the URL ffvj printed at "
                                         "start-up (…/?token=…)\n")

    async def _index(self, request: web.Request) -> web.Response:
        self._admit(request)
        return web.Response(body=_page_file("index.html"), content_type="text/html",
                            headers={"Cache-Control": "no-cache"})

    async def _page_file(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in PAGE_FILES:
            raise web.HTTPNotFound(text=f"no page file {name!r}\n")
        return web.Response(body=_page_file(name), content_type=PAGE_FILES[name],
                            headers={"Cache-Control": "no-cache"})

    # -- the page's WebSocket --

    def hello(self) -> dict:
        return {"type": "hello", "name": "ffvj", "version": __version__, "groups": self._layout,
                "actions": layout.actions(self.controls), "values": self.store.targets(), "levels": self.levels,
                "size": list(self.size) if self.size else None, "fps": self.fps, "status": self._status,
                "learn": self.controls.learner is not None,
                "readings": [{"name": r.name, "doc": r.doc, "min": r.min, "max": r.max} for r in READINGS.values()]}

    async def _socket(self, request: web.Request) -> web.WebSocketResponse:
        self._admit(request)
        # Pings are answered below, so that they are paced with the rest of what a page sends.
        ws = self.http.websocket(MAX_MESSAGE, autoping=False)
        loop = asyncio.get_running_loop()
        with self._page_places.place():  # 503 when max_clients pages are open; kept while the layout is made
            # The layout, before any change is sent; off the loop, as it lists the presets folder.
            hello = json.dumps(await loop.run_in_executor(None, self.hello))
            async with self.http.upgraded(request, ws):
                page = _Page(ws, request)
                self._pages.add(page)
                self._refresh_wanted()
                self._counts.add("connections")
                writer = loop.create_task(self._writer(page, hello))
                try:
                    async for msg in ws:
                        if msg.type == WSMsgType.ERROR:
                            break
                        if not await self._pace(page, msg):
                            break
                        if msg.type == WSMsgType.TEXT:
                            self._receive(page, msg.data)
                        elif msg.type == WSMsgType.PING:
                            await ws.pong(msg.data)
                        elif msg.type == WSMsgType.BINARY:
                            self._refuse(page, "bad_message", "binary messages are not understood")
                finally:
                    self._pages.discard(page)
                    self._refresh_wanted()
                    writer.cancel()
        return ws

    async def _writer(self, page: _Page, hello: str) -> None:
        """Send what waits for this page, each send bounded (``HttpServer.send``: a page stuck
        ``send_timeout`` seconds is closed)."""
        ws, request, send = page.ws, page.request, self.http.send
        try:
            await send(request, ws, hello)
            while not ws.closed:
                await page.wake.wait()
                page.wake.clear()
                while page.texts:
                    await send(request, ws, page.texts.popleft())
                if page.values:
                    values, page.values = page.values, {}
                    await send(request, ws, json.dumps({"type": "values", "values": values}))
                if page.status is not None:
                    status, page.status = page.status, None
                    await send(request, ws, json.dumps({"type": "status", **status}))
                for level in list(page.pictures):
                    message = page.pictures.pop(level, None)
                    if message is not None:
                        await send(request, ws, message)
                        self._counts.add("previews_sent")
        except Dropped:
            pass  # the reading side sees the connection end and lets the page go

    def _reply(self, page: _Page, message: dict) -> None:
        page.texts.append(json.dumps(message))
        page.wake.set()

    def _refuse(self, page: _Page, key: str, why: str) -> None:
        self._counts.add(key)
        self._warn.warning(key, "web page at %s: %s", page.request.remote, why)
        self._reply(page, {"type": "error", "message": why})

    async def _pace(self, page: _Page, msg) -> bool:
        """Hold a page to its rate before its message is handled: while this waits, aiohttp stops reading
        the page's socket once 512 KiB are queued, so the sender is pushed back by TCP and a flood costs
        the show no parsing beyond the rate (dropping after parsing once cost a 20 fps show 8 fps). A
        page held back for ``FLOOD_SECONDS`` without a pause is closed. Returns whether to go on."""
        size = len(msg.data) if isinstance(msg.data, (str, bytes)) else 0
        cost = 1.0 + size / UNIT_BYTES
        now = time.monotonic()
        own, shared = page.budget.delay(cost, now), self._budget.delay(cost, now)
        if own <= 0:
            page.held_since = None  # (held back by other pages' traffic alone is not this page's flood)
            if shared <= 0:
                return True
        elif page.held_since is None:
            page.held_since = now
        elif now - page.held_since > FLOOD_SECONDS:
            self._counts.add("flood_closed")
            self._warn.warning("flood", "web page at %s sent over %g messages a second for %g s: closed",
                               page.request.remote, MAX_RATE, FLOOD_SECONDS)
            transport = page.request.transport
            if transport is not None:
                transport.abort()  # no closing handshake: that would read the flood on
            return False
        self._counts.add("over_rate")
        await asyncio.sleep(max(own, shared))
        return True

    def _receive(self, page: _Page, text: str) -> None:
        self._counts.add("messages")
        try:
            msg = json.loads(text)
        except (ValueError, RecursionError):
            return self._refuse(page, "bad_json", "not JSON")
        if not isinstance(msg, dict) or not isinstance(msg.get("type"), str):
            return self._refuse(page, "bad_message", 'a message is an object with a "type"')
        handler = self._HANDLERS.get(msg["type"])
        if handler is None:
            return self._refuse(page, "bad_message", f"unknown message type {msg['type'][:40]!r}")
        try:
            handler(self, page, msg)
        except (TypeError, ValueError, ArithmeticError) as exc:  # ArithmeticError: a 400-digit integer
            self._refuse(page, "bad_message", f"{msg['type']}: {str(exc)[:200]}")

    def _on_set(self, page: _Page, msg: dict) -> None:
        name = msg.get("name")
        if not isinstance(name, str) or name not in self.store.registry:
            raise ValueError(f"no parameter {str(name)[:60]!r}")
        normalized = "norm" in msg
        value = msg.get("norm" if normalized else "value")
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise ValueError(f"{name}: a value is a number (or an enum's name)")
        if not self.store.set(name, value, normalized=normalized, source="web"):
            self._counts.add("rejected")
            self._reply(page, {"type": "error", "message": f"{name}: value {str(value)[:40]} refused"})

    def _on_fire(self, page: _Page, msg: dict) -> None:
        args = msg.get("args", [])
        if not isinstance(args, list) or len(args) > 8:
            raise ValueError("args is a list of at most 8 values")
        action = msg.get("action")
        if not isinstance(action, str):
            raise ValueError("action is an action's name ('ffvj actions')")
        self.controls.fire(action, *args)
        if action == "preset.save":  # a new name for the pages' preset menus, once the file is written
            self._announce_actions()

    def _announce_actions(self) -> None:
        if self._actions_due:
            return
        self._actions_due = True
        loop = asyncio.get_running_loop()
        loop.call_later(1.0, lambda: loop.create_task(self._send_actions()))

    async def _send_actions(self) -> None:
        self._actions_due = False
        actions = await asyncio.get_running_loop().run_in_executor(None, layout.actions, self.controls)
        for page in self._pages:
            self._reply(page, {"type": "actions", "actions": actions})

    def _on_learn(self, page: _Page, msg: dict) -> None:
        learner = self.controls.learner
        if learner is None:
            raise ValueError("MIDI learn needs MIDI: this show runs without it (--no-midi, or no MIDI library)")
        name = msg.get("name")
        if name is None:
            learner.cancel()
            return self._reply(page, {"type": "learn", "armed": None})
        if not isinstance(name, str) or name not in self.store.registry:
            raise ValueError(f"no parameter {str(name)[:60]!r}")
        self._reply(page, {"type": "learn", "armed": learner.arm(name)})

    def _learned(self, entry) -> None:
        """A control was bound (on the MIDI thread): every page hears what, and that learn is done."""
        message = {"type": "learn", "armed": None, "learned": entry.describe()}
        self.http.call_soon(lambda: [self._reply(page, message) for page in self._pages])

    def _on_levels(self, page: _Page, msg: dict) -> None:
        levels = msg.get("levels")
        if not isinstance(levels, list) or len(levels) > self.levels + 1 or not all(
                isinstance(lvl, int) and not isinstance(lvl, bool) and 0 <= lvl <= self.levels for lvl in levels):
            raise ValueError(f"levels is a list of levels 0..{self.levels}")
        fps = msg.get("fps", MAX_PAGE_FPS)
        if isinstance(fps, bool) or not isinstance(fps, (int, float)) or not 0.1 <= fps <= MAX_PAGE_FPS:
            raise ValueError(f"fps is a preview rate in 0.1..{MAX_PAGE_FPS:g}")
        page.levels, page.fps = set(levels), float(fps)
        self._refresh_wanted()

    _HANDLERS = {"set": _on_set, "fire": _on_fire, "learn": _on_learn, "levels": _on_levels}

    def _refresh_wanted(self) -> None:
        watching = [page for page in self._pages if page.levels]
        self._wanted_fps = min(self.config.preview_fps, max((page.fps for page in watching), default=1.0))
        self._wanted = frozenset().union(*(page.levels for page in watching))


async def _no_icon(request: web.Request) -> web.Response:
    return web.Response(status=204)


def _page_file(name: str) -> bytes:
    return importlib.resources.files(__package__).joinpath("page", name).read_bytes()
