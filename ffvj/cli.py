"""The ``ffvj`` command line. Each subcommand parses its options here and calls one library function."""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
from pathlib import Path

log = logging.getLogger("ffvj")


class CliError(Exception):
    """A start-up problem to print as one line (no traceback) before exiting non-zero."""


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


# --- entry point ---------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ffvj", description="Hierarchical neural video feedback for live shows.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_train(sub)
    _add_model(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    try:
        return args.func(args)
    except CliError as exc:
        print(f"ffvj: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
