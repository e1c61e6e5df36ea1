"""The convlstm RVAE on a tiny Moving MNIST made from the builtin digits (written as an IDX file,
read through the moving-mnist: source) beats the copy-last-frame baseline on the frames it
predicts, by the video-prediction protocol. Slow: ≈ 30 s on 2 cores."""

import pytest
import torch

from genimg.data.handle import resolve_dataset
from genimg.evaluation.config import EvalConfig
from genimg.evaluation.evaluate import sequence_metrics
from genimg.models import build_model
from genimg.training.config import TrainConfig
from genimg.training.loop import train_model
from tests.conftest import write_idx


@pytest.mark.slow
def test_a_tiny_rvae_beats_copy_last_on_tiny_moving_mnist(tmp_path, digits):
    images = tmp_path / "digits-images-idx3-ubyte"
    write_idx(images, digits[:, 0], compress=False)
    # 16 px digits in a 32 px canvas move 1.6 px a frame: 4 frames given, 4 predicted.
    source = resolve_dataset(f"moving-mnist:{images}?frames=8&size=32&count=800&seed=0")
    train, test = source.load("train").data, source.load("test").data
    assert train.shape[1:] == (8, 1, 32, 32) and len(test) >= 40
    torch.manual_seed(0)
    model = build_model(
        "rvae",
        {
            "image_shape": (1, 32, 32),
            "num_frames": 8,
            "core": "convlstm",
            "context_frames": 4,
            "latent_dim": 2,
            "frame_dim": 16,
            "hidden_dim": 16,
            "width": 8,
            "likelihood": "bernoulli",
            "binarize": False,
        },
    )
    train_model(model, torch.from_numpy(train), TrainConfig(steps=300, batch_size=16, lr=2e-3, log_every=300))
    with torch.no_grad():
        metrics, _ = sequence_metrics(
            model.eval(), torch.from_numpy(test), EvalConfig(best_of=2, context_frames=4, batch_size=64)
        )
    assert metrics["mse"] < 0.8 * metrics["mse_copy_last_baseline"], metrics
    assert metrics["ssim"] > metrics["ssim_copy_last_baseline"], metrics
    assert metrics["mse_best_of_k"] <= metrics["mse"]
