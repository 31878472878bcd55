import json

import pytest
import torch

from ffvj.model import checkpoint
from ffvj.model.checkpoint import CheckpointError


@pytest.fixture
def saved(tmp_path, small_model):
    return checkpoint.save(small_model, tmp_path / "m", training={"note": "test"}, metrics={"x": 1})


def test_save_then_load_rebuilds_the_exact_model(saved, small_model):
    model, card = checkpoint.load(saved)
    assert model.config == small_model.config
    assert card["training"] == {"note": "test"} and card["format_version"] == checkpoint.FORMAT_VERSION
    x = torch.rand(1, 3, 33, 41) * 2 - 1
    with torch.no_grad():
        assert torch.equal(model.reconstruct(x, 3), small_model.reconstruct(x, 3))


@pytest.mark.parametrize("suffix", ["", ".json", ".safetensors"])
def test_a_model_can_be_named_by_stem_card_or_weights(saved, suffix):
    model, _ = checkpoint.load(str(saved.with_suffix(suffix)))
    assert model.levels == 3


def test_weights_are_not_pickles(saved):
    assert saved.with_suffix(".safetensors").read_bytes()[:2] != b"\x80\x04"  # pickle protocol 4 magic
    assert json.loads(saved.read_text())["config"]["channels"] == [3, 6, 8, 10]


def test_missing_card(tmp_path):
    with pytest.raises(CheckpointError, match=r"nothere\.json: model card not found"):
        checkpoint.load(tmp_path / "nothere.json")


def test_missing_weights(saved):
    saved.with_suffix(".safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"m\.safetensors: weights file not found"):
        checkpoint.load(saved)


def test_truncated_weights_fail_the_hash(saved):
    weights = saved.with_suffix(".safetensors")
    weights.write_bytes(weights.read_bytes()[:-100])
    with pytest.raises(CheckpointError, match=r"m\.safetensors: contents do not match the sha256"):
        checkpoint.load(saved)


def test_truncated_weights_without_a_hash_fail_to_parse(saved):
    card = json.loads(saved.read_text())
    del card["weights_sha256"]
    saved.write_text(json.dumps(card))
    weights = saved.with_suffix(".safetensors")
    weights.write_bytes(weights.read_bytes()[:50])
    with pytest.raises(CheckpointError, match=r"m\.safetensors: not a readable safetensors file"):
        checkpoint.load(saved)


def test_truncated_card(saved):
    saved.write_text(saved.read_text()[:40])
    with pytest.raises(CheckpointError, match=r"m\.json: not valid JSON"):
        checkpoint.load(saved)


def test_wrong_format_version(saved):
    card = json.loads(saved.read_text())
    card["format_version"] = 99
    saved.write_text(json.dumps(card))
    with pytest.raises(CheckpointError, match="format_version 99"):
        checkpoint.load(saved)


def test_not_a_card(saved):
    saved.write_text(json.dumps({"hello": "world"}))
    with pytest.raises(CheckpointError, match="not an ffvj model card"):
        checkpoint.load(saved)


def test_config_that_does_not_match_the_weights(saved):
    card = json.loads(saved.read_text())
    card["config"]["channels"] = [3, 6, 8, 12]
    saved.write_text(json.dumps(card))
    with pytest.raises(CheckpointError, match=r"encoders\.2\.conv\.weight has shape"):
        checkpoint.load(saved)


def test_config_with_a_different_depth(saved):
    card = json.loads(saved.read_text())
    card["config"]["channels"] = [3, 6, 8]
    saved.write_text(json.dumps(card))
    with pytest.raises(CheckpointError, match="unexpected"):
        checkpoint.load(saved)


def test_bad_config_values(saved):
    card = json.loads(saved.read_text())
    card["config"]["activation"] = "swish"
    saved.write_text(json.dumps(card))
    with pytest.raises(CheckpointError, match="bad model config.*swish"):
        checkpoint.load(saved)


def test_unknown_name_lists_bundled_models():
    with pytest.raises(CheckpointError, match=r"unknown model 'nope'.*bundled: .*default"):
        checkpoint.load("nope")


def test_the_bundled_default_loads_and_reconstructs():
    model, card = checkpoint.load(None)
    assert model.levels >= 3
    # interp decoders give up ~1 dB of the smooth decoders' round trip (no fixed low-pass) to hand texture down
    assert card["metrics"]["eval"]["levels"][0]["gain_db"] >= 2.5
    assert card["config"]["decoder"] == "interp"
