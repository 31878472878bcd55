"""The picture's measures on synthetic inputs whose answer is known: a lattice, a strobe, a fade, a freeze, a burn."""

import numpy as np
import pytest

from ffvj.engine.flashes import max_flashes
from ffvj.look import measures
from tests.helpers import smooth_picture

W, H = 160, 96


@pytest.fixture
def photo():
    return smooth_picture(np.random.default_rng(3), H, W)


def checkerboard(period: int, amplitude: float, h: int = H, w: int = W) -> np.ndarray:
    y, x = np.mgrid[:h, :w]
    return ((x // (period // 2) + y // (period // 2)) % 2 * 2 - 1) * amplitude


def test_a_screen_locked_lattice_is_measured_in_levels_and_a_picture_has_almost_none(photo):
    clean = measures.frame_lattice(photo)
    for period in (2, 4, 8):
        marked = np.clip(photo + checkerboard(period, 6.0)[..., None], 0, 255).astype(np.uint8)
        assert measures.frame_lattice(marked) > clean + 5  # ±6 levels on the lattice: well above the picture's own
    # One lattice frequency of amplitude 5. Within 5 %: the edge correction takes the checkerboard's own
    # step across the wrap for an edge, which reads it 3.5 % high at this small size (1 % at 480×270).
    pure = measures.lattice_excess(checkerboard(2, 5.0))
    assert pure == pytest.approx(5.0, rel=0.05)
    state = np.stack([checkerboard(2, 5.0 / 127.5)] * 4)  # a feature state: the same pattern in its units
    assert measures.state_lattice(state) == pytest.approx(pure, rel=1e-6)
    with pytest.raises(ValueError, match="too small"):
        measures.lattice_excess(np.zeros((8, 8)))


def test_a_picture_whose_edges_differ_has_no_lattice(monkeypatch):
    """Dark at the top, bright at the bottom, with a soft blob: read as a tile, its edges are steps whose
    leakage runs along the frequency axes, lattice bins included (2.7 levels for a high-contrast look on a
    still before the edge correction, all of it on one axis)."""
    y, x = np.mgrid[:H * 3, :W * 3]
    plane = 20 + 210 * y / (H * 3) + 40 * x / (W * 3) + 30 * np.exp(-((x - 200) ** 2 + (y - 120) ** 2) / 2000)
    assert measures.lattice_excess(plane) < 0.1
    assert measures.lattice_excess(plane + checkerboard(2, 4.0, H * 3, W * 3)) == pytest.approx(4.0, rel=0.05)
    with monkeypatch.context() as m:  # the plain DFT of the same picture
        m.setattr(measures, "_periodic_spectrum", lambda v: np.fft.fft2(v - v.mean()))
        assert measures.lattice_excess(plane) > 4.0


def test_a_strobe_flashes_and_a_slow_fade_does_not():
    strobe = measures.FlashCounter(30)
    events = [strobe.add(np.full((H, W, 3), 255 * (i % 2), np.uint8))[0] for i in range(60)]
    assert max_flashes(events, 30) == 15.0 and strobe.flashes() == 15.0  # 15 Hz at 30 fps
    fade = measures.FlashCounter(30)
    events = [fade.add(np.full((H, W, 3), round(255 * i / 59), np.uint8))[0] for i in range(60)]
    assert max_flashes(events, 30) <= 1.0  # one slow rise: transitions, never a pair of opposing ones
    small = measures.FlashCounter(30)  # a strobe over a tenth of the frame is under the area rule
    frames = [np.zeros((H, W, 3), np.uint8) for _ in range(30)]
    for i, f in enumerate(frames):
        f[: H // 10] = 255 * (i % 2)
    assert max_flashes([small.add(f)[0] for f in frames], 30) == 0.0
    bright = measures.FlashCounter(30)  # both states brighter than 0.8 relative luminance: not a flash
    events = [bright.add(np.full((H, W, 3), 240 + 15 * (i % 2), np.uint8))[0] for i in range(30)]
    assert max_flashes(events, 30) == 0.0


def test_red_flashes_are_counted_on_their_own():
    red = np.zeros((H, W, 3), np.uint8)
    red[..., 0] = 255
    dark_red = red.copy()
    dark_red[..., 0] = 40  # a change in red (R − G − B)·320 ≫ 20, of saturated red both ways
    counter = measures.FlashCounter(30)
    pairs = [counter.add(red if i % 2 else dark_red) for i in range(30)]
    assert max_flashes([r for _, r in pairs], 30) > 3
    grey = measures.FlashCounter(30)
    pairs = [grey.add(np.full((H, W, 3), 40 + 10 * (i % 2), np.uint8)) for i in range(30)]
    assert max_flashes([r for _, r in pairs], 30) == 0.0


def test_change_freeze_and_hue_share(photo):
    assert measures.change(photo, photo) == 0.0 and measures.change(photo, photo // 2) > 10
    assert measures.longest_run([False, True, True, True, False, True], fps=2) == 1.5
    red = np.zeros((H, W, 3), np.uint8)
    red[..., 0] = 220
    assert measures.hue_share(red) == 1.0 and measures.hue_share(np.full((H, W, 3), 128, np.uint8)) == 0.0
    half = red.copy()
    half[:, W // 2:] = (0, 0, 220)  # half red, half blue: the largest hue holds half
    assert measures.hue_share(half) == pytest.approx(0.5)
    assert measures.ssim(photo, photo) == pytest.approx(1.0) and measures.ssim(photo, 255 - photo) < 0.2
