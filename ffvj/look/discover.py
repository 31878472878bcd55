"""``ffvj discover``: the write-up's own goal as a tool. A quality-diversity search (MAP-Elites) over φ and
the bundled models for feedback processes whose picture comes from the learned hierarchy.

    ffvj discover --minutes 10 --out runs/discover        # worker processes on this machine
    ffvj discover --scheduler tcp://HOST:8786              # the workers of a Dask cluster

A **candidate** is a point of [0, 1]^D: one dimension per parameter of ``SPACE`` (its range, through the
parameter's own curve) and one for the model. It is rendered small and short through the real show
(``DiscoverConfig``: 240×136, 10 s at 30 fps, the pan over a photo the model never trained on), as it
is and, if it passes every other check, again with the hierarchy cut, and judged by ``ffvj look``'s own
measures (``report.measure``).

* **Checks** (limits no look may break): ``ffvj look``'s (lattice, flashes, colour burn, detail, dead
  area, pooling grid, hierarchy) and two of its own: it keeps moving (``MIN_MOTION``) and does not
  flicker (``MAX_FLICKER``).
* **Objective**: 10 × the share of checks passed; a candidate that passes them all gets 10 plus up to 90
  for how plainly the hierarchy shows, how much detail it keeps and how alive it is (``objective``).
* **Descriptors**: motion (levels a frame) × colourfulness, so the archive is a gallery from calm to wild
  and from muted to vivid, the best process in each cell (Mouret and Clune 2015). Only a look that passes
  every check takes a cell: the archive is the gallery, and every parent a passing look.

The search is pyribs' (a ``GridArchive`` and IsoLine emitters, Vassiliades and Mouret 2018); the
evaluations run on Dask distributed: a ``LocalCluster`` of ``workers`` processes by default, or any
cluster's scheduler (``scheduler``; each worker needs ffvj and its ``discover`` extra installed, and
``MALLOC_MMAP_THRESHOLD_=33554432`` in its environment: README, "ffvj discover"). A
batch's results are matched to its candidates by position, so a run is reproducible from its seed
and number of iterations whatever the workers' timing.

On disk, in ``out`` (rewritten atomically after every iteration, so Ctrl-C or ``kill -9`` loses at most
the iteration under way, and a later run resumes): ``archive.npz`` (every elite's solution, objective
and descriptors: plain arrays, never a pickle), ``elites.json`` (their settings, checks and figures),
``state.json`` (iterations done, seed, the search's shape), ``evaluations.jsonl`` (one line per
evaluation, appended) and ``thumbs/`` (each elite's settled frame). At the end: ``presets/`` (every elite
that passes every check, as a preset: ``ffvj run --presets-dir OUT/presets --preset discovered-03``) and
``gallery.png`` (their frames on one sheet, laid out by the two descriptors).
"""

from __future__ import annotations

import datetime
import hashlib
import json
import logging
import math
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from ..files import write_atomically
from ..options import option, positive_int, size

log = logging.getLogger(__name__)

# The search space: parameter, low, high (native units; sampled through the parameter's own curve).
SPACE: tuple[tuple[str, float, float], ...] = (
    ("l0.zoom", 0.985, 1.03), ("l0.rotate", -2.0, 2.0), ("l0.warp", 0.0, 0.02), ("l0.gain_self", 0.4, 1.0),
    ("l0.gain_down", 0.3, 1.2), ("l0.blur", -0.6, 0.4),
    ("l1.rotate", -5.0, 5.0), ("l1.turn", -30.0, 30.0), ("l1.drive", 0.7, 2.5), ("l1.gain_down", 0.2, 1.2),
    ("l1.blur", -0.8, 0.4), ("l1.noise", 0.0, 0.15),
    ("l2.rotate", -6.0, 6.0), ("l2.turn", -40.0, 40.0), ("l2.drive", 0.7, 2.5), ("l2.noise", 0.0, 0.2),
    ("l2.blur", -0.8, 0.4), ("l2.amplify", 0.0, 0.1),
    ("l3.rotate", -8.0, 8.0), ("l3.turn", -45.0, 45.0), ("l3.noise", 0.0, 0.2),
    ("drive", 0.9, 1.8), ("input.mix", 0.05, 0.3), ("color.saturation", 0.4, 1.6), ("color.hue", -1.0, 1.0),
)
PASSING = 10.0  # the objective of a look that passes every check (and the least a cell's elite may have)
MIN_MOTION = 0.3  # levels a frame, settled: below it the look has frozen
MAX_FLICKER = 2.5  # levels: the settled picture's second difference in time
# The descriptors' ranges (the archive's extent), fitted to where candidates fall on the pan when judged
# settled (10 s): motion 0.37–0.90 levels a frame and colourfulness 34–103 for 90 % of them. (Fitted to
# 5-s renders, 0.4–2 and 40–140 left the settled looks in a corner: 36 passing candidates in 15 cells,
# 24 over these ranges.) Whatever falls outside is kept in the nearest edge cell.
MOTION_RANGE, COLOUR_RANGE = (MIN_MOTION, 1.2), (25.0, 110.0)
ARCHIVE_CELLS = (12, 12)  # finer niches keep more of what a run finds (8 × 8 kept 8 of a 10-minute run's 39 passing candidates)
# Models a search leaves out unless asked (--model): `smooth`'s sub-pixel decoders lay any life of a deep
# level on the 2/4/8-pixel grid, whatever φ (0 of 104 candidates on it passed the grid check; docs/LOOKS.md).
UNSEARCHED_MODELS = ("smooth",)
EXTRA = "pip install 'ffvj[discover]' (pyribs and Dask distributed)"


class DiscoverError(RuntimeError):
    """A discovery that cannot start or go on; the message says why and what to do."""


@dataclass(frozen=True)
class DiscoverConfig:
    """``ffvj discover``'s search (each field with an ``option`` is also its flag: ``ffvj.options``)."""

    out: str = option("runs/discover", "the archive, presets and gallery; a run there is resumed")
    minutes: float = option(10.0, "how long to search")
    iterations: int | None = option(None, "stop after this many iterations instead (reproducible with --seed)",
                                    parse=positive_int)
    workers: int = option(2, "worker processes on this machine", parse=positive_int)
    scheduler: str | None = option(None, "a Dask scheduler (tcp://HOST:8786) whose workers evaluate, instead of "
                                         "local processes", metavar="ADDRESS")
    seed: int = option(0, "the search's seed")
    width: int = option(240, "each candidate's size", flag="--size", parse=size, joins=("width", "height"))
    height: int = 136
    # Long enough to judge a look settled: at 5 s (150 frames) looks that drain away later still read
    # detailed and plainly hierarchical (one read hierarchy 19.5 at 5 s, 3.9 at 10 s, 3.7 at ffvj look's
    # 480×270 × 15 s); at 10 s the search's verdicts agreed with ffvj look's on the four looks compared.
    seconds: float = option(10.0, "each candidate's length")
    fps: float = 30.0
    input: str = "pan"
    models: tuple[str, ...] = option((), "search this bundled model only (repeatable; default: every bundled "
                                         "model but smooth)", flag="--model", metavar="NAME", repeat=True)
    batch: int = option(8, "candidates per emitter and iteration (two emitters)", parse=positive_int)
    fresh: bool = option(False, "start over instead of resuming what --out holds")

    def shape(self) -> dict:
        """What a resumed run must share with the run it resumes."""
        return {"space": [name for name, *_ in SPACE], "models": list(self.models), "size": [self.width, self.height],
                "seconds": self.seconds, "fps": self.fps, "input": self.input, "cells": list(ARCHIVE_CELLS),
                "ranges": [list(MOTION_RANGE), list(COLOUR_RANGE)]}


# --- a candidate: its settings, and how it is judged (this runs on the workers) ---------------------

def settings_of(solution, models: tuple[str, ...]) -> tuple[dict[str, float], str]:
    """A point of [0, 1]^D as parameter settings and a model name."""
    from ..control.params import build_registry

    registry = build_registry(3)
    settings = {}
    for u, (name, lo, hi) in zip(solution, SPACE):
        p = registry[name]
        a, b = p.to_normalized(lo), p.to_normalized(hi)
        settings[name] = round(p.from_normalized(a + (b - a) * min(max(float(u), 0.0), 1.0)), 5)
    index = min(int(float(solution[len(SPACE)]) * len(models)), len(models) - 1)
    return settings, models[index]


def objective(checks: dict[str, bool], hierarchy: float, detail: float, motion: float) -> float:
    """10 × the share of checks passed; with every check passed, 10 + 90 × how plainly the hierarchy shows
    (its ratio over 10, at most 1) × how much detail is kept (over 0.8 of the source's) × how alive the
    look is (its motion over 1.5 levels a frame)."""
    passed = sum(bool(v) for v in checks.values()) / max(1, len(checks))
    if passed < 1:
        return PASSING * passed
    return PASSING + 90.0 * min(1.0, hierarchy / 10) * min(1.0, detail / 0.8) * min(1.0, motion / 1.5)


_PHOTOS: dict[str, tuple[str, dict]] = {}  # input name → (spec, options): the photo written once per process


def evaluate(solution, cfg: DiscoverConfig, models: tuple[str, ...]) -> dict:
    """Render and judge one candidate (on a worker). Never raises for a bad candidate: a failure is a
    result with objective 0 and the error, so one strange corner of φ cannot stop the search."""
    import torch

    from .report import LookConfig, _source, measure

    torch.set_num_threads(1)  # a worker is one process of several: one core each
    logging.getLogger("ffvj.show").setLevel(logging.WARNING)
    logging.getLogger("ffvj.engine").setLevel(logging.ERROR)
    started = time.perf_counter()
    settings, model = settings_of(solution, models)
    result = {"solution": [float(u) for u in solution], "settings": settings, "model": model}
    try:
        if cfg.input not in _PHOTOS:
            _PHOTOS[cfg.input] = _source(cfg.input, Path(tempfile.mkdtemp(prefix="ffvj-discover-")))
        look = LookConfig(width=cfg.width, height=cfg.height, fps=cfg.fps, seconds=cfg.seconds, seed=cfg.seed,
                          model=model, levels=False, hierarchy=True)
        row, measured = measure(look, _PHOTOS[cfg.input], cfg.input, None, settings, label="discovered",
                                level_lattice=False, cut_if=lambda row: all(_checks(row).values()))
    except Exception as exc:  # noqa: BLE001 — a candidate that cannot render is a bad candidate, not a crash
        result.update(objective=0.0, descriptors=[0.0, 0.0], checks={"renders": False},
                      error=f"{type(exc).__name__}: {exc}"[:300], seconds=round(time.perf_counter() - started, 2))
        return result
    t = row["texture"]
    hierarchy = t.get("hierarchy", {}).get("raw", {}).get("ratio") or 0.0
    detail, motion, flicker = t["detail"]["raw"] or 0.0, t["motion"] or 0.0, t["flicker"] or 0.0
    colour = t["colourfulness"]["raw"] or 0.0
    checks = _checks(row)
    frame = measured.sheet[max(measured.sheet)][3]
    ok, png = cv2.imencode(".png", cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    result.update(
        objective=round(objective(checks, hierarchy, detail, motion), 4), descriptors=[motion, colour],
        checks={k: bool(v) for k, v in checks.items()},
        figures={"hierarchy": hierarchy, "detail": detail, "dead": t["dead_area"]["raw"], "motion": motion,
                 "flicker": flicker, "colourfulness": colour, "grid": t["grid"]["raw"],
                 "complexity": t["complexity"]["raw"]},
        thumb=png.tobytes().hex() if ok else None, seconds=round(time.perf_counter() - started, 2))
    return result


def _checks(row: dict) -> dict[str, bool]:
    """``ffvj look``'s checks of a row and the search's own two. Without the hierarchy-cut twin (not
    rendered for a look that failed already: half a candidate's time) there is no hierarchy check, and
    the look is failing anyway."""
    motion, flicker = row["texture"]["motion"] or 0.0, row["texture"]["flicker"] or 0.0
    return dict(row["checks"], moving=motion >= MIN_MOTION, steady=flicker <= MAX_FLICKER)


# --- the search -------------------------------------------------------------------------------------

def _key(solution) -> str:
    return hashlib.sha1(np.asarray(solution, np.float64).tobytes()).hexdigest()[:16]


@dataclass
class _Run:
    """A discovery's archive and records, as they are kept on disk."""

    cfg: DiscoverConfig
    models: tuple[str, ...]
    archive: object = None
    elites: dict = field(default_factory=dict)  # solution key → its evaluation (settings, checks, figures)
    iterations: int = 0
    evaluations: int = 0

    @property
    def out(self) -> Path:
        return Path(self.cfg.out)

    def save(self) -> None:
        data = self.archive.data()
        keys = [_key(s) for s in data["solution"]]
        self.elites = {k: self.elites[k] for k in keys if k in self.elites}
        thumbs = self.out / "thumbs"
        thumbs.mkdir(exist_ok=True)
        for k, record in self.elites.items():
            if record.get("thumb") and not (thumbs / f"{k}.png").exists():
                write_atomically(thumbs / f"{k}.png", bytes.fromhex(record["thumb"]))
        buffer = _npz(solution=data["solution"], objective=data["objective"], measures=data["measures"])
        write_atomically(self.out / "archive.npz", buffer)
        kept = {k: {f: v for f, v in r.items() if f != "thumb"} for k, r in self.elites.items()}
        write_atomically(self.out / "elites.json", json.dumps(kept, indent=1).encode())
        state = {"iterations": self.iterations, "evaluations": self.evaluations, "seed": self.cfg.seed,
                 "shape": {**self.cfg.shape(), "models": list(self.models)}}
        write_atomically(self.out / "state.json", json.dumps(state, indent=1).encode())
        for k in {p.stem for p in thumbs.glob("*.png")} - set(kept):  # evicted elites' frames
            (thumbs / f"{k}.png").unlink(missing_ok=True)

    def passing(self) -> list[dict]:
        """The elites that pass every check, best first."""
        good = [r for r in self.elites.values() if r.get("checks") and all(r["checks"].values())]
        return sorted(good, key=lambda r: -r["objective"])


def _npz(**arrays) -> bytes:
    import io

    buffer = io.BytesIO()
    np.savez(buffer, **{k: np.asarray(v, np.float64) for k, v in arrays.items()})
    return buffer.getvalue()


def _archive(dims: int, seed: int):
    from ribs.archives import GridArchive

    # Only a look that passes every check (objective ≥ PASSING) takes a cell. The emitters draw their parents
    # from the archive, so a failing candidate kept as a cell's best would be mutated again and again: with
    # failing elites kept, 4 of 5 parents failed and 8 % of the candidates passed (11 of 144 cells). With
    # learning rate 1 a cell's threshold is its elite's objective: plain MAP-Elites above the floor.
    return GridArchive(solution_dim=dims, dims=ARCHIVE_CELLS, ranges=[MOTION_RANGE, COLOUR_RANGE], seed=seed,
                       threshold_min=PASSING, learning_rate=1.0)


def _resume(cfg: DiscoverConfig, models: tuple[str, ...], dims: int) -> _Run:
    run = _Run(cfg, models, archive=_archive(dims, cfg.seed))
    state_path = run.out / "state.json"
    if cfg.fresh or not state_path.exists():
        return run
    try:
        state = json.loads(state_path.read_text())
        with np.load(run.out / "archive.npz", allow_pickle=False) as data:
            solutions, objectives, measures = data["solution"], data["objective"], data["measures"]
        elites = json.loads((run.out / "elites.json").read_text())
    except (OSError, ValueError, KeyError) as exc:
        raise DiscoverError(f"cannot resume the discovery in {run.out} ({exc}); --fresh starts over") from exc
    shape = {**cfg.shape(), "models": list(models)}
    if state.get("shape") != shape:
        raise DiscoverError(f"the discovery in {run.out} searched another space or size ({state.get('shape')}); "
                            "--fresh starts over there, or choose another --out")
    if len(solutions):
        run.archive.add(solutions, objectives, measures)
    run.elites, run.iterations, run.evaluations = elites, int(state["iterations"]), int(state["evaluations"])
    log.info("resuming %s: %d iterations, %d evaluations, %d elites", run.out, run.iterations, run.evaluations,
             len(solutions))
    return run


def _emitters(run: _Run, dims: int):
    from ribs.emitters import IsoLineEmitter

    rng = np.random.default_rng([run.cfg.seed, run.iterations])  # a resumed run goes on from where it was
    starts = [_default_point(run.models), rng.random(dims)]
    data = run.archive.data()
    if len(data["solution"]):  # from the best elites found so far
        best = np.argsort(-data["objective"])
        starts = [data["solution"][best[i % len(best)]] for i in range(2)]
    # σ 0.08 of each range: at 0.04 a run's passing children crowded into 14 cells (28 at 0.08, beside the
    # wider saturation range).
    return [IsoLineEmitter(run.archive, iso_sigma=0.08, line_sigma=0.2, x0=np.clip(x0, 0, 1),
                           bounds=[(0.0, 1.0)] * dims, batch_size=run.cfg.batch, seed=int(rng.integers(2**31)))
            for x0 in starts]


def _default_point(models: tuple[str, ...]) -> np.ndarray:
    """The default look as a point of the space (what the search starts from, beside a random point)."""
    from ..control.params import build_registry

    registry = build_registry(3)
    point = []
    for name, lo, hi in SPACE:
        p = registry[name]
        a, b = p.to_normalized(lo), p.to_normalized(hi)
        point.append((p.to_normalized(min(max(p.default, lo), hi)) - a) / (b - a) if b != a else 0.0)
    point.append((models.index("default") + 0.5) / len(models) if "default" in models else 0.5)
    return np.asarray(point)


class _Evaluator:
    """Where the evaluations run: a Dask client on a local cluster of processes, or on a given scheduler."""

    def __init__(self, cfg: DiscoverConfig):
        try:
            import dask
            from distributed import Client, LocalCluster
        except ImportError as exc:
            raise DiscoverError(f"ffvj discover needs Dask distributed: {EXTRA}") from exc
        self.cluster = None
        logging.getLogger("distributed").setLevel(logging.WARNING)  # its scheduler's chatter is not ffvj's news
        if cfg.scheduler:
            try:
                self.client = Client(cfg.scheduler, timeout=30)
            except (OSError, TimeoutError) as exc:
                raise DiscoverError(f"cannot reach the Dask scheduler at {cfg.scheduler} ({exc}); start one with "
                                    "'dask scheduler' and workers with 'dask worker ADDRESS'") from exc
        else:
            if cfg.workers < 1:
                raise DiscoverError(f"--workers must be at least 1, not {cfg.workers}")
            # Dask's nannies start each worker with MALLOC_TRIM_THRESHOLD_=65536 (to hand memory back to
            # the system), and that pins glibc's mmap threshold at 128 KiB: every frame's larger arrays
            # are then mapped and unmapped afresh, page fault by page fault. A candidate took twice as long
            # (22.6 s against 11.3 s, a third of it in the kernel). The workers get glibc's own behaviour,
            # as any ffvj process has; the thread limits stay.
            environ = {k: v for k, v in dask.config.get("distributed.nanny.pre-spawn-environ").items()
                       if k != "MALLOC_TRIM_THRESHOLD_"}
            with dask.config.set({"distributed.nanny.pre-spawn-environ": environ}):
                self.cluster = LocalCluster(n_workers=cfg.workers, threads_per_worker=1, processes=True,
                                            dashboard_address=None, silence_logs=logging.ERROR)
            self.client = Client(self.cluster)

    def map(self, solutions, cfg: DiscoverConfig, models: tuple[str, ...]) -> list[dict]:
        futures = self.client.map(evaluate, [list(map(float, s)) for s in solutions], cfg=cfg, models=models,
                                  pure=False)
        return self.client.gather(futures)  # in the candidates' order, whatever finished first

    def close(self) -> None:
        self.client.close()
        if self.cluster is not None:
            self.cluster.close()


def discover(cfg: DiscoverConfig, progress=None) -> dict:
    """Run (or resume) a discovery; returns its summary. ``progress(summary)`` after every iteration.
    Ctrl-C stops after saving what was found (the iteration under way is lost)."""
    try:
        from ribs.schedulers import Scheduler
    except ImportError as exc:
        raise DiscoverError(f"ffvj discover needs pyribs: {EXTRA}") from exc
    from ..model.checkpoint import bundled_models

    models = tuple(cfg.models) or tuple(sorted((m for m in bundled_models() if m not in UNSEARCHED_MODELS),
                                               key=lambda n: (n != "default", n)))
    unknown = [m for m in models if m not in bundled_models()]
    if unknown:
        raise DiscoverError(f"no bundled model {', '.join(unknown)}; bundled: {', '.join(bundled_models())}")
    dims = len(SPACE) + 1
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    run = _resume(cfg, models, dims)
    scheduler = Scheduler(run.archive, _emitters(run, dims))
    evaluator = _Evaluator(cfg)
    deadline = time.monotonic() + cfg.minutes * 60
    first = run.iterations
    try:
        with open(out / "evaluations.jsonl", "a", encoding="utf-8") as journal:
            while (cfg.iterations is None or run.iterations - first < cfg.iterations) and \
                    (cfg.iterations is not None or time.monotonic() < deadline):
                solutions = scheduler.ask()
                results = evaluator.map(solutions, cfg, models)
                scheduler.tell(np.array([r["objective"] for r in results]),
                               np.array([r["descriptors"] for r in results]))
                for r in results:
                    run.elites.setdefault(_key(r["solution"]), r)
                    journal.write(json.dumps({f: v for f, v in r.items() if f != "thumb"}) + "\n")
                journal.flush()
                run.iterations += 1
                run.evaluations += len(results)
                run.save()
                if progress:
                    progress(_summary(run, deadline))
    except KeyboardInterrupt:
        log.warning("interrupted: keeping what was found (the iteration under way is lost)")
    finally:
        evaluator.close()
    _write_presets(run)
    _gallery(run)
    return _summary(run, deadline)


def _summary(run: _Run, deadline: float) -> dict:
    stats = run.archive.stats
    passing = run.passing()
    return {"out": str(run.out), "iterations": run.iterations, "evaluations": run.evaluations,
            "cells": int(stats.num_elites), "of_cells": int(np.prod(ARCHIVE_CELLS)), "passing": len(passing),
            "best": round(float(stats.obj_max), 2) if stats.num_elites and stats.obj_max is not None else None,
            "qd_score": round(float(stats.qd_score), 1), "left_s": max(0.0, deadline - time.monotonic())}


def _write_presets(run: _Run) -> list[Path]:
    """Every elite that passes every check, as a whole look (``base = "default"``), best first."""
    from .. import __version__
    from ..control.params import build_registry
    from ..control.presets import format_preset

    folder = run.out / "presets"
    folder.mkdir(exist_ok=True)
    for old in folder.glob("discovered-*.toml"):
        old.unlink()
    registry = build_registry(3)
    created = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat()
    written = []
    for i, r in enumerate(run.passing(), 1):
        name = f"discovered-{i:02d}"
        f = r["figures"]
        meta = {"base": "default", **({"model": r["model"]} if r["model"] != "default" else {}),
                "found": f"ffvj discover, seed {run.cfg.seed}: objective {r['objective']:.1f}, hierarchy "
                         f"{f['hierarchy']:.1f}, detail {f['detail']:.2f}, motion {f['motion']:.2f}, "
                         f"colourfulness {f['colourfulness']:.0f}"}
        path = folder / f"{name}.toml"
        path.write_text(format_preset(r["settings"], registry, name, created, __version__, meta), encoding="utf-8")
        r["preset"] = name
        written.append(path)
    return written


def _gallery(run: _Run) -> Path | None:
    """The passing elites' settled frames on one sheet, rows by motion (calm at the top), columns by
    colourfulness (muted at the left), each labelled with its preset name."""
    passing = [r for r in run.passing() if (run.out / "thumbs" / f"{_key(r['solution'])}.png").exists()]
    if not passing:
        return None
    tile_w, tile_h = 240, 136
    cols = math.ceil(math.sqrt(len(passing)))
    ordered = sorted(passing, key=lambda r: (r["descriptors"][0], r["descriptors"][1]))
    rows = []
    for start in range(0, len(ordered), cols):
        tiles = []
        for r in ordered[start:start + cols]:
            frame = cv2.imread(str(run.out / "thumbs" / f"{_key(r['solution'])}.png"))
            tile = cv2.resize(frame, (tile_w, tile_h), interpolation=cv2.INTER_AREA)
            text = f"{r.get('preset', '?')} {r['objective']:.0f}"
            cv2.putText(tile, text, (4, tile_h - 6), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 3, cv2.LINE_AA)
            cv2.putText(tile, text, (4, tile_h - 6), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1, cv2.LINE_AA)
            tiles.append(tile)
        tiles += [np.zeros((tile_h, tile_w, 3), np.uint8)] * (cols - len(tiles))
        rows.append(np.concatenate(tiles, 1))
    path = run.out / "gallery.png"
    cv2.imwrite(str(path), np.concatenate(rows, 0))
    return path


def describe(summary: dict) -> str:
    return (f"iteration {summary['iterations']}: {summary['evaluations']} evaluated, {summary['cells']} of "
            f"{summary['of_cells']} cells filled, {summary['passing']} pass every check, best {summary['best']}, "
            f"QD score {summary['qd_score']}")


