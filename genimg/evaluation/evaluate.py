"""Score a trained model against one split of a dataset version.

Every family: FID, KID and k-NN precision / recall / density / coverage between generated and
real samples in one feature space. VAE: also the IWAE test NLL and bits/dim. RVAE: K continuations
of each test sequence's context frames against ground truth by the video-prediction protocol
(per-frame MSE / MAE / SSIM / PSNR, mean over K and best of K), the copy-last-frame baseline, the
per-frame NLL bound, and the distances on generated frames. Class-conditional
image models: every class drawn equally often, the share of each class's samples that the
dataset classifier labels as that class (`class_consistency_<class>` and their mean), and the
NLL given each real image's class. Seeded throughout: the same model, data, config and seed
give the same numbers.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

import torch
from torch import Tensor

from genimg.data.dataset import Dataset
from genimg.data.handle import DatasetHandle
from genimg.errors import GenimgError
from genimg.evaluation.config import EvalConfig
from genimg.evaluation.features import FeatureExtractor, as_frames, choose_extractor
from genimg.evaluation.features import real_features as real_features_of
from genimg.evaluation.metrics import (
    NEAREST_K,
    frame_mae,
    frame_mse,
    frame_psnr,
    frame_ssim,
    frechet_and_kernel_distances,
    precision_recall_density_coverage,
    standard_error,
)
from genimg.evaluation.reliability import reliability, unreliable_note
from genimg.feedback import progress
from genimg.models.base import GenerativeModel, discrete_nll_offset, evaluating, model_spec
from genimg.store import ObjectStore, open_store

GRID_SAMPLES = 64
GIF_SEQUENCES = 8


# What scoring calls beyond GenerativeModel's own interface, family by family.
class ConditionalSampler(Protocol):
    """A class-conditional image model's sampling for given classes (GANs, the VAE)."""

    def sample(self, n: int, seed: int | None = ..., labels: Tensor | None = ...) -> Tensor: ...


class NLLScorer(Protocol):
    """An image model's importance-weighted −log p(x) (or −log p(x | y)) per image: the VAE."""

    def nll(
        self, images: Tensor, k: int = ..., *, labels: Tensor | None = ..., generator: torch.Generator | None = ...
    ) -> Tensor: ...


class SequencePredictor(Protocol):
    """A sequence model's continuations and per-step likelihood terms: the RVAE."""

    def continue_sequence(self, context: Tensor, num_frames: int | None = ..., seed: int | None = ...) -> Tensor: ...

    def step_terms(self, sequences: Tensor, generator: torch.Generator | None = ...) -> tuple[Tensor, Tensor]: ...


@dataclass
class Evaluation:
    model: str
    dataset: str  # name@version (SOURCE@version for a raw source)
    split: str
    seed: int
    num_samples: int  # generated images (sequences for rvae)
    num_real: int  # real records of the split compared
    metrics: dict[str, float]
    features: dict[str, Any]
    settings: dict[str, Any]
    seconds: float
    samples: Tensor = field(repr=False)  # a few generated images (N, C, H, W) for the grid
    # Per headline metric: reliable or not, n real / generated, floor, spread (see reliability.py)
    reliability: dict[str, Any] = field(default_factory=dict)
    continuations: Tensor | None = field(default=None, repr=False)  # (N, T, …) best continuations
    ground_truth: Tensor | None = field(default=None, repr=False)  # the sequences they continue

    def as_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "dataset": self.dataset,
            "split": self.split,
            "seed": self.seed,
            "num_samples": self.num_samples,
            "num_real": self.num_real,
            "metrics": self.metrics,
            "features": self.features,
            "settings": self.settings,
            "reliability": self.reliability,
            "seconds": round(self.seconds, 2),
        }


def seeded_subset(dataset: Dataset, limit: int, seed: int) -> Dataset:
    if len(dataset) <= limit:
        return dataset
    chosen = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))[:limit]
    kept = chosen.sort().values.numpy()
    return Dataset(
        dataset.kind,
        dataset.data[kept],
        dataset.source,
        dataset.labels[kept] if dataset.labels is not None else None,
    )


def generate(model: GenerativeModel, count: int, seed: int, batch_size: int, labels: Tensor | None = None) -> Tensor:
    """`count` samples, batch by batch, each batch with its own seed derived from `seed` (and a
    conditional model's classes from `labels`, one per sample); refused when not finite (a
    diverged model's NaNs would crash FID's linear algebra)."""
    batches = []
    with progress(f"generating {count} samples", count, "samples") as update:
        for number, start in enumerate(range(0, count, batch_size)):
            size = min(batch_size, count - start)
            batch_seed = seed * 1_000_003 + number
            if labels is None:
                batches.append(model.sample(size, seed=batch_seed).cpu())
            else:
                batch_labels = labels[start : start + size]
                conditional = cast(ConditionalSampler, model)  # labels are given for a conditional model only
                batches.append(conditional.sample(size, seed=batch_seed, labels=batch_labels).cpu())
            update(start + len(batches[-1]))
    samples = torch.cat(batches)
    if not torch.isfinite(samples).all():
        raise GenimgError(
            f"model {model.registry_name} generates non-finite values (NaN or inf): its "
            "weights are broken (a run that diverged?); nothing to evaluate"
        )
    return samples


def check_shapes(model: GenerativeModel, source: DatasetHandle) -> None:
    expected = tuple(int(s) for s in model.config.image_shape)
    data_shape = source.record_shape[-3:]
    if tuple(data_shape) != expected:
        raise GenimgError(
            f"model {model.registry_name} makes {'×'.join(map(str, expected))} images but "
            f"{source.ref} holds {'×'.join(map(str, data_shape))}"
        )
    kind = model_spec(model.registry_name).data_kind
    if kind != source.kind:
        raise GenimgError(f"model {model.registry_name} works on {kind} but {source.ref} holds {source.kind}")


def distances(
    extractor: FeatureExtractor, real: Tensor, fake: Tensor, config: EvalConfig, store: ObjectStore
) -> dict[str, float]:
    real_features = real_features_of(extractor, real, config.batch_size, store)
    fake_features = extractor(fake, config.batch_size)
    for which, features in (("real", real_features), ("generated", fake_features)):
        if not torch.isfinite(features).all():
            raise GenimgError(
                f"the {extractor.name} features of the {which} images are not finite (NaN or inf); "
                "FID/KID cannot be computed"
            )
    metrics = frechet_and_kernel_distances(real_features, fake_features, config.seed)
    if len(real) > NEAREST_K and len(fake) > NEAREST_K:
        metrics |= precision_recall_density_coverage(real_features, fake_features)
    return metrics


def image_nll(
    model: GenerativeModel, images: Tensor, config: EvalConfig, labels: Tensor | None = None
) -> dict[str, float]:
    """Mean IWAE estimate of −log p(x) in nats over `images` (−log p(x | y) for a conditional
    model, given each image's class in `labels`), and the same in bits per dimension."""
    generator = torch.Generator().manual_seed(config.seed)
    scorer = cast(NLLScorer, model)
    per_image: list[Tensor] = []
    with progress(f"NLL of {len(images)} images (IWAE, k={config.nll_k})", len(images), "images") as update:
        for start in range(0, len(images), 100):
            batch = images[start : start + 100].float().div(255.0).to(model.device)
            if labels is None:
                batch_nll = scorer.nll(batch, k=config.nll_k, generator=generator)
            else:
                batch_labels = labels[start : start + 100].to(model.device)
                batch_nll = scorer.nll(batch, k=config.nll_k, labels=batch_labels, generator=generator)
            per_image.append(batch_nll.detach().double().cpu())
            update(start + len(batch))
    values = torch.cat(per_image)
    nll, nll_se = float(values.mean()), standard_error(values)
    to_bits = 1 / (math.prod(images.shape[1:]) * math.log(2))
    return {"nll": nll, "nll_se": nll_se, "bits_per_dim": nll * to_bits, "bits_per_dim_se": nll_se * to_bits}


# Class names that stand as they are in a metric name (MLflow's rules, and no surprises in a
# shell or a URL); otherwise classes are named by their index.
METRIC_NAME_PART = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def balanced_labels(count: int, classes: int) -> Tensor:
    """Class i mod K for sample i: every class as often as any other (±1), each batch a mix."""
    return torch.arange(count) % classes


def class_metric_names(model: GenerativeModel) -> list[str]:
    """`class_consistency_<k>` names: the class names where every one is a safe metric name
    (they are unique: folder names), else the indices."""
    names = model.class_names
    if len(names) == model.num_classes and all(METRIC_NAME_PART.fullmatch(name) for name in names):
        return [f"class_consistency_{name}" for name in names]
    return [f"class_consistency_{k}" for k in range(model.num_classes)]


def class_consistency(
    model: GenerativeModel, extractor: FeatureExtractor, generated: Tensor, labels: Tensor, batch_size: int
) -> tuple[dict[str, float], list[str]]:
    """For each class k of a conditional model, the share of its samples of class k that the
    dataset classifier labels k (the model's class k is the dataset label value k), and their
    mean over the classes: `class_consistency`. Returns the metrics and notes on the classes
    that could not be scored."""
    predicted = extractor.classify(generated, batch_size)
    known = set(extractor.label_values)
    metrics: dict[str, float] = {}
    unknown, unsampled = [], []
    for k, name in enumerate(class_metric_names(model)):
        chosen = labels == k
        if k not in known:
            unknown.append(str(k))
        elif not chosen.any():
            unsampled.append(str(k))
        else:
            metrics[name] = float((predicted[chosen] == k).float().mean())
    notes = []
    if unknown:
        notes.append(
            f"class consistency skips class(es) {', '.join(unknown)}: the dataset classifier was "
            "not trained on them (no such label in the train split)"
        )
    if unsampled:
        notes.append(
            f"class consistency skips class(es) {', '.join(unsampled)}: eval.samples={len(labels)} "
            f"is fewer than the {model.num_classes} classes"
        )
    if metrics:
        metrics["class_consistency"] = sum(metrics.values()) / len(metrics)
    return metrics, notes


def labelled_for(model: GenerativeModel, real: Dataset) -> tuple[Tensor, Tensor]:
    """The records of `real` that carry one of a conditional model's classes, and those labels."""
    if real.labels is None:
        return torch.zeros((0, *real.data.shape[1:]), dtype=torch.uint8), torch.zeros(0, dtype=torch.long)
    keep = (real.labels >= 0) & (real.labels < model.num_classes)
    return torch.from_numpy(real.data[keep]), torch.from_numpy(real.labels[keep].astype("int64"))


SEQUENCE_METRICS: dict[str, tuple[Any, bool]] = {  # name: (per-frame function, higher is better)
    "mse": (frame_mse, False),
    "mae": (frame_mae, False),
    "ssim": (frame_ssim, True),
    "psnr": (frame_psnr, True),
}
SEQUENCE_PROTOCOL = (
    "per predicted frame, frames in [0, 1]: mse / mae summed over the frame's pixels, ssim as "
    "scikit-image computes it (7x7 window), psnr in dB; mse, mae, ssim, psnr: mean over the K "
    "continuations drawn per sequence; *_best_of_k: per sequence the best of the K by that metric "
    "(averaged over its predicted frames); *_copy_last_baseline: the last context frame repeated"
)


def sequence_metrics(model: GenerativeModel, sequences: Tensor, config: EvalConfig) -> tuple[dict[str, float], Tensor]:
    """The video-prediction protocol on continuations of `sequences` (see SEQUENCE_PROTOCOL): K =
    eval.best_of draws per sequence, scored as their mean and as the best of K, beside the
    copy-last-frame baseline; plus the NLL bound. Returns the metrics and, per sequence, the
    draw closest to the truth by MSE (context frames included)."""
    steps = sequences.shape[1]
    context = config.context_frames or steps // 2
    if context >= steps:
        raise GenimgError(f"eval.context_frames={context} leaves no frame to predict in {steps}-frame sequences")
    truth = sequences.float().div(255.0)
    predictor = cast(SequencePredictor, model)
    future = truth[:, context:]
    predicted_frames = steps - context

    def per_frame(predicted: Tensor) -> dict[str, Tensor]:  # each (sequences, predicted frames)
        flat_predicted, flat_truth = predicted.flatten(0, 1), future.flatten(0, 1)
        return {
            name: function(flat_predicted, flat_truth).view(len(future), predicted_frames)
            for name, (function, _) in SEQUENCE_METRICS.items()
        }

    draws: list[dict[str, Tensor]] = []
    closest: Tensor | None = None
    closest_mse: Tensor | None = None
    with progress(
        f"continuing {len(truth)} sequences, {config.best_of} draw(s) each", config.best_of, "draws"
    ) as update:
        for draw in range(config.best_of):
            continued = torch.cat(
                [
                    predictor.continue_sequence(
                        truth[start : start + config.batch_size, :context].to(model.device),
                        steps,
                        seed=config.seed * 1_000_003 + draw * 1009 + number,
                    ).cpu()
                    for number, start in enumerate(range(0, len(truth), config.batch_size))
                ]
            )
            update(draw + 1)
            scores = per_frame(continued[:, context:])
            draws.append(scores)
            mse = scores["mse"].mean(1)
            if closest is None or closest_mse is None:
                closest, closest_mse = continued, mse
                continue
            better = mse < closest_mse
            closest[better], closest_mse[better] = continued[better], mse[better]
    assert closest is not None
    baseline = per_frame(truth[:, context - 1 : context].expand_as(future))
    metrics: dict[str, float] = {}
    for name, (_, higher_is_better) in SEQUENCE_METRICS.items():
        stacked = torch.stack([scores[name] for scores in draws])  # (K, sequences, frames)
        per_sequence = stacked.mean(2)
        best_draw = per_sequence.argmax(0) if higher_is_better else per_sequence.argmin(0)
        best = stacked[best_draw, torch.arange(stacked.shape[1])]  # (sequences, frames)
        for suffix, values in (("", stacked.mean(0)), ("_best_of_k", best), ("_copy_last_baseline", baseline[name])):
            metrics[f"{name}{suffix}"] = float(values.mean())
            metrics[f"{name}{suffix}_se"] = standard_error(values.mean(1))  # over sequences
            for offset in range(predicted_frames):
                # 1-based position in the sequence: with 10 context frames, frame_11 is the first predicted
                metrics[f"{name}{suffix}_frame_{context + offset + 1:02d}"] = float(values[:, offset].mean())
    metrics["nll_bound_per_frame"] = sequence_nll_bound(model, truth, config)
    return metrics, closest


def sequence_nll_bound(model: GenerativeModel, truth: Tensor, config: EvalConfig) -> float:
    """Negative ELBO per frame in nats (one posterior sample per sequence, seeded)."""
    generator = torch.Generator().manual_seed(config.seed)
    predictor = cast(SequencePredictor, model)
    total = 0.0
    with torch.no_grad(), evaluating(model):
        for start in range(0, len(truth), config.batch_size):
            batch = truth[start : start + config.batch_size].to(model.device)
            reconstruction, kl = predictor.step_terms(batch, generator=generator)
            total += float((reconstruction + kl).sum())
    offset = discrete_nll_offset(model.config.likelihood, tuple(model.config.image_shape))
    return total / (truth.shape[0] * truth.shape[1]) + offset


def evaluate_model(
    model: GenerativeModel,
    source: DatasetHandle,
    split: str = "test",
    config: EvalConfig | None = None,
    *,
    store: ObjectStore | None = None,
    extractor: FeatureExtractor | None = None,
    extractor_step_limit: int | None = None,
) -> Evaluation:
    """Score `model` on `split` of `source`. `extractor_step_limit`: when the dataset's own
    feature network is not cached and would train for more steps than this, the distances (FID,
    KID, precision / recall) are left out with a note instead: the end of a short run must not
    pay for a network many times its own cost."""
    config = config or EvalConfig()
    store = store or open_store()
    started = time.perf_counter()
    check_shapes(model, source)
    real = seeded_subset(source.load(split), config.max_real, config.seed)
    if len(real) < 2:
        raise GenimgError(f"{source.ref}: split {split!r} holds {len(real)} record(s); evaluation needs ≥ 2")
    notes: list[str] = []
    if extractor is None:
        extractor, skipped = choose_extractor(source, config, store, step_limit=extractor_step_limit)
        notes += [skipped] if skipped else []
    model.eval()
    settings: dict[str, Any] = {"k_nearest": NEAREST_K, "max_real": config.max_real}
    # A conditional image model draws every class equally often: the classes can then be
    # scored one by one, and the samples as a whole match a class-balanced split.
    conditional = source.kind == "images" and model.num_classes > 0
    sample_labels = balanced_labels(config.samples, model.num_classes) if conditional else None
    with torch.no_grad():
        generated = generate(model, config.samples, config.seed, config.batch_size, sample_labels)
    scored = (score_sequences if source.kind == "sequences" else score_images)(
        model, extractor, real, generated, sample_labels, config, split, store
    )
    settings |= scored.settings
    notes += scored.notes
    verdicts = reliability(scored.metrics, scored.real_count, scored.generated_count, scored.scored_records)
    if unreliable := unreliable_note(verdicts):
        notes.append(unreliable)
    features = extractor.describe() if extractor is not None else {"name": "none", "weights_sha256": ""}
    if notes:
        features["note"] = "; ".join(([features["note"]] if features.get("note") else []) + notes)
    return Evaluation(
        model=model.registry_name,
        dataset=source.ref,
        split=split,
        seed=config.seed,
        num_samples=config.samples,
        num_real=len(real),
        metrics=scored.metrics,
        features=features,
        settings=settings,
        seconds=time.perf_counter() - started,
        samples=scored.samples,
        continuations=scored.continuations,
        ground_truth=scored.ground_truth,
        reliability=verdicts,
    )


@dataclass
class Scored:
    metrics: dict[str, float]
    samples: Tensor
    real_count: int  # real images behind the distances (frames, for sequences)
    generated_count: int
    scored_records: int | None = None  # the records NLL or the sequence scores average over
    settings: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    continuations: Tensor | None = None
    ground_truth: Tensor | None = None


def score_sequences(
    model: GenerativeModel,
    extractor: FeatureExtractor | None,
    real: Dataset,
    generated: Tensor,
    sample_labels: Tensor | None,
    config: EvalConfig,
    split: str,
    store: ObjectStore,
) -> Scored:
    real_sequences = torch.from_numpy(real.data)
    continued_count = min(len(real_sequences), config.samples)
    with torch.no_grad():
        metrics, best = sequence_metrics(model, real_sequences[:continued_count], config)
    real_frames, _ = as_frames(real)
    real_frames = real_frames[
        torch.randperm(len(real_frames), generator=torch.Generator().manual_seed(config.seed))[: config.max_real]
    ]
    generated_frames = generated.flatten(0, 1)
    if extractor is not None:
        metrics |= distances(extractor, real_frames, generated_frames, config, store)
    settings = {
        "best_of": config.best_of,
        "context_frames": config.context_frames or real.data.shape[1] // 2,
        "continued_sequences": continued_count,
        "sequence_metrics": SEQUENCE_PROTOCOL,
    }
    return Scored(
        metrics,
        generated[: GRID_SAMPLES // real.data.shape[1] or 1],
        len(real_frames),
        len(generated_frames),
        continued_count,
        settings,
        # The report pairs each continuation with its ground truth: as many of one as of the other.
        continuations=best[:GIF_SEQUENCES],
        ground_truth=real_sequences[: min(continued_count, GIF_SEQUENCES)].float() / 255.0,
    )


def score_images(
    model: GenerativeModel,
    extractor: FeatureExtractor | None,
    real: Dataset,
    generated: Tensor,
    sample_labels: Tensor | None,
    config: EvalConfig,
    split: str,
    store: ObjectStore,
) -> Scored:
    real_images = torch.from_numpy(real.data)
    metrics = distances(extractor, real_images, generated, config, store) if extractor is not None else {}
    settings: dict[str, Any] = {}
    notes: list[str] = []
    if sample_labels is not None:
        settings["classes"] = model.num_classes
    if sample_labels is not None and extractor is not None:  # without one, the skip note says why
        if extractor.classifier is None:
            notes.append(
                f"class consistency needs the dataset's classifier; the {extractor.name} "
                "features have no classifier head (use eval.features=classifier for it)"
            )
        else:
            consistency, skipped = class_consistency(model, extractor, generated, sample_labels, config.batch_size)
            metrics |= consistency
            notes += skipped
    nll_images = real_images[:0]
    if hasattr(model, "nll"):
        nll_images, nll_labels = real_images, None
        if model.num_classes:
            # −log p(x | y) needs each image's class: the records that carry one.
            nll_images, nll_labels = labelled_for(model, real)
            settings["nll_records"] = len(nll_images)
        if len(nll_images):
            with torch.no_grad():
                metrics |= image_nll(model, nll_images, config, nll_labels)
            settings["nll_k"] = config.nll_k
        else:
            notes.append(f"no NLL: no record of split {split!r} carries one of the model's classes")
    return Scored(metrics, generated[:GRID_SAMPLES], len(real_images), len(generated), len(nll_images), settings, notes)


__all__ = ["Evaluation", "evaluate_model"]
