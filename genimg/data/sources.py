"""What `--dataset` accepts: a dataset in the store (NAME or NAME@VERSION) or any raw source.
The one place that reads such a string; `genimg.data.handle` resolves it into data.

A run records its data pinned: NAME@VERSION for the store, SOURCE@VERSION for a raw source (the
version `genimg ingest` would give its content). Both are accepted back wherever a dataset is;
a pinned raw source whose content has changed since is refused, naming both versions.
"""

from __future__ import annotations

import re
from pathlib import Path

from genimg.data.moving_mnist import MOVING_MNIST_PREFIX
from genimg.data.versions import looks_like_ref, parse_ref, version_prefix
from genimg.errors import DataError
from genimg.store import ObjectStore, open_store


def is_store_ref(source: str) -> bool:
    """builtin:…, moving-mnist:…, URIs and existing local paths are raw sources; NAME[@VERSION]
    names the store."""
    base, _ = split_pinned(source)  # a local folder `faces` pinned as faces@VERSION stays raw
    generated = base.startswith(("builtin:", MOVING_MNIST_PREFIX))
    raw = generated or "://" in base or Path(base).expanduser().exists()
    return not raw and looks_like_ref(source)


PINNED_RAW = re.compile(r"(?P<source>.+)@(?P<version>[0-9a-f]{12})")


def split_pinned(source: str) -> tuple[str, str | None]:
    """A raw source and the version it is pinned to: 'builtin:digits@291043e66cae' →
    ('builtin:digits', '291043e66cae'); anything unpinned (or a path that exists as written) → (source, None)."""
    found = PINNED_RAW.fullmatch(source)
    if found is None or Path(source).expanduser().exists():
        return source, None
    return found["source"], found["version"]


def check_pinned(source: str, pinned: str | None, actual: str) -> None:
    if pinned is not None and pinned != actual:
        raise DataError(f"{source}@{pinned}: the source's content changed since (it is now {source}@{actual})")


def pinned_version(ref: str) -> str:
    """The version a pinned reference names ('' when it names none)."""
    if is_store_ref(ref):
        return parse_ref(ref)[1] or ""
    return split_pinned(ref)[1] or ""


def dataset_location(ref: str, store: ObjectStore | None = None) -> str:
    """Where a pinned dataset lives: its version's folder in the store, or the raw source."""
    if is_store_ref(ref):
        name, version = parse_ref(ref)
        return (store or open_store()).uri_for(version_prefix(name, version or "latest").rstrip("/"))
    return split_pinned(ref)[0]
