import pytest
import torch

from genimg.evaluation.metrics import (
    PSNR_CAP_DB,
    PrecomputedFeatures,
    fid_bootstrap_std,
    frame_mae,
    frame_mse,
    frame_psnr,
    frame_ssim,
    frechet_and_kernel_distances,
    frechet_distance,
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
    assert distant == {
        name: 0.0
        for name in (
            "precision",
            "recall",
            "density",
            "coverage",
            "precision_se",
            "recall_se",
            "density_se",
            "coverage_se",
        )
    }
    # Generated samples collapsed onto one real point: precise, but recall and coverage collapse.
    collapsed = precision_recall_density_coverage(real, real[:1].repeat(400, 1) + 1e-6 * features(400, seed=2))
    assert collapsed["precision"] == 1.0 and collapsed["recall"] < 0.05 and collapsed["coverage"] < 0.05


def test_our_frechet_distance_is_torchmetrics_in_either_form():
    from torchmetrics.image.fid import FrechetInceptionDistance

    for count, dim in ((300, 8), (40, 64)):  # more samples than dimensions, and fewer
        real = torch.randn(count, dim, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        fake = 1.5 * torch.randn(count, dim, generator=torch.Generator().manual_seed(1), dtype=torch.float64) + 0.3
        torchmetrics_fid = FrechetInceptionDistance(feature=PrecomputedFeatures(dim))
        torchmetrics_fid.update(real, real=True)
        torchmetrics_fid.update(fake, real=False)
        assert frechet_distance(real, fake) == pytest.approx(float(torchmetrics_fid.compute()), rel=1e-6)
        assert frechet_and_kernel_distances(real, fake, seed=0)["fid"] == frechet_distance(real, fake)


def test_the_fid_spread_shrinks_with_more_samples_and_repeats_with_the_seed():
    few = fid_bootstrap_std(features(50), features(50, 0.5, seed=1), seed=0)
    many = fid_bootstrap_std(features(2000), features(2000, 0.5, seed=1), seed=0)
    assert 0 < many < few / 3  # ∝ 1/√n: 40× the samples, about a sixth of the spread
    assert fid_bootstrap_std(features(50), features(50, 0.5, seed=1), seed=0) == few
    spreads = precision_recall_density_coverage(features(400), features(400, 0.5, seed=1))
    assert 0 < spreads["precision_se"] <= (0.25 / 400) ** 0.5  # a binomial standard error


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


def test_mse_and_mae_per_frame_are_sums_over_the_frames_pixels():
    truth = torch.zeros(2, 1, 4, 4)
    predicted = truth.clone()
    predicted[0, 0, 0, :2] = 0.5  # two pixels off by 0.5
    predicted[1] = 0.25  # every pixel off by 0.25
    assert frame_mse(predicted, truth).tolist() == [0.5, 1.0]  # 2·0.25; 16·0.0625
    assert frame_mae(predicted, truth).tolist() == [1.0, 4.0]  # 2·0.5; 16·0.25


def test_psnr_of_a_known_error_level():
    truth = torch.full((1, 1, 8, 8), 0.5)
    assert frame_psnr(truth + 0.1, truth).item() == pytest.approx(20.0)  # MSE 0.01 → 10·log10(1/0.01)
    assert frame_psnr(truth + 0.01, truth).item() == pytest.approx(40.0)


def reference_ssim(x, y, window=7):
    """scikit-image's default SSIM written out window by window (sample covariances, data range 1)."""
    c1, c2 = 0.01**2, 0.03**2
    values = []
    for i in range(x.shape[0] - window + 1):
        for j in range(x.shape[1] - window + 1):
            a, b = x[i : i + window, j : j + window].flatten(), y[i : i + window, j : j + window].flatten()
            mu_a, mu_b = a.mean(), b.mean()
            var_a, var_b = a.var(unbiased=True), b.var(unbiased=True)
            cov = ((a - mu_a) * (b - mu_b)).sum() / (a.numel() - 1)
            values.append((2 * mu_a * mu_b + c1) * (2 * cov + c2) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2)))
    return torch.stack(values).mean()


def test_ssim_follows_scikit_images_definition():
    generator = torch.Generator().manual_seed(3)
    x = torch.rand(10, 9, generator=generator, dtype=torch.float64)
    y = (x + 0.2 * torch.rand(10, 9, generator=generator, dtype=torch.float64)).clamp(0, 1)
    ours = frame_ssim(y[None, None], x[None, None]).item()
    assert ours == pytest.approx(reference_ssim(y, x).item(), abs=1e-12)
    # Two flat frames: no structure, only luminance: (2ab + C1) / (a² + b² + C1).
    flat = frame_ssim(torch.full((1, 1, 8, 8), 0.5), torch.full((1, 1, 8, 8), 0.25)).item()
    assert flat == pytest.approx((2 * 0.5 * 0.25 + 1e-4) / (0.25 + 0.0625 + 1e-4))
    # Colour frames: the mean over channels.
    rgb = torch.stack([x, y, x])[None]
    assert frame_ssim(rgb, torch.stack([x, x, x])[None]).item() == pytest.approx((2 + reference_ssim(y, x).item()) / 3)
