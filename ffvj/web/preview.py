"""The page's live preview: the pictures the render loop already read back, as JPEG, off the render loop.

``Preview(publish, quality, max_width)`` owns one encoder thread behind a one-slot mailbox: the render
loop's ``offer(slot, {level: (format, array)})`` never waits (a newer offer replaces one not yet
encoded), and each JPEG goes to ``publish(level, slot, jpeg_bytes)`` from the encoder thread. The
arrays are the sinks' own readback, RGB or 4:2:0 (``engine.pixfmt``); a 4:2:0 picture is turned back
into colour with its own matrix and range, so the preview shows what the recording holds.

Written with OpenCV (already the show's video library): ``cv2.imencode`` is libjpeg-turbo, about
1 ms for a 640×360 frame on one core.
"""

from __future__ import annotations

import logging
import threading

import cv2
import numpy as np

from ..engine import pixfmt
from ..media.mailbox import Mailbox
from ..reporting import RateLimitedLog

log = logging.getLogger(__name__)


def _ycbcr_to_bgr(matrix: str) -> np.ndarray:
    """The 3×4 affine map from limited-range Y, Cb, Cr codes to B, G, R codes (``cv2.transform``)."""
    kr, kb = pixfmt.MATRICES[matrix]
    kg = 1 - kr - kb
    # R = Y' + 2(1−Kr)·Pr, B = Y' + 2(1−Kb)·Pb, G = (Y' − Kr·R − Kb·B)/Kg, with Y' = (Y−16)/219 and
    # Pb, Pr = (C−128)/224; everything scaled to 0..255.
    y, c = 255 / 219, 255 / 224
    rows = {"r": (y, 0.0, 2 * (1 - kr) * c), "b": (y, 2 * (1 - kb) * c, 0.0)}
    rows["g"] = (y, -kb * 2 * (1 - kb) * c / kg, -kr * 2 * (1 - kr) * c / kg)
    out = np.zeros((3, 4), np.float32)
    for i, ch in enumerate("bgr"):
        gy, gb, gr = rows[ch]
        out[i, :3] = (gy, gb, gr)
        out[i, 3] = -16 * gy - 128 * gb - 128 * gr
    return out


def to_bgr(fmt: str, frame: np.ndarray) -> np.ndarray:
    """One readback (``pixfmt`` format ``fmt``) as a BGR uint8 (H, W, 3) array for OpenCV."""
    if fmt == pixfmt.RGB24:
        return cv2.cvtColor(frame, cv2.COLOR_RGB2BGR)
    layout, matrix = fmt.split(":")
    h, w = frame.shape[0] * 2 // 3, frame.shape[1]
    y, chroma = frame[:h], frame[h:].reshape(-1)
    if layout == "i420":
        cb, cr = chroma[: h * w // 4].reshape(h // 2, w // 2), chroma[h * w // 4:].reshape(h // 2, w // 2)
    else:  # nv12: Cb and Cr interleaved
        pairs = chroma.reshape(h // 2, w // 2, 2)
        cb, cr = pairs[..., 0], pairs[..., 1]
    ycc = cv2.merge([y, cv2.resize(cb, (w, h), interpolation=cv2.INTER_LINEAR),
                     cv2.resize(cr, (w, h), interpolation=cv2.INTER_LINEAR)])
    bgr = cv2.transform(ycc.astype(np.float32), _ycbcr_to_bgr(matrix))
    return np.clip(bgr, 0, 255).astype(np.uint8)


def encode_jpeg(fmt: str, frame: np.ndarray, quality: int = 70, max_width: int = 960) -> bytes:
    bgr = to_bgr(fmt, frame)
    if bgr.shape[1] > max_width:  # a 1080p show's preview need not be 1080p on a tablet
        h = max(2, round(bgr.shape[0] * max_width / bgr.shape[1]))
        bgr = cv2.resize(bgr, (max_width, h), interpolation=cv2.INTER_AREA)
    ok, data = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError("OpenCV could not encode the preview as JPEG")
    return data.tobytes()


class Preview:
    """One encoder thread; see the module docstring."""

    def __init__(self, publish, quality: int = 70, max_width: int = 960):
        self._publish, self.quality, self.max_width = publish, quality, max_width
        self._box: Mailbox = Mailbox()
        self._idle = threading.Event()
        self._idle.set()
        self._warn = RateLimitedLog(log, interval=10.0)
        self._thread = threading.Thread(target=self._loop, name="ffvj-web-preview", daemon=True)
        self._thread.start()

    @property
    def idle(self) -> bool:
        """Nothing waiting and nothing being encoded: the render loop offers a picture only then, so
        a slow machine previews at the rate it can encode, never behind."""
        return self._idle.is_set()

    def offer(self, slot: int, pictures: dict) -> None:
        self._idle.clear()
        self._box.put((slot, pictures))

    def _loop(self) -> None:
        while (item := self._box.get()) is not None:
            slot, pictures = item
            for level, (fmt, frame) in pictures.items():
                try:
                    jpeg = encode_jpeg(fmt, frame, self.quality, self.max_width)
                except (cv2.error, ValueError) as exc:
                    self._warn.warning("encode", "preview of level %d not encoded: %s", level, exc)
                    continue
                self._publish(level, slot, jpeg)
            self._idle.set()

    def close(self) -> None:
        self._box.close()
        self._thread.join(timeout=2)
