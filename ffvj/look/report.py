"""``ffvj look``: the instrument's own eyes. Fixed inputs through the default look and every factory preset,
rendered by the real show (``show.run``, offline), measured frame by frame (``measures``), reported as a
table or JSON, with a contact sheet (PNG) per run.

Inputs (``INPUTS``; or any ``--source``): ``generator`` (the built-in plasma), ``pan`` (a slow drift over
a photo the model never trained on) and ``still`` (another such photo, held). The photos are the test
split of scikit-image's (``pip install 'ffvj[look]'``).

Checks, per run (what issue "the picture" asks of every look):

    lattice   the picture's lattice excess, settled, ≤ 2× the source's own + 1 level
    input     input SSIM over 0.3–2 s ≥ 0.45 (the default look on the pan: the input shows at once)
    freeze    a still input never freezes the picture for more than 5 s
    flashes   never more than 3 general or red flashes in any second
    colour    the most common hue's share of the loop's own picture, settled, ≤ 2× the source's + 0.1
              (before the output's grade: a burn is the loop's doing, a grade the performer's choice;
              the JSON has the output's share too)

Every measure but colour is of what the sinks get: graded, flash-limited.
"""

from __future__ import annotations

import json
import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from ..engine.flashes import BUDGET, max_flashes
from ..options import check_choices, model_option, option, settings_option, size
from . import measures

INPUTS = ("generator", "pan", "still")
PHOTOS = {"pan": "coffee", "still": "chelsea"}  # scikit-image's test split: never trained on
SHEET_TILE = (240, 136)  # (width, height) of one frame on a contact sheet


@dataclass
class LookConfig:
    """``ffvj look``'s runs (each field with an ``option`` is also its flag: ``ffvj.options``)."""

    inputs: tuple[str, ...] = option(INPUTS, f"{', '.join(INPUTS)} (default: all three), or a source spec such as "
                                             "video:clip.mp4; repeatable", flag="--input", metavar="NAME|SPEC",
                                     repeat=True)
    presets: tuple[str, ...] = option((), "default or a preset name; repeatable (default: default and every factory "
                                          "preset)", flag="--preset", metavar="NAME", repeat=True)
    width: int = option(480, "the picture's size", flag="--size", parse=size, joins=("width", "height"))
    height: int = 270
    fps: float = option(30.0, "frames per second")
    # Long enough to see a still input freeze for good (the check allows 5 s).
    seconds: float = option(15.0, "each run's length")
    seed: int = option(0, "the runs' seed")
    model: str | None = model_option()
    settings: dict = settings_option("a parameter set on top of every preset")
    out: str = option("runs/look", "folder for the contact sheets and look.json")
    # jpg: a tenth of the bytes, for pages that show many.
    sheets: str = option("png", "contact sheet format", choices=("png", "jpg"))
    sample_every: float = 0.25  # seconds between the costlier measures (lattice, SSIM, texture)
    levels: bool = option(True, "contact sheets without the feature levels' views (the source and the picture only)",
                          flag="--no-levels")
    audio: str | None = option(None, "a sound every run hears (file:PATH): the looks that play to music (kick, tide) "
                                     "are judged hearing it; the others hear only its tempo (their LFOs)",
                                 metavar="SPEC")
    hierarchy: bool = option(True, "skip the hierarchy measure (each look rendered again with the hierarchy cut: "
                                   "twice the time)", flag="--no-hierarchy")

    def __post_init__(self) -> None:
        check_choices(self)


class _Texture:
    """What a run's settled stretch (from ``settled_from`` on) looks like: every ``sample`` frames the
    structure (``texture_stats``), detail, dead area and complexity of the loop's own picture ("raw",
    before the grade and the limiter), of the output and of the source; every frame their steps for the
    grid structure (cheap, and the more frames its average has, the less a short run's chance alignment
    reads as a grid) and the raw picture's motion and flicker."""

    def __init__(self, sample: int, settled_from: int):
        self.sample, self.settled_from = sample, settled_from
        self.stats: dict[str, list] = {"raw": [], "output": [], "source": []}
        self.figures: dict[str, dict[str, list]] = {
            k: {"detail": [], "dead": [], "complexity": [], "colourfulness": []} for k in self.stats}
        self.frames: dict[str, list] = {k: [] for k in self.stats}  # every settled frame's steps (the grid's phases)
        self.motion: list[float] = []
        self.flicker: list[float] = []
        self._last: list[np.ndarray] = []

    def __call__(self, slot: int, picture: np.ndarray, source: np.ndarray | None, raw: np.ndarray) -> None:
        if slot < self.settled_from:
            return
        self._last = (self._last + [raw])[-3:]
        if len(self._last) >= 2:
            self.motion.append(measures.change(self._last[-1], self._last[-2]))
        if len(self._last) == 3:
            self.flicker.append(measures.flicker(*self._last))
        sampled = slot % self.sample == 0
        for key, frame in (("raw", raw), ("output", picture), ("source", source)):
            if frame is None:
                continue
            self.frames[key].append(measures.grid_profiles(frame))
            if not sampled:
                continue
            self.stats[key].append(measures.texture_stats(frame))
            figures = self.figures[key]
            figures["detail"].append(measures.detail(frame))
            figures["dead"].append(measures.dead_area(frame))
            figures["complexity"].append(measures.complexity(frame))
            figures["colourfulness"].append(measures.colourfulness(frame))

    def grid(self, key: str) -> float | None:
        """``measures.grid_structure`` of the settled stretch: steps averaged over its frames first."""
        profiles = self.frames[key]
        return measures.grid_structure_of_profiles(profiles) if profiles else None

    def settled(self, key: str) -> dict | None:
        return measures.mean_stats(self.stats[key]) if self.stats[key] else None

    def wander(self, key: str) -> float | None:
        """How far the settled stretch's structure moves by itself: its first half's from its second's."""
        stats = self.stats[key]
        if len(stats) < 2:
            return None
        half = len(stats) // 2
        return measures.texture_distance(measures.mean_stats(stats[:half]), measures.mean_stats(stats[half:]))


@dataclass
class _Run:
    """What one run measured, frame by frame (or every few frames)."""

    fps: float
    sample: int
    change: list = field(default_factory=list)
    general: list = field(default_factory=list)
    red: list = field(default_factory=list)
    hue: list = field(default_factory=list)
    output_hue: list = field(default_factory=list)
    source_hue: list = field(default_factory=list)
    sampled: list = field(default_factory=list)  # (t, lattice, source lattice, level lattices, ssim)
    sheet: dict = field(default_factory=dict)  # frame index → (source, picture, level views, raw picture)
    cut_sheet: dict = field(default_factory=dict)  # frame index → the hierarchy-cut twin's raw picture
    texture: _Texture | None = None
    level_lattice: bool = True  # each level state's lattice (reported, not a check: a quarter of a small run's time)

    def __post_init__(self):
        self._flashes = measures.FlashCounter(self.fps)
        self._previous = None

    def __call__(self, slot: int, picture: np.ndarray, source: np.ndarray | None, engine) -> None:
        raw = engine.readback()  # the loop's own picture: before the output's grade and the limiter
        if self.texture is not None:
            self.texture(slot, picture, source, raw)
        general, red = self._flashes.add(picture)
        self.general.append(general)
        self.red.append(red)
        if self._previous is not None:
            self.change.append(measures.change(picture, self._previous))
        self._previous = picture.copy()
        # Colour balance is the loop's own (engine.states[0]: before the output's grade and the
        # limiter): the burn it checks for is the feedback's; a grade is colour set on purpose.
        self.hue.append(measures.hue_share(raw))
        self.output_hue.append(measures.hue_share(picture))
        if source is not None:
            self.source_hue.append(measures.hue_share(source))
        if slot % self.sample == 0:
            levels = [measures.state_lattice(s[0].float().cpu().numpy()) for s in engine.states[1:]
                      if min(s.shape[-2:]) >= 2 * measures.LATTICE] if self.level_lattice else []
            self.sampled.append((slot / self.fps, measures.frame_lattice(picture),
                                 measures.frame_lattice(source) if source is not None else None, levels,
                                 measures.ssim(picture, source) if source is not None else None))


def _photo(name: str, folder: Path) -> Path:
    from ..model.data import builtin_photos

    try:
        rgb = builtin_photos("test")[name]
    except RuntimeError as exc:  # scikit-image missing: say which extra brings it
        raise RuntimeError(f"the {name!r} photo comes with scikit-image: pip install 'ffvj[look]' ({exc})") from exc
    path = folder / f"{name}.png"
    cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return path


def _source(name: str, folder: Path) -> tuple[str, dict]:
    if name == "generator":
        return "generator", {}
    if name == "pan":
        return f"image:{_photo(PHOTOS['pan'], folder)}", {"pan": 16.0, "zoom": 1.3}
    if name == "still":
        return f"image:{_photo(PHOTOS['still'], folder)}", {}
    return name, {}  # a spec of the user's


def _presets(cfg: LookConfig) -> list[str | None]:
    if cfg.presets:
        return [None if p == "default" else p for p in cfg.presets]
    from ..control.presets import PRESET_SUFFIX, factory_presets_dir

    factory = factory_presets_dir()
    return [None] + sorted(p.stem for p in factory.glob(f"*{PRESET_SUFFIX}")) if factory else [None]


def plan(cfg: LookConfig) -> list[tuple[str, str | None]]:
    """The runs ``look`` makes, in order: (input, preset), the preset None for the default look."""
    return [(name, preset) for name in cfg.inputs for preset in _presets(cfg)]


def look(cfg: LookConfig, progress=None) -> dict:
    """Render and measure every input × preset (``plan``); returns the report (see ``format_report``).
    ``progress(row, done, total)`` is called after each run. With ``cfg.hierarchy`` each look is rendered
    again with the hierarchy cut (``l0.gain_down = 0``): how far the look's settled structure is from its
    cut twin's, over how far a structure wanders by itself (a settled stretch's two halves: the less
    restless of the look and its twin)."""
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    runs = []
    settled: dict[str, dict[str, np.ndarray]] = {}  # input → preset → its last raw frame
    runs_planned = plan(cfg)
    with tempfile.TemporaryDirectory() as tmp:
        sources = {}
        for name, preset in runs_planned:
            if name not in sources:
                sources[name] = _source(name, Path(tmp))
            row, measured = measure(cfg, sources[name], name, preset, cfg.settings, sheets=True)
            label = f"{_label(name)}-{preset or 'default'}"
            settled.setdefault(name, {})[preset or "default"] = measured.sheet[max(measured.sheet)][3]
            row["sheet"] = str(_contact_sheet(measured, out / f"{label}.{cfg.sheets}", label, cfg.fps))
            runs.append(row)
            if progress:
                progress(row, len(runs), len(runs_planned))
    return {"size": f"{cfg.width}x{cfg.height}", "fps": cfg.fps, "seconds": cfg.seconds, "seed": cfg.seed,
            "model": cfg.model or "default", "audio": cfg.audio, "runs": runs, "distinct": _distinct(settled)}


def measure(cfg: LookConfig, source: tuple[str, dict], name: str, preset: str | None, settings: dict,
            sheets: bool = False, label: str | None = None, level_lattice: bool = True,
            cut_if=None) -> tuple[dict, "_Run"]:
    """One look on one input (``source``: a spec and its options, from ``_source``), rendered and
    measured, and with ``cfg.hierarchy`` its hierarchy-cut twin too: the report's row (``_summarise``,
    named ``label``, else the preset's name) and what was measured (with ``sheets``, the contact
    sheet's frames; else the last frame alone; without ``level_lattice``, no level state's lattice).
    ``cut_if(row)``, given, decides from the look's own row whether its twin is worth rendering (a search
    need not measure the hierarchy of a look that already failed: its row then has no hierarchy check)."""
    spec, options = source
    frames = max(2, round(cfg.seconds * cfg.fps))
    sample = max(1, round(cfg.sample_every * cfg.fps))
    settled_from = round(frames * SETTLED)
    sheet_at = sorted({min(frames - 1, round(t * cfg.fps)) for t in
                       (0.1, 0.5, 1.0, 2.0, cfg.seconds / 2, cfg.seconds)})
    texture_every = max(1, round(cfg.fps / TEXTURE_RATE))
    measured = _Run(cfg.fps, sample, texture=_Texture(texture_every, settled_from), level_lattice=level_lattice)

    def on_frame(slot, picture, source, engine):
        measured(slot, picture, source, engine)
        if slot in sheet_at and (sheets or slot == sheet_at[-1]):
            views = [engine.readback(picture=engine.view(lvl)) for lvl in range(1, engine.levels + 1)] \
                if cfg.levels and sheets else []
            measured.sheet[slot] = (None if source is None else source.copy(), picture.copy(), views,
                                    engine.readback())

    _render(cfg, spec, options, preset, settings, cfg.seed, frames, on_frame)
    twins = {}
    label = label or preset or "default"
    if cfg.hierarchy and (cut_if is None or cut_if(_summarise(measured, name, label, cfg))):  # the look, cut
        twins["cut"] = cut = _Texture(texture_every, settled_from)

        def on_cut_frame(slot, picture, source, engine):
            raw = engine.readback()
            cut(slot, picture, source, raw)
            if sheets and slot in sheet_at:
                measured.cut_sheet[slot] = raw

        _render(cfg, spec, options, preset, {**settings, CUT: 0.0}, cfg.seed, frames, on_cut_frame)
    return _summarise(measured, name, label, cfg, twins), measured


CUT = "l0.gain_down"  # the hierarchy's way into the picture: at 0 the picture never hears the levels
SETTLED = 0.75  # the last quarter of a run: where a look has settled
TEXTURE_RATE = 15.0  # samples a second of the settled stretch's texture (its statistics wander: many samples)


def _render(cfg: LookConfig, spec: str, options: dict, preset: str | None, settings: dict, seed: int, frames: int,
            on_frame) -> None:
    from ..show import RunConfig, run

    run(RunConfig(source=spec, source_options=options, sinks=["null"], width=cfg.width, height=cfg.height,
                  fps=cfg.fps, frames=frames, model=cfg.model, seed=seed, pace="offline", preset=preset,
                  settings=dict(settings), audio=cfg.audio, status_interval=math.inf), on_frame=on_frame)


DISTINCT = 0.5  # two looks whose settled frames are this similar (SSIM) or more are one look twice


def _distinct(settled: dict[str, dict[str, np.ndarray]]) -> dict:
    """Per input, the most similar pair of looks (SSIM of their last frames): every look should differ."""
    out = {}
    for name, frames in settled.items():
        looks = sorted(frames)
        pairs = [(measures.ssim(frames[a], frames[b]), a, b) for i, a in enumerate(looks) for b in looks[i + 1:]]
        if pairs:
            value, a, b = max(pairs)
            alike = [[x, y, round(v, 3)] for v, x, y in sorted(pairs, reverse=True) if v >= DISTINCT]
            out[name] = {"max_ssim": value, "pair": [a, b], "ok": value < DISTINCT, "alike": alike}
    return out


def _label(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)[:40]


def _mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b <= 0 else a / b


def _texture(m: _Run, twins: dict) -> dict:
    """The settled stretch's texture and life, the picture's against the source's; with the twins, the
    hierarchy's contribution: the structure's distance from the cut twin over the two cut runs' distance."""
    t = m.texture
    fig = {key: {name: _mean(values) for name, values in t.figures[key].items()} for key in t.figures}
    src = fig["source"]
    out = {
        "detail": {"raw": _ratio(fig["raw"]["detail"], src["detail"]),
                   "output": _ratio(fig["output"]["detail"], src["detail"]), "source": src["detail"]},
        "dead_area": {k: fig[k]["dead"] for k in ("raw", "output", "source")},
        "complexity": {"raw": _ratio(fig["raw"]["complexity"], src["complexity"]),
                       "output": _ratio(fig["output"]["complexity"], src["complexity"]), "source": src["complexity"]},
        "grid": {k: t.grid(k) for k in ("raw", "output", "source")},
        "colourfulness": {k: fig[k]["colourfulness"] for k in ("raw", "output", "source")},
        "motion": _mean(t.motion), "flicker": _mean(t.flicker),
    }
    cut = twins.get("cut")
    if cut is not None:
        hierarchy = {}
        for key in ("raw", "output"):
            look, twin = t.settled(key), cut.settled(key)
            wanders = [w for w in (cut.wander(key), t.wander(key)) if w is not None]
            if look is None or twin is None or not wanders:
                continue
            # The floor: how far the two processes' structure wanders by itself, the less restless of the
            # two (a twin that freezes on a still is nudged back to life by the guard, and its nudges
            # would raise a floor taken from it alone to the distance itself).
            wander = min(wanders)
            apart = measures.texture_distance(look, twin)
            hierarchy[key] = {"ratio": apart / max(wander, HIERARCHY_NOISE), "distance": apart, "floor": wander,
                              "colour": measures.texture_distance(look, twin, ("colour",))}
        out["hierarchy"] = hierarchy
    return out


# The least noise floor the hierarchy's ratio divides by: a still input's cut twin can settle to a picture
# whose structure hardly moves at all, and a distance over nothing would read as anything.
HIERARCHY_NOISE = 0.05


def _summarise(m: _Run, name: str, preset: str, cfg: LookConfig, twins: dict | None = None) -> dict:
    frames = len(m.general)
    settled_from = cfg.seconds * 0.75  # the last quarter: where a look has settled
    settled = [s for s in m.sampled if s[0] >= settled_from] or m.sampled[-1:]
    early = [s for s in m.sampled if 0.3 <= s[0] <= 2.0]
    tail = slice(round(frames * 0.75), None)
    lattice = _mean(s[1] for s in settled)
    source_lattice = _mean(s[2] for s in settled)
    depth = max((len(s[3]) for s in settled), default=0)
    levels = [_mean(s[3][i] for s in settled if len(s[3]) > i) for i in range(depth)]
    row = {
        "input": name, "preset": preset, "frames": frames,
        "lattice": {"picture": lattice, "source": source_lattice, "levels": levels,
                    "over_time": [[round(s[0], 2), round(s[1], 2)] for s in m.sampled]},
        "input_ssim": {"early": _mean(s[4] for s in early), "settled": _mean(s[4] for s in settled)},
        "change": {"mean": _mean(m.change), "longest_freeze_s": measures.longest_run(
            [c < measures.FROZEN for c in m.change], cfg.fps)},
        "flashes": {"general": max_flashes(m.general, cfg.fps), "red": max_flashes(m.red, cfg.fps)},
        "hue_share": {"picture": _mean(m.hue[tail]), "source": _mean(m.source_hue[tail]),
                      "output": _mean(m.output_hue[tail])},
    }
    if m.texture is not None:
        row["texture"] = _texture(m, twins or {})
    row["checks"] = _checks(row, name, preset)
    return row


def _checks(row: dict, name: str, preset: str) -> dict:
    checks = {}
    lat = row["lattice"]
    if lat["picture"] is not None and lat["source"] is not None:
        checks["lattice"] = lat["picture"] <= 2 * lat["source"] + 1.0
    if name == "pan" and preset == "default" and row["input_ssim"]["early"] is not None:
        checks["input"] = row["input_ssim"]["early"] >= 0.45
    if name == "still":
        checks["freeze"] = row["change"]["longest_freeze_s"] <= 5.0
    checks["flashes"] = max(row["flashes"].values()) <= BUDGET
    hue = row["hue_share"]
    if hue["picture"] is not None and hue["source"] is not None:
        checks["colour"] = hue["picture"] <= 2 * hue["source"] + 0.1
    texture = row.get("texture")
    if texture is not None and texture["detail"]["raw"] is not None:
        checks["detail"] = texture["detail"]["raw"] >= MIN_DETAIL
        checks["dead"] = texture["dead_area"]["raw"] <= texture["dead_area"]["source"] + MAX_DEAD_OVER
        checks["grid"] = texture["grid"]["raw"] <= MAX_GRID * max(texture["grid"]["source"], MIN_SOURCE_GRID)
        if "raw" in texture.get("hierarchy", {}):
            checks["hierarchy"] = texture["hierarchy"]["raw"]["ratio"] >= MIN_HIERARCHY
    return checks


# Issue 22's bar for every look, on the loop's own picture: at least half the source's detail, no more
# dead area than the source's + 0.1, grid structure at most 1.5× the source's, and a hierarchy whose
# contribution stands clearly above the noise of the process (see _texture; calibrated in docs/LOOKS.md).
MIN_DETAIL, MAX_DEAD_OVER, MAX_GRID, MIN_HIERARCHY = 0.5, 0.1, 1.5, 6.0
MIN_SOURCE_GRID = 0.05  # a photo's grid reading: the generator's smooth plasma reads 0.03, a bar no picture meets


def _tile(rgb: np.ndarray | None, text: str) -> np.ndarray:
    w, h = SHEET_TILE
    tile = np.zeros((h, w, 3), np.uint8) if rgb is None else cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA)
    tile = np.ascontiguousarray(tile)
    cv2.putText(tile, text, (4, h - 6), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(tile, text, (4, h - 6), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1, cv2.LINE_AA)
    return tile


def _contact_sheet(m: _Run, path: Path, label: str, fps: float) -> Path:
    """The source (top row), the picture (below it), the picture with the hierarchy cut (when measured)
    and each feature level's view (``engine.view``: its principal components as RGB; one row per level)
    at the same moments."""
    slots = sorted(m.sheet)
    rows = [[_tile(m.sheet[s][0], f"source {s / fps:.1f} s") for s in slots],
            [_tile(m.sheet[s][1], f"{label} {s / fps:.1f} s") for s in slots]]
    if m.cut_sheet:  # the same look with the hierarchy cut: what the levels add is the difference
        rows.append([_tile(m.cut_sheet.get(s), f"hierarchy cut {s / fps:.1f} s") for s in slots])
    for lvl in range(len(m.sheet[slots[0]][2])):
        rows.append([_tile(m.sheet[s][2][lvl], f"level {lvl + 1} {s / fps:.1f} s") for s in slots])
    sheet = np.concatenate([np.concatenate(row, 1) for row in rows], 0)
    options = [cv2.IMWRITE_JPEG_QUALITY, 88] if path.suffix == ".jpg" else []
    cv2.imwrite(str(path), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR), options)
    return path


def _fmt(value, spec: str = ".2f") -> str:
    return "—" if value is None else format(value, spec)


def format_report(report: dict) -> str:
    wi = max([5] + [len(r["input"]) for r in report["runs"]])
    wp = max([6] + [len(r["preset"]) for r in report["runs"]])
    lines = [f"ffvj look — {report['size']} at {report['fps']:g} fps, {report['seconds']:g} s, seed {report['seed']}, "
             f"model {report['model']}" + (f", hearing {report['audio']}" if report.get("audio") else ""),
             f"{'input':<{wi}} {'preset':<{wp}} {'lattice':>8} {'(src)':>6} {'levels':<17} {'ssim':>5} {'change':>6} "
             f"{'freeze':>6} {'flash':>5} {'red':>4} {'hue':>5} {'(src)':>5} {'hier':>5} {'detail':>6} {'dead':>5} "
             f"{'(src)':>5} {'cplx':>5} {'flick':>5} {'grid':>5} {'(src)':>5}  checks"]
    for r in report["runs"]:
        levels = "/".join(_fmt(v, ".1f") for v in r["lattice"]["levels"]) or "—"
        failed = [k for k, ok in r["checks"].items() if not ok]
        lines.append(
            f"{r['input']:<{wi}} {r['preset']:<{wp}} {_fmt(r['lattice']['picture']):>8} "
            f"{_fmt(r['lattice']['source']):>6} {levels:<17} {_fmt(r['input_ssim']['early']):>5} "
            f"{_fmt(r['change']['mean'], '.1f'):>6} {r['change']['longest_freeze_s']:>5.1f}s "
            f"{r['flashes']['general']:>5.1f} {r['flashes']['red']:>4.1f} {_fmt(r['hue_share']['picture']):>5} "
            f"{_fmt(r['hue_share']['source']):>5} {_texture_columns(r.get('texture'))} "
            f" {'ok' if not failed else 'FAIL: ' + ', '.join(failed)}")
    for name, d in report.get("distinct", {}).items():
        also = "".join(f", {x} and {y} {v:.2f}" for x, y, v in d.get("alike", [])[1:])
        lines.append(f"distinct looks on {name}: the most alike pair, {d['pair'][0]} and {d['pair'][1]}, SSIM "
                     f"{d['max_ssim']:.2f} ({'ok' if d['ok'] else 'FAIL'}: < {DISTINCT}{also and '; also alike' + also})")
    lines.append("lattice: the excess on the 1/8-cycle lattice in 8-bit levels, settled (levels: each level's state); "
                 "ssim: to the source over 0.3–2 s; change: levels a frame; freeze: the longest still stretch; "
                 "flash, red: the most in any second; hue: the largest hue's share of the loop's picture (before the grade); "
                 "settled, on the loop's own picture: hier: the structure's distance from the hierarchy-cut twin over how "
                 "far a structure wanders by itself; detail: gradient energy over the source's; dead: the share of flat 16×16 blocks; cplx: JPEG "
                 "bits a pixel over the source's; flick: the second difference in time, levels; grid: steps on the "
                 "2/4/8-pixel block boundaries over steps elsewhere")
    return "\n".join(lines)


def _texture_columns(t: dict | None) -> str:
    if t is None:
        return " ".join(f"{'—':>{w}}" for w in (5, 6, 5, 5, 5, 5, 5, 5))
    hierarchy = t.get("hierarchy", {}).get("raw", {}).get("ratio")
    return (f"{_fmt(hierarchy, '.1f'):>5} {_fmt(t['detail']['raw']):>6} {_fmt(t['dead_area']['raw']):>5} "
            f"{_fmt(t['dead_area']['source']):>5} {_fmt(t['complexity']['raw']):>5} {_fmt(t['flicker'], '.1f'):>5} "
            f"{_fmt(t['grid']['raw']):>5} {_fmt(t['grid']['source']):>5}")


def write_json(report: dict, path: Path) -> Path:
    path.write_text(json.dumps(report, indent=2) + "\n")
    return path
