"""What many tests share: waiting for something to happen on a loaded machine, free ports, pictures."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]  # the checkout: mappings/, presets/, bundled_models/ are data folders here


def wait_until(pred, timeout: float = 15.0, what: str = "the condition", interval: float = 0.02) -> None:
    """Poll ``pred`` until it holds; past ``timeout`` seconds, fail the test naming ``what`` it waited for.
    Tests wait (generously) instead of sleeping, because two loaded cores can stall any thread for a
    while. It raises rather than returns a verdict, so a forgotten ``assert`` cannot make a test that
    never fails; ``poll_until`` is for a test that does something of its own when the wait runs out."""
    if not poll_until(pred, timeout, interval):
        raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def poll_until(pred, timeout: float = 15.0, interval: float = 0.02) -> bool:
    """Poll ``pred`` until it holds or ``timeout`` seconds pass; whether it held (the caller decides)."""
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            return bool(pred())
        time.sleep(interval)
    return True


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def smooth_picture(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A photo-like RGB uint8 picture: smooth colour fields plus a few hard-edged shapes."""
    coarse = rng.random((max(2, height // 16), max(2, width // 16), 3)).astype(np.float32)
    img = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
    for _ in range(4):
        color = rng.random(3).tolist()
        center = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        cv2.circle(img, center, int(rng.integers(3, max(4, min(height, width) // 3))), color, -1)
    return (np.clip(img, 0, 1) * 255).astype(np.uint8)


# The levels with no life of their own, as in the default look before issue 22 (which gave level 2
# amplification, drive and a turn, level 3 a rotation, and the picture a strong top-down path): for tests
# of a loop that can freeze, flatten or saturate, and of what a lever changes against a loop without it.
PLAIN_LEVELS = {"l2.amplify": 0.0, "l2.drive": 1.0, "l2.turn": 0.0, "l3.rotate": 0.0,
                "l0.gain_self": 0.9, "l0.gain_down": 0.35, "l1.gain_down": 0.35}
