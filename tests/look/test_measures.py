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


def test_detail_dead_area_and_complexity_fall_when_a_picture_blurs_out(photo):
    import cv2

    from ffvj.model.data import builtin_photos

    coffee = cv2.resize(builtin_photos("test")["coffee"], (W, H), interpolation=cv2.INTER_AREA)
    blurred = cv2.GaussianBlur(coffee, (0, 0), 4)
    flat = np.full_like(coffee, 128)
    assert measures.detail(blurred) < 0.5 * measures.detail(coffee) and measures.detail(flat) == 0
    assert measures.dead_area(flat) == 1.0 and measures.dead_area(coffee) < 0.3
    assert measures.complexity(blurred) < 0.7 * measures.complexity(coffee)


def test_flicker_tells_an_alternating_picture_from_a_moving_one(photo):
    shifted = [np.roll(photo, k, axis=1) for k in range(3)]  # moving steadily, a pixel a frame
    dark = (photo * 0.5).astype(np.uint8)
    assert measures.flicker(photo, dark, photo) > 4 * measures.flicker(*shifted)
    assert measures.flicker(photo, photo, photo) == 0


def test_grid_structure_catches_bars_on_the_pooling_grid_and_reads_low_on_a_photo():
    """Issue 22's dream: thin bars locked to the deepest pooling grid (every 8 pixels) in flat regions."""

    from ffvj.model.data import builtin_photos

    coffee = np.ascontiguousarray(builtin_photos("test")["coffee"][:270, :480])  # (resizing prints a grid of its own)
    barred = coffee.astype(np.int16)
    barred[7::8] += 6  # a faint line on every eighth row
    barred = np.clip(barred, 0, 255).astype(np.uint8)
    assert measures.grid_structure(coffee) < 0.1
    assert measures.grid_structure(barred) > 3 * measures.grid_structure(coffee)
    moved = np.roll(barred, 3, axis=0)  # on another phase of the same grid: still locked
    assert measures.grid_structure(moved) > 3 * measures.grid_structure(coffee)


def test_texture_distance_ignores_where_things_are_and_sees_what_they_are_like(photo):
    import cv2

    stats = measures.texture_stats(photo)
    assert measures.texture_distance(stats, stats) == 0
    shifted = measures.texture_stats(np.roll(photo, 40, axis=1))  # the same picture, elsewhere
    blurred = measures.texture_stats(cv2.GaussianBlur(photo, (0, 0), 3))
    striped = photo.copy()
    striped[::4] = 0  # a texture of its own
    assert measures.texture_distance(stats, shifted) < 0.2 * measures.texture_distance(stats, blurred)
    assert measures.texture_distance(stats, measures.texture_stats(striped)) > 0.3
    graded = (photo * np.array([1.0, 0.6, 0.3])).astype(np.uint8)  # a palette: colour, nothing else
    assert measures.texture_distance(stats, measures.texture_stats(graded), ("colour",)) > \
        2 * measures.texture_distance(stats, measures.texture_stats(graded)) * 0.1


def test_grid_structure_over_a_run_counts_what_stays_on_the_grid_not_what_passes_over_it():
    from ffvj.model.data import builtin_photos

    photo = builtin_photos("test")["coffee"].astype(np.int16)
    bars = np.zeros_like(photo)
    bars[7::8] = 6
    # The content moves a pixel a frame, the bars stay on the grid; then bars that move with it.
    locked = [np.clip(np.roll(photo, k, axis=0)[:270, :480] + bars[:270, :480], 0, 255).astype(np.uint8)
              for k in range(16)]
    moving = [np.clip(np.roll(photo + bars, k, axis=0)[:270, :480], 0, 255).astype(np.uint8) for k in range(16)]
    assert measures.grid_structure(locked) > 3 * measures.grid_structure(moving)
    assert measures.grid_structure(moving) < 0.05
