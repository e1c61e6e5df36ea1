import pytest
import torch

from genimg.evaluation.metrics import (
    PSNR_CAP_DB,
    frame_psnr,
    frame_ssim,
    frechet_and_kernel_distances,
    precision_recall_density_coverage,
)


def features(n, shift=0.0, seed=0):
    return torch.randn(n, 8, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) + shift


def test_frechet_and_kernel_distances_grow_with_the_shift_and_repeat_with_the_seed():
    real = features(300)
    same = frechet_and_kernel_distances(real, features(300, seed=1), seed=0)
    near = frechet_and_kernel_distances(real, features(300, 0.5, seed=1), seed=0)
    far = frechet_and_kernel_distances(real, features(300, 2.0, seed=1), seed=0)
    assert same["fid"] < near["fid"] < far["fid"]
    assert same["kid_mean"] < near["kid_mean"] < far["kid_mean"]
    # 8-d, unit shift per dimension: FID = |Δμ|² = 8 · 2² = 32 up to sampling noise
    assert far["fid"] == pytest.approx(32.0, rel=0.15)
    assert near["kid_std"] > 0  # the subsets differ
    assert frechet_and_kernel_distances(real, features(300, 0.5, seed=1), seed=0) == near
    assert frechet_and_kernel_distances(real, features(300, 0.5, seed=1), seed=1)["kid_mean"] != near["kid_mean"]


def test_knn_metrics_are_one_for_the_same_distribution_and_zero_for_a_distant_one():
    real = features(400)
    same = precision_recall_density_coverage(real, real.clone())
    assert same["precision"] == same["recall"] == same["coverage"] == 1.0
    distant = precision_recall_density_coverage(real, features(400, 50.0, seed=1))
    assert distant == {"precision": 0.0, "recall": 0.0, "density": 0.0, "coverage": 0.0}
    # Generated samples collapsed onto one real point: precise, but recall and coverage collapse.
    collapsed = precision_recall_density_coverage(real, real[:1].repeat(400, 1) + 1e-6 * features(400, seed=2))
    assert collapsed["precision"] == 1.0 and collapsed["recall"] < 0.05 and collapsed["coverage"] < 0.05


def test_knn_metrics_refuse_too_few_samples():
    with pytest.raises(ValueError, match="k=5"):
        precision_recall_density_coverage(features(5), features(50))


def test_ssim_and_psnr_per_frame():
    frames = torch.rand(3, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(frame_ssim(frames, frames), torch.ones(3, dtype=torch.float64))
    assert torch.equal(frame_psnr(frames, frames), torch.full((3,), PSNR_CAP_DB, dtype=torch.float64))
    noisy = (frames + 0.1 * torch.randn(3, 1, 16, 16, generator=torch.Generator().manual_seed(1))).clamp(0, 1)
    assert (frame_ssim(noisy, frames) < 0.99).all()
    assert frame_psnr(noisy, frames) == pytest.approx(torch.full((3,), 20.0, dtype=torch.float64), abs=1.5)  # σ = 0.1
