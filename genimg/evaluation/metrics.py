"""Sample-quality metrics on feature vectors and frames.

The kernel distance (KID) is torchmetrics' implementation; the Fréchet distance (FID) is ours,
equal to torchmetrics' to 1e-6 (tests/evaluation/test_metrics.py) but through an SVD of the
smaller side instead of a 2,048² eigendecomposition: milliseconds instead of ~100 s on 2 CPU
cores, which its bootstrap spread repeats ten times. Both are fed features computed once (so
FID, KID and the k-NN metrics share one pass through the extractor).
Precision / recall / density / coverage are the k-NN manifold estimates of Naeem et al. (2020).
PSNR is torchmetrics' functional form; SSIM, MSE and MAE per frame follow the video-prediction
benchmarks' protocol (see `frame_ssim`).
"""

from __future__ import annotations

import warnings
from typing import cast

import torch
from torch import Tensor, nn

KID_SUBSETS = 100
KID_SUBSET_SIZE = 1000
FID_BOOTSTRAPS = 10  # resamples of both feature sets behind fid_std
NEAREST_K = 5
PSNR_CAP_DB = 100.0
SSIM_WINDOW = 7  # identical frames have infinite PSNR; a cap keeps means finite


class PrecomputedFeatures(nn.Module):
    """Hands features through unchanged, for torchmetrics' custom-extractor path."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.num_features = dim

    def forward(self, features: Tensor) -> Tensor:
        return features


def frechet_and_kernel_distances(real: Tensor, fake: Tensor, seed: int) -> dict[str, float]:
    """FID with its bootstrap spread, and KID (mean and std over random subsets, seeded),
    between two feature sets."""
    from torchmetrics.image.kid import KernelInceptionDistance

    if len(real) < 2 or len(fake) < 2:
        raise ValueError(f"FID needs ≥ 2 real and fake samples, got {len(real)} and {len(fake)}")
    identity = PrecomputedFeatures(real.shape[1])
    # Half the smaller set, so the subsets differ and the std says something.
    subset = min(KID_SUBSET_SIZE, max(2, min(len(real), len(fake)) // 2))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*will save all extracted features")
        kid = KernelInceptionDistance(feature=identity, subsets=KID_SUBSETS, subset_size=subset)
    kid.update(real, real=True)
    kid.update(fake, real=False)
    with torch.random.fork_rng():
        torch.manual_seed(seed)  # KID draws its subsets with torch's global generator
        kid_mean, kid_std = kid.compute()
    return {
        "fid": frechet_distance(real, fake),
        "fid_std": fid_bootstrap_std(real, fake, seed),
        "kid_mean": float(kid_mean),
        "kid_std": float(kid_std),
    }


def frechet_distance(real: Tensor, fake: Tensor) -> float:
    """‖μ_r − μ_f‖² + Tr(Σ_r + Σ_f − 2 (Σ_r Σ_f)^½). With Σ = L Lᵀ for any factor L,
    Tr (Σ_r Σ_f)^½ is the nuclear norm of L_rᵀ L_f: the centred samples themselves when there are
    fewer of them than dimensions (an n×m SVD), else the covariances' symmetric square roots."""
    real, fake = real.double(), fake.double()
    mean_gap = (real.mean(0) - fake.mean(0)).pow(2).sum()
    centred_real, centred_fake = real - real.mean(0), fake - fake.mean(0)
    traces = centred_real.pow(2).sum() / (len(real) - 1) + centred_fake.pow(2).sum() / (len(fake) - 1)
    if max(len(real), len(fake)) <= real.shape[1]:
        cross = centred_real @ centred_fake.T / ((len(real) - 1) * (len(fake) - 1)) ** 0.5
    else:
        cross = symmetric_root(torch.cov(real.T)) @ symmetric_root(torch.cov(fake.T))
    return float(mean_gap + traces - 2 * torch.linalg.svdvals(cross).sum())


def symmetric_root(covariance: Tensor) -> Tensor:
    values, vectors = torch.linalg.eigh(covariance)  # typed as Any by torch
    return cast(Tensor, (vectors * values.clamp(min=0).sqrt()) @ vectors.T)


def fid_bootstrap_std(real: Tensor, fake: Tensor, seed: int, resamples: int = FID_BOOTSTRAPS) -> float:
    """The spread of FID over `resamples` bootstrap resamples of both feature sets (seeded): how
    much the number would move with other draws of the same size from the same two sources."""
    generator = torch.Generator().manual_seed(seed)
    values = []
    for _ in range(resamples):
        real_draw = real[torch.randint(0, len(real), (len(real),), generator=generator)]
        fake_draw = fake[torch.randint(0, len(fake), (len(fake),), generator=generator)]
        values.append(frechet_distance(real_draw, fake_draw))
    return float(torch.tensor(values).std())


def kth_neighbour_radii(features: Tensor, k: int, chunk: int = 2048) -> Tensor:
    """Distance from each point to its k-th nearest other point of the same set."""
    radii = []
    for start in range(0, len(features), chunk):
        distances = torch.cdist(features[start : start + chunk], features)
        radii.append(distances.kthvalue(k + 1, dim=1).values)  # +1: the point itself is at 0
    return torch.cat(radii)


def precision_recall_density_coverage(real: Tensor, fake: Tensor, k: int = NEAREST_K) -> dict[str, float]:
    if len(real) <= k or len(fake) <= k:
        raise ValueError(f"k-NN metrics need more than k={k} real and fake samples")
    real_radii = kth_neighbour_radii(real, k)
    fake_radii = kth_neighbour_radii(fake, k)
    inside_real = torch.zeros(len(fake))  # per fake: how many real balls hold it
    real_ball_hit = torch.zeros(len(real), dtype=torch.bool)  # per real: some fake in its ball
    nearest_fake = torch.full((len(real),), float("inf"), dtype=real.dtype)
    recalled = torch.zeros(len(real), dtype=torch.bool)
    for start in range(0, len(fake), 2048):
        distances = torch.cdist(fake[start : start + 2048], real)  # (fake chunk, real)
        within = distances <= real_radii.unsqueeze(0)
        inside_real[start : start + 2048] = within.sum(1).float()
        real_ball_hit |= within.any(0)
        nearest_fake = torch.minimum(nearest_fake, distances.min(0).values)
        recalled |= (distances <= fake_radii[start : start + 2048].unsqueeze(1)).any(0)
    # The spreads are standard errors of each mean over its points (given the k-NN radii).
    per_point = {
        "precision": (inside_real > 0).double(),
        "recall": recalled.double(),
        "density": inside_real.double() / k,
        "coverage": (nearest_fake <= real_radii).double(),
    }
    metrics = {}
    for name, values in per_point.items():
        metrics[name] = float(values.mean())
        metrics[f"{name}_se"] = standard_error(values)
    return metrics


def standard_error(values: Tensor) -> float:
    """The standard error of the mean of `values` (0 for a single value)."""
    if len(values) < 2:
        return 0.0
    return float(values.double().std() / len(values) ** 0.5)


def frame_ssim(predicted: Tensor, target: Tensor) -> Tensor:
    """Per-image SSIM of (N, C, H, W) images in [0, 1]: shape (N,).

    As scikit-image's `structural_similarity` computes it with its defaults — the function the
    video-prediction benchmarks (OpenSTL) score with: a 7×7 uniform window, sample covariances,
    K1 = 0.01, K2 = 0.03, averaged over the window positions that lie inside the image and over
    the channels — so the figures can be set beside theirs.
    """
    window = min(SSIM_WINDOW, *predicted.shape[-2:])
    window -= 1 - window % 2  # odd, as scikit-image requires
    x = predicted.double().flatten(0, 1).unsqueeze(1)
    y = target.double().flatten(0, 1).unsqueeze(1)

    def mean(values: Tensor) -> Tensor:  # the window's mean at every position fully inside
        return nn.functional.avg_pool2d(values, window, stride=1)

    covariance_scale = window**2 / (window**2 - 1)  # sample, not population, covariances
    mu_x, mu_y = mean(x), mean(y)
    var_x = covariance_scale * (mean(x * x) - mu_x**2)
    var_y = covariance_scale * (mean(y * y) - mu_y**2)
    cov_xy = covariance_scale * (mean(x * y) - mu_x * mu_y)
    c1, c2 = (0.01 * 1.0) ** 2, (0.03 * 1.0) ** 2  # data range 1
    ssim: Tensor = ((2 * mu_x * mu_y + c1) * (2 * cov_xy + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return ssim.flatten(1).mean(1).view(predicted.shape[0], predicted.shape[1]).mean(1)


def frame_mse(predicted: Tensor, target: Tensor) -> Tensor:
    """Per-image squared error of (N, C, H, W) images in [0, 1], summed over the pixels (the
    video-prediction benchmarks' "MSE per frame"): shape (N,)."""
    return (predicted.double() - target.double()).pow(2).flatten(1).sum(1)


def frame_mae(predicted: Tensor, target: Tensor) -> Tensor:
    """Per-image absolute error of (N, C, H, W) images in [0, 1], summed over the pixels: shape (N,)."""
    return (predicted.double() - target.double()).abs().flatten(1).sum(1)


def frame_psnr(predicted: Tensor, target: Tensor) -> Tensor:
    """Per-image PSNR in dB of (N, C, H, W) images in [0, 1]: shape (N,), capped."""
    from torchmetrics.functional.image import peak_signal_noise_ratio

    psnr = peak_signal_noise_ratio(predicted.double(), target.double(), data_range=1.0, reduction="none", dim=(1, 2, 3))
    return psnr.clamp(max=PSNR_CAP_DB)
