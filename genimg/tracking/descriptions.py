"""The Markdown description of a model version: what MLflow's version page shows first (its tags
table shows only a few of the thirty genimg writes). Written at registration, its promotion
section rewritten by each decision about the version."""

from __future__ import annotations

from collections.abc import Mapping

from genimg.evaluation.reliability import headline_metrics
from genimg.tracking import tags as tag_names

PROMOTION_HEADING = "## Promotion"


def version_description(name: str, version_tags: Mapping[str, str], report: str) -> str:
    """Test metrics, dataset@version, evaluation settings, the report, and (not yet) a decision."""
    evaluation = {
        k[len(tag_names.EVAL_PREFIX) :]: v for k, v in version_tags.items() if k.startswith(tag_names.EVAL_PREFIX)
    }
    metrics = {k[len("metric.") :]: float(v) for k, v in evaluation.items() if k.startswith("metric.")}
    rows = "\n".join(f"| {metric} | {value:.5g} |" for metric, value in sorted(headline_metrics(metrics).items()))
    lines = [
        f"genimg {version_tags.get(tag_names.MODEL, '')} generator from training run "
        f"`{version_tags.get(tag_names.RUN_ID, '')}` on `{version_tags.get(tag_names.DATASET, '')}`.",
        "",
        "## Test evaluation",
        f"`{evaluation.get('dataset', '')}` test split: {evaluation.get('num_samples', '?')} generated vs "
        f"{evaluation.get('num_real', '?')} real images, seed {evaluation.get('seed', '?')}, "
        f"{evaluation.get('features', '?')} features (sha256 {evaluation.get('features_sha256', '')[:12]}); "
        f"settings `{evaluation.get('settings', '')}`.",
        "",
        "| metric | value |",
        "|---|---|",
        rows,
        "",
        f"Report: `{report}`",
        "",
        PROMOTION_HEADING,
        f"Not decided yet: `genimg promote {name}`.",
    ]
    return "\n".join(lines)


def with_decision(description: str, decision: str) -> str:
    """`description` with its promotion section saying `decision` (a version registered before
    descriptions existed gets the section appended)."""
    kept = description.split(PROMOTION_HEADING, 1)[0].rstrip()
    return f"{kept}\n\n{PROMOTION_HEADING}\n{decision}" if kept else f"{PROMOTION_HEADING}\n{decision}"
