"""Flashes, by the rules of ITU-R BT.1702 and WCAG 2.3.1 (as EA's IRIS counts them), and the output's limiter.

The rules, on relative luminance L (linear light, 0.2126 R + 0.7152 G + 0.0722 B):

- a *general transition* is a change of L by at least 0.1 (of the maximum) where the darker state is
  below 0.8, over at least a quarter of the frame; a slow change accumulates over frames until it
  gets there, and a turn of direction starts a new one;
- a *red transition* is a change of at least 20 in (R − G − B)·320 (linear RGB, negative as 0) where
  one of the two states is saturated red, R/(R + G + B) ≥ 0.8, over at least a quarter of the frame;
- a *flash* is a pair of opposing transitions; more than 3 general or 3 red flashes in any one second
  is the risk.

``FlashTracker`` applies them frame by frame; ``FlashLimiter`` keeps a show's output within them with
the least visible change it can find: once a second's budget is spent, a frame that would make one
more transition is blended toward the frame shown before it (by halves, down to holding it) until it
no longer would. The feedback itself is never touched, only what the sinks get. Statistics are taken
on every ``stride``-th pixel each way (the rules are about areas; a quarter of the frame is a quarter of
its samples), so the tracker costs little on a CPU and nothing that matters on a GPU.
"""

from __future__ import annotations

import collections
import logging

import torch

from ..reporting import RateLimitedLog

log = logging.getLogger(__name__)

STEP, DARK, AREA = 0.1, 0.8, 0.25  # a general transition: ΔL ≥ 0.1 with the darker state < 0.8, over 25 %
RED_RATIO, RED_STEP = 0.8, 20.0  # a red one: Δ(R − G − B)·320 ≥ 20 with R/(R + G + B) ≥ 0.8 on one side
BUDGET = 3  # flashes allowed in any one second
_LUMA = (0.2126, 0.7152, 0.0722)


def flashes_in(signs) -> float:
    """Flashes in a run of per-frame transitions (+1, −1, 0): the opposing ones (the first counts, then
    each turn of direction), halved."""
    signs = [s for s in signs if s]
    return (1 + sum(a != b for a, b in zip(signs, signs[1:]))) / 2 if signs else 0.0


def max_flashes(signs: list[int], fps: float) -> float:
    """The most flashes in any one-second window of per-frame transitions."""
    window = max(1, round(fps))
    return max((flashes_in(signs[i:i + window]) for i in range(max(1, len(signs) - window + 1))), default=0.0)


class FlashTracker:
    """The per-pixel state the rules need, fed one picture (1, 3, H, W) in [−1, 1] at a time.

    ``look(picture)`` says which transitions the picture *would* make after the last one added, without
    committing: a ``(signs, state)`` pair, ``signs`` being ``(general, red)`` (+1 brighter or redder, −1
    darker or less red, 0 none); ``commit`` that pair to add the picture; ``add(picture)`` does both and
    returns the signs. ``events`` holds the last second's."""

    def __init__(self, fps: float, stride: int = 4):
        self.window = max(1, round(fps))
        self.stride = stride
        self._last = None  # (luminance, redness, saturated red) of the last picture added
        self._acc = None  # accumulated change per pixel: (general, red)
        self.events = {"general": collections.deque(maxlen=self.window), "red": collections.deque(maxlen=self.window)}

    def _measure(self, picture: torch.Tensor):
        # The 8-bit codes the sinks get (readback's rounding), so the limiter counts exactly what a viewer
        # of the output would: near the thresholds, rounding alone decides whether a frame is a transition.
        codes = torch.add(picture[0, :, ::self.stride, ::self.stride].float(), 1.0).mul_(127.5).add_(0.5)
        srgb = codes.clamp_(0.0, 255.0).floor_().div_(255.0)
        linear = torch.where(srgb <= 0.04045, srgb / 12.92, ((srgb + 0.055) / 1.055) ** 2.4)
        r, g, b = linear
        luminance = _LUMA[0] * r + _LUMA[1] * g + _LUMA[2] * b
        redness = (r - g - b).clamp_(min=0.0) * 320.0
        saturated = r >= RED_RATIO * (r + g + b).clamp_(min=1e-6)
        return luminance, redness, saturated

    @staticmethod
    def _transition(acc: torch.Tensor, step: torch.Tensor, moved) -> tuple[int, torch.Tensor, torch.Tensor]:
        # A change in the direction of the one under way adds to it (a fade over frames); a turn starts anew.
        acc = torch.where(torch.sign(step) == torch.sign(acc), acc + step, step)
        mask = moved(acc)
        up, down = (mask & (acc > 0)).float().mean().item(), (mask & (acc < 0)).float().mean().item()
        sign = 0 if max(up, down) < AREA else (1 if up >= down else -1)
        return sign, acc, mask

    def _step(self, picture: torch.Tensor):
        now = self._measure(picture)
        if self._last is None:
            zeros = torch.zeros_like(now[0])
            return (0, 0), now, (zeros, zeros.clone())
        (lum, red, sat), (lum0, red0, sat0) = now, self._last
        acc_g, acc_r = self._acc
        g, acc_g, moved_g = self._transition(acc_g, lum - lum0, lambda a: (a.abs() >= STEP)
                                             & (torch.minimum(lum, lum - a) < DARK))
        r, acc_r, moved_r = self._transition(acc_r, red - red0, lambda a: (a.abs() >= RED_STEP) & (sat | sat0))
        if g:  # counted: those pixels start a new run
            acc_g = torch.where(moved_g, torch.zeros_like(acc_g), acc_g)
        if r:
            acc_r = torch.where(moved_r, torch.zeros_like(acc_r), acc_r)
        return (g, r), now, (acc_g, acc_r)

    def look(self, picture: torch.Tensor) -> tuple[tuple[int, int], tuple]:
        signs, now, acc = self._step(picture)
        return signs, (now, acc)

    def commit(self, looked: tuple[tuple[int, int], tuple]) -> tuple[int, int]:
        signs, (self._last, self._acc) = looked
        self.events["general"].append(signs[0])
        self.events["red"].append(signs[1])
        return signs

    def add(self, picture: torch.Tensor) -> tuple[int, int]:
        return self.commit(self.look(picture))

    def within_budget(self, signs: tuple[int, int]) -> bool:
        """Whether one more frame with these transitions keeps the last second within the budget."""
        return all(flashes_in(list(self.events[kind])[1:] + [sign]) <= BUDGET
                   for kind, sign in zip(("general", "red"), signs))


class FlashLimiter:
    """Keeps a show's output within ``BUDGET`` general and red flashes in any second (see the module
    docstring). ``limit(picture)`` returns what to show: the picture itself, or a blend toward the
    frame shown before it. ``limited`` counts the frames it changed; it says so in the log, rate-limited."""

    BLENDS = (0.5, 0.25, 0.125, 0.0)  # how much of the new frame a limited one keeps, tried in turn

    def __init__(self, fps: float, stride: int = 4):
        self.tracker = FlashTracker(fps, stride)
        self.limited = 0
        self._shown: torch.Tensor | None = None
        self._warn = RateLimitedLog(log, interval=5.0)

    def limit(self, picture: torch.Tensor, enabled: bool = True) -> torch.Tensor:
        """What to show for ``picture``; with ``enabled`` False it is shown as it is (and still followed,
        so turning the limiter on again counts the second that went before)."""
        looked = self.tracker.look(picture)
        shown = picture
        if enabled and self._shown is not None and not self.tracker.within_budget(looked[0]):
            for keep in self.BLENDS:
                shown = torch.lerp(self._shown, picture, keep) if keep else self._shown
                looked = self.tracker.look(shown)
                if keep == 0.0 or self.tracker.within_budget(looked[0]):
                    break
            self.limited += 1
            self._warn.warning("limit", "flash limiter: a frame would have made more than %d flashes in a "
                                        "second; shown softened (%d frames so far)", BUDGET, self.limited)
        self.tracker.commit(looked)
        # A reference, not a copy: the engine makes a new picture every frame and never writes an old one.
        self._shown = shown
        return shown
