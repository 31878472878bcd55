import json

import cv2
import numpy as np
import pytest
import torch

from safetensors.torch import load_file

from ffvj.model import checkpoint
from ffvj.cli import main
from ffvj.model.data import CropSampler, load_sources, video_frames
from ffvj.model.evaluate import bicubic_roundtrip, evaluate, psnr, ssim
from ffvj.model.net import ModelConfig
from ffvj.model.train import TrainConfig, train

from tests.helpers import smooth_picture

TINY = ModelConfig(channels=(3, 6, 8, 10))


def tiny_train(picture_dir, out, **overrides):
    cfg = TrainConfig(sources=[str(picture_dir)], layerwise_epochs=1, finetune_epochs=2, steps_per_epoch=15,
                      batch=4, crop=32, lr=3e-3, seed=1, progress=False, **overrides)
    return train(TINY, cfg, out)


def test_a_short_run_lowers_the_loss_and_writes_everything(picture_dir, tmp_path):
    card_path, card = tiny_train(picture_dir, tmp_path / "run" / "tiny")
    history = card["training"]["history"]
    finetune = [h for h in history if h["phase"] == "fine-tune"]
    layer0 = [h for h in history if h["phase"] == "layer 0"]
    # Validation of the whole stack improves from the layer-wise phase through fine-tuning.
    assert finetune[-1]["mse_l3"] < layer0[0]["mse_l3"]
    assert finetune[-1]["train_loss"] < history[0]["train_loss"] * 2  # different objectives; sanity only
    assert layer0[-1]["psnr_l1"] > 12
    stem = card_path.with_suffix("")
    for suffix in (".json", ".safetensors", "-reconstructions.png", "-filters.png"):
        assert (stem.parent / (stem.name + suffix)).is_file(), suffix
    assert card["training"]["data"]["pictures"] >= 5
    model, loaded = checkpoint.load(card_path)
    assert model.config == TINY
    scales = checkpoint.scales(loaded)  # each level's natural scale, measured on the training crops
    assert len(scales) == TINY.levels + 1 and scales[0] == 1.0 and all(0 < v <= 1 for v in scales[1:])


def test_the_per_level_loss_falls_during_layerwise_training(picture_dir, tmp_path):
    cfg = TrainConfig(sources=[str(picture_dir)], layerwise_epochs=3, finetune_epochs=0, steps_per_epoch=10,
                      batch=4, crop=32, lr=3e-3, seed=2, progress=False)
    _, card = train(TINY, cfg, tmp_path / "lw")
    level0 = [h["train_loss"] for h in card["training"]["history"] if h["phase"] == "layer 0"]
    assert level0[-1] < level0[0]


def test_seed_makes_a_run_reproducible(picture_dir, tmp_path):
    a, _ = tiny_train(picture_dir, tmp_path / "a")
    b, _ = tiny_train(picture_dir, tmp_path / "b")
    wa, wb = load_file(a.with_suffix(".safetensors")), load_file(b.with_suffix(".safetensors"))
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def test_video_frames_are_sampled_across_the_file(tmp_path):
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (48, 32))
    assert writer.isOpened()
    for i in range(40):
        writer.write(np.full((32, 48, 3), i * 6, np.uint8))
    writer.release()
    frames = video_frames(path, count=5)
    assert len(frames) == 5
    means = [f.mean() for f in frames.values()]
    assert means == sorted(means) and means[-1] - means[0] > 150  # first to last, not the first five


def test_training_mixes_folders_and_videos(picture_dir, tmp_path):
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48))
    rng = np.random.default_rng(3)
    for _ in range(12):
        writer.write(smooth_picture(rng, 48, 64))
    writer.release()
    pictures = load_sources([str(picture_dir), str(path)], video_frame_count=4)
    assert len(pictures) == 6 + 4
    batch = CropSampler(pictures, 32).sample(8, torch.Generator().manual_seed(0))
    assert batch.shape == (8, 3, 32, 32) and batch.min() >= -1 and batch.max() <= 1


def test_a_missing_source_is_named():
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_sources(["/nowhere/at/all"])


def test_metrics_agree_with_scikit_image():
    metrics = pytest.importorskip("skimage.metrics")
    rng = np.random.default_rng(0)
    a = smooth_picture(rng, 48, 64)
    b = np.clip(a.astype(int) + rng.integers(-30, 30, a.shape), 0, 255).astype(np.uint8)
    ta, tb = (torch.from_numpy(v).permute(2, 0, 1)[None].float() / 127.5 - 1 for v in (a, b))
    ref_ssim = metrics.structural_similarity(a, b, channel_axis=2, gaussian_weights=True, sigma=1.5,
                                             use_sample_covariance=False, data_range=255)
    ref_psnr = metrics.peak_signal_noise_ratio(a, b, data_range=255)
    assert ssim(ta, tb).item() == pytest.approx(ref_ssim, abs=2e-3)
    assert psnr(ta, tb).item() == pytest.approx(ref_psnr, abs=1e-3)
    assert torch.allclose(ssim(ta, ta), torch.ones(1), atol=1e-5)
    assert bicubic_roundtrip(torch.rand(1, 3, 37, 51), 4).shape == (1, 3, 37, 51)


def test_eval_json_from_the_command_line(picture_dir, tmp_path, capsys, small_model):
    card = checkpoint.save(small_model, tmp_path / "m")
    assert main(["model", "eval", "--images", str(picture_dir), "--model", str(card), "--json", "--device", "cpu"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert [row["level"] for row in result["levels"]] == [1, 2, 3]
    for row in result["levels"]:
        assert {"psnr", "bicubic_psnr", "ssim", "bicubic_ssim"} <= set(row)
        assert 0 < row["bicubic_psnr"] < 60
    # Bicubic gets worse with every halving; the table must show that.
    bic = [row["bicubic_psnr"] for row in result["levels"]]
    assert bic[0] > bic[1] > bic[2]


def test_eval_agrees_with_a_direct_computation(picture_dir, small_model):
    pictures = load_sources([str(picture_dir)])
    result = evaluate(small_model, pictures)
    from ffvj.model.data import to_tensor
    x = to_tensor(next(iter(pictures.values())))[None]
    with torch.no_grad():
        one = psnr(small_model.reconstruct(x, 1), x).item()
    # The mean over pictures is near the first picture's value for these similar pictures.
    assert abs(result["levels"][0]["psnr"] - one) < 3


def test_eval_errors_are_one_line(tmp_path, capsys):
    assert main(["model", "eval", "--images", str(tmp_path / "none"), "--model", str(tmp_path / "x.json")]) == 2
    assert "x.json: model card not found" in capsys.readouterr().err


def test_model_show_writes_pictures(picture_dir, tmp_path, small_model):
    card = checkpoint.save(small_model, tmp_path / "m")
    assert main(["model", "show", "--model", str(card), "--images", str(picture_dir), "--out", str(tmp_path / "s")]) == 0
    for name in ("filters.png", "activations.png", "reconstructions.png"):
        img = cv2.imread(str(tmp_path / "s" / name))
        assert img is not None and img.shape[0] > 10


@pytest.mark.slow
def test_torchrun_trains_on_two_processes_like_one(picture_dir, tmp_path):
    """``ffvj train`` under torchrun, 2 CPU processes (gloo), on a tiny set: both ranks end with the same
    weights (DDP averaged every step's gradients), rank 0 alone writes the one checkpoint, and its
    validation is as good as the same run on one process (the same global batch)."""
    import os
    import re
    import shutil
    import subprocess
    import sys

    ffvj = shutil.which("ffvj")
    assert ffvj, "the ffvj command is installed with the package"
    args = ["train", "--data", str(picture_dir), "--channels", "3,6,8,10", "--layerwise-epochs", "1",
            "--finetune-epochs", "2", "--steps-per-epoch", "15", "--batch", "4", "--crop", "32", "--seed", "1",
            "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # two processes on two cores
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                           ffvj, "-v", *args, "--out", str(tmp_path / "ddp" / "tiny")],
                          capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    checksums = re.findall(r"rank (\d) of 2: trained, parameter checksum (\S+)", done.stderr)
    assert sorted(r for r, _ in checksums) == ["0", "1"] and len({c for _, c in checksums}) == 1, done.stderr[-2000:]
    written = sorted(p.name for p in (tmp_path / "ddp").iterdir())
    assert written == ["tiny-filters.png", "tiny-reconstructions.png", "tiny.json", "tiny.safetensors"]
    ddp = json.loads((tmp_path / "ddp" / "tiny.json").read_text())
    assert ddp["training"]["processes"] == 2
    assert main([*args, "--out", str(tmp_path / "one" / "tiny")]) == 0
    one = json.loads((tmp_path / "one" / "tiny.json").read_text())
    for depth in (1, 2, 3):
        key = f"psnr_l{depth}"
        assert ddp["metrics"]["validation"][key] >= one["metrics"]["validation"][key] - 1.5, key


def test_the_spectral_term_counts_how_much_detail_not_where_it_is(picture_dir, tmp_path):
    """Beside L2, a phase-free term: the same detail elsewhere costs nothing, detail blurred away does."""
    from ffvj.model.train import spectral_loss

    rng = np.random.default_rng(0)
    x = torch.from_numpy(smooth_picture(rng, 64, 64)).permute(2, 0, 1)[None].float() / 127.5 - 1
    blurred = torch.nn.functional.avg_pool2d(x, 3, 1, 1)
    assert spectral_loss(x, x) == 0
    assert spectral_loss(torch.roll(x, (5, 9), (-2, -1)), x) < 1e-5  # moved: the same amplitudes
    assert spectral_loss(blurred, x) > 10 * spectral_loss(torch.roll(x, (5, 9), (-2, -1)), x) + 1e-3
    card_path, card = tiny_train(picture_dir, tmp_path / "spectral" / "tiny", spectral=0.5)
    assert card["training"]["config"]["spectral"] == 0.5 and card["training"]["history"][-1]["train_loss"] > 0
