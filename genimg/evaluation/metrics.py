"""Sample-quality metrics on feature vectors and frames.

Fréchet (FID) and kernel (KID) distances are torchmetrics' implementations, fed features that
were computed once (so FID, KID and the k-NN metrics share one pass through the extractor).
Precision / recall / density / coverage are the k-NN manifold estimates of Naeem et al. (2020).
SSIM and PSNR are torchmetrics' functional forms.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor, nn

KID_SUBSETS = 100
KID_SUBSET_SIZE = 1000
NEAREST_K = 5
PSNR_CAP_DB = 100.0  # identical frames have infinite PSNR; a cap keeps means finite


class PrecomputedFeatures(nn.Module):
    """Hands features through unchanged, for torchmetrics' custom-extractor path."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.num_features = dim

    def forward(self, features: Tensor) -> Tensor:
        return features


def frechet_and_kernel_distances(real: Tensor, fake: Tensor, seed: int) -> dict[str, float]:
    """FID and KID (mean and std over random subsets, seeded) between two feature sets."""
    from torchmetrics.image.fid import FrechetInceptionDistance
    from torchmetrics.image.kid import KernelInceptionDistance

    if len(real) < 2 or len(fake) < 2:
        raise ValueError(f"FID needs ≥ 2 real and fake samples, got {len(real)} and {len(fake)}")
    identity = PrecomputedFeatures(real.shape[1])
    fid = FrechetInceptionDistance(feature=identity)
    fid.update(real, real=True)
    fid.update(fake, real=False)
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
    return {"fid": float(fid.compute()), "kid_mean": float(kid_mean), "kid_std": float(kid_std)}


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
    return {
        "precision": float((inside_real > 0).float().mean()),
        "recall": float(recalled.float().mean()),
        "density": float(inside_real.sum() / (k * len(fake))),
        "coverage": float((nearest_fake <= real_radii).float().mean()),
    }


def frame_ssim(predicted: Tensor, target: Tensor) -> Tensor:
    """Per-image SSIM of (N, C, H, W) images in [0, 1]: shape (N,)."""
    from torchmetrics.functional.image import structural_similarity_index_measure

    # The Gaussian window shrinks for frames smaller than the standard 11 px.
    size = min(11, min(predicted.shape[-2:]) // 2 * 2 - 1)
    return structural_similarity_index_measure(
        predicted.double(), target.double(), data_range=1.0, reduction="none", kernel_size=max(3, size)
    )


def frame_psnr(predicted: Tensor, target: Tensor) -> Tensor:
    """Per-image PSNR in dB of (N, C, H, W) images in [0, 1]: shape (N,), capped."""
    from torchmetrics.functional.image import peak_signal_noise_ratio

    psnr = peak_signal_noise_ratio(
        predicted.double(), target.double(), data_range=1.0, reduction="none", dim=(1, 2, 3)
    )
    return psnr.clamp(max=PSNR_CAP_DB)
