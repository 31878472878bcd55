"""Looking at the picture: measures of what the audience sees, and the report ``ffvj look`` makes of them.

    measures   lattice excess (a screen-locked pattern), SSIM to the source, change and freezes, flashes
               (ITU-R BT.1702 / WCAG 2.3.1, as IRIS counts them), the largest hue's share
    report     look(LookConfig(...)): fixed inputs through the default look and every factory preset,
               rendered by the real show, measured, checked, with a contact sheet per run
"""
