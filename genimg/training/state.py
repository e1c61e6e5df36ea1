"""Pickle-free serialisation of nested training state (optimiser state dicts, RNG states).

`flatten_state` splits any nesting of dicts, lists, tuples, tensors, numpy arrays and JSON
scalars into a JSON skeleton plus a flat {key: tensor} map for safetensors; `unflatten_state`
reverses it exactly (integer dict keys, tuples and dtypes included).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor


def flatten_state(obj: Any, tensors: dict[str, Tensor], path: str = "s") -> Any:
    if isinstance(obj, Tensor):
        tensors[path] = obj.detach().cpu().clone().contiguous()
        return {"__tensor__": path}
    if isinstance(obj, np.ndarray):
        # Kept as int64/float64 tensors: safetensors has no unsigned 32-bit type everywhere.
        wide = obj.astype(np.float64 if obj.dtype.kind == "f" else np.int64)
        tensors[path] = torch.from_numpy(np.ascontiguousarray(wide))
        return {"__ndarray__": path, "dtype": obj.dtype.str}
    if isinstance(obj, dict):
        return {
            "__dict__": [
                [key, flatten_state(value, tensors, f"{path}.{i}")] for i, (key, value) in enumerate(obj.items())
            ]
        }
    if isinstance(obj, tuple):
        return {"__tuple__": [flatten_state(v, tensors, f"{path}.{i}") for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [flatten_state(v, tensors, f"{path}.{i}") for i, v in enumerate(obj)]
    if isinstance(obj, np.generic):
        return obj.item()
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"cannot serialise {type(obj).__name__} at {path}")


def unflatten_state(skeleton: Any, tensors: dict[str, Tensor]) -> Any:
    if isinstance(skeleton, dict):
        if "__tensor__" in skeleton:
            return tensors[skeleton["__tensor__"]]
        if "__ndarray__" in skeleton:
            return tensors[skeleton["__ndarray__"]].numpy().astype(np.dtype(skeleton["dtype"]))
        if "__tuple__" in skeleton:
            return tuple(unflatten_state(v, tensors) for v in skeleton["__tuple__"])
        if "__dict__" in skeleton:
            return {key: unflatten_state(value, tensors) for key, value in skeleton["__dict__"]}
        raise ValueError(f"unknown state node {sorted(skeleton)}")
    if isinstance(skeleton, list):
        return [unflatten_state(v, tensors) for v in skeleton]
    return skeleton
