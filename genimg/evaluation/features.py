"""Feature spaces for Fréchet / kernel distances and k-NN precision-recall.

`inception`: the FID InceptionV3 with the standard weights, fetched once (checksum-verified) into
$GENIMG_HOME/weights: the field's FID. Where they cannot be had (offline), the dataset's own
network, trained once per dataset *content* (the train and val records, whatever version or
source they were read as) and recipe and cached in the store: a small residual CNN classifier on
the labelled train split, or an autoencoder around the same encoder when the data has no labels.
Its budget follows the data (about EXTRACTOR_EPOCHS passes over the train split, within
[MIN_EXTRACTOR_STEPS, the cap for grey or colour]) and it stops early once its val score stops
improving. Distances are comparable only within one extractor
(name + weights hash), which is why every result names it. The classifier's head also labels
generated images, which is how a conditional model's class consistency is measured.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
import torch
from safetensors.torch import load, save
from torch import Tensor, nn

from genimg.data.dataset import UNLABELLED, Dataset
from genimg.data.handle import DatasetHandle
from genimg.errors import GenimgError
from genimg.evaluation.config import EXTRACTOR_EPOCHS, EvalConfig, extractor_budget
from genimg.evaluation.inception import find_inception_weights, load_fid_inception
from genimg.feedback import phase, progress, say
from genimg.store import ObjectStore, sha256_file, sha256_hex

# /3: keyed by content, budget from the data, early stop (caches of /2 are not reused).
RECIPE_FORMAT = "genimg.features/3"
FEATURE_DIM = 128
WIDTHS = (32, 64, 128)  # channels of the three residual stages
STANDARDIZE_RECORDS = 10_000
EARLY_STOP_CHECKS = 10  # val checks over a budget; training stops after PATIENCE without gain
EARLY_STOP_PATIENCE = 3
EARLY_STOP_RECORDS = 1000  # val records a check scores at most (a seeded subset)
LABELLED_FRACTION = 0.9  # below this share of labelled train records, train an autoencoder


class ResidualBlock(nn.Module):
    """Two 3×3 convolutions with BatchNorm around a shortcut (a strided 1×1 convolution where
    the shape changes), ReLU after the sum."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.norm1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.norm2 = nn.BatchNorm2d(out_channels)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False), nn.BatchNorm2d(out_channels)
            )

    def forward(self, x: Tensor) -> Tensor:
        hidden = torch.relu(self.norm1(self.conv1(x)))
        return torch.relu(self.norm2(self.conv2(hidden)) + self.shortcut(x))


class FeatureNet(nn.Module):
    """A small residual CNN for any C×H×W → FEATURE_DIM features: a 3×3 stem and a 2×2 max-pool,
    then one residual block per stage (WIDTHS channels, stride 2 from the second stage),
    global average pooling and a linear feature layer.

    The max-pool right after the stem is what keeps it cheap on CPUs: the blocks run at half
    the resolution (16, 8, 4 px for 32 px images), about a third of the cost of full-resolution
    stages, which buys more passes over the data in the same CPU time. The classifier and the
    autoencoder share this one architecture, so `FeatureNet(channels)` rebuilds either's
    features from their weights (how validation ships them to training workers)."""

    center: Tensor  # buffers
    scale: Tensor

    def __init__(self, channels: int, feature_dim: int = FEATURE_DIM) -> None:
        super().__init__()
        self.num_features = feature_dim
        first, second, third = WIDTHS
        self.trunk = nn.Sequential(
            nn.Conv2d(channels, first, 3, padding=1, bias=False),
            nn.BatchNorm2d(first),
            nn.ReLU(),
            nn.MaxPool2d(2, ceil_mode=True),  # ceil: images down to 1×1 pass
            ResidualBlock(first, first, 1),
            ResidualBlock(first, second, 2),
            ResidualBlock(second, third, 2),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.project = nn.Linear(third, feature_dim)
        # Set from the train split once trained, so distances have a scale that does not depend
        # on how large the trained weights happen to be (FID ~ units, not thousands).
        self.register_buffer("center", torch.zeros(feature_dim))
        self.register_buffer("scale", torch.ones(()))

    def embed(self, images: Tensor) -> Tensor:
        """The feature layer as trained: what the classifier head and the decoder read."""
        return cast(Tensor, self.project(self.trunk(images)))

    def forward(self, images: Tensor) -> Tensor:
        return (self.embed(images) - self.center) / self.scale

    @torch.no_grad()
    def standardize(self, images: Tensor) -> None:
        """Center on the mean feature of `images` (uint8) and divide by their RMS spread, both
        taken from a seeded subset of STANDARDIZE_RECORDS at most (plenty for 128 means and one
        spread; the whole of a 40k-image train split costs half a minute of CPU)."""
        self.eval()
        if len(images) > STANDARDIZE_RECORDS:
            chosen = torch.randperm(len(images), generator=torch.Generator().manual_seed(0))[:STANDARDIZE_RECORDS]
            images = images[chosen.sort().values]
        features = torch.cat([self.embed(images[i : i + 500].float() / 255.0) for i in range(0, len(images), 500)])
        self.center.copy_(features.mean(0))
        self.scale.fill_(float((features - self.center).pow(2).sum(1).mean().sqrt()))


class Classifier(nn.Module):
    def __init__(self, channels: int, num_classes: int) -> None:
        super().__init__()
        self.features = FeatureNet(channels)
        self.head = nn.Sequential(nn.ReLU(), nn.Linear(FEATURE_DIM, num_classes))

    def forward(self, images: Tensor) -> Tensor:
        """Class logits. The head reads the unstandardized feature layer, so standardizing the
        features after training leaves the predictions as they were."""
        return cast(Tensor, self.head(self.features.embed(images)))


class Autoencoder(nn.Module):
    def __init__(self, image_shape: tuple[int, int, int]) -> None:
        super().__init__()
        channels, height, width = image_shape
        self.image_shape = image_shape
        self.features = FeatureNet(channels)
        self.grid = (max(1, math.ceil(height / 8)), max(1, math.ceil(width / 8)))
        self.expand = nn.Linear(FEATURE_DIM, 64 * self.grid[0] * self.grid[1])
        self.decode = nn.Sequential(
            nn.ReLU(),
            nn.ConvTranspose2d(64, 64, 4, stride=2, padding=1),
            nn.ReLU(),
            nn.ConvTranspose2d(64, 32, 4, stride=2, padding=1),
            nn.ReLU(),
            nn.ConvTranspose2d(32, channels, 4, stride=2, padding=1),
        )

    def forward(self, images: Tensor) -> Tensor:
        """Reconstruction logits of `images` (from the unstandardized feature layer)."""
        hidden = self.expand(self.features.embed(images)).view(-1, 64, *self.grid)
        logits: Tensor = self.decode(hidden)
        return logits[..., : self.image_shape[1], : self.image_shape[2]]


# What the dataset's own feature network is: a classifier on labelled data, else an autoencoder.
FeatureNetwork = Classifier | Autoencoder


@dataclass
class FeatureExtractor:
    name: str  # inception | classifier | autoencoder
    network: nn.Module  # float images in [0, 1] → (N, D) features
    weights_sha256: str
    details: dict[str, Any] = field(default_factory=dict)  # accuracy, recipe, cache URI, notes
    # The dataset classifier whose feature layer `network` is, and the dataset label value of
    # each of its outputs (sorted, as trained); None / () for inception and the autoencoder.
    classifier: nn.Module | None = field(default=None, repr=False)
    label_values: tuple[int, ...] = ()

    @property
    def dim(self) -> int:
        # Every feature network (FeatureNet, FIDInceptionV3, PrecomputedFeatures) sets this int attribute.
        return int(cast(int, self.network.num_features))

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "weights_sha256": self.weights_sha256, "dim": self.dim, **self.details}

    @property
    def device(self) -> torch.device:
        """Where the network's weights are (the CPU for a network without any)."""
        weights = next(self.network.parameters(), None)
        return torch.device("cpu") if weights is None else weights.device

    def to(self, device: str | torch.device) -> FeatureExtractor:
        """The networks on `device` (the feature layer is part of the classifier: both move)."""
        (self.classifier or self.network).to(device)
        return self

    @torch.no_grad()
    def __call__(self, images: Tensor, batch_size: int = 250) -> Tensor:
        """(N, C, H, W) images, uint8 or float in [0, 1] → (N, D) float64 features (on the CPU)."""
        self.network.eval()
        device = self.device
        chunks = []
        with progress(f"{self.name} features of {len(images)} images", len(images), "img") as update:
            for start in range(0, len(images), batch_size):
                batch = as_unit_floats(images[start : start + batch_size]).to(device)
                chunks.append(self.network(batch).double().cpu())
                update(start + len(batch))
        return torch.cat(chunks) if chunks else torch.zeros(0, self.dim, dtype=torch.float64)

    @torch.no_grad()
    def classify(self, images: Tensor, batch_size: int = 250) -> Tensor:
        """(N, C, H, W) images, uint8 or float in [0, 1] → (N,) the dataset label value the
        classifier gives each (int64, on the CPU)."""
        if self.classifier is None:
            raise GenimgError(f"the {self.name} feature network has no classifier head")
        self.classifier.eval()
        device = next(self.classifier.parameters()).device
        outputs = []
        for start in range(0, len(images), batch_size):
            batch = as_unit_floats(images[start : start + batch_size]).to(device)
            outputs.append(self.classifier(batch).argmax(1).cpu())
        index = torch.cat(outputs) if outputs else torch.zeros(0, dtype=torch.long)
        return torch.tensor(self.label_values, dtype=torch.long)[index]


def real_features(extractor: FeatureExtractor, images: Tensor, batch_size: int, store: ObjectStore) -> Tensor:
    """`extractor(images)` for real records, cached in the store by (extractor weights, the
    images' bytes): a split's features are computed once, however many models are scored on
    it (Inception on 10,000 images is ~25 minutes of 2 CPU cores). Kept as float32, which is
    what the networks compute in."""
    digest = hashlib.sha256(json.dumps([list(images.shape), str(images.dtype)]).encode())
    digest.update(images.contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    key = f"features/{extractor.weights_sha256[:16]}/{digest.hexdigest()[:24]}.safetensors"
    if store.exists(key):
        cached = load(store.get_bytes(key))["features"]
        if cached.shape == (len(images), extractor.dim):
            return cached.double()
    features = extractor(images, batch_size)
    store.put_bytes(key, save({"features": features.float().contiguous()}))
    return features.float().double()


def as_unit_floats(images: Tensor) -> Tensor:
    """uint8 images → float in [0, 1]; float images as they are."""
    return images.float() / 255.0 if images.dtype == torch.uint8 else images.float()


def as_frames(dataset: Dataset) -> tuple[Tensor, np.ndarray | None]:
    """Images (N, C, H, W) uint8 — sequences contribute every frame — and per-image labels."""
    data = torch.from_numpy(dataset.data)
    if dataset.kind == "sequences":
        return data.flatten(0, 1), None
    return data, dataset.labels


def recipe_for(
    kind: str,
    image_shape: tuple[int, int, int],
    config: EvalConfig,
    label_values: tuple[int, ...] = (),
    train_records: int = 0,
) -> dict[str, Any]:
    """Everything that decides the trained weights; its hash names the cache folder. Steps: the
    config's `extractor_steps` exactly, else the data's budget with early stopping."""
    channels, height, width = image_shape
    recipe: dict[str, Any] = {
        "format": RECIPE_FORMAT,
        "kind": kind,
        "image_shape": list(image_shape),
        "feature_dim": FEATURE_DIM,
        "widths": list(WIDTHS),
        "steps": config.extractor_steps or extractor_budget(train_records, channels),
        "early_stop": config.extractor_steps is None,
        "seed": 0,
    }
    if kind == "autoencoder":
        return recipe | {"batch_size": 64, "optimizer": "adam", "lr": 2e-3}
    return recipe | {
        # Output i of the classifier is the dataset label value label_values[i].
        "label_values": [int(value) for value in label_values],
        "batch_size": 64,
        "optimizer": "sgd-nesterov",
        "lr": 0.1,
        "momentum": 0.9,
        "weight_decay": 5e-4,
        "label_smoothing": 0.1,
        "schedule": "one-cycle",
        "warmup": 0.2,
        # Mirror images only for colour data: here that is photos, whose classes survive a
        # left-right flip, while grey data is digits and handwriting, where a mirrored 2 or 3 is
        # no longer that digit. Random crops (shifts) keep every class, so all data gets them.
        "flip": channels == 3,
        "crop_pad": max(1, min(height, width) // 8),  # 4 px at 32 px, 2 px at 16 px
    }


def recipe_hash(recipe: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:12]


def one_cycle(step: int, steps: int, warmup: float) -> float:
    """Learning-rate factor at `step`: a linear rise to 1 over the first `warmup` share of the
    steps, then a linear fall towards 0 at the last step (a short run still ends annealed)."""
    rise = max(1, round(steps * warmup))
    if step < rise:
        return (step + 1) / rise
    return (steps - step) / max(1, steps - rise)


def augment(images: Tensor, recipe: dict[str, Any], generator: torch.Generator) -> Tensor:
    """A random crop of each uint8 image zero-padded by `crop_pad` pixels (a shift of up to that
    many in each direction), then a horizontal flip of half of them where `flip`."""
    count, channels, height, width = images.shape
    pad = recipe["crop_pad"]
    padded = nn.functional.pad(images, (pad, pad, pad, pad))
    top = torch.randint(0, 2 * pad + 1, (count, 1), generator=generator)
    left = torch.randint(0, 2 * pad + 1, (count, 1), generator=generator)
    rows = (top + torch.arange(height))[:, None, :, None]
    columns = (left + torch.arange(width))[:, None, None, :]
    cropped = padded[
        torch.arange(count)[:, None, None, None], torch.arange(channels)[None, :, None, None], rows, columns
    ]
    if not recipe["flip"]:
        return cropped
    flipped = torch.rand(count, generator=generator) < 0.5
    return torch.where(flipped[:, None, None, None], cropped.flip(3), cropped)


def train_feature_network(
    kind: str,
    images: Tensor,
    labels: Tensor | None,
    recipe: dict[str, Any],
    val_images: Tensor | None = None,
    val_labels: Tensor | None = None,
) -> tuple[FeatureNetwork, int]:
    """Mini-batches drawn with the recipe's seed (deterministic on CPU). The classifier: SGD
    with Nesterov momentum and weight decay on a one-cycle schedule, on randomly cropped (and
    for colour, flipped) images, with label smoothing; the autoencoder: plain Adam. With the
    recipe's `early_stop` and val records, it stops once EARLY_STOP_PATIENCE checks in a row did
    not improve the val score. Returns the network and the steps it ran."""
    torch.manual_seed(recipe["seed"])
    network = build_network(kind, recipe)
    steps = recipe["steps"]
    optimizer: torch.optim.Optimizer
    if kind == "classifier":
        optimizer = torch.optim.SGD(
            network.parameters(),
            lr=recipe["lr"],
            momentum=recipe["momentum"],
            nesterov=True,
            weight_decay=recipe["weight_decay"],
        )
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: one_cycle(step, steps, recipe["warmup"]))
    else:
        optimizer = torch.optim.Adam(network.parameters(), lr=recipe["lr"])
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)  # a constant rate
    generator = torch.Generator().manual_seed(recipe["seed"])
    stopper = EarlyStop(kind, val_images, val_labels, steps) if recipe.get("early_stop") else None
    network.train()
    with progress(f"training the {kind} feature network", steps, "steps") as update:
        for step in range(steps):
            index = torch.randint(0, len(images), (recipe["batch_size"],), generator=generator)
            batch = images[index]
            if kind == "classifier":
                batch = augment(batch, recipe, generator)
            batch = (batch.float() / 255.0).contiguous(memory_format=torch.channels_last)
            if kind == "classifier":
                assert labels is not None
                loss = nn.functional.cross_entropy(
                    network(batch), labels[index], label_smoothing=recipe["label_smoothing"]
                )
            else:
                loss = nn.functional.binary_cross_entropy_with_logits(network(batch), batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            update(step + 1)
            if stopper is not None and stopper.should_stop(step + 1, network):
                say(
                    "the %s feature network stopped early at step %d of %d: its val score stopped improving (%s)",
                    kind,
                    step + 1,
                    steps,
                    stopper.history(),
                )
                return network.eval(), step + 1
    return network.eval(), steps


class EarlyStop:
    """Scores the network on (a seeded subset of) the val records every steps/EARLY_STOP_CHECKS
    steps: the classifier by accuracy, the autoencoder by reconstruction error."""

    def __init__(self, kind: str, images: Tensor | None, labels: Tensor | None, steps: int) -> None:
        self.kind, self.labels = kind, labels
        self.images = images
        if images is not None and len(images) > EARLY_STOP_RECORDS:
            chosen = torch.randperm(len(images), generator=torch.Generator().manual_seed(0))[:EARLY_STOP_RECORDS]
            self.images = images[chosen]
            self.labels = labels[chosen] if labels is not None else None
        self.every = max(25, steps // EARLY_STOP_CHECKS)
        self.scores: list[float] = []

    def should_stop(self, step: int, network: nn.Module) -> bool:
        if self.images is None or len(self.images) == 0 or step % self.every:
            return False
        scored = held_out_score(self.kind, network, self.images, self.labels)
        network.train()
        # Higher is better: accuracy, or the negated error.
        self.scores.append(scored["accuracy"] if "accuracy" in scored else -scored["reconstruction_mse"])
        if len(self.scores) <= EARLY_STOP_PATIENCE:
            return False
        best_before = max(self.scores[:-EARLY_STOP_PATIENCE])
        tolerance = 0.002 if self.kind == "classifier" else 0.01 * abs(best_before)
        return max(self.scores[-EARLY_STOP_PATIENCE:]) <= best_before + tolerance

    def history(self) -> str:
        name = "accuracy" if self.kind == "classifier" else "val reconstruction error"
        return f"{name} " + ", ".join(f"{abs(score):.4g}" for score in self.scores)


@torch.no_grad()
def held_out_score(kind: str, network: nn.Module, images: Tensor, labels: Tensor | None) -> dict[str, float]:
    if len(images) == 0:
        return {}
    network.eval()
    batches = [images[i : i + 500].float() / 255.0 for i in range(0, len(images), 500)]
    if kind == "classifier":
        assert labels is not None
        predicted = torch.cat([network(batch).argmax(1) for batch in batches])
        return {"accuracy": round(float((predicted == labels).float().mean()), 4)}
    error = torch.cat([(torch.sigmoid(network(batch)) - batch).pow(2).flatten(1).mean(1) for batch in batches])
    return {"reconstruction_mse": round(float(error.mean()), 6)}


def labelled_images(dataset: Dataset) -> tuple[Tensor, Tensor | None, tuple[int, ...]]:
    """(images, labels or None, label values): labels only when nearly all records carry one.

    The labels become 0..K-1 in sorted order of the dataset's label values (a dataset with
    labels {3, 7} trains 2 outputs); the sorted values map the outputs back."""
    images, labels = as_frames(dataset)
    if labels is None:
        return images, None, ()
    known = labels != UNLABELLED
    values = np.unique(labels[known])
    if known.mean() < LABELLED_FRACTION or len(values) < 2:
        return images, None, ()
    mapped = np.searchsorted(values, labels[known])
    return images[torch.from_numpy(known)], torch.from_numpy(mapped.astype(np.int64)), tuple(int(v) for v in values)


def content_key(train: Dataset, val: Dataset) -> str:
    """A digest of the records (and labels) a feature network is trained and checked on: two
    versions, names or raw reads of the same content share one network."""
    digest = hashlib.sha256()
    for dataset in (train, val):
        digest.update(json.dumps([dataset.kind, list(dataset.data.shape), str(dataset.data.dtype)]).encode())
        digest.update(np.ascontiguousarray(dataset.data).tobytes())
        if dataset.labels is not None:
            digest.update(np.ascontiguousarray(dataset.labels).astype(np.int64).tobytes())
    return digest.hexdigest()[:16]


@dataclass
class ExtractorPlan:
    """What the dataset's own feature network is for one dataset and config: its recipe, the
    records it learns from and is checked on, and where the store keeps it."""

    kind: str
    recipe: dict[str, Any]
    prefix: str
    images: Tensor
    labels: Tensor | None
    val_images: Tensor
    val_labels: Tensor | None
    train_records: int  # images, or sequences (whose frames are `images`)


def plan_extractor(source: DatasetHandle, config: EvalConfig) -> ExtractorPlan:
    shape = source.record_shape[-3:]
    image_shape = (int(shape[0]), int(shape[1]), int(shape[2]))
    train, val = source.load("train"), source.load("val")
    images, labels, label_values = labelled_images(train)
    kind = "classifier" if labels is not None else "autoencoder"
    # The budget counts records: a sequence's frames are near-copies of each other, so passes
    # over a sequence dataset are counted in sequences, not frames.
    recipe = recipe_for(kind, image_shape, config, label_values, len(train))
    val_images, val_labels = as_frames(val)[0], None
    if kind == "classifier" and val.labels is not None:
        # Score with the train split's label set (the val split may lack a class).
        keep = np.isin(val.labels, label_values)
        val_images = torch.from_numpy(val.data[keep])
        val_labels = torch.from_numpy(np.searchsorted(label_values, val.labels[keep]).astype(np.int64))
    prefix = f"extractors/content-{content_key(train, val)}/{kind}-{recipe_hash(recipe)}/"
    return ExtractorPlan(kind, recipe, prefix, images, labels, val_images, val_labels, len(train))


def cached_extractor(plan: ExtractorPlan, store: ObjectStore) -> FeatureExtractor | None:
    if not store.exists(plan.prefix + "extractor.json"):
        return None
    info = json.loads(store.get_bytes(plan.prefix + "extractor.json"))
    weights = store.get_bytes(plan.prefix + "model.safetensors", sha256=info["weights_sha256"])
    network = build_network(plan.kind, plan.recipe)
    network.load_state_dict(load(weights))
    return extractor_of(
        plan.kind,
        network,
        info["weights_sha256"],
        plan.recipe,
        {
            **info["held_out"],
            "uri": store.uri_for(plan.prefix.rstrip("/")),
            "reused": True,
            "steps_run": info.get("steps_run"),
        },
    )


def dataset_extractor(
    source: DatasetHandle, config: EvalConfig, store: ObjectStore, plan: ExtractorPlan | None = None
) -> FeatureExtractor:
    """The dataset's own feature network: loaded from the store cache (keyed by content and
    recipe), else trained on its train split, scored on its val split and published there."""
    plan = plan or plan_extractor(source, config)
    cached = cached_extractor(plan, store)
    if cached is not None:
        return cached
    if len(plan.images) < 2:
        raise GenimgError(
            f"{source.ref}: its train split holds {len(plan.images)} record(s), too few to train a feature network"
        )
    started = time.perf_counter()
    budget = (
        f"at most {plan.recipe['steps']} steps, {EXTRACTOR_EPOCHS} passes' worth of its {plan.train_records} "
        "train records, stopping early on its val score"
        if plan.recipe["early_stop"]
        else f"{plan.recipe['steps']} steps, as eval.extractor_steps says"
    )
    with phase(
        f"training {source.ref}'s own {plan.kind} feature network for FID/KID ({budget}; once per "
        "dataset content: cached in the store)"
    ):
        network, steps_run = train_feature_network(
            plan.kind, plan.images, plan.labels, plan.recipe, plan.val_images, plan.val_labels
        )
        network.features.standardize(plan.images)
    seconds = time.perf_counter() - started
    held_out = held_out_score(plan.kind, network, plan.val_images, plan.val_labels)
    payload = save({key: value.contiguous() for key, value in network.state_dict().items()})
    digest = sha256_hex(payload)
    store.put_bytes(plan.prefix + "model.safetensors", payload)
    info = {
        "name": plan.kind,
        "recipe": plan.recipe,
        "dataset": source.ref,
        "weights_sha256": digest,
        "held_out": held_out,
        "train_records": len(plan.images),
        "val_records": len(plan.val_images),
        "steps_run": steps_run,
        "seconds": round(seconds, 1),
    }
    store.publish(plan.prefix + "extractor.json", json.dumps(info, indent=1).encode())
    # A concurrent evaluation may have published first: use what the cache holds, so every
    # evaluation of this content names the same weights.
    if json.loads(store.get_bytes(plan.prefix + "extractor.json"))["weights_sha256"] != digest:
        return dataset_extractor(source, config, store, plan)
    return extractor_of(
        plan.kind,
        network,
        digest,
        plan.recipe,
        {**held_out, "uri": store.uri_for(plan.prefix.rstrip("/")), "reused": False, "steps_run": steps_run},
    )


def build_network(kind: str, recipe: dict[str, Any]) -> FeatureNetwork:
    """The untrained network of a recipe, its weights channels-last: that layout runs the
    convolutions about 1.4× faster on CPUs (oneDNN's own), and a network trained here and one
    loaded from the cache share it, so both compute exactly the same features."""
    image_shape = tuple(recipe["image_shape"])
    network: FeatureNetwork = (
        Classifier(image_shape[0], len(recipe["label_values"])) if kind == "classifier" else Autoencoder(image_shape)
    )
    # nn.Module.to takes memory_format (torch passes it to _parse_to); its typed overloads omit it.
    network.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    return network


def extractor_of(
    kind: str, network: FeatureNetwork, digest: str, recipe: dict[str, Any], details: dict[str, Any]
) -> FeatureExtractor:
    """The extractor around a trained network: its feature layer, and for a classifier the
    whole network and the label value of each output."""
    features = network.features.eval()
    if kind != "classifier":
        return FeatureExtractor(kind, features, digest, details)
    label_values = tuple(int(value) for value in recipe["label_values"])
    return FeatureExtractor(
        kind,
        features,
        digest,
        {**details, "label_values": list(label_values)},
        classifier=network.eval(),
        label_values=label_values,
    )


def inception_extractor() -> tuple[FeatureExtractor | None, str | None]:
    """The field's FID network (its weights fetched on first use), or None and why not."""
    path, reason = find_inception_weights()
    if path is None:
        return None, reason
    return FeatureExtractor("inception", load_fid_inception(path), sha256_file(path), {"weights": str(path)}), None


def choose_extractor(
    source: DatasetHandle, config: EvalConfig, store: ObjectStore, *, step_limit: int | None = None
) -> tuple[FeatureExtractor | None, str | None]:
    """The feature network of `config.features`, and a note when there is none. `auto`: the
    field's Inception where its weights can be had, else the dataset's own network (with a
    one-line notice of why). `step_limit`: a dataset network not cached yet whose budget is
    larger is not trained, unless eval.features=classifier or eval.extractor_steps asks for it;
    (None, why) instead."""
    notice = None
    if config.features in ("auto", "inception"):
        extractor, reason = inception_extractor()
        if extractor is not None:
            return extractor, None
        if config.features == "inception":
            raise GenimgError(f"features=inception: {reason}")
        notice = (
            f"Inception weights unavailable ({reason}): FID/KID use the dataset's own network, "
            "comparable within genimg only"
        )
        say("note: %s", notice)
    plan = plan_extractor(source, config)
    asked = config.features == "classifier" or config.extractor_steps is not None
    too_long = step_limit is not None and plan.recipe["steps"] > step_limit
    if too_long and not asked and cached_extractor(plan, store) is None:
        return None, (
            f"FID/KID/precision/recall skipped: {source.ref}'s own {plan.kind} feature network is not "
            f"trained yet, and its up to {plan.recipe['steps']} steps are more than this run's "
            f"{step_limit}; `genimg evaluate` trains it once (cached), or eval.features=classifier "
            "or eval.extractor_steps trains it here"
        )
    extractor = dataset_extractor(source, config, store, plan)
    if notice:
        extractor.details["note"] = notice
    return extractor, None


__all__ = ["FeatureExtractor", "choose_extractor", "dataset_extractor", "plan_extractor"]
