"""The output's colour grade: a gradient map, as VJ mixers' "colorize" / "duotone" effects do it.

``grade(picture, phi.grade)`` recolours the picture (C=3, values in [-1, 1]) by its luminance: black →
the shadow colour (a full, deep colour of hue ``grade.shadows``) at mid-grey → the highlight colour
(a light colour of hue ``grade.highlights``) at white; ``grade.invert`` reads the luminance the other
way round (a negative); ``grade.mix`` blends the map over the picture (0: off, the picture as it is).

It grades what the sinks get, never the feedback: a colour change inside the loop compounds every
frame and burns to one hue, where one applied at the output stays exactly what the performer set.
At ``grade.mix`` 0 it costs nothing; otherwise a few passes over the picture.
"""

from __future__ import annotations

import colorsys

import torch

from ..phi import GradePhi
from .delta import luminance01

SHADOW_SATURATION, SHADOW_VALUE = 1.0, 0.75  # a deep, full colour at mid-grey
HIGHLIGHT_SATURATION, HIGHLIGHT_VALUE = 0.8, 1.0  # a light colour at white


def stop_color(hue_deg: float, saturation: float, value: float) -> tuple[float, float, float]:
    """One colour of the map, RGB in [0, 1]."""
    return colorsys.hsv_to_rgb((hue_deg % 360.0) / 360.0, saturation, value)


def gradient_map(picture: torch.Tensor, shadows_deg: float, highlights_deg: float, invert: bool,
                 mix: float) -> torch.Tensor:
    """The picture recoloured by its luminance (see the module docstring); a new tensor, in the
    picture's own memory layout."""
    lum = luminance01(picture)  # (N, 1, H, W) in [0, 1]
    if invert:
        lum = 1.0 - lum
    dark = stop_color(shadows_deg, SHADOW_SATURATION, SHADOW_VALUE)
    light = stop_color(highlights_deg, HIGHLIGHT_SATURATION, HIGHLIGHT_VALUE)
    low = (2 * lum).clamp_(max=1.0)  # 0 → 1 over black .. mid-grey
    high = (2 * lum - 1).clamp_(min=0.0)  # 0 → 1 over mid-grey .. white
    # Channel by channel into a tensor laid out like the picture: a (1, 3, 1, 1) colour broadcast
    # against a (N, 1, H, W) map gives a tensor of ambiguous strides on which the next operations
    # ran 50× slower (2 ms each at 640×360).
    mapped = torch.empty_like(picture)
    for c in range(3):  # in [0, 1], then to [-1, 1]
        torch.add(low * (2 * dark[c]), high, alpha=2 * (light[c] - dark[c]), out=mapped[:, c:c + 1]).sub_(1)
    return picture.lerp(mapped, mix)


def grade(picture: torch.Tensor, settings: GradePhi) -> torch.Tensor:
    """What the output shows of the picture under φ's grade: the picture itself when off."""
    mix = float(settings.mix)
    if mix <= 0:
        return picture
    return gradient_map(picture, settings.shadows, settings.highlights, settings.invert, mix)
