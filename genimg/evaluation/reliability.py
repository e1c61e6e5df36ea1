"""When a sample-quality number is a measurement: the counts behind it, its spread, and a floor.

Distances between feature distributions (FID, KID, k-NN precision / recall) are biased and noisy
on few images: FID on 32 real images can score pure noise near 0. Below its floor of real *and*
generated images a metric is reported but marked unreliable, and promotion does not decide on it.
The floors:
- FID 2,000: its bias falls off as 1/n and the field reports it on 10k–50k images; below a few
  thousand, two models' FIDs differ by more than their quality does.
- KID 100: KID is unbiased, and its spread over subsets (kid_std) says how far to trust it, which
  is why it is the small-data metric (Bińkowski et al., 2018).
- precision / recall / density / coverage 1,000: k-NN radii (k = 5) on fewer points describe
  the sample more than the distribution.
Likelihoods (NLL, bits/dim) and the sequence protocol's per-frame scores are means over the
records scored, with a standard error as their spread: no floor.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

FLOORS = {"fid": 2000, "kid_mean": 100, "precision": 1000, "recall": 1000, "density": 1000, "coverage": 1000}


# metric: the metric holding its spread (a std over resamples or subsets, or a standard error)
SPREADS = {
    "fid": "fid_std",
    "kid_mean": "kid_std",
    **{
        name: f"{name}_se"
        for name in ("precision", "recall", "density", "coverage", "nll", "bits_per_dim", "mse", "mae", "ssim", "psnr")
    },
}


def reliability(
    metrics: dict[str, float], num_real: int, num_generated: int, scored_records: int | None = None
) -> dict[str, dict[str, Any]]:
    """For each headline metric present: reliable or not, the counts, the floor and the spread.
    Distances count the real and generated images compared; likelihoods and sequence scores
    the `scored_records` they average over (n_generated: None)."""
    verdicts: dict[str, dict[str, Any]] = {}
    for name, spread in SPREADS.items():
        if name not in metrics:
            continue
        floor = FLOORS.get(name)
        reliable = floor is None or (num_real >= floor and num_generated >= floor)
        counts = (num_real, num_generated) if floor is not None else (scored_records or num_real, None)
        verdict: dict[str, Any] = {
            "reliable": reliable,
            "n_real": counts[0],
            "n_generated": counts[1],
            "floor": floor,
            "spread": metrics.get(spread),
        }
        if not reliable:
            verdict["reason"] = below_floor(name, verdict)
        verdicts[name] = verdict
    return verdicts


def describe(verdict: dict[str, Any]) -> str:
    """'± spread, n = R real / G generated' (or 'n = N records') and, below the floor,
    '; UNRELIABLE: below the floor of F': how the report and the CLI show a verdict."""
    spread = f"± {verdict['spread']:.3g}, " if verdict.get("spread") is not None else ""
    counts = (
        f"{verdict['n_real']} real / {verdict['n_generated']} generated"
        if verdict["n_generated"] is not None
        else f"{verdict['n_real']} records"
    )
    text = f"{spread}n = {counts}"
    if not verdict["reliable"]:
        text += f"; UNRELIABLE: below the floor of {verdict['floor']}"
    return text


def below_floor(name: str, verdict: dict[str, Any]) -> str:
    return (
        f"{name} on {verdict['n_real']} real and {verdict['n_generated']} generated images is below its "
        f"floor of {verdict['floor']} of each: not a measurement"
    )


def unreliable_note(verdicts: dict[str, dict[str, Any]]) -> str | None:
    """One line naming the metrics below their floor, or None."""
    below = [name for name, verdict in verdicts.items() if not verdict["reliable"]]
    if not below:
        return None
    first = verdicts[below[0]]
    floors = ", ".join(f"{name} {verdicts[name]['floor']}" for name in below)
    return (
        f"unreliable: {', '.join(below)} (n_real={first['n_real']}, n_generated={first['n_generated']}; "
        f"floors: {floors})"
    )


def headline_metrics(metrics: Mapping[str, float]) -> dict[str, float]:
    """What a summary shows: not the per-frame values, the copy-last baseline or the spreads (an
    rvae evaluation has some 150 metrics; its report holds them all)."""
    spreads = set(SPREADS.values())
    return {
        name: value
        for name, value in metrics.items()
        if "_frame_" not in name and "copy_last" not in name and name not in spreads and not name.endswith("_se")
    }
