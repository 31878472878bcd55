"""The web page: a control surface and live preview served by ``ffvj run`` (``--web-port``, default 9020).

A part of its own, above the controls, the engine and the media: it plays the controls like any surface
(``control.service.Service``) and shows the pictures the show already read back.

    layout   the page's controls, generated from the parameter registry and the actions table
    preview  the picture as JPEG, encoded off the render loop from a readback it already has
    server   ``WebServer``: the page's routes and protocol on ``control.http`` (aiohttp on a thread of its
             own, OSCQuery's stack too), one WebSocket per page; every send to a page is
             latest-value-wins, so a page that never reads holds one picture, never a queue
    page/    the page itself (HTML, CSS and JavaScript; no build step, nothing fetched from outside)
"""

from .server import DEFAULT_PORT, WebConfig, WebServer

__all__ = ["DEFAULT_PORT", "WebConfig", "WebServer"]
