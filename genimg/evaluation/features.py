"""Feature spaces for Fréchet / kernel distances and k-NN precision-recall.

`inception`: the FID InceptionV3, only when its weights file is on disk (never downloaded).
Otherwise the dataset's own network, trained once per dataset version and recipe and cached in
the store: a small CNN classifier on the labelled train split, or an autoencoder's encoder when
the data has no labels. Distances are comparable only within one extractor (name + weights hash),
which is why every result names it.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from safetensors.torch import load, save
from torch import Tensor, nn

from genimg.data.dataset import UNLABELLED, Dataset
from genimg.data.sources import SplitSource
from genimg.errors import GenimgError
from genimg.evaluation.config import EvalConfig
from genimg.feedback import phase, progress
from genimg.store import ObjectStore, sha256_file, sha256_hex

RECIPE_FORMAT = "genimg.features/1"
FEATURE_DIM = 128
LABELLED_FRACTION = 0.9  # below this share of labelled train records, train an autoencoder


class FeatureNet(nn.Module):
    """Three stride-2 convolutions and a linear map to FEATURE_DIM features, for any C×H×W."""

    def __init__(self, channels: int, feature_dim: int = FEATURE_DIM) -> None:
        super().__init__()
        self.num_features = feature_dim
        self.trunk = nn.Sequential(
            nn.Conv2d(channels, 32, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(64, 128, 3, stride=2, padding=1), nn.ReLU(),
            nn.AdaptiveAvgPool2d(2), nn.Flatten(),
        )
        self.project = nn.Linear(128 * 4, feature_dim)
        # Set from the train split once trained, so distances have a scale that does not depend
        # on how large the trained weights happen to be (FID ~ units, not thousands).
        self.register_buffer("center", torch.zeros(feature_dim))
        self.register_buffer("scale", torch.ones(()))

    def forward(self, images: Tensor) -> Tensor:
        return (self.project(self.trunk(images)) - self.center) / self.scale

    @torch.no_grad()
    def standardize(self, images: Tensor) -> None:
        """Center on the mean feature of `images` (uint8) and divide by their RMS spread."""
        self.eval()
        self.center.zero_()
        self.scale.fill_(1.0)
        features = torch.cat([self(images[i : i + 500].float() / 255.0) for i in range(0, len(images), 500)])
        self.center.copy_(features.mean(0))
        self.scale.fill_(float((features - self.center).pow(2).sum(1).mean().sqrt()))


class Classifier(nn.Module):
    def __init__(self, channels: int, num_classes: int) -> None:
        super().__init__()
        self.features = FeatureNet(channels)
        self.head = nn.Sequential(nn.ReLU(), nn.Linear(FEATURE_DIM, num_classes))

    def forward(self, images: Tensor) -> Tensor:
        return self.head(self.features(images))


class Autoencoder(nn.Module):
    def __init__(self, image_shape: tuple[int, int, int]) -> None:
        super().__init__()
        channels, height, width = image_shape
        self.image_shape = image_shape
        self.features = FeatureNet(channels)
        self.grid = (max(1, math.ceil(height / 8)), max(1, math.ceil(width / 8)))
        self.expand = nn.Linear(FEATURE_DIM, 64 * self.grid[0] * self.grid[1])
        self.decode = nn.Sequential(
            nn.ReLU(), nn.ConvTranspose2d(64, 64, 4, stride=2, padding=1),
            nn.ReLU(), nn.ConvTranspose2d(64, 32, 4, stride=2, padding=1),
            nn.ReLU(), nn.ConvTranspose2d(32, channels, 4, stride=2, padding=1),
        )

    def forward(self, images: Tensor) -> Tensor:
        """Reconstruction logits of `images`."""
        hidden = self.expand(self.features(images)).view(-1, 64, *self.grid)
        logits = self.decode(hidden)
        return logits[..., : self.image_shape[1], : self.image_shape[2]]


@dataclass
class FeatureExtractor:
    name: str  # inception | classifier | autoencoder
    network: nn.Module  # float images in [0, 1] → (N, D) features
    weights_sha256: str
    details: dict[str, Any] = field(default_factory=dict)  # accuracy, recipe, cache URI, notes

    @property
    def dim(self) -> int:
        return int(getattr(self.network, "num_features"))

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "weights_sha256": self.weights_sha256, "dim": self.dim, **self.details}

    @torch.no_grad()
    def __call__(self, images: Tensor, batch_size: int = 250) -> Tensor:
        """(N, C, H, W) images, uint8 or float in [0, 1] → (N, D) float64 features."""
        self.network.eval()
        chunks = []
        for start in range(0, len(images), batch_size):
            batch = images[start : start + batch_size]
            batch = batch.float() / 255.0 if batch.dtype == torch.uint8 else batch.float()
            chunks.append(self.network(batch).double())
        return torch.cat(chunks) if chunks else torch.zeros(0, self.dim, dtype=torch.float64)


def as_frames(dataset: Dataset) -> tuple[Tensor, np.ndarray | None]:
    """Images (N, C, H, W) uint8 — sequences contribute every frame — and per-image labels."""
    data = torch.from_numpy(dataset.data)
    if dataset.kind == "sequences":
        return data.flatten(0, 1), None
    return data, dataset.labels


def recipe_for(kind: str, image_shape: tuple[int, int, int], config: EvalConfig, num_classes: int) -> dict[str, Any]:
    return {
        "format": RECIPE_FORMAT, "kind": kind, "image_shape": list(image_shape), "classes": num_classes,
        "feature_dim": FEATURE_DIM, "steps": config.extractor_steps, "batch_size": 64, "lr": 2e-3,
        "seed": 0,
    }


def recipe_hash(recipe: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:12]


def train_feature_network(
    kind: str, images: Tensor, labels: Tensor | None, recipe: dict[str, Any]
) -> nn.Module:
    """Plain Adam on mini-batches drawn with the recipe's seed (deterministic on CPU)."""
    image_shape = tuple(recipe["image_shape"])
    torch.manual_seed(recipe["seed"])
    network: nn.Module = (
        Classifier(image_shape[0], recipe["classes"]) if kind == "classifier" else Autoencoder(image_shape)  # type: ignore[arg-type]
    )
    optimizer = torch.optim.Adam(network.parameters(), lr=recipe["lr"])
    generator = torch.Generator().manual_seed(recipe["seed"])
    network.train()
    with progress(f"training the {kind} feature network", recipe["steps"], "steps") as update:
        for step in range(recipe["steps"]):
            index = torch.randint(0, len(images), (recipe["batch_size"],), generator=generator)
            batch = images[index].float() / 255.0
            if kind == "classifier":
                assert labels is not None
                loss = nn.functional.cross_entropy(network(batch), labels[index])
            else:
                loss = nn.functional.binary_cross_entropy_with_logits(network(batch), batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            update(step + 1)
    return network.eval()


@torch.no_grad()
def held_out_score(kind: str, network: nn.Module, images: Tensor, labels: Tensor | None) -> dict[str, float]:
    if len(images) == 0:
        return {}
    batches = [images[i : i + 500].float() / 255.0 for i in range(0, len(images), 500)]
    if kind == "classifier":
        assert labels is not None
        predicted = torch.cat([network(batch).argmax(1) for batch in batches])
        return {"accuracy": round(float((predicted == labels).float().mean()), 4)}
    error = torch.cat([
        (torch.sigmoid(network(batch)) - batch).pow(2).flatten(1).mean(1) for batch in batches
    ])
    return {"reconstruction_mse": round(float(error.mean()), 6)}


def labelled_images(dataset: Dataset) -> tuple[Tensor, Tensor | None, int]:
    """(images, labels or None, classes): labels only when nearly all records carry one."""
    images, labels = as_frames(dataset)
    if labels is None:
        return images, None, 0
    known = labels != UNLABELLED
    classes = np.unique(labels[known])
    if known.mean() < LABELLED_FRACTION or len(classes) < 2:
        return images, None, 0
    # Labels become 0..K-1 in sorted order, so a dataset with labels {3, 7} trains 2 outputs.
    mapped = np.searchsorted(classes, labels[known])
    return images[torch.from_numpy(known)], torch.from_numpy(mapped.astype(np.int64)), len(classes)


def dataset_extractor(source: SplitSource, config: EvalConfig, store: ObjectStore) -> FeatureExtractor:
    """The dataset version's own feature network: loaded from the store cache, else trained
    on its train split, scored on its val split and published to the cache."""
    shape = source.record_shape[-3:]
    image_shape = (int(shape[0]), int(shape[1]), int(shape[2]))
    train = source.load("train")
    images, labels, classes = labelled_images(train)
    kind = "classifier" if labels is not None else "autoencoder"
    recipe = recipe_for(kind, image_shape, config, classes)
    prefix = f"extractors/{source.version}/{kind}-{recipe_hash(recipe)}/"
    if store.exists(prefix + "extractor.json"):
        info = json.loads(store.get_bytes(prefix + "extractor.json"))
        weights = store.get_bytes(prefix + "model.safetensors", sha256=info["weights_sha256"])
        network = build_network(kind, recipe)
        network.load_state_dict(load(weights))
        return FeatureExtractor(kind, features_of(network), info["weights_sha256"],
                                {**info["held_out"], "uri": store.uri_for(prefix.rstrip("/")), "reused": True})
    if len(images) < 2:
        raise GenimgError(f"{source.ref}: its train split holds {len(images)} record(s), too few to train a feature network")
    started = time.perf_counter()
    with phase(f"training {source.ref}'s own {kind} feature network for FID/KID ({recipe['steps']} steps, "
               "once per dataset version: cached in the store)"):
        network = train_feature_network(kind, images, labels, recipe)
        network.features.standardize(images)  # type: ignore[operator]
    seconds = time.perf_counter() - started
    val = source.load("val")
    val_images, val_labels = as_frames(val)[0], None
    if kind == "classifier" and val.labels is not None:
        # Score with the train split's label set (the val split may lack a class).
        train_classes = np.unique(train.labels[train.labels != UNLABELLED])  # type: ignore[index]
        keep = np.isin(val.labels, train_classes)
        val_images = torch.from_numpy(val.data[keep])
        val_labels = torch.from_numpy(np.searchsorted(train_classes, val.labels[keep]).astype(np.int64))
    held_out = held_out_score(kind, network, val_images, val_labels)
    payload = save({key: value.contiguous() for key, value in network.state_dict().items()})
    digest = sha256_hex(payload)
    store.put_bytes(prefix + "model.safetensors", payload)
    info = {"name": kind, "recipe": recipe, "dataset": source.ref, "weights_sha256": digest,
            "held_out": held_out, "train_records": len(images), "seconds": round(seconds, 1)}
    store.publish(prefix + "extractor.json", json.dumps(info, indent=1).encode())
    # A concurrent evaluation may have published first: use what the cache holds, so every
    # evaluation of this version names the same weights.
    if json.loads(store.get_bytes(prefix + "extractor.json"))["weights_sha256"] != digest:
        return dataset_extractor(source, config, store)
    return FeatureExtractor(kind, features_of(network), digest,
                            {**held_out, "uri": store.uri_for(prefix.rstrip("/")), "reused": False})


def build_network(kind: str, recipe: dict[str, Any]) -> nn.Module:
    image_shape = tuple(recipe["image_shape"])
    if kind == "classifier":
        return Classifier(image_shape[0], recipe["classes"])
    return Autoencoder(image_shape)  # type: ignore[arg-type]


def features_of(network: nn.Module) -> nn.Module:
    return network.features.eval()  # type: ignore[no-any-return,union-attr]


def inception_extractor() -> FeatureExtractor | None:
    from genimg.evaluation.inception import inception_weights_path, load_fid_inception

    path = inception_weights_path()
    if path is None:
        return None
    return FeatureExtractor("inception", load_fid_inception(path), sha256_file(path), {"weights": str(path)})


def choose_extractor(source: SplitSource, config: EvalConfig, store: ObjectStore) -> FeatureExtractor:
    if config.features in ("auto", "inception"):
        extractor = inception_extractor()
        if extractor is not None:
            return extractor
        if config.features == "inception":
            from genimg.evaluation.inception import WEIGHTS_FILE_NAME

            raise GenimgError(
                f"features=inception: no weights file; put {WEIGHTS_FILE_NAME} in $GENIMG_HOME/weights "
                "or set GENIMG_INCEPTION_WEIGHTS (genimg never downloads it)"
            )
    extractor = dataset_extractor(source, config, store)
    if config.features == "auto":
        from genimg.evaluation.inception import WEIGHTS_FILE_NAME

        extractor.details["note"] = (
            f"inception weights not found ({WEIGHTS_FILE_NAME} in $GENIMG_HOME/weights or "
            f"GENIMG_INCEPTION_WEIGHTS): using the dataset's own {extractor.name}"
        )
    return extractor


__all__ = ["FeatureExtractor", "choose_extractor", "dataset_extractor"]
