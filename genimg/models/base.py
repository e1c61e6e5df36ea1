"""What every model family shares: named losses, seeded sampling, the registry, save / load.

A saved model is a folder with `model.json` (registry name + typed config) and
`model.safetensors` (all weights, EMA copies included). Loading rebuilds the module from the
config and loads the weights strictly: no pickle anywhere.
"""

from __future__ import annotations

import abc
import contextlib
import dataclasses
import functools
import hashlib
import json
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal, cast

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from genimg.config import config_from_dict, config_to_dict
from genimg.errors import ConfigError, GenimgError
from genimg.limits import check_memory

Family = Literal["gan", "vae", "rvae"]
DataKind = Literal["images", "sequences"]
MODEL_FORMAT = "genimg.model/1"
MODEL_CONFIG_FILE = "model.json"
MODEL_WEIGHTS_FILE = "model.safetensors"
# What one fp32 weight (or buffer value) costs: training holds it, its gradient and Adam's two
# moments; loading holds the module and the weights read from the file.
TRAINING_BYTES_PER_WEIGHT = 16
LOADING_BYTES_PER_WEIGHT = 8


@dataclass
class Losses:
    """A loss to minimise plus named parts for logging (detached scalars)."""

    total: Tensor
    parts: dict[str, Tensor]


def forget_ema_count(owner: nn.Module, _incompatible_keys: Any) -> None:
    """After a state dict is loaded (a checkpoint), the host's copy of the count is read again.
    A function of the module (not a closure), so a deep copy's hook resets the copy's count."""
    cast(AveragedWeights, owner.ema).forget_count()


class AveragedWeights:
    """An exponential moving average of a network's weights (an EMA generator, a VAE's averaged
    copy), updated without a device sync: the update count lives in the owner's `ema_updates`
    buffer (saved with the model) and is mirrored on the host, read back once after the model is
    built or a checkpoint is loaded.

    A step recorded as a CUDA graph (genimg.training.graphs) runs this update's kernels without
    running this code: there the weight of each update is read from `replay_weight`, a device
    tensor the graph's runner fills before every replay (`fill_replay_weight`)."""

    def __init__(self, owner: nn.Module, decay: float) -> None:
        self.decay = decay
        self.host_updates: int | None = None
        self.replay_weight: Tensor | None = None
        owner.register_buffer("ema_updates", torch.zeros((), dtype=torch.long))
        owner.register_load_state_dict_post_hook(forget_ema_count)

    def forget_count(self) -> None:
        self.host_updates = None

    def next_weight(self, owner: nn.Module) -> float:
        """The interpolation weight of the next update (1 − decay_n), counting it on the host.
        Warm-up: the decay grows with the updates, decay_n = min(decay, (1 + n) / (10 + n)), so
        the random initial weights leave the average early whatever the decay."""
        if self.host_updates is None:
            self.host_updates = int(cast(Tensor, owner.ema_updates))  # once per build or checkpoint load
        updates = self.host_updates
        self.host_updates = updates + 1
        return 1.0 - min(self.decay, (1.0 + updates) / (10.0 + updates))

    def fill_replay_weight(self, owner: nn.Module) -> None:
        """Before a recorded update is replayed: its weight into `replay_weight` (a kernel, no sync)."""
        assert self.replay_weight is not None
        self.replay_weight.fill_(self.next_weight(owner))

    @torch.no_grad()
    def update(self, owner: nn.Module, average: nn.Module, live: nn.Module) -> None:
        """Move `average`'s parameters towards `live`'s; copy its buffers (BatchNorm statistics)."""
        updates = cast(Tensor, owner.ema_updates)
        updates += 1
        live_parameters = dict(live.named_parameters())
        averaged = [(a, live_parameters[name]) for name, a in average.named_parameters()]
        targets: list[Tensor] = [a for a, _ in averaged]
        sources: list[Tensor] = [p for _, p in averaged]
        if self.replay_weight is None:
            torch._foreach_lerp_(targets, sources, self.next_weight(owner))
        else:
            torch._foreach_lerp_(targets, sources, [self.replay_weight] * len(targets))
        live_buffers = dict(live.named_buffers())
        for name, buffer in average.named_buffers():
            buffer.copy_(live_buffers[name])


def averaged_weights(model: nn.Module) -> list[tuple[AveragedWeights, nn.Module]]:
    """Every weight average in `model`, with the module that owns its count."""
    return [
        (ema, module) for module in model.modules() if isinstance(ema := getattr(module, "ema", None), AveragedWeights)
    ]


class GenerativeModel(nn.Module, abc.ABC):
    """Base of every registered model: a config and a seeded `sample`.

    A class-conditional model (config `conditional: true`, `num_classes` ≥ 2 fitted from the
    data, optional `class_names`) takes `labels` — (n,) class indices — wherever it takes
    images or draws samples; image models' `sample(n, seed, labels=None)` draws the labels
    uniformly from the seed when none are given.
    """

    registry_name: ClassVar[str]
    config: Any

    @abc.abstractmethod
    def sample(self, n: int, seed: int | None = None) -> Tensor:
        """`n` samples in [0, 1]: (n, C, H, W) for images, (n, T, C, H, W) for sequences."""

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def num_classes(self) -> int:
        """How many classes a conditional model generates; 0 for an unconditional one."""
        if not getattr(self.config, "conditional", False):
            return 0
        return int(getattr(self.config, "num_classes", 0))

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(getattr(self.config, "class_names", ()) or ())


def check_conditioning(conditional: bool, num_classes: int, class_names: tuple[str, ...]) -> None:
    """The class settings of a model config, as a model is built (num_classes comes from the
    data: `conditional: true` alone passes the checks made before any data is read)."""
    if num_classes < 0:
        raise ConfigError(f"model.num_classes must be ≥ 0, got {num_classes}")
    if class_names and len(class_names) != num_classes:
        raise ConfigError(f"model.class_names lists {len(class_names)} names for {num_classes} classes")
    if not conditional and num_classes:
        raise ConfigError("model.num_classes is set but model.conditional is false")


def require_classes(model: GenerativeModel) -> int:
    """A conditional model's class count, once built (training fits it to the data)."""
    if model.num_classes < 2:
        raise ConfigError(
            f"model {model.registry_name} is conditional but has {model.num_classes} classes: "
            "train it on a labelled dataset (num_classes is taken from the data)"
        )
    return model.num_classes


def sample_labels(model: GenerativeModel, n: int, seed: int | None, labels: Tensor | None) -> Tensor | None:
    """The class labels `sample` uses on `model.device`: the given ones (checked), else drawn
    uniformly from `seed` (on the CPU, like the noise); None for an unconditional model."""
    classes = model.num_classes
    if classes == 0:
        if labels is not None:
            raise GenimgError(f"model {model.registry_name} is not class-conditional: it takes no labels")
        return None
    if labels is None:
        generator = torch.Generator().manual_seed(seed) if seed is not None else None
        return torch.randint(0, classes, (n,), generator=generator).to(model.device)
    labels = torch.as_tensor(labels, dtype=torch.long).reshape(-1)
    if len(labels) != n:
        raise GenimgError(f"{len(labels)} labels for {n} samples")
    if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= classes):
        raise GenimgError(
            f"class labels must be in 0–{classes - 1} for model {model.registry_name}, got {labels.tolist()}"
        )
    return labels.to(model.device)


def class_index(model: GenerativeModel, value: str) -> int:
    """A class given as its name (the dataset's class folder names) or else its index."""
    classes = require_classes(model) if model.num_classes else 0
    if classes == 0:
        raise GenimgError(
            f"model {model.registry_name} is not class-conditional: --class needs a model "
            "trained with model.conditional=true"
        )
    # A name wins over an index: with class folders "1", "2", "3", "2" is the folder "2".
    if value in model.class_names:
        return model.class_names.index(value)
    if value.isascii() and value.isdigit() and int(value) < classes:  # "²" is a digit to isdigit
        return int(value)
    known = ", ".join(model.class_names) if model.class_names else f"0–{classes - 1}"
    raise GenimgError(f"unknown class {value!r} for model {model.registry_name} (classes: {known})")


def seeded_normal(shape: tuple[int, ...], seed: int | None, device: torch.device) -> Tensor:
    """Standard normal noise drawn on the CPU from its own generator, so a seed gives the same
    samples on every device and does not disturb the global RNG (training stays reproducible)."""
    if seed is None:
        return torch.randn(shape, device=device)
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=generator).to(device)


@contextlib.contextmanager
def evaluating(module: nn.Module) -> Iterator[None]:
    """Eval mode and no autograd inside; the previous mode is restored after."""
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        module.train(was_training)


# --- likelihoods shared by the VAE and the RVAE -------------------------------------------------

Likelihood = Literal["bernoulli", "gaussian", "logistic"]
PIXEL_LEVELS = 256
# Range of the discretized logistic's log-scale, in [0, 1] pixel units. At the smallest scale
# (≈ 0.09 of a level) the bin of the mean holds > 99 % of the mass and gradients through
# 1/scale stay bounded; the largest (≈ 150 × the pixel range) is flat already, and keeps the
# bin width over the scale from underflowing to 0 in float32.
LOGISTIC_LOG_SCALE_RANGE = (-8.0, 5.0)
# Added to the decoder's log-scale outputs, so an untrained decoder (outputs near 0) starts at a
# scale of e^-3 ≈ 0.05 (≈ 13 levels), near where trained image models end, instead of spending
# its first thousands of Adam steps (each moves a weight by about the learning rate) getting there.
LOGISTIC_LOG_SCALE_SHIFT = -3.0


def decoder_channels(likelihood: Likelihood, channels: int) -> int:
    """Channels a decoder outputs for `channels` image channels: the discretized logistic
    predicts a mean and a log-scale per pixel value, the others one number."""
    return 2 * channels if likelihood == "logistic" else channels


def likelihood_target(
    images: Tensor, likelihood: Likelihood, binarize: bool, generator: torch.Generator | None = None
) -> Tensor:
    """The values the decoder is scored on.

    bernoulli: dynamic binarisation (a fresh {0, 1} draw per pass, pixel value = probability)
    when `binarize`, else the grey levels themselves as soft targets.
    gaussian: uniform dequantisation of the 8-bit levels, so the continuous density bounds the
    discrete likelihood (see `discrete_nll_offset`).
    logistic: the 8-bit levels themselves (as level / 255): its probabilities are discrete.
    """
    if likelihood == "bernoulli":
        if not binarize:
            return images
        if generator is None:
            return torch.bernoulli(images)
        return torch.bernoulli(images.cpu(), generator=generator).to(images.device)
    levels = torch.round(images * (PIXEL_LEVELS - 1))
    if likelihood == "logistic":
        return levels / (PIXEL_LEVELS - 1)
    noise = (
        torch.rand(images.shape, device=images.device)
        if generator is None
        else torch.rand(images.shape, generator=generator).to(images.device)
    )
    return (levels + noise) / PIXEL_LEVELS


def discretized_logistic_log_prob(target: Tensor, mean: Tensor, log_scale: Tensor) -> Tensor:
    """log P(level) per pixel value of a logistic(mean, scale) binned into the 256 levels.

    `target` holds level / 255 (in [0, 1], like `mean`); each level owns the interval of half
    a level either side, and the two end levels own the tails (PixelCNN++, Salimans et al.
    2017), so the 256 probabilities sum to 1 and no dequantisation offset is needed. With
    a = (x + h − μ)/s and b = (x − h − μ)/s, σ(a) − σ(b) = σ(a)·σ(−b)·(1 − e^(b−a)): its log is
    computed from log-sigmoids and expm1, exact and finite for any mean and scale.
    """
    half_bin = 0.5 / (PIXEL_LEVELS - 1)
    inv_scale = torch.exp(-log_scale)
    upper = (target - mean + half_bin) * inv_scale
    lower = (target - mean - half_bin) * inv_scale
    log_cdf_upper = nn.functional.logsigmoid(upper)  # log P(X ≤ x + h): the lowest level's bin
    log_sf_lower = nn.functional.logsigmoid(-lower)  # log P(X > x − h): the highest level's bin
    log_bin = log_cdf_upper + log_sf_lower + torch.log(-torch.expm1(-2 * half_bin * inv_scale))
    return torch.where(target <= 0.0, log_cdf_upper, torch.where(target >= 1.0, log_sf_lower, log_bin))


def log_likelihood(target: Tensor, decoded: Tensor, likelihood: Likelihood, log_scale: Tensor | None) -> Tensor:
    """log p(target | decoded) summed over (C, H, W): shape (B,).

    `decoded` holds Bernoulli logits, Gaussian means before a sigmoid, or (logistic) the means
    before a sigmoid stacked over the per-pixel log-scales along the channels; `log_scale` is
    the per-channel Gaussian log standard deviation.
    """
    if likelihood == "bernoulli":
        per_pixel = -nn.functional.binary_cross_entropy_with_logits(decoded, target, reduction="none")
    elif likelihood == "logistic":
        mean_logits, pixel_log_scale = decoded.chunk(2, dim=1)
        per_pixel = discretized_logistic_log_prob(
            target,
            torch.sigmoid(mean_logits),
            (pixel_log_scale + LOGISTIC_LOG_SCALE_SHIFT).clamp(*LOGISTIC_LOG_SCALE_RANGE),
        )
    else:
        assert log_scale is not None
        scale = log_scale.view(1, -1, 1, 1)
        mean = torch.sigmoid(decoded)
        per_pixel = -0.5 * ((target - mean) / scale.exp()).pow(2) - scale - 0.5 * math.log(2 * math.pi)
    return per_pixel.flatten(1).sum(1)


def discrete_nll_offset(likelihood: Likelihood, image_shape: tuple[int, int, int]) -> float:
    """Nats to add to a dequantised Gaussian NLL so it bounds the NLL of the 8-bit data.

    -log P(x) ≤ E_u[-log p((x + u) / 256)] + D·log 256, where D is the number of pixel values.
    Bernoulli and discretized-logistic probabilities are already discrete: no offset.
    """
    if likelihood != "gaussian":
        return 0.0
    return math.prod(image_shape) * math.log(PIXEL_LEVELS)


def decoded_mean(decoded: Tensor, likelihood: Likelihood = "bernoulli") -> Tensor:
    """The image in [0, 1] a decoder output stands for (every likelihood's mean goes through a
    sigmoid; the logistic's log-scales, its second half of channels, are dropped)."""
    if likelihood == "logistic":
        decoded = decoded.chunk(2, dim=1)[0]
    return torch.sigmoid(decoded)


# --- registry ------------------------------------------------------------------------------------


# What promotion compares on the test split, per family: (metric, mode).
PRIMARY_METRICS: dict[str, tuple[str, str]] = {"gan": ("fid", "min"), "vae": ("nll", "min"), "rvae": ("ssim", "max")}
# What training reports at each checkpoint on the val split (what a search ranks trials by).
VALIDATION_METRICS: dict[str, str] = {"gan": "val_fid", "vae": "val_nll_bound", "rvae": "val_nll_bound"}


@dataclass(frozen=True)
class ModelSpec:
    name: str
    family: Family
    data_kind: DataKind
    config_cls: type
    model_cls: type[GenerativeModel]
    convolutional: bool = True  # channels_last pays on a GPU

    @property
    def adversarial(self) -> bool:
        """A generator trained against a discriminator (two networks, two optimisers)."""
        return self.family == "gan"

    @property
    def primary_metric(self) -> tuple[str, str]:
        """(test metric, min | max) that promotion compares."""
        return PRIMARY_METRICS[self.family]

    @property
    def validation_metrics(self) -> tuple[str, ...]:
        """The val_ metrics training reports for this model (val_fid needs images)."""
        likelihood = ("val_nll_bound",) if self.family in ("vae", "rvae") else ()
        return likelihood + (("val_fid",) if self.data_kind == "images" else ())

    @property
    def validation_metric(self) -> str:
        """The val_ metric a search ranks this model's trials by, by default."""
        return VALIDATION_METRICS[self.family]


MODEL_REGISTRY: dict[str, ModelSpec] = {}


def register_model(
    name: str, *, family: Family, data_kind: DataKind, config_cls: type, convolutional: bool = True
) -> Callable[[type[GenerativeModel]], type[GenerativeModel]]:
    def decorator(model_cls: type[GenerativeModel]) -> type[GenerativeModel]:
        if name in MODEL_REGISTRY:
            raise RuntimeError(f"model {name!r} is registered twice")
        model_cls.registry_name = name
        MODEL_REGISTRY[name] = ModelSpec(name, family, data_kind, config_cls, model_cls, convolutional)
        return model_cls

    return decorator


def model_spec(name: str) -> ModelSpec:
    try:
        return MODEL_REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(MODEL_REGISTRY))
        raise ConfigError(f"unknown model {name!r} (known: {known})") from None


@functools.lru_cache(maxsize=64)
def weight_count(name: str, config_json: str) -> int:
    """Parameters and buffers of model `name` with the config `config_json` (its typed config as
    JSON), counted on the meta device: nothing is allocated, whatever the sizes."""
    spec = model_spec(name)
    config: Any = config_from_dict(spec.config_cls, json.loads(config_json), where="model")
    try:
        with torch.device("meta"):
            model = spec.model_cls(config)
    except GenimgError:
        raise
    except (RuntimeError, TypeError, ValueError, OverflowError) as exc:  # sizes past what torch can hold
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"model {name} ({size_settings(config)}) cannot be built: {first_line}") from None
    return sum(tensor.numel() for tensor in [*model.parameters(), *model.buffers()])


def size_settings(config: Any) -> str:
    """The config's integer settings that differ from their defaults ('model.width=100000'): what
    made a model large; every integer setting when none differs."""
    sized = []
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        if (
            not isinstance(value, (int, tuple))
            or isinstance(value, bool)
            or (isinstance(value, tuple) and not all(isinstance(v, int) for v in value))
        ):
            continue
        shown = list(value) if isinstance(value, tuple) else value
        sized.append((value != field.default, f"model.{field.name}={shown}"))
    changed = [text for differs, text in sized if differs]
    return ", ".join(changed or [text for _, text in sized])


def check_model_memory(
    name: str, config: Any, bytes_per_weight: int, hint: str, error: type[GenimgError] = ConfigError, where: str = ""
) -> None:
    """Refuse a model config whose weights alone need more memory than this machine can spare
    (genimg.limits), before the module is built."""
    weights = weight_count(name, json.dumps(config_to_dict(config), sort_keys=True))
    check_memory(
        f"{where}model {name} with {size_settings(config)} ({weights:,} weights)",
        weights * bytes_per_weight,
        hint,
        error,
    )


def build_model(name: str, config: dict[str, Any] | None = None) -> GenerativeModel:
    """Build a registered model from a plain config dict (validated; unknown keys refused)."""
    spec = model_spec(name)
    typed: object = config_from_dict(spec.config_cls, config or {}, where="model")
    return spec.model_cls(typed)


# --- save / load ---------------------------------------------------------------------------------


def save_model(model: GenerativeModel, directory: str | Path) -> Path:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    description = {
        "format": MODEL_FORMAT,
        "model": model.registry_name,
        "config": config_to_dict(model.config),
    }
    weights = {key: value.detach().cpu().contiguous() for key, value in model.state_dict().items()}
    save_file(weights, str(directory / MODEL_WEIGHTS_FILE))
    # Checked on every load: weights swapped or altered beside their config are refused.
    description["weights_sha256"] = file_sha256(directory / MODEL_WEIGHTS_FILE)
    (directory / MODEL_CONFIG_FILE).write_text(json.dumps(description, indent=2) + "\n")
    return directory


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_model_description(directory: str | Path) -> dict[str, Any]:
    directory = Path(directory)
    path = directory / MODEL_CONFIG_FILE
    if not directory.is_dir():
        raise GenimgError(f"model folder not found: {directory}")
    if not path.is_file():
        raise GenimgError(f"not a genimg model folder (no {MODEL_CONFIG_FILE}): {directory}")
    try:
        description = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise GenimgError(f"corrupt {path}: {exc}") from exc
    if not isinstance(description, dict) or description.get("format") != MODEL_FORMAT:
        raise GenimgError(f"{path} is not a {MODEL_FORMAT} description")
    return description


def check_weights(weights_path: Path, description: dict[str, Any], expected_sha256: str | None = None) -> None:
    """Refuse weights whose sha256 is not the one their model.json records (or `expected_sha256`)."""
    recorded = description.get("weights_sha256")
    if not recorded and not expected_sha256:
        return
    actual = file_sha256(weights_path)
    if recorded and actual != recorded:
        raise GenimgError(
            f"weights {weights_path} do not match the sha256 their {MODEL_CONFIG_FILE} records "
            f"({recorded[:12]}…, the file has {actual[:12]}…): corrupt or replaced; not loaded"
        )
    if expected_sha256 and actual != expected_sha256:
        raise GenimgError(
            f"weights {weights_path} are not the ones registered (sha256 {expected_sha256[:12]}… "
            f"recorded at registration, the file has {actual[:12]}…); not loaded"
        )


def load_model(
    directory: str | Path, device: str | torch.device = "cpu", expected_sha256: str | None = None
) -> GenerativeModel:
    """The model of a folder, its weights checked against the sha256 its model.json records
    (folders written before that was recorded load unchecked) and against `expected_sha256`
    (what a registry recorded for them) when given."""
    directory = Path(directory)
    description = read_model_description(directory)
    spec = model_spec(description["model"])
    typed: Any = config_from_dict(spec.config_cls, description["config"], where="model")
    check_model_memory(
        spec.name,
        typed,
        LOADING_BYTES_PER_WEIGHT,
        "not loaded (is its config altered?)",
        GenimgError,
        where=f"{directory / MODEL_CONFIG_FILE}: ",
    )
    model = spec.model_cls(typed)
    weights_path = directory / MODEL_WEIGHTS_FILE
    if not weights_path.is_file():
        raise GenimgError(f"missing weights {weights_path}")
    check_weights(weights_path, description, expected_sha256)
    try:
        weights = load_file(str(weights_path), device=str(device))
        model.load_state_dict(weights, strict=True)
    except Exception as exc:  # safetensors raises its own error type for corrupt files
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise GenimgError(f"cannot load weights {weights_path}: {first_line}") from exc
    return model.to(device)
