"""Model checkpoints: weights in safetensors beside a JSON card holding the model's arguments.

A checkpoint named ``NAME`` is two files::

    NAME.json          {"format": "ffvj-model", "format_version": 1, "config": {...},
                        "weights": "NAME.safetensors", "weights_sha256": "...",
                        "training": {...}, "metrics": {...}, "scales": {"levels": [1, s1, ...]}}
    NAME.safetensors   the state dict, nothing else

Loading rebuilds the exact ``ModelConfig`` from the JSON, checks the weights' hash, names and shapes,
and never unpickles. Every failure raises ``CheckpointError`` naming the file and what is wrong.
"""

from __future__ import annotations

import hashlib
import json
from importlib import resources
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .net import FeatureAutoencoder, ModelConfig

FORMAT = "ffvj-model"
FORMAT_VERSION = 1
DEFAULT_MODEL = "default"


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, truncated, corrupt or does not match its config."""


def bundled_models_dir() -> Path:
    """The folder of models shipped with ffvj (the repository's ``bundled_models/``)."""
    return Path(str(resources.files("ffvj.bundled_models")))


def bundled_models() -> list[str]:
    return sorted(p.stem for p in bundled_models_dir().glob("*.json"))


def resolve(name_or_path: str | Path | None) -> Path:
    """The JSON card of a model given by bundled name, by card path, weights path or path stem."""
    if name_or_path is None:
        name_or_path = DEFAULT_MODEL
    text = str(name_or_path)
    path = Path(text)
    if path.suffix in (".json", ".safetensors"):
        return path.with_suffix(".json")
    if path.with_suffix(".json").exists() or "/" in text or text.startswith("."):
        return path.with_suffix(".json")
    card = bundled_models_dir() / f"{text}.json"
    if not card.exists():
        raise CheckpointError(
            f"unknown model {text!r}: not a file, and not a bundled model "
            f"(bundled: {', '.join(bundled_models()) or 'none'}); pass a path to NAME.json or NAME.safetensors"
        )
    return card


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def save(model: FeatureAutoencoder, path: str | Path, training: dict | None = None,
         metrics: dict | None = None, scales: dict | None = None, views: dict | None = None) -> Path:
    """Write ``path`` (.json; the weights beside it as .safetensors). Returns the card's path."""
    card_path = Path(path).with_suffix(".json")
    weights_path = card_path.with_suffix(".safetensors")
    card_path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(weights_path), metadata={"format": FORMAT, "format_version": str(FORMAT_VERSION)})
    card = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "config": model.config.to_dict(),
        "weights": weights_path.name,
        "weights_sha256": _sha256(weights_path),
        "training": training or {},
        "metrics": metrics or {},
        **({"scales": scales} if scales else {}),
        **({"views": views} if views else {}),
    }
    card_path.write_text(json.dumps(card, indent=2) + "\n")
    return card_path


def read_card(name_or_path: str | Path | None) -> tuple[Path, dict]:
    """The resolved card path and its parsed, checked contents."""
    card_path = resolve(name_or_path)
    if not card_path.is_file():
        raise CheckpointError(f"{card_path}: model card not found (a checkpoint is NAME.json + NAME.safetensors)")
    try:
        card = json.loads(card_path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{card_path}: not valid JSON ({exc}); the file is truncated or corrupt") from exc
    if not isinstance(card, dict) or card.get("format") != FORMAT:
        raise CheckpointError(f"{card_path}: not an ffvj model card (expected \"format\": \"{FORMAT}\")")
    if card.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{card_path}: format_version {card.get('format_version')!r}, but this ffvj reads version "
            f"{FORMAT_VERSION}; retrain with 'ffvj train' or use a matching ffvj"
        )
    for key in ("config", "weights"):
        if key not in card:
            raise CheckpointError(f"{card_path}: missing the {key!r} entry")
    return card_path, card


def scales(card: dict) -> list[float] | None:
    """Each level's natural scale from a card (``card["scales"]["levels"]``: the picture's 1, then how
    far each feature level's units swing on natural pictures), or None for a card without them."""
    found = card.get("scales", {}).get("levels") if isinstance(card.get("scales"), dict) else None
    return [float(v) for v in found] if found else None


def views(card: dict) -> list[dict] | None:
    """Each feature level's view projection (``engine.views``) from a card: ``card["views"]["levels"]``,
    one entry per level above the picture, or None for a card without them."""
    found = card.get("views", {}).get("levels") if isinstance(card.get("views"), dict) else None
    return list(found) if found else None


def load(name_or_path: str | Path | None = None, device: str | torch.device = "cpu"
         ) -> tuple[FeatureAutoencoder, dict]:
    """Rebuild a model from its checkpoint; returns (model in eval mode, card)."""
    card_path, card = read_card(name_or_path)
    try:
        config = ModelConfig.from_dict(card["config"])
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{card_path}: bad model config: {exc}") from exc
    weights_path = card_path.parent / card["weights"]
    if not weights_path.is_file():
        raise CheckpointError(f"{weights_path}: weights file not found (named by {card_path})")
    expected_hash = card.get("weights_sha256")
    if expected_hash and _sha256(weights_path) != expected_hash:
        raise CheckpointError(
            f"{weights_path}: contents do not match the sha256 in {card_path.name}; the file is truncated, "
            "corrupt or from another training run"
        )
    try:
        state = load_file(str(weights_path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{weights_path}: not a readable safetensors file ({exc})") from exc
    model = FeatureAutoencoder(config)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise CheckpointError(
            f"{weights_path}: tensors do not match the config in {card_path.name}: "
            f"missing {missing[:4]}{'…' if len(missing) > 4 else ''}, "
            f"unexpected {unexpected[:4]}{'…' if len(unexpected) > 4 else ''}"
        )
    for key, tensor in expected.items():
        if state[key].shape != tensor.shape:
            raise CheckpointError(
                f"{weights_path}: tensor {key} has shape {tuple(state[key].shape)}, but the config in "
                f"{card_path.name} needs {tuple(tensor.shape)}"
            )
    model.load_state_dict(state)
    return model.to(device).eval(), card
