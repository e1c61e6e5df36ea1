"""How much memory a setting may ask for, checked before anything is allocated.

An absurd size (`train.shuffle_buffer=1e10`, a model of width 10⁵, a file whose header claims
10¹² records) is refused in one line that names the setting, its value, the bytes it would take
and the limit, instead of a MemoryError traceback or the machine's memory running out. The limit
is a fraction of the memory this machine (or its container) has available when the check runs;
`GENIMG_MEMORY_LIMIT` (bytes, or with a K/M/G/T suffix) sets another. The estimates are lower
bounds of what the setting costs, so only sizes that cannot work are refused.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from genimg.errors import ConfigError, GenimgError

MEMORY_LIMIT_ENV = "GENIMG_MEMORY_LIMIT"
# Of the memory available: the rest is left for the copies and activations the estimates leave out.
MEMORY_FRACTION = 0.5
CGROUP_MEMORY = Path("/sys/fs/cgroup")
SIZE_TEXT = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([KMGT]?)i?B?\s*", re.IGNORECASE)
UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}


def format_bytes(count: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if count < 1024 or unit == "TiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    raise AssertionError("unreachable")


def available_memory_bytes() -> int:
    """The memory this process could still get: the machine's available memory, or less where a
    cgroup (a container) limits it."""
    import psutil

    available = int(psutil.virtual_memory().available)
    try:
        limit_text = (CGROUP_MEMORY / "memory.max").read_text().strip()
        used = int((CGROUP_MEMORY / "memory.current").read_text().strip())
    except (OSError, ValueError):
        return available
    if limit_text == "max":
        return available
    return max(0, min(available, int(limit_text) - used))


def memory_limit() -> tuple[int, str]:
    """(the bytes one setting may take, where that limit comes from)."""
    configured = os.environ.get(MEMORY_LIMIT_ENV, "").strip()
    if configured:
        found = SIZE_TEXT.fullmatch(configured)
        if found is None:
            raise GenimgError(f"invalid {MEMORY_LIMIT_ENV}={configured!r} (expected bytes, e.g. 8G or 8589934592)")
        return int(float(found[1]) * UNITS[found[2].upper()]), f"set by {MEMORY_LIMIT_ENV}"
    available = available_memory_bytes()
    return int(available * MEMORY_FRACTION), (
        f"{MEMORY_FRACTION:.0%} of the {format_bytes(available)} available; {MEMORY_LIMIT_ENV} sets another"
    )


def check_memory(setting: str, estimated_bytes: int, hint: str, error: type[GenimgError] = ConfigError) -> None:
    """Refuse `setting` ('train.batch_size=100000000', 'FILE: 10¹² records') when it needs more
    memory than the limit; `hint` says what to do instead."""
    limit, source = memory_limit()
    if estimated_bytes > limit:
        raise error(
            f"{setting} needs about {format_bytes(estimated_bytes)} of memory, more than the "
            f"{format_bytes(limit)} limit ({source}); {hint}"
        )
