"""OSC's transport: the UDP and TCP (SLIP) listeners, and the wire format of one packet.

The transport carries packets; it never knows what an address means. Parameters, actions,
feedback and the work a message may cause belong to its owner (``osc.OscServer``), which gives
each listener a ``Receiver`` and so is the only way data leaves the transport.

Contract
--------
``Receiver(handle, admit, report)``: three callables the listeners call on their own threads;
none may raise or block.

- ``handle(data, client) -> replies``: one packet (a datagram, or one SLIP frame) from ``client``
  (a ``Client``: its address and ``"udp"`` or ``"tcp"``). The replies, ``(address, *args)``
  tuples, go back to that client: over UDP to its source address, over TCP on its connection.
- ``admit(client_address) -> bool``: whether that client may send at all, asked before a
  datagram is handled or a connection is accepted.
- ``report(key, client, what, *args)``: a problem the transport met (``"malformed"``: a bad SLIP
  frame; ``"errors"``: a handler failed), for the owner to count and log rate-limited.

``UdpListener(host, port, receiver)`` and ``TcpListener(host, port, receiver)`` bind at once
(OSError if they cannot; port 0 picks a free one, ``port`` says which); ``start()`` serves on a
daemon thread; ``close()`` stops and releases it, bounded. ``read_packet(data)`` is what a handler
makes of a packet: every message with its timetag, the whole packet checked before any of it is
returned, or ``Malformed`` saying why.

Bounds
------
- A datagram: at most ``MAX_UDP_PACKET`` bytes (65,507, the most one carries), read whole.
- A SLIP frame: at most ``MAX_TCP_FRAME`` bytes; a link whose unfinished frame grows past that is
  not a controller, and is closed.
- TCP links: ``MAX_TCP_CONNECTIONS`` (16) at once, a 17th refused; each closed after
  ``TCP_IDLE_SECONDS`` (120) without a byte. With the frame cap, what the links can buffer is
  bounded too: 16 × (64 KiB + one 64 KiB read).
- A bundle: element sizes positive, multiples of 4 and inside the packet; nested at most
  ``MAX_BUNDLE_DEPTH`` (8) deep; at most ``MAX_MESSAGES_PER_PACKET`` (256) messages, or the whole
  packet is malformed.
- A message: only type tags python-osc reads (``PYTHON_OSC_TYPE_TAGS``); any other makes it malformed.
- A stop: ``close()`` waits at most 2 s for the serving loop (``service.stop_server``) and 2 s for
  its thread; TCP links are shut down, which ends their threads' reads at once.
"""

from __future__ import annotations

import logging
import socket
import socketserver
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass

from pythonosc import osc_message, osc_server, slip
from pythonosc.osc_message_builder import build_msg
from pythonosc.parsing import osc_types

from .service import LimitedConnections, stop_server

log = logging.getLogger(__name__)

MAX_UDP_PACKET = 65507
MAX_TCP_FRAME = MAX_UDP_PACKET  # a SLIP frame larger than any datagram is not from a controller: drop the link
MAX_TCP_CONNECTIONS = 16
TCP_IDLE_SECONDS = 120.0  # how long a link may sit silent: a tablet between touches
TCP_READ = 65536  # bytes one recv may bring
BUNDLE_PREFIX = b"#bundle\0"
MAX_BUNDLE_DEPTH = 8  # bundles in bundles: a controller nests one or two
MAX_MESSAGES_PER_PACKET = 256  # a controller sends a handful a packet
STOP_SECONDS = 2.0

# The type tags python-osc's OscMessage reads. Any other it skips with logging.warning on the root
# logger (once per tag, without a source, so a stream of such packets floods the show's console), and
# it reads the arguments after it from the wrong bytes, since it cannot know the skipped one's size.
# OSC 1.0 says to drop a message with a type it does not know: here it is malformed before python-osc
# sees it, so python-osc never logs.
PYTHON_OSC_TYPE_TAGS = b"ihfdsbrmtTFN[]"


@dataclass(frozen=True)
class Client:
    """Where a packet came from: its address, and whether it came over UDP or TCP."""
    address: tuple[str, int]
    transport: str = "udp"

    @property
    def source(self) -> str:
        return f"osc {self.address[0]}:{self.address[1]}"


@dataclass(frozen=True)
class Receiver:
    """What the owner gives its listeners (see the module docstring)."""
    handle: Callable[[bytes, Client], list[tuple]]
    admit: Callable[[tuple], bool]
    report: Callable[..., None]  # (key, client, what, *args)

    def malformed(self, client: Client, why: str) -> None:
        self.report("malformed", client, "malformed packet (%s)", why)

    def failed(self, client: Client) -> None:
        """socketserver's last resort: a bug, or a send to a client that vanished. Counted and
        logged (rate-limited; the traceback at debug level), and the listener goes on."""
        log.debug("OSC handler error for %s", client.address, exc_info=True)
        self.report("errors", client, "handler failed (see the debug log)")


class Malformed(Exception):
    """A packet that is not well-formed OSC; its text says why."""


# -- one packet -----------------------------------------------------------------------------------

def read_packet(data: bytes) -> list[tuple[float, osc_message.OscMessage]]:
    """Every message of a packet with its timetag (``osc_types.IMMEDIATELY`` for a lone message),
    the whole packet checked first; Malformed if it is not well-formed OSC."""
    try:
        if data.startswith(BUNDLE_PREFIX):
            return _bundle_items(data)
        if data[:1] == b"/":
            return [(osc_types.IMMEDIATELY, _message(data))]
    except (osc_message.ParseError, osc_types.ParseError, ValueError, IndexError, struct.error) as exc:
        # ValueError covers undecodable UTF-8 in an address or a string argument.
        raise Malformed(type(exc).__name__) from None
    raise Malformed("neither an OSC message nor a bundle")


def _message(data: bytes) -> osc_message.OscMessage:
    """One message, given to python-osc's parser only once its type tags are ones it reads. (Found
    with bytes.find rather than python-osc's string reader, which would double a message's cost.)"""
    address_end = data.find(b"\0")
    tags_at = (address_end // 4 + 1) * 4  # the address is padded with NULs to a multiple of 4 bytes
    if address_end >= 0 and data[tags_at:tags_at + 1] == b",":
        tags_end = data.find(b"\0", tags_at)
        unknown = data[tags_at + 1:tags_end if tags_end >= 0 else len(data)].translate(None, PYTHON_OSC_TYPE_TAGS)
        if unknown:
            raise Malformed(f"unknown type tag {unknown[:8].decode('ascii', 'replace')!r}: content python-osc "
                            "skipped, misreading the arguments after it; the message is dropped")
    return osc_message.OscMessage(data)  # what is not well-formed besides, python-osc's parser refuses


def _bundle_items(data: bytes, depth: int = 1) -> list[tuple[float, osc_message.OscMessage]]:
    """Every message of a bundle (and of the bundles inside it) with its timetag, checked whole.

    Parsed here rather than by python-osc, whose parser loops for ever on an element size of -4 (a
    20-byte packet froze the OSC thread and the show's shutdown with it): every size must be positive,
    a multiple of 4 and inside the packet, and bundles nest at most MAX_BUNDLE_DEPTH deep."""
    if depth > MAX_BUNDLE_DEPTH:
        raise Malformed(f"bundles nested more than {MAX_BUNDLE_DEPTH} deep")
    if len(data) < 16:
        raise Malformed(f"a bundle of {len(data)} bytes is shorter than its header")
    due, index = osc_types.get_date(data, len(BUNDLE_PREFIX))
    items: list[tuple[float, osc_message.OscMessage]] = []
    while index < len(data):
        if index + 4 > len(data):
            raise Malformed("a bundle element's size is cut off")
        (size,) = struct.unpack_from(">i", data, index)
        index += 4
        if size <= 0 or size % 4 or index + size > len(data):
            raise Malformed(f"a bundle element of {size} bytes at byte {index - 4} of {len(data)}")
        element = data[index:index + size]
        index += size
        if element.startswith(BUNDLE_PREFIX):
            items += _bundle_items(element, depth + 1)
        elif element[:1] == b"/":
            items.append((due, _message(element)))
        else:
            raise Malformed("a bundle element that is neither a message nor a bundle")
        if len(items) > MAX_MESSAGES_PER_PACKET:
            raise Malformed(f"more than {MAX_MESSAGES_PER_PACKET} messages in one bundle")
    return items


# -- the socket servers (python-osc's UDP server; a small SLIP server on socketserver) --------------

class _UdpServer(osc_server.BlockingOSCUDPServer):
    """python-osc's blocking UDP server (one thread, packets in order, replies sent back as built
    from their tuples), with itself as the dispatcher python-osc calls. Every datagram reaches the
    receiver, so garbage is counted, not silently dropped by python-osc's pre-check; ``admit`` is
    asked first."""

    max_packet_size = MAX_UDP_PACKET  # socketserver's default of 8192 would truncate big bundles

    def __init__(self, address: tuple[str, int], receiver: Receiver):
        self.receiver = receiver
        super().__init__(address, self)  # python-osc calls self.call_handlers_for_packet

    def call_handlers_for_packet(self, data: bytes, client_address) -> list[tuple]:
        return self.receiver.handle(data, Client(tuple(client_address[:2]), "udp"))

    def verify_request(self, request, client_address) -> bool:
        return self.receiver.admit(client_address)

    def handle_error(self, request, client_address) -> None:
        self.receiver.failed(Client(tuple(client_address[:2]), "udp"))


class _SlipHandler(socketserver.BaseRequestHandler):
    """OSC 1.1 over TCP: packets framed by SLIP END bytes (single or double END both work)."""

    def handle(self) -> None:
        server: _TcpServer = self.server
        receiver, sock = server.receiver, self.request
        client = Client(tuple(self.client_address[:2]), "tcp")
        server.track(sock, True)
        buf = bytearray()
        try:
            while chunk := sock.recv(TCP_READ):
                buf += chunk
                while (end := buf.find(slip.END)) >= 0:
                    frame = bytes(buf[:end])
                    del buf[:end + 1]
                    if frame:  # empty: the leading END of a double-END frame
                        self._frame(frame, client, receiver, sock)
                if len(buf) > MAX_TCP_FRAME:
                    receiver.malformed(client, f"SLIP frame over {MAX_TCP_FRAME} bytes; closing the connection")
                    return
        except OSError:
            return  # the client went away, or close() shut the socket: either way this link is done
        finally:
            server.track(sock, False)

    @staticmethod
    def _frame(frame: bytes, client: Client, receiver: Receiver, sock: socket.socket) -> None:
        try:
            packet = slip.decode(frame)
        except slip.ProtocolError:
            receiver.malformed(client, "bad SLIP escape")
            return
        for address, *args in receiver.handle(packet, client):
            sock.sendall(slip.encode(build_msg(address, args).dgram))


class _TcpServer(LimitedConnections, socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    block_on_close = False
    max_connections = MAX_TCP_CONNECTIONS
    idle_timeout = TCP_IDLE_SECONDS

    def __init__(self, address: tuple[str, int], receiver: Receiver):
        self.receiver = receiver
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _SlipHandler)

    def admit(self, client_address) -> bool:
        return self.receiver.admit(client_address)

    def handler_failed(self, request, client_address) -> None:
        self.receiver.failed(Client(tuple(client_address[:2]), "tcp"))

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


# -- the listeners: a server on its own thread ----------------------------------------------------

class _Listener:
    """A bound socket server; ``start()`` serves it on a daemon thread, ``close()`` stops it."""

    def __init__(self, server: socketserver.BaseServer, name: str):
        self.server, self.name = server, name
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The port actually bound (useful with port 0)."""
        return self.server.server_address[1]

    def start(self) -> None:
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.1},
                                        name=self.name, daemon=True)
        self._thread.start()

    def close(self) -> None:
        if self._thread is not None:  # shutdown() waits for serve_forever: only where it runs
            stop_server(self.server, STOP_SECONDS, f"the OSC server ({self.name})")
            self._end_links()
            self._thread.join(timeout=STOP_SECONDS)
            self._thread = None
        self.server.server_close()

    def _end_links(self) -> None:
        """What a connection-oriented listener must end besides its serving loop."""


class UdpListener(_Listener):
    """OSC over UDP: one thread, datagrams in order. Its socket is also where feedback leaves from,
    so a surface sees it come from the port it sends to."""

    protocol = "udp"

    def __init__(self, host: str, port: int, receiver: Receiver):
        super().__init__(_UdpServer((host, port), receiver), "ffvj-osc-udp")

    def send(self, dgram: bytes, target: tuple[str, int]) -> None:
        """One datagram to ``target``; OSError if the network refuses it."""
        self.server.socket.sendto(dgram, target)


class TcpListener(_Listener):
    """OSC 1.1 over TCP with SLIP framing: a thread per link, links capped and timed out."""

    protocol = "tcp"

    def __init__(self, host: str, port: int, receiver: Receiver):
        super().__init__(_TcpServer((host, port), receiver), "ffvj-osc-tcp")

    @property
    def connections(self) -> int:
        return self.server.connections

    @property
    def turned_away(self) -> int:
        """Links refused because ``MAX_TCP_CONNECTIONS`` were open."""
        return self.server.turned_away

    def _end_links(self) -> None:
        self.server.close_connections()
