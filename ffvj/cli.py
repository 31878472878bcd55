"""The ``ffvj`` command line: argparse only. Each subcommand's options are generated from the config
dataclass it fills (``ffvj.options``: flag, help, type, choices and default declared once, on the field),
and it calls one library function."""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import sys
import threading
import time
from pathlib import Path

from .options import (
    DeviceChoice,
    ModelChoice,
    add_options,
    from_args,
    positive_int,
)

log = logging.getLogger("ffvj")

class CliError(Exception):
    """A start-up problem to print as one line (no traceback) before exiting non-zero."""


def _model_levels(model: str | None) -> int:
    """How many hidden levels a model has, from its card alone (no weights loaded): the parameter
    registry depends on it."""
    from .model import checkpoint
    from .model.net import ModelConfig

    try:
        card_path, card = checkpoint.read_card(model)
    except (checkpoint.CheckpointError, OSError, ValueError) as exc:
        raise CliError(f"model {model!r}: {exc}") from exc
    try:
        return ModelConfig.from_dict(card["config"]).levels
    except (TypeError, ValueError) as exc:
        raise CliError(f"{card_path}: bad model config: {exc}") from exc


# --- train ---------------------------------------------------------------------------------------

def _add_train(sub: argparse._SubParsersAction) -> None:
    from .model.net import ModelConfig
    from .model.train import TrainConfig

    p = sub.add_parser("train", help="train a feature hierarchy and write a checkpoint",
                       description="Train a stacked convolutional autoencoder: layer-wise, then end-to-end.")
    p.add_argument("--out", default="runs/model", help="checkpoint path stem (default: runs/model)")
    add_options(p, ModelConfig)
    add_options(p, TrainConfig)
    p.set_defaults(func=_cmd_train)


def _cmd_train(args: argparse.Namespace) -> int:
    from .engine.device import resolve_device
    from .model.net import ModelConfig
    from .model.train import TrainConfig, train

    try:
        model_config = from_args(ModelConfig, args)
        cfg = from_args(TrainConfig, args, device=str(resolve_device(args.device)))
    except ValueError as exc:
        raise CliError(str(exc)) from exc
    command = "ffvj " + shlex.join(sys.argv[1:]) if sys.argv and sys.argv[0].endswith("ffvj") else None
    try:
        card_path, card = train(model_config, cfg, Path(args.out), command=command)
    except (FileNotFoundError, ValueError, RuntimeError) as exc:
        raise CliError(str(exc)) from exc
    if card_path is None:  # a torchrun rank other than 0: rank 0 writes the checkpoint and reports
        return 0
    print(f"wrote {card_path} and {card_path.with_suffix('.safetensors').name} "
          f"({card['training']['seconds']} s)")
    if "eval" in card["metrics"]:
        from .model.evaluate import format_table
        print(format_table(card["metrics"]["eval"]))
    return 0


# --- model eval / show / photos -------------------------------------------------------------------

def _add_model(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("model", help="evaluate, picture or list models")
    msub = p.add_subparsers(dest="model_cmd", required=True)

    e = msub.add_parser("eval", help="PSNR/SSIM of every level's round trip next to bicubic")
    e.add_argument("--images", required=True, action="append", metavar="DIR",
                   help="a folder of pictures (or builtin:test); repeatable")
    add_options(e, ModelChoice)
    add_options(e, DeviceChoice)
    e.add_argument("--json", action="store_true", help="print the result as JSON")
    e.set_defaults(func=_cmd_model_eval)

    s = msub.add_parser("show", help="write filter, activation and reconstruction pictures")
    add_options(s, ModelChoice)
    s.add_argument("--images", action="append", metavar="DIR", help="pictures to use (default: builtin:test)")
    s.add_argument("--out", default="runs/show", help="folder for the PNGs (default: runs/show)")
    s.set_defaults(func=_cmd_model_show)

    ph = msub.add_parser("photos", help="write the built-in photos of one split as PNGs (to eval on)")
    ph.add_argument("out", help="folder to write to")
    ph.add_argument("--split", default="test", choices=["train", "val", "test"])
    ph.set_defaults(func=_cmd_model_photos)

    ls = msub.add_parser("list", help="list bundled models")
    ls.set_defaults(func=_cmd_model_list)

    v = msub.add_parser("views", help="fit every feature level's view projection (its principal components) on "
                                      "training pictures and write it into the model's card")
    add_options(v, ModelChoice)
    v.add_argument("--data", action="append", metavar="SPEC", help="pictures to fit on (default: builtin:train)")
    v.set_defaults(func=_cmd_model_views)


def _load_model(name: str | None, device: str = "cpu"):
    from .model import checkpoint

    try:
        return checkpoint.load(name, device)
    except checkpoint.CheckpointError as exc:
        raise CliError(str(exc)) from exc


def _pictures(specs: list[str]):
    from .model.data import load_sources

    try:
        return load_sources(specs)
    except (FileNotFoundError, ValueError, RuntimeError) as exc:
        raise CliError(str(exc)) from exc


def _cmd_model_eval(args: argparse.Namespace) -> int:
    from .engine.device import resolve_device
    from .model.evaluate import evaluate, format_table

    try:
        device = resolve_device(args.device)
    except ValueError as exc:
        raise CliError(str(exc)) from exc
    model, card = _load_model(args.model, device)
    result = {"model": args.model or "default", **evaluate(model, _pictures(args.images), device)}
    print(json.dumps(result, indent=2) if args.json else format_table(result))
    return 0


def _cmd_model_show(args: argparse.Namespace) -> int:
    from .model.evaluate import activation_sheet, filter_sheet, reconstruction_sheet

    model, _ = _load_model(args.model)
    pictures = _pictures(args.images or ["builtin:test"])
    out = Path(args.out)
    written = [filter_sheet(model, out / "filters.png"),
               activation_sheet(model, next(iter(pictures.values())), out / "activations.png"),
               reconstruction_sheet(model, pictures, out / "reconstructions.png")]
    for path in written:
        print(path)
    return 0


def _cmd_model_photos(args: argparse.Namespace) -> int:
    import cv2

    from .model.data import builtin_photos

    try:
        photos = builtin_photos(args.split)
    except RuntimeError as exc:
        raise CliError(str(exc)) from exc
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name, rgb in photos.items():
        cv2.imwrite(str(out / f"{name}.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    print(f"wrote {len(photos)} pictures to {out}")
    return 0


def _cmd_model_views(args: argparse.Namespace) -> int:
    """``views`` in the card (``model.views``): what ``--sink lN:SPEC`` shows. The weights are untouched."""
    from .model import checkpoint
    from .model.data import CropSampler, load_sources
    from .model.train import level_views

    try:
        card_path, card = checkpoint.read_card(args.model)
        model, _ = checkpoint.load(args.model)
        sampler = CropSampler(load_sources(args.data or ["builtin:train"]), 64)
    except (checkpoint.CheckpointError, FileNotFoundError, ValueError, RuntimeError) as exc:
        raise CliError(str(exc)) from exc
    card["views"] = level_views(model, sampler)
    card_path.write_text(json.dumps(card, indent=2) + "\n")
    print(f"wrote the views of {model.levels} levels into {card_path}")
    return 0


def _cmd_model_list(args: argparse.Namespace) -> int:
    """One line per bundled model, from its card: what it is and how well its round trip does."""
    from .model import checkpoint

    for name in sorted(checkpoint.bundled_models(), key=lambda n: (n != checkpoint.DEFAULT_MODEL, n)):
        path = checkpoint.bundled_models_dir() / f"{name}.json"
        try:
            card = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            print(f"{name:10} (unreadable card {path.name}: {exc})")
            continue
        cfg = card.get("config", {})
        channels = cfg.get("channels", [])
        gains = [lvl.get("gain_db") for lvl in card.get("metrics", {}).get("eval", {}).get("levels", [])]
        gain = (" dB, ".join(f"{g:+.1f}" for g in gains if g is not None) + " dB over bicubic") if gains else "not evaluated"
        print(f"{name:10} {len(channels) - 1} levels, channels {'/'.join(map(str, channels))}, "
              f"{cfg.get('activation', '?')}, {cfg.get('pooling', '?')} pooling, {cfg.get('decoder', '?')} decoders; "
              f"round trip {gain}")
    return 0


# --- run / devices / params ----------------------------------------------------------------------

def _add_run(sub: argparse._SubParsersAction) -> None:
    from .control.midi.ports import MidiConfig
    from .control.osc import OscConfig
    from .show import RunConfig
    from .web import WebConfig

    p = sub.add_parser("run", help="run the feedback loop live (the show)",
                       description="Run source → hierarchical feedback → sinks until Ctrl-C, SIGTERM or --frames.")
    add_options(p, RunConfig)
    osc = p.add_argument_group("OSC", "every parameter at /ffvj/NAME (dots become slashes), 0..1 at .../norm; "
                                      "every action at its address (see 'ffvj actions')")
    add_options(osc, OscConfig, "osc")
    osc.add_argument("--no-oscquery", action="store_true", help="do not serve OSCQuery")
    osc.add_argument("--no-mdns", action="store_true", help="do not announce OSC/OSCQuery over mDNS")
    osc.add_argument("--no-osc", action="store_true", help="no OSC at all")
    midi = p.add_argument_group("MIDI", "a virtual input port named ffvj, plus controllers with a mapping")
    add_options(midi, MidiConfig, "midi")
    midi.add_argument("--no-midi", action="store_true", help="no MIDI at all")
    web = p.add_argument_group("web page", "every control and the live picture in a browser, at "
                                           f"http://127.0.0.1:{WebConfig.port}/ by default")
    add_options(web, WebConfig, "web")
    web.add_argument("--no-web", action="store_true", help="no web page")
    p.set_defaults(func=_cmd_run)


STOP_GRACE = 4.0  # seconds a stop may wait for the frame in progress (the promise: stopped within 5 s)


def _stop_within(stats, seconds: float) -> None:
    """On the stop watchdog's thread: if the show is still finishing its frame after ``seconds``, end the
    process without it (the frame in progress cannot be interrupted inside torch). Once the render loop
    has ended, the show's own closing (each wait of it bounded) is left to finish the recording."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if stats.loop_ended:
            return
        time.sleep(0.05)
    log.error("the frame in progress has taken over %g s: stopping without it (a recording keeps all but its "
              "last second, as after kill -9)", seconds)
    _exit_now(1)


def _exit_now(code: int) -> None:
    for handler in logging.getLogger().handlers:
        handler.flush()
    sys.stderr.flush()
    os._exit(code)  # the command line's own process, ended on purpose: no interpreter shutdown to wait for


def _port_or_free(flag: str, asked: int | None, default: int, host: str, transport: str = "tcp") -> int:
    """The port for ``flag``: the one asked for (a busy one is an error at start-up, with every other busy
    one), else the default, else, when another show has the default, any free one (0), said at once."""
    from .control.service import Listen, port_in_use

    if asked is not None or not port_in_use(Listen(flag, host, default, transport)):
        return default if asked is None else asked
    log.warning("%s %d is in use (another ffvj?): this show takes a free port instead, said below; %s N "
                "chooses one", flag, default, flag)
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    import signal

    from .control.midi.ports import MidiConfig
    from .control.osc import OscConfig
    from .engine.device import keep_freed_host_memory
    from .show import RunConfig, RunStats, StartupError, run
    from .web import WebConfig

    osc = None if args.no_osc else from_args(
        OscConfig, args, "osc", port=_port_or_free("--osc-port", args.osc_port, OscConfig.port, args.osc_host, "udp"),
        mdns=False if args.no_mdns else None,
        query_port=None if args.no_oscquery else _port_or_free("--oscquery-port", args.osc_query_port,
                                                                OscConfig.query_port, args.osc_host))
    web = None if args.no_web else from_args(
        WebConfig, args, "web", port=_port_or_free("--web-port", args.web_port, WebConfig.port, args.web_host))
    try:
        cfg = from_args(RunConfig, args, osc=osc, web=web,
                        midi=None if args.no_midi else from_args(MidiConfig, args, "midi"))
    except ValueError as exc:
        raise CliError(str(exc)) from exc
    stop = threading.Event()
    stats = RunStats()  # filled by the show; the stop watchdog reads whether its render loop has ended

    def _stop(signum, _frame):
        if stop.is_set():  # asked twice: the performer means now
            log.warning("%s again: stopping at once", signal.Signals(signum).name)
            _exit_now(1)
        log.info("%s: finishing the current frame and closing outputs", signal.Signals(signum).name)
        stop.set()
        # A frame can take longer than a stop may (--size 8192x8192 on a CPU: a minute): past the grace the
        # process ends as after kill -9, which a recording survives (fragmented MP4: all but its last second).
        threading.Thread(target=_stop_within, args=(stats, STOP_GRACE), name="ffvj stop watchdog",
                         daemon=True).start()

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _stop)
    keep_freed_host_memory()  # this process renders frames: reuse freed pages (13-15% on CPUs)
    try:
        stats = run(cfg, stop=stop, stats=stats)
    except StartupError as exc:  # a problem of the setup: one line; anything later says what it is
        raise CliError(str(exc)) from exc
    print(stats.summary())
    if stats.sinks_failed:  # said last, and not a success: the show lost an output on the way
        for failure in stats.sinks_failed:
            log.error("sink dropped during the show: %s", failure)
        return 1
    return 0


def _add_devices(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("devices", help="list cameras, torch devices and output backends usable here")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_devices)


def _cmd_devices(args: argparse.Namespace) -> int:
    import torch

    from .audio.inputs import EXTRA as AUDIO_EXTRA
    from .audio.inputs import list_inputs
    from .media.sinks import sink_availability
    from .media.sources import devices as cameras

    report = {
        "cameras": cameras(),
        "torch": {"version": torch.__version__, "cuda": torch.cuda.is_available(),
                  "mps": bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())},
        "sinks": {name: {"usable": ok, "note": why} for name, (ok, why) in sorted(sink_availability().items())},
        "midi": _midi_report(),
        "audio": list_inputs(),
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print("cameras: " + (", ".join(str(c) for c in report["cameras"]) or "none found"))
    print(f"torch {report['torch']['version']}: cuda {'yes' if report['torch']['cuda'] else 'no'}, "
          f"mps {'yes' if report['torch']['mps'] else 'no'}")
    midi = report["midi"]
    print("midi: " + (midi["error"] if "error" in midi else
                      f"inputs {', '.join(midi['inputs']) or 'none'}; outputs {', '.join(midi['outputs']) or 'none'}"))
    print("audio inputs: " + (", ".join(report["audio"]) or f"none found (or PortAudio missing: {AUDIO_EXTRA})"))
    print("sinks:")
    for name, info in report["sinks"].items():
        print(f"  {name:<11} {'usable' if info['usable'] else 'not usable'}{': ' + info['note'] if info['note'] else ''}")
    return 0


def _midi_report() -> dict:
    from .control.midi.ports import backend_errors, midi_ports

    try:
        return midi_ports()
    except backend_errors() as exc:  # no usable MIDI API here
        return {"error": f"not usable here ({type(exc).__name__}: {exc})", "inputs": [], "outputs": []}


def _add_learn(sub: argparse._SubParsersAction) -> None:
    from .control.midi.ports import MIDI_BACKENDS

    p = sub.add_parser("learn", help="MIDI learn: move a control for each parameter, write a mapping file")
    p.add_argument("params", nargs="+", help="parameter names, in the order to learn them (see 'ffvj params')")
    p.add_argument("--midi", default=None, metavar="NAME", help="input port (default: a virtual port named ffvj)")
    p.add_argument("--out", default="mappings/learned.toml", help="mapping file to write")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for each control")
    p.add_argument("--midi-backend", default=None, choices=sorted(MIDI_BACKENDS))
    add_options(p, ModelChoice)
    p.set_defaults(func=_cmd_learn)


def _cmd_learn(args: argparse.Namespace) -> int:
    from .control.midi.learn import learn_session
    from .control.midi.mapping import MappingError
    from .control.midi.ports import MIDI_BACKENDS, MidiError
    from .control.params import build_registry

    registry = build_registry(_model_levels(args.model))
    try:
        mapping = learn_session(args.params, args.midi, args.out, args.timeout, registry=registry,
                                backend=MIDI_BACKENDS.get(args.midi_backend))
    except (MappingError, MidiError, ValueError, OSError) as exc:
        raise CliError(str(exc)) from exc
    if mapping is None:
        print("nothing learned")
        return 1
    print(f"wrote {args.out} ({len(mapping.entries)} controls)")
    return 0


def _add_params(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("params", help="list every controllable parameter (name, OSC address, range)")
    add_options(p, ModelChoice)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_params)


def _cmd_params(args: argparse.Namespace) -> int:
    from .control.params import build_registry

    registry = build_registry(_model_levels(args.model))
    rows = [p.describe() for p in registry.values()]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for p, r in zip(registry.values(), rows):
        rng = "|".join(r["choices"]) if "choices" in r else f"{r['min']:g}..{r['max']:g}"
        default = p.choices[int(p.default)] if p.kind == "enum" else (
            ("on" if p.default >= 0.5 else "off") if p.kind == "bool" else f"{p.default:g}")
        print(f"{r['address']:<28} {rng:<34} default {default} {r['unit']}  {r['doc']}")
    return 0


def _add_actions(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("actions", help="list every action (panic, tap, presets, snapshots, ...): OSC address, "
                                       "arguments, MIDI target")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_actions)


def _cmd_actions(args: argparse.Namespace) -> int:
    from .control.actions import ACTIONS

    rows = [a.describe() for a in ACTIONS.values()]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for a in ACTIONS.values():
        osc = " ".join([a.address] + [f"{arg.tag}:{arg.name}" + ("" if arg.required else "?") for arg in a.args])
        midi = a.name + (f":{a.args[0].name.upper()}" if a.args else "")
        print(f"{osc:<44} MIDI {midi:<22} {a.doc}")
    return 0


# --- render --------------------------------------------------------------------------------------

def _add_render(sub: argparse._SubParsersAction) -> None:
    from .render import RenderConfig

    p = sub.add_parser("render", help="render a recorded show (ffvj run --record-show) again, at any size",
                       description="Re-render a show file offline: every change, action and source frame on the "
                                   "frame it happened, at the size and on the device asked for (docs/SHOWFILE.md).")
    p.add_argument("show", help="the show file's folder")
    add_options(p, RenderConfig)
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=_cmd_render)


def _cmd_render(args: argparse.Namespace) -> int:
    from .engine.device import keep_freed_host_memory
    from .model import checkpoint
    from .render import RenderConfig, render
    from .showfile import ShowFileError

    keep_freed_host_memory()
    try:
        result = render(from_args(RenderConfig, args, show=args.show))
    except (ShowFileError, checkpoint.CheckpointError, ValueError, OSError) as exc:
        raise CliError(str(exc)) from exc
    if args.json:
        print(json.dumps(result, indent=2))
    elif "timeline" in result:
        print(f"wrote {result['timeline']}: {result['events']} events over {result['frames']} frames")
    else:
        print(f"wrote {result['out']}: {result['written']} frames at {result['size']} in {result['seconds']} s "
              f"({result['fps']} fps)")
    return 0


# --- look ----------------------------------------------------------------------------------------

def _add_look(sub: argparse._SubParsersAction) -> None:
    from .look.report import LookConfig

    p = sub.add_parser("look", help="render fixed inputs through every look and measure the picture",
                       description="A picture report: lattice (a screen-locked pattern), input fidelity, liveliness, "
                                   "flashes and colour balance of the default look and every factory preset, on "
                                   "fixed inputs, with a contact sheet (PNG) per run.")
    add_options(p, LookConfig)
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=_cmd_look)


def _cmd_look(args: argparse.Namespace) -> int:
    from .engine.device import keep_freed_host_memory
    from .look.report import LookConfig, format_report, look, plan, write_json
    from .show import StartupError

    cfg = from_args(LookConfig, args)
    keep_freed_host_memory()  # it renders frames, as ffvj run does
    runs = plan(cfg)
    frames = max(2, round(cfg.seconds * cfg.fps))
    log.info("ffvj look: %d runs (%d input(s) × %d look(s)), %d frames each at %dx%d%s; the time left is said "
             "after each run (--input, --preset and --seconds make it shorter)", len(runs), len(cfg.inputs),
             len(runs) // max(1, len(cfg.inputs)), frames, cfg.width, cfg.height,
             ", each rendered twice (the look and its hierarchy-cut twin)" if cfg.hierarchy else "")
    started = time.monotonic()

    def progress(row, done, total):
        spent = time.monotonic() - started
        left = spent / done * (total - done)
        log.info("look %d/%d: %s through %s (%.0f s); about %s left", done, total, row["input"], row["preset"],
                 spent / done, f"{left / 60:.0f} min" if left >= 90 else f"{left:.0f} s")

    try:
        report = look(cfg, progress=progress)
    except (StartupError, RuntimeError) as exc:
        raise CliError(str(exc)) from exc
    write_json(report, Path(cfg.out) / "look.json")
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 0


# --- discover ------------------------------------------------------------------------------------

def _add_discover(sub: argparse._SubParsersAction) -> None:
    from .look.discover import DiscoverConfig

    p = sub.add_parser("discover", help="search φ and the models for looks whose picture comes from the hierarchy "
                                        "(quality-diversity: MAP-Elites)",
                       description="A quality-diversity search (pyribs' MAP-Elites, Dask workers) over φ and the "
                                   "bundled models, judged by ffvj look's measures; writes its archive as it goes "
                                   "(resumable), then the elites as presets and a gallery. "
                                   "Needs pip install 'ffvj[discover]'.")
    add_options(p, DiscoverConfig)
    p.set_defaults(func=_cmd_discover)


def _cmd_discover(args: argparse.Namespace) -> int:
    from .look.discover import DiscoverConfig, DiscoverError, describe, discover

    cfg = from_args(DiscoverConfig, args)
    log.info("ffvj discover: %s, %d candidates an iteration, each %dx%d for %g s (then with the hierarchy cut "
             "if it passes the rest); into %s",
             f"{cfg.iterations} iterations" if cfg.iterations else f"{cfg.minutes:g} minutes",
             2 * cfg.batch, cfg.width, cfg.height, cfg.seconds, cfg.out)

    def progress(summary):
        left = f"; {summary['left_s'] / 60:.1f} min left" if cfg.iterations is None else ""
        log.info("%s%s", describe(summary), left)

    try:
        summary = discover(cfg, progress)
    except DiscoverError as exc:
        raise CliError(str(exc)) from exc
    print(describe(summary))
    print(f"presets: {summary['out']}/presets (ffvj run --presets-dir {summary['out']}/presets --preset "
          f"discovered-01); gallery: {summary['out']}/gallery.png")
    return 0


# --- touchosc ------------------------------------------------------------------------------------

def _add_touchosc(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("touchosc", help="write a TouchOSC layout (.tosc) for every parameter")
    p.add_argument("out", nargs="?", default="ffvj.tosc", help="where to write it (default: ffvj.tosc)")
    add_options(p, ModelChoice)
    p.set_defaults(func=_cmd_touchosc)


def _cmd_touchosc(args: argparse.Namespace) -> int:
    from .control.params import build_registry
    from .control.touchosc import generate_layout, validate_layout

    registry = build_registry(_model_levels(args.model))
    try:
        path = generate_layout(registry, args.out)
    except ImportError as exc:
        raise CliError(f"writing .tosc layouts needs py2tosc: pip install -e '.[touchosc]' ({exc})") from exc
    used = validate_layout(path, registry)
    print(f"wrote {path}: {sum(len(v) for v in used.values())} controls on {len(used)} addresses")
    return 0


# --- bench ---------------------------------------------------------------------------------------

def _add_bench(sub: argparse._SubParsersAction) -> None:
    from .bench import BenchConfig

    p = sub.add_parser("bench", help="measure the engine, the reference step, end-to-end rates and the floor")
    add_options(p, BenchConfig)
    p.add_argument("--threads", type=positive_int, default=None,
                   help="CPU threads for the engine (default: one per core). Beside OBS or another busy program "
                        "use fewer than the cores: on 2 cores with one kept busy, 1 thread ran at 64 fps and 2 at 26")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_bench)


def _cmd_bench(args: argparse.Namespace) -> int:
    from .bench import BenchConfig, bench, format_report
    from .engine.device import keep_freed_host_memory, use_cpu_threads
    from .model import checkpoint
    from .show import StartupError

    cfg = from_args(BenchConfig, args)
    logging.getLogger("ffvj.show").setLevel(logging.WARNING)  # the end-to-end runs' status lines
    keep_freed_host_memory()  # as ffvj run does: the bench measures what a show gets
    use_cpu_threads(args.threads)
    try:
        result = bench(cfg)
    except (checkpoint.CheckpointError, StartupError, ValueError) as exc:
        raise CliError(str(exc)) from exc
    print(json.dumps(result, indent=2) if args.json else format_report(result))
    return 0


# --- entry point ---------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ffvj", description="Hierarchical neural video feedback for live shows.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_run(sub)
    _add_devices(sub)
    _add_params(sub)
    _add_actions(sub)
    _add_bench(sub)
    _add_render(sub)
    _add_look(sub)
    _add_discover(sub)
    _add_touchosc(sub)
    _add_learn(sub)
    _add_train(sub)
    _add_model(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    try:
        code = args.func(args)
        sys.stdout.flush()  # here, where a closed pipe can still be caught
        return code
    except CliError as exc:
        print(f"ffvj: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `ffvj params | head`: the reader had what it wanted. Python's own recipe: stdout to devnull, so
        # that the interpreter's last flush at exit does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
