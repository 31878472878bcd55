"""Training the feature hierarchy: layer-wise, then end-to-end fine-tuning.

Phase 1 (layer-wise), for ℓ = 0 … L-1: the encoders below ℓ are frozen; γ_ℓ and γ_ℓ⁻¹ learn to
reconstruct level ℓ's state, ‖γ_ℓ⁻¹(γ_ℓ(h^ℓ)) − h^ℓ‖².
Phase 2 (fine-tuning): every parameter (the decoders' alone with ``random_encoders``), against both objectives at once: the per-level ones above and
the whole-stack ones, the picture's round trip through every depth d = 1 … L, ‖rec_d(x) − x‖².
The original experiment found deep stacks need exactly this: layer-wise training alone leaves the
decoders unused to each other's errors, end-to-end training alone drifts hidden levels away from
being image-like.

Many processes or machines: run ``ffvj train`` under ``torchrun`` (``Distributed.from_environment``
reads its RANK / WORLD_SIZE / LOCAL_RANK). Each phase's loss is a module wrapped in
``DistributedDataParallel`` (gloo on CPUs, NCCL on GPUs), so every step's gradients are averaged over
the ranks and every rank holds the same weights. The batch is split over the ranks (``batch`` stays
the global batch, so the optimisation, and with it the result, is the single process's), and each rank
draws its own crops: its shard of the data is its own stream of random crops (seed + rank), disjoint
from the others' but for chance. Rank 0 alone validates, measures scales and views, evaluates and
writes the one checkpoint.
"""

from __future__ import annotations

import json
import logging
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..options import device_option, option
from . import checkpoint
from .data import CropSampler, load_sources
from .evaluate import evaluate, filter_sheet, psnr, reconstruction_sheet
from .net import FeatureAutoencoder, ModelConfig

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    """How to train (each field with an ``option`` is also ``ffvj train``'s flag: ``ffvj.options``)."""

    sources: list[str] = option(help="training pictures: builtin[:train|val|test] (scikit-image's photos), an image "
                                     "folder, or a video file (frames sampled across it); repeatable (default: "
                                     "builtin:train)", default_factory=lambda: ["builtin:train"], flag="--data",
                                metavar="SPEC", repeat=True, collect=list)
    # None: builtin:val if a builtin source is used, else a split.
    val_sources: list[str] | None = option(None, "validation pictures (default: builtin:val)", flag="--val",
                                           metavar="SPEC", repeat=True, collect=list)
    eval_sources: list[str] = option(help="pictures to evaluate on at the end (stored in the card)",
                                     default_factory=list, flag="--eval", metavar="SPEC", repeat=True, collect=list)
    layerwise_epochs: int = option(20, "epochs per level")
    finetune_epochs: int = option(10, "epochs end to end")
    steps_per_epoch: int = option(300, "steps per epoch")
    batch: int = option(16, "crops per step")
    crop: int = option(64, "crop size in pixels")
    lr: float = option(3e-3, "learning rate")
    seed: int = option(0, "the seed of the crops and the initial filters")
    # auto: CUDA when there is one, else the CPU (MPS is not offered for training).
    device: str = device_option()
    video_frames: int = option(32, "frames sampled per video file")
    progress: bool = option(True, "no progress bar")
    # The encoders keep their random initial filters (from ``seed``) and only the decoders learn: the
    # original write-up found random filters make livelier feedback than learned ones, which settle;
    # learned decoders keep the hierarchy a round trip, so the loop still sees its picture.
    random_encoders: bool = option(False, "keep the encoders' random initial filters (from --seed); only the "
                                          "decoders learn")
    # Weight of a spectral term beside L2 on the picture's round trips: the mean absolute difference of the
    # log-amplitude spectra (phase-free), so a decoder that cannot know where detail goes still puts back
    # how much of it there is, at each frequency, instead of L2's blur (0: L2 alone).
    spectral: float = option(0.0, "weight of a spectral term beside L2 on the picture's round trips (its "
                                  "log-amplitude spectrum, phase-free): decoders that put back how much detail there "
                                  "was")


def _split_validation(pictures: dict[str, np.ndarray]) -> tuple[dict, dict]:
    """Hold out every 10th picture (at least one) for validation when nobody named a set."""
    names = sorted(pictures)
    if len(names) < 2:
        return pictures, pictures
    val = set(names[::10][: max(1, len(names) // 10)])
    return ({k: v for k, v in pictures.items() if k not in val}, {k: v for k, v in pictures.items() if k in val})


@dataclass(frozen=True)
class Distributed:
    """Where this process stands in a ``torchrun`` job (one process: rank 0 of 1)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @classmethod
    def from_environment(cls) -> "Distributed":
        import os

        world = int(os.environ.get("WORLD_SIZE", "1"))
        return cls(int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0")))

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


class _PhaseLoss(torch.nn.Module):
    """One phase's training loss as a module (``level``: a layer-wise phase; None: fine-tuning), so
    DistributedDataParallel can wrap it and average the gradients of the parameters it trains."""

    def __init__(self, model: FeatureAutoencoder, level: int | None, spectral: float = 0.0):
        super().__init__()
        self.model, self.level, self.spectral = model, level, spectral

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        model = self.model
        if self.level is None:
            states = model.encode_all(x)
            return _whole_stack_loss(model, states, self.spectral) + sum(
                _per_level_loss(model, states, lvl, self.spectral) for lvl in range(model.levels)) / model.levels
        with torch.no_grad():
            states = model.encode_all(x, self.level)
        return _per_level_loss(model, states, self.level, self.spectral)


def spectral_loss(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean |log(1 + |F(a)|) − log(1 + |F(b)|)| over every frequency of every channel (``TrainConfig.spectral``)."""
    return (torch.log1p(torch.fft.rfft2(a, norm="ortho").abs())
            - torch.log1p(torch.fft.rfft2(b, norm="ortho").abs())).abs().mean()


def _reconstruction_loss(rec: torch.Tensor, target: torch.Tensor, spectral: float) -> torch.Tensor:
    loss = F.mse_loss(rec, target)
    return loss + spectral * spectral_loss(rec, target) if spectral else loss


def _per_level_loss(model: FeatureAutoencoder, states: list[torch.Tensor], level: int,
                    spectral: float = 0.0) -> torch.Tensor:
    h = states[level].detach()
    rec = model.decode(level, model.encode(level, h), size=tuple(h.shape[-2:]))
    # The spectral term where the level is the picture; a feature level's own spectrum is no picture's.
    return _reconstruction_loss(rec, h, spectral if level == 0 else 0.0)


def _whole_stack_loss(model: FeatureAutoencoder, states: list[torch.Tensor], spectral: float = 0.0) -> torch.Tensor:
    """Mean over depths d of ‖rec_d(x) − x‖² (plus the spectral term), sharing the encodings already computed."""
    x = states[0]
    total = x.new_zeros(())
    for depth in range(1, model.levels + 1):
        h = states[depth]
        for level in reversed(range(depth)):
            h = model.decode(level, h, size=tuple(states[level].shape[-2:]))
        total = total + _reconstruction_loss(h, x, spectral)
    return total / model.levels


SCALE_QUANTILE = 0.99  # a level's natural scale: how far 99 % of its units swing on natural pictures


@torch.no_grad()
def natural_scales(model: FeatureAutoencoder, sampler: CropSampler, crops: int = 512, seed: int = 0) -> list[float]:
    """Each level's natural scale: the 99th percentile of |h^ℓ| over ``crops`` random training crops
    (the picture's is 1). The engine bounds every level to it, so the decoders see states like the
    ones they learned from (``engine.delta``)."""
    model.eval()
    pictures = sampler.sample(crops, torch.Generator().manual_seed(seed))
    states = model.encode_all(pictures)
    scales = [1.0]
    for h in states[1:]:
        flat = h.abs().flatten()
        k = max(1, int(round(flat.numel() * SCALE_QUANTILE)))
        scales.append(round(float(flat.kthvalue(k).values), 4))
    return scales


@torch.no_grad()
def level_views(model: FeatureAutoencoder, sampler: CropSampler, crops: int = 256, seed: int = 0) -> dict:
    """Every feature level's view projection (its first three principal components over ``crops``
    random training crops; ``engine.views``), as the card stores it."""
    from .views import fit

    model.eval()
    states = model.encode_all(sampler.sample(crops, torch.Generator().manual_seed(seed + 1)))
    return {"levels": [fit(h).to_dict() for h in states[1:]],
            "how": f"the first 3 principal components of each level over {crops} training crops"}


@torch.no_grad()
def _validate(model: FeatureAutoencoder, val: torch.Tensor) -> dict:
    model.eval()
    out = {}
    for depth in range(1, model.levels + 1):
        rec = torch.cat([model.reconstruct(chunk, depth) for chunk in val.split(64)])
        out[f"psnr_l{depth}"] = round(psnr(rec, val).mean().item(), 3)
        out[f"mse_l{depth}"] = F.mse_loss(rec, val).item()
    model.train()
    return out


def train(model_config: ModelConfig, cfg: TrainConfig, out: Path, command: str | None = None) -> tuple[Path, dict]:
    """Train a model, write ``out``.json/.safetensors plus PNGs beside it; return (card path, card)."""
    started = time.perf_counter()
    dist = Distributed.from_environment()
    device = torch.device(cfg.device if cfg.device != "auto" else "cuda" if torch.cuda.is_available() else "cpu")
    if dist.enabled:
        import torch.distributed as td

        if device.type == "cuda":
            device = torch.device("cuda", dist.local_rank)
            torch.cuda.set_device(device)
        if cfg.batch % dist.world:
            raise ValueError(f"--batch {cfg.batch} does not split over {dist.world} processes: make it a multiple")
        td.init_process_group("nccl" if device.type == "cuda" else "gloo")
    try:
        return _train(model_config, cfg, out, command, dist, device, started)
    finally:
        if dist.enabled:
            import torch.distributed as td

            td.destroy_process_group()


def _train(model_config: ModelConfig, cfg: TrainConfig, out: Path, command: str | None, dist: Distributed,
           device: torch.device, started: float) -> tuple[Path | None, dict]:
    torch.manual_seed(cfg.seed)  # the same initial weights on every rank
    crops = torch.Generator().manual_seed(cfg.seed + dist.rank)  # each rank its own crops
    batch = cfg.batch // dist.world

    pictures = load_sources(cfg.sources, cfg.video_frames)
    val_specs = cfg.val_sources
    if val_specs is None and any(s.startswith("builtin") for s in cfg.sources):
        val_specs = ["builtin:val"]
    if val_specs:
        val_pictures = load_sources(val_specs, cfg.video_frames)
    else:
        pictures, val_pictures = _split_validation(pictures)
    sampler = CropSampler(pictures, cfg.crop)
    val_batch = CropSampler(val_pictures, cfg.crop).fixed_crops(per_picture=max(1, 64 // len(val_pictures))).to(device)

    model = FeatureAutoencoder(model_config).to(device).train()
    if cfg.random_encoders:
        model.encoders.requires_grad_(False)
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    history: list[dict] = []
    phases = [(f"layer {lvl}", lvl, cfg.layerwise_epochs) for lvl in range(model.levels)]
    phases.append(("fine-tune", None, cfg.finetune_epochs))
    total_steps = sum(e for *_, e in phases) * cfg.steps_per_epoch
    bar = tqdm(total=total_steps, disable=not (cfg.progress and dist.main), unit="step", dynamic_ncols=True,
               file=sys.stderr)
    first_loss = last_loss = None
    for phase, level, epochs in phases:
        if epochs <= 0:
            continue
        if level is None:
            params = list(model.parameters())
        else:
            params = list(model.encoders[level].parameters()) + list(model.decoders[level].parameters())
        params = [p for p in params if id(p) in trainable]
        chosen = {id(p) for p in params}
        for p in model.parameters():  # this phase's parameters train, the rest stay put (and DDP skips them)
            p.requires_grad_(id(p) in chosen)
        loss_fn: torch.nn.Module = _PhaseLoss(model, level, cfg.spectral)
        if dist.enabled:
            from torch.nn.parallel import DistributedDataParallel

            loss_fn = DistributedDataParallel(loss_fn, device_ids=[device.index] if device.type == "cuda" else None)
        opt = torch.optim.Adam(params, lr=cfg.lr)
        steps = epochs * cfg.steps_per_epoch
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * s / steps)))
        for epoch in range(epochs):
            running = 0.0
            for _ in range(cfg.steps_per_epoch):
                x = sampler.sample(batch, crops).to(device)
                loss = loss_fn(x)
                opt.zero_grad(set_to_none=True)
                loss.backward()  # under DDP: the gradients averaged over every rank
                opt.step()
                sched.step()
                running += loss.item()
                bar.update(1)
                bar.set_postfix_str(f"{phase} loss {loss.item():.5f}")
            mean = running / cfg.steps_per_epoch
            first_loss = mean if first_loss is None else first_loss
            last_loss = mean
            if dist.main:
                row = {"phase": phase, "epoch": epoch + 1, "train_loss": mean, **_validate(model, val_batch)}
                history.append(row)
                bar.write(f"{phase} epoch {epoch + 1}/{epochs}: train {mean:.5f}  val " +
                          "  ".join(f"L{d} {row[f'psnr_l{d}']:.2f} dB" for d in range(1, model.levels + 1)))
    bar.close()
    for p in model.parameters():
        p.requires_grad_(id(p) in trainable)
    if dist.enabled:
        # Every rank holds the same weights (DDP's promise); the log shows it, rank by rank.
        checksum = sum(float(p.detach().double().sum()) for p in model.parameters())
        log.info("rank %d of %d: trained, parameter checksum %.12e", dist.rank, dist.world, checksum)
        if not dist.main:
            return None, {}

    model.eval()
    scales = natural_scales(model, sampler, seed=cfg.seed)
    views = level_views(model, sampler, seed=cfg.seed)
    metrics: dict = {"validation": history[-1] if history else {}}
    if cfg.eval_sources:
        metrics["eval"] = {"sources": cfg.eval_sources, **evaluate(model, load_sources(cfg.eval_sources), device)}
    training = {
        "command": command,
        "config": asdict(cfg),
        "data": {
            "sources": cfg.sources,
            "pictures": len(pictures),
            "pixels": int(sum(p.shape[0] * p.shape[1] for p in pictures.values())),
            "names": sorted(pictures)[:200],
            "validation": sorted(val_pictures),
        },
        "history": history,
        "seconds": round(time.perf_counter() - started, 1),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "processes": dist.world,
    }
    card_path = checkpoint.save(model, out, training=training, metrics=metrics,
                                scales={"levels": scales, "how": f"the {SCALE_QUANTILE:.0%} quantile of |h| over "
                                                                 "512 training crops, per level"},
                                views=views)
    stem = card_path.with_suffix("")
    reconstruction_sheet(model, val_pictures | dict(list(pictures.items())[:2]), Path(f"{stem}-reconstructions.png"))
    filter_sheet(model, Path(f"{stem}-filters.png"))
    log.info("wrote %s (first epoch loss %.5f, last %.5f)", card_path, first_loss or 0, last_loss or 0)
    return card_path, json.loads(card_path.read_text())
