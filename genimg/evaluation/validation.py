"""Quick validation numbers taken during training (at each checkpoint, on one process): what
Tune's early stopping compares and what the run's validation curves show.

`val_nll_bound`: the negative ELBO on the validation records (VAE: nats per image, RVAE: per
frame; β-free, so trials with different β compare fairly), with a fixed seed so two checkpoints
are scored alike. `val_fid`: FID between
generated samples and the validation records in the dataset's feature space (image models, when
a feature network is given: Tune's metric for GANs, whose losses say little about quality).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

import torch
from safetensors.torch import load, save
from torch import Tensor, nn

from genimg.evaluation.features import FeatureExtractor, FeatureNet
from genimg.evaluation.metrics import frechet_and_kernel_distances
from genimg.models.base import GenerativeModel, evaluating, model_spec
from genimg.models.rvae import RVAE
from genimg.models.vae import VAE

MAX_RECORDS = 512
# The loss part that bounds −log p(x) whatever β is (so trials with different β compare fairly):
# nats per image for the VAE, per frame for the RVAE.
BOUND_PART = {"vae": "neg_elbo", "rvae": "nll_bound_per_frame"}
FID_SAMPLES = 256


def feature_network_payload(extractor: FeatureExtractor) -> dict[str, Any]:
    """A dataset feature network as plain values (safetensors bytes), to send to workers."""
    network = extractor.network
    if not isinstance(network, FeatureNet):
        raise ValueError(f"only the dataset's own feature networks travel to workers, not {extractor.name}")
    weights = save({key: value.contiguous() for key, value in network.state_dict().items()})
    channels = int(cast(nn.Conv2d, network.trunk[0]).in_channels)  # the stem
    return {"channels": channels, "weights": weights, "sha256": extractor.weights_sha256}


def feature_network_from_payload(payload: dict[str, Any]) -> nn.Module:
    network = FeatureNet(payload["channels"])
    network.load_state_dict(load(payload["weights"]))
    return network.eval()


@dataclass
class Validator:
    records: Tensor  # uint8 validation records, at most MAX_RECORDS
    feature_network: nn.Module | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        self.real_features: Tensor | None = None
        if self.feature_network is not None and self.records.dim() == 4:
            with torch.no_grad():
                self.real_features = self.feature_network(self.records.float() / 255.0).double()

    def __call__(self, model: GenerativeModel) -> dict[str, float]:
        metrics: dict[str, float] = {}
        device = next(model.parameters()).device
        with torch.no_grad(), torch.random.fork_rng(devices=[]), evaluating(model):
            torch.manual_seed(self.seed)
            part = BOUND_PART.get(model_spec(model.registry_name).family)
            if part is not None:
                assert isinstance(model, (VAE, RVAE))  # the likelihood families
                total = 0.0
                for start in range(0, len(self.records), 128):
                    batch = self.records[start : start + 128].float().div(255.0).to(device)
                    total += float(model.loss(batch).parts[part]) * len(batch)
                metrics["val_nll_bound"] = total / len(self.records)
            if self.real_features is not None and self.feature_network is not None:
                samples = model.sample(FID_SAMPLES, seed=self.seed).float().cpu()
                fake = self.feature_network(samples).double()
                metrics["val_fid"] = frechet_and_kernel_distances(self.real_features, fake, self.seed)["fid"]
        return metrics


def make_validator(records: Any, feature_payload: dict[str, Any] | None, seed: int = 0) -> Validator | None:
    """A validator for up to MAX_RECORDS of `records` (uint8 array), or None if too few."""
    if records is None or len(records) < 2:
        return None
    tensor = torch.from_numpy(records[:MAX_RECORDS]) if not isinstance(records, Tensor) else records[:MAX_RECORDS]
    network = feature_network_from_payload(feature_payload) if feature_payload else None
    return Validator(tensor, network, seed)


__all__ = ["Validator", "feature_network_payload", "make_validator"]
