"""The short human summaries `genimg` prints for each command's outcome (with --json it prints
the outcome itself instead)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from genimg.evaluation.reliability import SPREADS, describe, headline_metrics
from genimg.feedback import format_losses


def format_rate(images_per_second: float) -> str:
    # A run of one step (or one resumed at its end) has no timed step: no rate to show.
    return f"{images_per_second:.0f} img/s" if images_per_second > 0 else "no steady-state rate: too few steps"


def describe_evaluation(evaluation: Mapping[str, Any] | None) -> str:
    if not evaluation:
        return ""
    if "error" in evaluation:
        return f"\nevaluation: failed ({evaluation['error']})"
    shown = headline_metrics(evaluation["metrics"])
    return (
        f"\nevaluation: {evaluation['dataset']} {evaluation['split']} split, "
        f"{evaluation['features']['name']} features: {format_losses(shown)}"
    )


def training(payload: Mapping[str, Any]) -> str:
    rejected = payload["rejected"]
    return (
        f"trained {payload['model']} on {payload['dataset']} ({payload['records']} records"
        f"{f', {len(rejected)} rejected' if rejected else ''}): "
        f"step {int(payload['metrics'].get('step', 0))} in {payload['seconds']:.1f} s "
        f"({format_rate(payload['images_per_second'])}); {format_losses(payload['metrics'])}\n"
        f"run:        {payload['run_name']} (MLflow run {payload['run_id']})"
        + (f", {payload['restarts']} restart(s)" if payload["restarts"] else "")
        + f"\ncheckpoint: {payload['checkpoint']}"
        + (f"\nexported:   {payload['export']}" if payload["export"] else "")
        + describe_evaluation(payload["evaluation"])
    )


def search(result: Mapping[str, Any], metric: str) -> str:
    lines = [
        f"search {result['search']}: {len(result['trials'])} trial(s) in {result['seconds']:.0f} s "
        f"(trials trained {result['trial_seconds']:.0f} s, {result['max_concurrent']} at a time); "
        f"MLflow parent run {result['parent_run_id']}"
    ]
    lines += [
        f"  {t['trial_id']}  {t['status']:<13} {metric}={t['metric'] if t['metric'] is None else format(t['metric'], '.5g')}"
        f"  step {t['step']}  {json.dumps(t['config'])}" + (f"  ({t['error']})" if t.get("error") else "")
        for t in result["trials"]
    ]
    best = result["best"]
    lines.append(
        f"best: {best['trial_id']} {metric}={best['value']:.5g} run {best['run_id']} {json.dumps(best['config'])}"
        if best
        else "best: none (every trial failed)"
    )
    lines += [f"note: {note}" for note in result["notes"]]
    return "\n".join(lines)


def retraining(payload: Mapping[str, Any]) -> str:
    lines = [f"flow run {payload['flow_run_id']}"]
    lines += [
        f"dataset {d['name']}@{d['version']} ({'reused' if d['reused'] else 'new version'})"
        for d in payload["datasets"]
    ]
    for model in payload["models"]:
        if model["error"]:
            lines.append(f"{model['model']}: FAILED — {model['error']}")
        else:
            lines.append(
                f"{model['model']}: models:/{model['name']}/{model['version']} "
                f"{'promoted to @champion' if model['promoted'] else 'not promoted'} — {model['reason']}"
            )
    return "\n".join(lines)


def evaluation(payload: Mapping[str, Any], target: str, split: str, seed: int) -> str:
    """Headline metrics with their spread and n, UNRELIABLE below their floor; the rest plain."""
    note = payload["features"].get("note")
    verdicts = payload.get("reliability") or {}
    metrics = payload["metrics"]
    spreads = {SPREADS[name] for name in verdicts if name in SPREADS}  # shown beside their metric
    lines = [
        f"  {name:<28} {value:.5g}" + (f"  {describe(verdicts[name])}" if name in verdicts else "")
        for name, value in metrics.items()
        if "_frame_" not in name and name not in spreads
    ]
    return (
        f"{'reused the recorded evaluation of' if payload.get('reused') else 'evaluated'} {payload['model']} "
        f"({target}) on {payload['dataset']} {split} split: "
        f"{payload['num_samples']} generated vs {payload['num_real']} real, seed {seed}\n"
        + "\n".join(lines)
        + f"\nfeatures: {payload['features']['name']} ({payload['features']['weights_sha256'][:12]})"
        + (f"\nnote: {note}" if note else "")
        + f"\nreport:   {payload['report']} (MLflow run {payload['run_id']})"
    )


def ingestion(result: Any, resolution: int | None, mode: str) -> str:
    counts = ", ".join(f"{split} {n}" for split, n in result.counts.items())
    lines = [
        f"{result.name}@{result.version}: {sum(result.counts.values())} records ({counts})",
        f"  {result.uri}",
        f"  every image {resolution}x{resolution} px ({mode})"
        if resolution
        else f"  records {'x'.join(map(str, result.record_shape))}",
        f"  unchanged: this version already exists, nothing uploaded; {result.name} now means this version"
        if result.reused
        else f"  uploaded {result.uploaded_objects} objects, {result.uploaded_bytes / 1e6:.2f} MB",
    ]
    if result.duplicates:
        lines.append(f"  {result.duplicates} duplicate records dropped")
    if result.rejected:
        lines.append(f"  {len(result.rejected)} rejected:")
        lines += [f"    {r.item}: {r.reason}" for r in result.rejected[:20]]
        if len(result.rejected) > 20:
            lines.append(f"    … and {len(result.rejected) - 20} more (see --json)")
    return "\n".join(lines)
