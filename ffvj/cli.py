"""The ``ffvj`` command line. Each subcommand parses its options here and calls one library function."""

from __future__ import annotations

import argparse
import json
import logging
import math
import threading
import time
import shlex
import sys
from pathlib import Path

log = logging.getLogger("ffvj")


class CliError(Exception):
    """A start-up problem to print as one line (no traceback) before exiting non-zero."""


def _model_levels(model: str | None) -> int:
    """How many hidden levels a model has, from its card alone (no weights loaded): the parameter
    registry depends on it."""
    from . import checkpoint

    from .model import ModelConfig

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
    from .model import ModelConfig
    from .train import TrainConfig

    d, m = TrainConfig(), ModelConfig()
    p = sub.add_parser("train", help="train a feature hierarchy and write a checkpoint",
                       description="Train a stacked convolutional autoencoder: layer-wise, then end-to-end.")
    p.add_argument("--data", action="append", metavar="SPEC",
                   help="training pictures: builtin[:train|val|test] (scikit-image's photos), an image folder, "
                        "or a video file (frames sampled across it); repeatable (default: builtin:train)")
    p.add_argument("--val", action="append", metavar="SPEC", help="validation pictures (default: builtin:val)")
    p.add_argument("--eval", action="append", metavar="SPEC", help="pictures to evaluate on at the end")
    p.add_argument("--out", default="runs/model", help="checkpoint path stem (default: runs/model)")
    p.add_argument("--channels", default=",".join(map(str, m.channels)),
                   help=f"channels per level, the picture first (default: {','.join(map(str, m.channels))})")
    p.add_argument("--activation", default=m.activation, choices=["tanh", "relu", "elu", "identity"])
    p.add_argument("--pooling", default=m.pooling, choices=["max", "avg"])
    p.add_argument("--decoder", default=m.decoder, choices=["subpixel", "upconv"])
    p.add_argument("--kernel-size", type=int, default=m.kernel_size)
    p.add_argument("--layerwise-epochs", type=int, default=d.layerwise_epochs, help="epochs per level")
    p.add_argument("--finetune-epochs", type=int, default=d.finetune_epochs)
    p.add_argument("--steps-per-epoch", type=int, default=d.steps_per_epoch)
    p.add_argument("--batch", type=int, default=d.batch)
    p.add_argument("--crop", type=int, default=d.crop)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")
    p.add_argument("--video-frames", type=int, default=d.video_frames, help="frames sampled per video file")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_train)


def _cmd_train(args: argparse.Namespace) -> int:
    from .device import resolve_device
    from .model import ModelConfig
    from .train import TrainConfig, train

    try:
        model_config = ModelConfig(channels=tuple(int(c) for c in args.channels.split(",")),
                                   kernel_size=args.kernel_size, activation=args.activation,
                                   pooling=args.pooling, decoder=args.decoder)
        device = resolve_device(args.device)
    except ValueError as exc:
        raise CliError(str(exc)) from exc
    cfg = TrainConfig(sources=args.data or ["builtin:train"], val_sources=args.val, eval_sources=args.eval or [],
                      layerwise_epochs=args.layerwise_epochs, finetune_epochs=args.finetune_epochs,
                      steps_per_epoch=args.steps_per_epoch, batch=args.batch, crop=args.crop, lr=args.lr,
                      seed=args.seed, device=str(device), video_frames=args.video_frames,
                      progress=not args.no_progress)
    command = "ffvj " + shlex.join(sys.argv[1:]) if sys.argv and sys.argv[0].endswith("ffvj") else None
    try:
        card_path, card = train(model_config, cfg, Path(args.out), command=command)
    except (FileNotFoundError, ValueError, RuntimeError) as exc:
        raise CliError(str(exc)) from exc
    print(f"wrote {card_path} and {card_path.with_suffix('.safetensors').name} "
          f"({card['training']['seconds']} s)")
    if "eval" in card["metrics"]:
        from .evaluate import format_table
        print(format_table(card["metrics"]["eval"]))
    return 0


# --- model eval / show / photos -------------------------------------------------------------------

def _add_model(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("model", help="evaluate, picture or list models")
    msub = p.add_subparsers(dest="model_cmd", required=True)

    e = msub.add_parser("eval", help="PSNR/SSIM of every level's round trip next to bicubic")
    e.add_argument("--images", required=True, action="append", metavar="DIR",
                   help="a folder of pictures (or builtin:test); repeatable")
    e.add_argument("--model", default=None, help="bundled model name or checkpoint path (default: default)")
    e.add_argument("--device", default="auto")
    e.add_argument("--json", action="store_true", help="print the result as JSON")
    e.set_defaults(func=_cmd_model_eval)

    s = msub.add_parser("show", help="write filter, activation and reconstruction pictures")
    s.add_argument("--model", default=None)
    s.add_argument("--images", action="append", metavar="DIR", help="pictures to use (default: builtin:test)")
    s.add_argument("--out", default="runs/show", help="folder for the PNGs (default: runs/show)")
    s.set_defaults(func=_cmd_model_show)

    ph = msub.add_parser("photos", help="write the built-in photos of one split as PNGs (to eval on)")
    ph.add_argument("out", help="folder to write to")
    ph.add_argument("--split", default="test", choices=["train", "val", "test"])
    ph.set_defaults(func=_cmd_model_photos)

    ls = msub.add_parser("list", help="list bundled models")
    ls.set_defaults(func=_cmd_model_list)


def _load_model(name: str | None, device: str = "cpu"):
    from . import checkpoint
    try:
        return checkpoint.load(name, device)
    except checkpoint.CheckpointError as exc:
        raise CliError(str(exc)) from exc


def _pictures(specs: list[str]):
    from .data import load_sources
    try:
        return load_sources(specs)
    except (FileNotFoundError, ValueError, RuntimeError) as exc:
        raise CliError(str(exc)) from exc


def _cmd_model_eval(args: argparse.Namespace) -> int:
    from .device import resolve_device
    from .evaluate import evaluate, format_table

    try:
        device = resolve_device(args.device)
    except ValueError as exc:
        raise CliError(str(exc)) from exc
    model, card = _load_model(args.model, device)
    result = {"model": args.model or "default", **evaluate(model, _pictures(args.images), device)}
    print(json.dumps(result, indent=2) if args.json else format_table(result))
    return 0


def _cmd_model_show(args: argparse.Namespace) -> int:
    from .evaluate import activation_sheet, filter_sheet, reconstruction_sheet

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

    from .data import builtin_photos
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


def _cmd_model_list(args: argparse.Namespace) -> int:
    from . import checkpoint
    for name in checkpoint.bundled_models():
        print(name)
    return 0


# --- run / devices / params ----------------------------------------------------------------------

def _parse_size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must be WIDTHxHEIGHT, like 640x360, not {text!r}") from None
    if not (16 <= w <= 8192 and 16 <= h <= 8192):
        raise argparse.ArgumentTypeError(f"size {w}x{h} out of range (16..8192 each way)")
    return w, h


def _parse_setting(item: str, registry: dict) -> tuple[str, float]:
    """``--set NAME=VALUE``, strictly: at start-up a value out of range or of the wrong kind is an
    error, not something to clamp quietly (that is for the show)."""
    name, sep, text = item.partition("=")
    if not sep or name not in registry:
        raise CliError(f"--set {item!r}: expected NAME=VALUE with a parameter from 'ffvj params'")
    param = registry[name]
    raw = _option_value(text)
    try:
        value = param.parse(float(raw) if isinstance(raw, bool) else raw)
    except ValueError as exc:
        raise CliError(f"--set {item!r}: {exc}") from exc
    if not math.isfinite(value) or param.clamp(value) != value:
        raise CliError(f"--set {item!r}: {name} takes {param.min:g}..{param.max:g}"
                       + (" (a whole number)" if param.kind in ("int", "enum", "bool") else ""))
    return name, value


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a port is a number, not {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port {port} is not in 0..65535")
    return port


def _positive_int(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, not {text!r}") from None
    if n <= 0:
        raise argparse.ArgumentTypeError(f"expected a number above 0, not {n}")
    return n


def _option_value(text: str):
    """A backend option from the command line: int, float, bool words, else the string."""
    lowered = text.lower()
    if lowered in ("true", "yes", "on"):
        return True
    if lowered in ("false", "no", "off"):
        return False
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _add_run(sub: argparse._SubParsersAction) -> None:
    from .runtime import DEFAULT_SINK, RunConfig

    d = RunConfig()
    p = sub.add_parser("run", help="run the feedback loop live (the show)",
                       description="Run source → hierarchical feedback → sinks until Ctrl-C, SIGTERM or --frames.")
    p.add_argument("--source", default=d.source,
                   help="auto (a camera when present, else the generator), generator[:NAME], video:PATH, "
                        "image:PATH or camera[:INDEX] (default: auto)")
    p.add_argument("--source-option", action="append", default=[], metavar="KEY=VALUE",
                   help="an option for the source, repeatable: camera width=1280 height=720 camera_fps=60 "
                        "mjpg=1; generator seed=N speed=X; video loop=0")
    p.add_argument("--sink", action="append", metavar="SPEC",
                   help=f"file:PATH.mp4, virtualcam[:DEVICE], ndi[:NAME], window, syphon[:NAME], spout[:NAME] "
                        f"or null; repeatable (default: {DEFAULT_SINK})")
    p.add_argument("--size", type=_parse_size, default=(d.width, d.height), help="WxH (default: 640x360)")
    p.add_argument("--fps", type=float, default=d.fps, help="frames per second (default: 30)")
    p.add_argument("--frames", type=_positive_int, default=None,
                   help="stop after N frames (default: run until stopped)")
    p.add_argument("--model", default=None, help="bundled model name or checkpoint path (default: default)")
    p.add_argument("--device", default=d.device, help="auto, cpu, cuda or mps")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--pace", default=d.pace, choices=["auto", "realtime", "offline"],
                   help="realtime: paced to --fps, slow sinks drop frames; offline: as fast as possible, every "
                        "frame to every sink; auto: realtime for cameras and live sinks")
    p.add_argument("--map-image", default=None, metavar="PATH", help="picture for map.kind=image")
    p.add_argument("--compile", action="store_true",
                   help="compile the engine's fused kernels with torch.compile (seconds at start-up)")
    p.add_argument("--precision", choices=("fp32", "fp16", "bf16"), default="fp32",
                   help="the engine's precision: fp16/bf16 halve its memory traffic on GPUs (slower on most CPUs); "
                        "sampling grids stay fp32 (default: %(default)s)")
    p.add_argument("--device-formats", choices=("on", "off"), default="on",
                   help="on: make each sink's own picture format (4:2:0 for files and virtual cameras) on the "
                        "engine's device; off: RGB to every sink, which converts it itself on the CPU "
                        "(default: %(default)s)")
    p.add_argument("--presets-dir", default=None, metavar="DIR", help="where presets live (default: ~/.config/ffvj/presets)")
    p.add_argument("--preset", default=None, metavar="NAME", help="recall this preset at start")
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                   help="set a parameter at start (see 'ffvj params'); repeatable")
    osc = p.add_argument_group("OSC", "every parameter at /ffvj/NAME (dots become slashes), 0..1 at .../norm")
    osc.add_argument("--osc-port", type=_port, default=9000, help="UDP port (default: 9000)")
    osc.add_argument("--osc-host", default="127.0.0.1",
                     help="address to listen on; 0.0.0.0 lets a tablet on the LAN in (default: 127.0.0.1)")
    osc.add_argument("--osc-allow", action="append", default=[], metavar="IP",
                     help="only these clients may send (repeatable; default: anyone who can reach the port)")
    osc.add_argument("--osc-tcp-port", type=_port, default=None, help="also listen on TCP with SLIP framing")
    osc.add_argument("--osc-feedback", action="append", default=[], metavar="HOST:PORT",
                     help="send every parameter change here (repeatable)")
    osc.add_argument("--osc-feedback-rate", type=float, default=30.0, help="feedback messages/s per parameter")
    osc.add_argument("--oscquery-port", type=_port, default=9010, help="OSCQuery HTTP port (default: 9010)")
    osc.add_argument("--no-oscquery", action="store_true", help="do not serve OSCQuery")
    osc.add_argument("--no-mdns", action="store_true", help="do not announce OSC/OSCQuery over mDNS")
    osc.add_argument("--no-osc", action="store_true", help="no OSC at all")
    midi = p.add_argument_group("MIDI", "a virtual input port named ffvj, plus controllers with a mapping")
    midi.add_argument("--midi", action="append", default=[], metavar="NAME",
                      help="connect to the input port whose name contains NAME (repeatable; see 'ffvj devices')")
    midi.add_argument("--midi-mapping", action="append", default=[], metavar="PATH|NAME",
                      help="mapping file or bundled name (repeatable; default: every bundled mapping)")
    midi.add_argument("--midi-virtual-name", default="ffvj", help="virtual input port name ('' for none)")
    midi.add_argument("--midi-backend", default=None, choices=sorted(MIDI_BACKENDS),
                      help="rtmidi API (default: mido's default, or MIDO_BACKEND)")
    midi.add_argument("--midi-learn-file", default=None, metavar="PATH",
                      help="where controls learned during the show are saved (default: "
                           "~/.config/ffvj/mappings/learned-DATE.toml); a mapped 'learn' button binds the "
                           "next moved control to the parameter last touched over OSC")
    midi.add_argument("--no-midi", action="store_true", help="no MIDI at all")
    p.set_defaults(func=_cmd_run)


def _cmd_run(args: argparse.Namespace) -> int:
    import signal

    from . import checkpoint
    from .runtime import DEFAULT_SINK, Controls, RunConfig, run
    from .midi import MidiError
    from .sinks import SinkUnavailable
    from .sources import SourceError

    source_options = {}
    for item in args.source_option:
        key, sep, value = item.partition("=")
        if not sep or not key.isidentifier():
            raise CliError(f"--source-option {item!r}: expected KEY=VALUE")
        source_options[key] = _option_value(value)
    cfg = RunConfig(source=args.source, source_options=source_options, sinks=args.sink or [DEFAULT_SINK], width=args.size[0], height=args.size[1],
                    fps=args.fps, frames=args.frames, model=args.model, device=args.device, seed=args.seed,
                    pace=args.pace, map_image=args.map_image, presets_dir=args.presets_dir, compile=args.compile,
                    device_formats=args.device_formats, precision=args.precision)
    controls = Controls.for_levels(_model_levels(cfg.model), args.presets_dir, args.seed)
    store = controls.store
    if args.preset:  # first, so --set can adjust the preset
        from .presets import PresetError
        try:
            controls.presets.load(args.preset)  # a bad or missing preset fails here, at start-up
        except (PresetError, OSError) as exc:
            raise CliError(f"--preset {args.preset!r}: {exc}; presets here: "
                           f"{', '.join(controls.presets.names()) or 'none'}") from exc
        controls.presets.recall(args.preset, 0.0)
    for item in args.set:
        name, value = _parse_setting(item, store.registry)
        store.set(name, value, source="--set")
    store.frame(0)  # start at the values, not smoothed towards them
    from .params import MAP_KINDS
    if args.map_image is None and store.get("map.kind") == MAP_KINDS.index("image"):
        raise CliError("map.kind=image needs --map-image PATH (the picture whose luminance is the map)")

    services = _control_services(args, controls)

    stop = threading.Event()

    def _stop(signum, _frame):
        log.info("%s: finishing the current frame and closing outputs", signal.Signals(signum).name)
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _stop)
    try:
        stats = run(cfg, controls=controls, stop=stop, services=services)
    except (SinkUnavailable, SourceError, MidiError, checkpoint.CheckpointError, OSError, ValueError,
            ImportError) as exc:
        raise CliError(str(exc)) from exc
    except TypeError as exc:  # an option a backend does not take
        raise CliError(f"bad source or sink option: {exc}") from exc
    print(stats.summary())
    return 0


MIDI_BACKENDS = {"alsa": "mido.backends.rtmidi/LINUX_ALSA", "jack": "mido.backends.rtmidi/UNIX_JACK",
                 "coremidi": "mido.backends.rtmidi/MACOSX_CORE", "winmm": "mido.backends.rtmidi/WINDOWS_MM"}


def _default_learn_file() -> Path:
    from .presets import default_presets_dir

    return default_presets_dir().parent / "mappings" / time.strftime("learned-%Y%m%d-%H%M%S.toml")


def _save_learned(learner, path: Path) -> None:
    """Learned during a show: written at once (MIDI thread, not the render loop), so nothing is lost."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        learner.save(path)
    except Exception as exc:  # noqa: BLE001 — a failed save is reported; the show and the binding go on
        log.error("could not save the learned MIDI mapping to %s: %s", path, exc)
        return
    log.info("learned MIDI controls saved in %s (next time: --midi-mapping %s)", path, path)


def _control_services(args: argparse.Namespace, controls) -> list:
    """The control surfaces to run beside the show, in start order (they close in reverse)."""
    services: list = []
    if not args.no_midi:
        from .midi import Learner, MappingError, MidiInput, default_mappings, resolve_mapping

        try:
            mappings = ([resolve_mapping(m, controls.store.registry) for m in args.midi_mapping]
                        or default_mappings(controls.store.registry))
        except MappingError as exc:
            raise CliError(str(exc)) from exc
        learner = Learner(controls.store.registry, controls.store)
        learn_file = Path(args.midi_learn_file or _default_learn_file())
        # Saved on a thread of its own: the binding (the mapper's callback) must not wait for the disk.
        learner.on_learned.append(lambda entry: threading.Thread(
            target=_save_learned, args=(learner, learn_file), name="ffvj learn save", daemon=True).start())
        services.append(MidiInput(controls.store, controls.actions, controls.tempo, mappings, ports=args.midi,
                                  virtual_name=args.midi_virtual_name or None,
                                  backend=MIDI_BACKENDS.get(args.midi_backend), learner=learner))
    if not args.no_osc:
        from .osc import OscServer, parse_target
        from .oscquery import OscQueryServer

        try:
            feedback = [parse_target(t) for t in args.osc_feedback]
            osc = OscServer(controls.store, controls.actions, controls.tempo, host=args.osc_host, port=args.osc_port,
                            tcp_port=args.osc_tcp_port, allow=args.osc_allow or None, feedback=feedback,
                            feedback_rate=args.osc_feedback_rate)
        except ValueError as exc:
            raise CliError(str(exc)) from exc
        services.append(osc)
        if not args.no_oscquery:
            services.append(OscQueryServer(osc, port=args.oscquery_port, mdns=False if args.no_mdns else None))
    return services


def _add_devices(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("devices", help="list cameras, torch devices and output backends usable here")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_devices)


def _cmd_devices(args: argparse.Namespace) -> int:
    import torch

    from .sinks import sink_availability
    from .sources import devices as cameras

    report = {
        "cameras": cameras(),
        "torch": {"version": torch.__version__, "cuda": torch.cuda.is_available(),
                  "mps": bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())},
        "sinks": {name: {"usable": ok, "note": why} for name, (ok, why) in sorted(sink_availability().items())},
        "midi": _midi_report(),
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
    print("sinks:")
    for name, info in report["sinks"].items():
        print(f"  {name:<11} {'usable' if info['usable'] else 'not usable'}{': ' + info['note'] if info['note'] else ''}")
    return 0


def _midi_report() -> dict:
    from .midi import backend_errors, midi_ports

    try:
        return midi_ports()
    except backend_errors() as exc:  # no usable MIDI API here
        return {"error": f"not usable here ({type(exc).__name__}: {exc})", "inputs": [], "outputs": []}


def _add_learn(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("learn", help="MIDI learn: move a control for each parameter, write a mapping file")
    p.add_argument("params", nargs="+", help="parameter names, in the order to learn them (see 'ffvj params')")
    p.add_argument("--midi", default=None, metavar="NAME", help="input port (default: a virtual port named ffvj)")
    p.add_argument("--out", default="mappings/learned.toml", help="mapping file to write")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for each control")
    p.add_argument("--midi-backend", default=None, choices=sorted(MIDI_BACKENDS))
    p.add_argument("--model", default=None)
    p.set_defaults(func=_cmd_learn)


def _cmd_learn(args: argparse.Namespace) -> int:
    from .midi import MappingError, MidiError, learn_session
    from .params import build_registry

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
    p.add_argument("--model", default=None, help="the model whose levels to list (default: default)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_params)


def _cmd_params(args: argparse.Namespace) -> int:
    from .params import build_registry

    registry = build_registry(_model_levels(args.model))
    rows = [p.describe() for p in registry.values()]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for r in rows:
        rng = "|".join(r["choices"]) if "choices" in r else f"{r['min']:g}..{r['max']:g}"
        print(f"{r['address']:<28} {rng:<34} default {r['default']:g} {r['unit']}  {r['doc']}")
    return 0


# --- touchosc ------------------------------------------------------------------------------------

def _add_touchosc(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("touchosc", help="write a TouchOSC layout (.tosc) for every parameter")
    p.add_argument("out", nargs="?", default="ffvj.tosc", help="where to write it (default: ffvj.tosc)")
    p.add_argument("--model", default=None, help="the model whose levels to lay out (default: default)")
    p.set_defaults(func=_cmd_touchosc)


def _cmd_touchosc(args: argparse.Namespace) -> int:
    from .params import build_registry
    from .touchosc import generate_layout, validate_layout

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
    p = sub.add_parser("bench", help="measure the engine, the reference step, end-to-end rates and the floor")
    p.add_argument("--size", type=_parse_size, default=(640, 360), help="WxH (default: 640x360)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")
    p.add_argument("--model", default=None)
    p.add_argument("--frames", type=int, default=120, help="timed engine steps (default: 120)")
    p.add_argument("--compile", action="store_true", help="compile the fused kernels with torch.compile")
    p.add_argument("--precision", choices=("fp32", "fp16", "bf16"), default="fp32",
                   help="the engine's precision (the reference stays fp32)")
    p.add_argument("--fps", type=float, default=60.0,
                   help="the live end-to-end run's rate, for its latency (default: %(default)s)")
    p.add_argument("--no-end-to-end", action="store_true", help="skip the runtime (source → sink) runs")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_bench)


def _cmd_bench(args: argparse.Namespace) -> int:
    from . import checkpoint
    from .bench import BenchConfig, bench, format_report

    cfg = BenchConfig(width=args.size[0], height=args.size[1], device=args.device, model=args.model,
                      frames=args.frames, compile=args.compile, end_to_end=not args.no_end_to_end,
                      precision=args.precision, fps=args.fps)
    logging.getLogger("ffvj.runtime").setLevel(logging.WARNING)  # the end-to-end runs' status lines
    try:
        result = bench(cfg)
    except (checkpoint.CheckpointError, ValueError) as exc:
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
    _add_bench(sub)
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
    from .device import keep_freed_host_memory

    keep_freed_host_memory()  # this process renders frames: reuse freed pages (13-15% on CPUs)
    try:
        return args.func(args)
    except CliError as exc:
        print(f"ffvj: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
