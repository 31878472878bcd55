"""The ``ffvj`` command line: argparse only. Each subcommand parses its options here and calls one library
function; defaults and choices come from the config dataclasses and tables they configure."""

from __future__ import annotations

import argparse
import json
import logging
import os
import threading
import shlex
import sys
import time
from pathlib import Path

log = logging.getLogger("ffvj")

_DEVICE_HELP = "auto (cuda, then mps, then cpu), cpu, cuda[:N] or mps (default: auto)"


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
    from .model.net import ACTIVATIONS, DECODERS, POOLINGS, ModelConfig
    from .model.train import TrainConfig

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
    p.add_argument("--activation", default=m.activation, choices=list(ACTIVATIONS))
    p.add_argument("--pooling", default=m.pooling, choices=list(POOLINGS))
    p.add_argument("--decoder", default=m.decoder, choices=list(DECODERS))
    p.add_argument("--kernel-size", type=int, default=m.kernel_size)
    p.add_argument("--layerwise-epochs", type=int, default=d.layerwise_epochs, help="epochs per level")
    p.add_argument("--finetune-epochs", type=int, default=d.finetune_epochs)
    p.add_argument("--steps-per-epoch", type=int, default=d.steps_per_epoch)
    p.add_argument("--batch", type=int, default=d.batch)
    p.add_argument("--crop", type=int, default=d.crop)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--device", default="auto", help=_DEVICE_HELP)
    p.add_argument("--video-frames", type=int, default=d.video_frames, help="frames sampled per video file")
    p.add_argument("--random-encoders", action="store_true",
                   help="keep the encoders' random initial filters (from --seed); only the decoders learn")
    p.add_argument("--spectral", type=float, default=d.spectral,
                   help="weight of a spectral term beside L2 on the picture's round trips (its log-amplitude "
                        "spectrum, phase-free): decoders that put back how much detail there was (default: 0)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_train)


def _cmd_train(args: argparse.Namespace) -> int:
    from .engine.device import resolve_device
    from .model.net import ModelConfig
    from .model.train import TrainConfig, train

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
                      progress=not args.no_progress, random_encoders=args.random_encoders, spectral=args.spectral)
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
    e.add_argument("--model", default=None, help="bundled model name or checkpoint path (default: default)")
    e.add_argument("--device", default="auto", help=_DEVICE_HELP)
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

    v = msub.add_parser("views", help="fit every feature level's view projection (its principal components) on "
                                      "training pictures and write it into the model's card")
    v.add_argument("--model", default=None, help="bundled model name or card path (default: default)")
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

def _parse_size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must be WIDTHxHEIGHT, like 640x360, not {text!r}") from None
    if not (16 <= w <= 8192 and 16 <= h <= 8192):
        raise argparse.ArgumentTypeError(f"size {w}x{h} out of range (16..8192 each way)")
    return w, h


def _parse_setting(item: str) -> tuple[str, object]:
    """``--set NAME=VALUE``: the value's type from its text; the show checks it against the parameter."""
    name, sep, text = item.partition("=")
    if not sep or not name:
        raise CliError(f"--set {item!r}: expected NAME=VALUE with a parameter from 'ffvj params'")
    return name, _option_value(text)


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
    from .control.midi.ports import MIDI_BACKENDS, MidiConfig
    from .control.osc import OscConfig
    from .web import WebConfig
    from .engine.engine import PRECISIONS
    from .media.sinks import sink_names
    from .media.sources import source_names
    from .show import DEFAULT_SINK, RunConfig

    d, o, m = RunConfig(), OscConfig(), MidiConfig()
    p = sub.add_parser("run", help="run the feedback loop live (the show)",
                       description="Run source → hierarchical feedback → sinks until Ctrl-C, SIGTERM or --frames.")
    p.add_argument("--source", default=d.source,
                   help=f"auto (a camera when present, else the generator) or NAME[:ARG], NAME one of "
                        f"{', '.join(source_names())}: generator[:PATTERN], video:PATH, image:PATH, camera[:INDEX] "
                        f"(default: {d.source})")
    p.add_argument("--source-option", action="append", default=[], metavar="KEY=VALUE",
                   help="an option for the source, repeatable: camera width=1280 height=720 camera_fps=60 "
                        "mjpg=1; generator seed=N speed=X; video loop=0")
    p.add_argument("--sink", action="append", metavar="SPEC",
                   help=f"NAME[:ARG], NAME one of {', '.join(sink_names())} (file:PATH.mp4, virtualcam[:DEVICE], "
                        f"ndi[:NAME], ...); repeatable (default: {DEFAULT_SINK})")
    p.add_argument("--size", type=_parse_size, default=(d.width, d.height),
                   help=f"WxH (default: {d.width}x{d.height})")
    p.add_argument("--fps", type=float, default=d.fps, help=f"frames per second (default: {d.fps:g})")
    p.add_argument("--frames", type=_positive_int, default=None,
                   help="stop after N frames (default: run until stopped)")
    p.add_argument("--model", default=None, help="bundled model name or checkpoint path (default: default)")
    p.add_argument("--device", default=d.device, help=_DEVICE_HELP)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--pace", default=d.pace, choices=["auto", "realtime", "offline"],
                   help="realtime: paced to --fps, slow sinks drop frames; offline: as fast as possible, every "
                        "frame to every sink; auto: realtime for cameras and live sinks")
    p.add_argument("--map-image", default=None, metavar="PATH", help="picture for map.kind=image")
    p.add_argument("--compile", action="store_true",
                   help="compile the engine's fused kernels with torch.compile (seconds at start-up)")
    p.add_argument("--precision", choices=list(PRECISIONS), default=d.precision,
                   help="the engine's precision: fp16/bf16 halve its memory traffic on GPUs (slower on most CPUs); "
                        "sampling grids stay fp32 (default: %(default)s)")
    p.add_argument("--threads", type=_positive_int, default=None,
                   help="fix the engine's CPU threads (default: a live show finds the fastest count as it runs, "
                        "trying one per core and 1: beside OBS on 2 cores, 1 thread renders 55 fps and 2 only 23)")
    p.add_argument("--device-formats", choices=("on", "off"), default=d.device_formats,
                   help="on: make each sink's own picture format (4:2:0 for files and virtual cameras) on the "
                        "engine's device; off: RGB to every sink, which converts it itself on the CPU "
                        "(default: %(default)s)")
    p.add_argument("--presets-dir", default=None, metavar="DIR", help="where presets live (default: ~/.config/ffvj/presets)")
    p.add_argument("--preset", default=None, metavar="NAME", help="recall this preset at start")
    p.add_argument("--snapshots", default=None, metavar="FILE",
                   help="keep the 8 snapshot slots in FILE: loaded at start when it exists, saved on every store "
                        "and at the end (safetensors, written atomically)")
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                   help="set a parameter at start (see 'ffvj params'); repeatable")
    p.add_argument("--audio", default=None, metavar="SPEC",
                   help="hear music: file:PATH (a track analysed in step with the frames: an offline render hears "
                        "what a live show would) or an input device by index or name ('ffvj devices' lists them; "
                        "JACK included); the audio<k>.* parameters let it move any parameter")
    p.add_argument("--link", action="store_true",
                   help="join an Ableton Link session: its tempo and bar lead ffvj's, a tapped or set tempo leads "
                        "it (pip install 'ffvj[link]': Link is GPL, an optional extra)")
    p.add_argument("--audio-bands", type=_positive_int, default=d.audio_bands,
                   help="how many bands the analysis splits the music into (default: %(default)s)")
    p.add_argument("--flash-limit", choices=("on", "off"), default=None,
                   help="keep the output within 3 flashes a second (ITU-R BT.1702, WCAG 2.3.1); the parameter "
                        "output.flash_limit (default: on)")
    osc = p.add_argument_group("OSC", "every parameter at /ffvj/NAME (dots become slashes), 0..1 at .../norm; "
                                      "every action at its address (see 'ffvj actions')")
    osc.add_argument("--osc-port", type=_port, default=None,
                     help=f"UDP port (default: {o.port}, or a free one, said at start, when another show has it)")
    osc.add_argument("--osc-host", default=o.host,
                     help=f"address to listen on; 0.0.0.0 lets a tablet on the LAN in (default: {o.host})")
    osc.add_argument("--osc-allow", action="append", default=[], metavar="IP",
                     help="only these clients may send (repeatable; default: anyone who can reach the port)")
    osc.add_argument("--osc-tcp-port", type=_port, default=o.tcp_port, help="also listen on TCP with SLIP framing")
    osc.add_argument("--osc-feedback", action="append", default=[], metavar="HOST:PORT",
                     help="send every parameter change here (repeatable)")
    osc.add_argument("--osc-feedback-rate", type=float, default=o.feedback_rate,
                     help=f"feedback messages/s per parameter (default: {o.feedback_rate:g})")
    osc.add_argument("--oscquery-port", type=_port, default=None,
                     help=f"OSCQuery HTTP port (default: {o.query_port}, or a free one when another show has it)")
    osc.add_argument("--no-oscquery", action="store_true", help="do not serve OSCQuery")
    osc.add_argument("--no-mdns", action="store_true", help="do not announce OSC/OSCQuery over mDNS")
    osc.add_argument("--no-osc", action="store_true", help="no OSC at all")
    midi = p.add_argument_group("MIDI", "a virtual input port named ffvj, plus controllers with a mapping")
    midi.add_argument("--midi", action="append", default=[], metavar="NAME",
                      help="connect to the input port whose name contains NAME (repeatable; see 'ffvj devices')")
    midi.add_argument("--midi-mapping", action="append", default=[], metavar="PATH|NAME",
                      help="mapping file or bundled name (repeatable; default: every bundled mapping)")
    midi.add_argument("--midi-virtual-name", default=m.virtual_name, help="virtual input port name ('' for none)")
    midi.add_argument("--midi-backend", default=m.backend, choices=sorted(MIDI_BACKENDS),
                      help="rtmidi API (default: mido's default, or MIDO_BACKEND)")
    midi.add_argument("--midi-learn-file", default=m.learn_file, metavar="PATH",
                      help="where controls learned during the show are saved (default: "
                           "~/.config/ffvj/mappings/learned-DATE.toml); the learn action binds the next moved "
                           "control to the parameter last touched over OSC")
    midi.add_argument("--no-midi", action="store_true", help="no MIDI at all")
    w = WebConfig()
    web = p.add_argument_group("web page", "every control and the live picture in a browser, at "
                                           f"http://127.0.0.1:{w.port}/ by default")
    web.add_argument("--web-port", type=_port, default=None,
                     help=f"HTTP port (default: {w.port}, or a free one, said at start, when another show has it)")
    web.add_argument("--web-host", default=w.host,
                     help=f"address to serve on; 0.0.0.0 lets a tablet on the LAN open it, with a token "
                          f"(default: {w.host})")
    web.add_argument("--web-token", default=None, metavar="TOKEN",
                     help="the token a page beyond this machine must give (default: made up at start, printed "
                          "in the page's URL)")
    web.add_argument("--web-preview-fps", type=float, default=w.preview_fps,
                     help=f"the page's preview rate, at most (default: {w.preview_fps:g})")
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
    from .web import WebConfig
    from .engine.device import keep_freed_host_memory
    from .show import DEFAULT_SINK, RunConfig, RunStats, StartupError, run

    source_options = {}
    for item in args.source_option:
        key, sep, value = item.partition("=")
        if not sep or not key.isidentifier():
            raise CliError(f"--source-option {item!r}: expected KEY=VALUE")
        source_options[key] = _option_value(value)
    osc = None if args.no_osc else OscConfig(
        host=args.osc_host, port=_port_or_free("--osc-port", args.osc_port, OscConfig.port, args.osc_host, "udp"),
        tcp_port=args.osc_tcp_port, allow=tuple(args.osc_allow), feedback=tuple(args.osc_feedback),
        feedback_rate=args.osc_feedback_rate, mdns=False if args.no_mdns else None,
        query_port=None if args.no_oscquery else _port_or_free("--oscquery-port", args.oscquery_port,
                                                                OscConfig.query_port, args.osc_host))
    midi = None if args.no_midi else MidiConfig(
        ports=tuple(args.midi), mappings=tuple(args.midi_mapping), virtual_name=args.midi_virtual_name,
        backend=args.midi_backend, learn_file=args.midi_learn_file)
    web = None if args.no_web else WebConfig(
        host=args.web_host, port=_port_or_free("--web-port", args.web_port, WebConfig.port, args.web_host),
        token=args.web_token, preview_fps=args.web_preview_fps)
    cfg = RunConfig(source=args.source, source_options=source_options, sinks=args.sink or [DEFAULT_SINK],
                    width=args.size[0], height=args.size[1], fps=args.fps, frames=args.frames, model=args.model,
                    device=args.device, seed=args.seed, pace=args.pace, map_image=args.map_image,
                    presets_dir=args.presets_dir, preset=args.preset,
                    settings={**dict(map(_parse_setting, args.set)),
                              **({"output.flash_limit": args.flash_limit == "on"} if args.flash_limit else {})},
                    compile=args.compile, device_formats=args.device_formats, precision=args.precision,
                    threads=args.threads, osc=osc, midi=midi, web=web, audio=args.audio, audio_bands=args.audio_bands,
                    link=args.link, snapshots=args.snapshots)
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

    from .audio.inputs import EXTRA as AUDIO_EXTRA, list_inputs
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
    p.add_argument("--model", default=None)
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
    p.add_argument("--model", default=None, help="the model whose levels to list (default: default)")
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


# --- look ----------------------------------------------------------------------------------------

def _add_look(sub: argparse._SubParsersAction) -> None:
    from .look.report import INPUTS, LookConfig

    d = LookConfig()
    p = sub.add_parser("look", help="render fixed inputs through every look and measure the picture",
                       description="A picture report: lattice (a screen-locked pattern), input fidelity, liveliness, "
                                   "flashes and colour balance of the default look and every factory preset, on "
                                   "fixed inputs, with a contact sheet (PNG) per run.")
    p.add_argument("--input", action="append", metavar="NAME|SPEC",
                   help=f"{', '.join(INPUTS)} (default: all three), or a source spec such as video:clip.mp4; repeatable")
    p.add_argument("--preset", action="append", metavar="NAME",
                   help="default or a preset name; repeatable (default: default and every factory preset)")
    p.add_argument("--size", type=_parse_size, default=(d.width, d.height), help=f"WxH (default: {d.width}x{d.height})")
    p.add_argument("--fps", type=float, default=d.fps, help=f"(default: {d.fps:g})")
    p.add_argument("--seconds", type=float, default=d.seconds, help=f"each run's length (default: {d.seconds:g})")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--model", default=None)
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                   help="a parameter set on top of every preset (see 'ffvj params'); repeatable")
    p.add_argument("--out", default=d.out, help=f"folder for the contact sheets and look.json (default: {d.out})")
    p.add_argument("--sheets", choices=("png", "jpg"), default=d.sheets, help="contact sheet format (default: png)")
    p.add_argument("--no-levels", action="store_true",
                   help="contact sheets without the feature levels' views (the source and the picture only)")
    p.add_argument("--no-hierarchy", action="store_true",
                   help="skip the hierarchy measure (each look rendered again with the hierarchy cut: twice the time)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=_cmd_look)


def _cmd_look(args: argparse.Namespace) -> int:
    from .engine.device import keep_freed_host_memory
    from .look.report import INPUTS, LookConfig, format_report, look, plan, write_json
    from .show import StartupError

    cfg = LookConfig(inputs=tuple(args.input or INPUTS), presets=tuple(args.preset or ()), width=args.size[0],
                     height=args.size[1], fps=args.fps, seconds=args.seconds, seed=args.seed, model=args.model,
                     settings=dict(map(_parse_setting, args.set)), out=args.out, sheets=args.sheets,
                     levels=not args.no_levels, hierarchy=not args.no_hierarchy)
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

    d = DiscoverConfig()
    p = sub.add_parser("discover", help="search φ and the models for looks whose picture comes from the hierarchy "
                                        "(quality-diversity: MAP-Elites)",
                       description="A quality-diversity search (pyribs' MAP-Elites, Dask workers) over φ and the "
                                   "bundled models, judged by ffvj look's measures; writes its archive as it goes "
                                   "(resumable), then the elites as presets and a gallery. "
                                   "Needs pip install 'ffvj[discover]'.")
    p.add_argument("--minutes", type=float, default=d.minutes, help="how long to search (default: %(default)s)")
    p.add_argument("--iterations", type=_positive_int, default=None,
                   help="stop after this many iterations instead (reproducible with --seed)")
    p.add_argument("--out", default=d.out, help="the archive, presets and gallery (default: %(default)s); a run "
                                                "there is resumed")
    p.add_argument("--workers", type=_positive_int, default=d.workers,
                   help="worker processes on this machine (default: %(default)s)")
    p.add_argument("--scheduler", default=None, metavar="ADDRESS",
                   help="a Dask scheduler (tcp://HOST:8786) whose workers evaluate, instead of local processes")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--size", type=_parse_size, default=(d.width, d.height),
                   help=f"each candidate's size (default: {d.width}x{d.height})")
    p.add_argument("--seconds", type=float, default=d.seconds, help="each candidate's length (default: %(default)s)")
    p.add_argument("--batch", type=_positive_int, default=d.batch,
                   help="candidates per emitter and iteration (default: %(default)s; two emitters)")
    p.add_argument("--model", action="append", default=[], metavar="NAME",
                   help="search this bundled model only (repeatable; default: every bundled model)")
    p.add_argument("--fresh", action="store_true", help="start over instead of resuming what --out holds")
    p.set_defaults(func=_cmd_discover)


def _cmd_discover(args: argparse.Namespace) -> int:
    from .look.discover import DiscoverConfig, DiscoverError, describe, discover

    cfg = DiscoverConfig(out=args.out, minutes=args.minutes, iterations=args.iterations, workers=args.workers,
                         scheduler=args.scheduler, seed=args.seed, width=args.size[0], height=args.size[1],
                         seconds=args.seconds, batch=args.batch, models=tuple(args.model), fresh=args.fresh)
    log.info("ffvj discover: %s, %d candidates an iteration, each %dx%d for %g s, twice (as is, hierarchy cut); "
             "into %s", f"{cfg.iterations} iterations" if cfg.iterations else f"{cfg.minutes:g} minutes",
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
    p.add_argument("--model", default=None, help="the model whose levels to lay out (default: default)")
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
    from .engine.engine import PRECISIONS

    d = BenchConfig()
    p = sub.add_parser("bench", help="measure the engine, the reference step, end-to-end rates and the floor")
    p.add_argument("--size", type=_parse_size, default=(d.width, d.height),
                   help=f"WxH (default: {d.width}x{d.height})")
    p.add_argument("--device", default=d.device, help=_DEVICE_HELP)
    p.add_argument("--model", default=None)
    p.add_argument("--frames", type=int, default=d.frames, help="timed engine steps (default: %(default)s)")
    p.add_argument("--compile", action="store_true", help="compile the fused kernels with torch.compile")
    p.add_argument("--precision", choices=list(PRECISIONS), default=d.precision,
                   help="the engine's precision (the reference stays fp32)")
    p.add_argument("--fps", type=float, default=d.fps,
                   help="the live end-to-end run's rate, for its latency (default: %(default)s)")
    p.add_argument("--threads", type=_positive_int, default=None,
                   help="CPU threads for the engine (default: one per core). Beside OBS or another busy program "
                        "use fewer than the cores: on 2 cores with one kept busy, 1 thread ran at 64 fps and 2 at 26")
    p.add_argument("--no-end-to-end", action="store_true", help="skip the show's (source → sink) runs")
    p.add_argument("--no-contended", action="store_true",
                   help="skip the run beside a competing encoder (one x264 thread, as OBS runs during a show)")
    p.add_argument("--preset", metavar="NAME", help="time this look (a factory or saved preset, on its model)")
    p.add_argument("--audio", metavar="SPEC", default=None,
                   help="the end-to-end shows hear this (file:PATH, a device): what hearing music costs")
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                   help="a parameter for every run (see 'ffvj params'), e.g. l0.amplify=0.06; repeatable")
    p.add_argument("--web-pages", type=int, default=d.web_pages,
                   help="pages reading the web page's socket during a second live run (default: %(default)s; "
                        "0 with --web-stalled 0: no such run)")
    p.add_argument("--web-stalled", type=int, default=d.web_stalled,
                   help="pages that connect and never read, beside them (default: %(default)s)")
    p.add_argument("--live-seconds", type=float, default=d.live_seconds,
                   help="the live show beside the competing encoder, once settled (default: %(default)s; 0: none)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_bench)


def _cmd_bench(args: argparse.Namespace) -> int:
    from .bench import BenchConfig, bench, format_report
    from .engine.device import keep_freed_host_memory, use_cpu_threads
    from .model import checkpoint
    from .show import StartupError

    cfg = BenchConfig(width=args.size[0], height=args.size[1], device=args.device, model=args.model,
                      frames=args.frames, compile=args.compile, end_to_end=not args.no_end_to_end,
                      precision=args.precision, fps=args.fps, contended=not args.no_contended,
                      settings=dict(map(_parse_setting, args.set)), preset=args.preset, web_pages=args.web_pages,
                      web_stalled=args.web_stalled, live_seconds=args.live_seconds, audio=args.audio)
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
