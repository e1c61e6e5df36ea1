"""The MLflow pyfunc of a genimg generator, logged from code (MLflow's models-from-code: this
file is the model; nothing is pickled). Its artifact `weights` is a genimg model folder
(model.json + model.safetensors), and the model's code travels with it (`code/genimg`), so
loading needs torch, numpy and safetensors, not genimg itself.

Input: one row (a dict, or a one-row DataFrame) with `num_samples` (int), `seed` (int,
optional); for class-conditional image models `class_labels` (optional string: one class, or
one per sample, comma-separated, each an index or a class name); for sequence models also
`num_frames` (int, optional) and `context` (optional .npy bytes of a uint8 array (N, k, C, H, W):
the first k frames to continue, N = num_samples; base64 text in JSON, as MLflow's `inputs` and
`dataframe_records` formats carry binary). Several rows are refused: one request per row.
Output: uint8 array N×C×H×W (images) or N×T×C×H×W (sequences), values 0–255.
Bad input is MLflow's INVALID_PARAMETER_VALUE with a one-line reason (HTTP 400 when served).
"""

from __future__ import annotations

import base64
import binascii
import io
import math
from typing import TYPE_CHECKING, Any, Protocol, cast

import mlflow
import numpy as np
import pandas as pd

# At runtime too, not under TYPE_CHECKING: MLflow resolves predict's hints (typing.get_type_hints)
# and reads the DataFrame input schema from them only when every name in them resolves.
from mlflow.pyfunc.model import PythonModel, PythonModelContext

if TYPE_CHECKING:
    from torch import Tensor


class ImageSampler(Protocol):
    """`sample` of every image model: class labels per sample (None: drawn from the seed)."""

    def sample(self, n: int, seed: int | None = None, labels: Tensor | None = None) -> Tensor: ...


class SequenceGenerator(Protocol):
    """`generate` of every sequence model: `context` holds the first frames to continue."""

    def generate(self, n: int, num_frames: int, seed: int | None = None, context: Tensor | None = None) -> Tensor: ...


def first_row(model_input: Any) -> dict[str, Any]:
    """The one row of a request: a one-row DataFrame, or a dict of values (or of one-item lists,
    as MLflow's `inputs` format gives them)."""
    if hasattr(model_input, "to_dict"):
        rows = model_input.to_dict("records")
        if not rows:
            raise ValueError("empty input: give num_samples")
        if len(rows) > 1:
            raise ValueError(f"one row per request, got {len(rows)}: send each row as its own request")
        return dict(rows[0])
    if isinstance(model_input, dict):
        row = {}
        for key, value in model_input.items():
            # A context may come as the frames array itself: only its object (bytes) form is a list.
            listed = isinstance(value, (list, tuple)) or (
                isinstance(value, np.ndarray) and (value.dtype == object or (value.ndim == 1 and key != "context"))
            )
            if listed and len(value) != 1:
                raise ValueError(f"{key}: one value per request, got {len(value)}: send each as its own request")
            row[key] = value[0] if listed else value
        return row
    raise ValueError(f"expected a dict or a DataFrame, got {type(model_input).__name__}")


NPY_MAGIC = b"\x93NUMPY"


def context_frames(value: Any) -> np.ndarray | None:
    """The frames to continue: .npy bytes, base64 text of them, or the array itself; never a pickle."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, np.ndarray) and value.dtype != object:
        return value
    if not isinstance(value, (str, bytes, bytearray)):
        raise ValueError(f"context: expected .npy bytes (base64 in JSON), got {type(value).__name__}")
    # MLflow's `inputs` format hands a binary column over as the base64 text's own bytes.
    if isinstance(value, str) or not bytes(value).startswith(NPY_MAGIC):
        try:
            value = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("context: expected .npy bytes (base64 in JSON), got neither") from None
    try:
        frames: np.ndarray = np.load(io.BytesIO(bytes(value)), allow_pickle=False)
    except ValueError as exc:
        raise ValueError(f"context: not a numeric .npy array ({exc})") from None
    return frames


def optional_int(value: Any) -> int | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return int(value)


class GenimgGenerator(PythonModel):
    def load_context(self, context: PythonModelContext) -> None:
        from genimg.models.base import load_model, model_spec

        self.model = load_model(context.artifacts["weights"])
        self.sequences = model_spec(self.model.registry_name).data_kind == "sequences"

    # The signature logged with the model is the input schema: MLflow checks and converts an
    # input to a DataFrame of its columns before predict sees it. A DataFrame hint is one MLflow
    # infers no schema from (it warns on every class definition when a hint is missing).
    def predict(
        self, context: PythonModelContext, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> np.ndarray:
        import torch
        from mlflow.exceptions import MlflowException

        from genimg.errors import GenimgError

        try:
            with torch.no_grad():  # not torch.set_grad_enabled: that would switch gradients off process-wide
                return self.generate(first_row(model_input))
        except (ValueError, GenimgError) as exc:
            # MLflow's scoring server answers this with HTTP 400 and the reason, no stack trace.
            raise MlflowException.invalid_parameter_value(str(exc)) from None

    def generate(self, row: dict[str, Any]) -> np.ndarray:
        import torch

        num_samples = optional_int(row.get("num_samples"))
        if num_samples is None or num_samples < 1:
            raise ValueError(f"num_samples must be an integer ≥ 1, got {row.get('num_samples')!r}")
        seed = optional_int(row.get("seed"))
        if self.sequences:
            frames = optional_int(row.get("num_frames")) or self.model.config.num_frames
            array = context_frames(row.get("context"))
            generator = cast(SequenceGenerator, self.model)
            if array is not None:
                if array.dtype != np.uint8 or array.ndim != 5 or len(array) != num_samples:
                    raise ValueError(
                        f"context: expected uint8 frames (num_samples={num_samples}, k, C, H, W), "
                        f"got {array.dtype} {tuple(array.shape)}"
                    )
                given = torch.from_numpy(np.ascontiguousarray(array)).float() / 255.0
                output = generator.generate(num_samples, frames, seed, context=given)
            else:
                output = generator.generate(num_samples, frames, seed)
        else:
            labels = self.class_labels(row.get("class_labels"), num_samples)
            output = cast(ImageSampler, self.model).sample(num_samples, seed=seed, labels=labels)
        return np.clip(np.rint(output.cpu().numpy() * 255.0), 0, 255).astype(np.uint8)

    def class_labels(self, given: Any, num_samples: int) -> Tensor | None:
        """`class_labels` of a conditional model: one class for every sample, or one per sample,
        each an index or a class name ("cat" or "3", "cat,dog,cat"); None draws them from the seed."""
        import torch

        from genimg.models.base import class_index

        if given is None or (isinstance(given, float) and math.isnan(given)) or given == "":
            return None
        items = [
            str(item).strip()
            for item in (given if isinstance(given, (list, tuple, np.ndarray)) else str(given).split(","))
        ]
        classes = [class_index(self.model, item) for item in items if item]
        if len(classes) == 1:
            classes *= num_samples
        if len(classes) != num_samples:
            raise ValueError(f"class_labels: give one class or one per sample ({num_samples}), got {len(classes)}")
        return torch.tensor(classes)


mlflow.models.set_model(GenimgGenerator())
