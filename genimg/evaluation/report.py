"""What a person looks at after an evaluation: sample grid or continuation GIF, loss curves,
and a Markdown + HTML report with the metric table, all in one folder."""

from __future__ import annotations

import base64
import html
import json
import re
from pathlib import Path

import torch

from genimg.evaluation.evaluate import Evaluation
from genimg.evaluation.grids import save_image_grid, save_sequence_gif, save_sequence_strips
from genimg.evaluation.reliability import describe

LossHistory = dict[str, list[tuple[int, float]]]  # metric name → (step, value) points
MARKERS_UP_TO = 50  # points per series drawn with markers


# A sequence model's scores per predicted frame: plotted (some 140 values), not listed.
FRAME_METRIC = re.compile(
    r"(?P<metric>mse|mae|ssim|psnr)(?P<kind>|_best_of_k|_copy_last_baseline)_frame_(?P<frame>\d+)"
)
KIND_LABELS = {"": "model (mean of K)", "_best_of_k": "model (best of K)", "_copy_last_baseline": "copy last frame"}
LOWER_IS_BETTER = ("fid", "kid_mean", "nll", "nll_bound_per_frame", "bits_per_dim", "mse", "mae")
HIGHER_IS_BETTER = ("ssim", "psnr", "precision", "recall", "density", "coverage", "class_consistency")


def better(metric: str) -> str:
    """'lower is better' / 'higher is better' for a score (and its best-of-K and baseline rows)."""
    base = re.sub(r"(_best_of_k|_copy_last_baseline)?(_frame_\d+)?$", "", metric)
    if base in LOWER_IS_BETTER:
        return "lower is better"
    return "higher is better" if base in HIGHER_IS_BETTER else ""


def save_per_frame(metrics: dict[str, float], path: Path) -> Path | None:
    """One panel per sequence score: the model, its best of K and the copy-last baseline by frame."""
    series: dict[str, dict[str, list[tuple[int, float]]]] = {}
    for name, value in metrics.items():
        match = FRAME_METRIC.fullmatch(name)
        if match:
            series.setdefault(match["metric"], {}).setdefault(KIND_LABELS[match["kind"]], []).append(
                (int(match["frame"]), value)
            )
    if not series:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(series), figsize=(4 * len(series), 3), squeeze=False)
    for axis, (metric, lines) in zip(axes.flat, sorted(series.items()), strict=True):
        for label, points in sorted(lines.items()):
            frames, values = zip(*sorted(points), strict=True)
            axis.plot(frames, values, marker="o", markersize=3, linewidth=1, label=label)
        axis.set_title(f"{metric} per frame ({better(metric)})", fontsize=9)
        axis.set_xlabel("frame", fontsize=8)
        axis.tick_params(labelsize=7)
    axes.flat[0].legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def data_uri(path: Path) -> str:
    """The image itself in the page: MLflow's artifact viewer shows report.html alone, so a
    relative src finds nothing."""
    kind = "gif" if path.suffix.lower() == ".gif" else "png"
    return f"data:image/{kind};base64,{base64.b64encode(path.read_bytes()).decode()}"


def save_loss_curves(history: LossHistory, path: Path) -> Path | None:
    if not any(history.values()):
        return None
    import matplotlib

    matplotlib.use("Agg")  # no display on servers
    import matplotlib.pyplot as plt

    names = [name for name, points in sorted(history.items()) if points]
    columns = min(3, len(names))
    rows = -(-len(names) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4 * columns, 2.8 * rows), squeeze=False)
    for axis, name in zip(axes.flat, names, strict=False):
        steps, values = zip(*history[name], strict=True)
        # Markers while points are few: a line through one point draws nothing.
        axis.plot(steps, values, linewidth=1, marker="o" if len(steps) <= MARKERS_UP_TO else None, markersize=3)
        axis.set_title(name, fontsize=9)
        axis.set_xlabel("step", fontsize=8)
        axis.tick_params(labelsize=7)
    for axis in list(axes.flat)[len(names) :]:
        axis.axis("off")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def format_value(value: float) -> str:
    return f"{value:.4g}" if abs(value) < 1e5 else f"{value:.3e}"


def write_report(evaluation: Evaluation, folder: Path, *, title: str, history: LossHistory | None = None) -> list[Path]:
    """Write the report files into `folder`; returns them (report.md first)."""
    folder.mkdir(parents=True, exist_ok=True)
    images: list[tuple[str, Path]] = []
    if evaluation.continuations is not None and evaluation.ground_truth is not None:
        # Rows alternate: ground truth, then the model's best continuation of its first frames.
        pairs = torch.stack([evaluation.ground_truth, evaluation.continuations], 1).flatten(0, 1)
        images.append(
            (
                "Continuations (odd rows: ground truth, even rows: model)",
                save_sequence_gif(pairs, folder / "continuations.gif"),
            )
        )
        images.append(("Continuations, frame by frame", save_sequence_strips(pairs, folder / "continuations.png")))
        images.append(("Generated sequences", save_sequence_strips(evaluation.samples, folder / "samples.png")))
    else:
        images.append(("Samples", save_image_grid(evaluation.samples, folder / "samples.png")))
    per_frame = save_per_frame(evaluation.metrics, folder / "per_frame.png")
    if per_frame is not None:
        images.append(("Scores per predicted frame", per_frame))
    curves = save_loss_curves(history or {}, folder / "loss_curves.png")
    if curves is not None:
        images.append(("Training curves", curves))
    summary = evaluation.as_dict()
    (folder / "metrics.json").write_text(json.dumps(summary, indent=2) + "\n")
    rows = [
        (
            name,
            format_value(value),
            better(name),
            describe(evaluation.reliability[name]) if name in evaluation.reliability else "",
        )
        for name, value in sorted(evaluation.metrics.items())
        if not FRAME_METRIC.fullmatch(name)
    ]
    facts = [
        ("model", evaluation.model),
        ("dataset", f"{evaluation.dataset} ({evaluation.split} split)"),
        ("generated samples", str(evaluation.num_samples)),
        ("real records", str(evaluation.num_real)),
        ("seed", str(evaluation.seed)),
        ("features", f"{evaluation.features['name']} (weights sha256 {evaluation.features['weights_sha256'][:12]})"),
        *[(key, str(value)) for key, value in evaluation.settings.items()],
    ]
    note = evaluation.features.get("note")
    markdown = [f"# {title}", ""]
    markdown += [f"- **{key}**: {value}" for key, value in facts]
    markdown += ([f"- **note**: {note}"] if note else []) + [
        "",
        "| metric | value | better | spread, n, reliability |",
        "| --- | ---: | --- | --- |",
    ]
    markdown += [f"| {name} | {value} | {direction} | {note} |" for name, value, direction, note in rows] + [""]
    for caption, path in images:
        markdown += [f"## {caption}", "", f"![{caption}]({path.name})", ""]
    report = folder / "report.md"
    report.write_text("\n".join(markdown))
    page = [
        f"<!doctype html><meta charset='utf-8'><title>{html.escape(title)}</title>",
        f"<h1>{html.escape(title)}</h1><ul>",
    ]
    page += [f"<li><b>{html.escape(key)}</b>: {html.escape(value)}</li>" for key, value in facts]
    page += ([f"<li><b>note</b>: {html.escape(note)}</li>"] if note else []) + ["</ul><table>"]
    page += [
        f"<tr><td>{html.escape(name)}</td><td align=right>{value}</td><td>{direction}</td><td>{html.escape(note)}</td></tr>"
        for name, value, direction, note in rows
    ]
    page.append("</table>")
    for caption, path in images:
        page.append(f"<h2>{html.escape(caption)}</h2><img src='{data_uri(path)}' alt='{html.escape(caption)}'>")
    (folder / "report.html").write_text("\n".join(page) + "\n")
    return [report, folder / "report.html", folder / "metrics.json", *[path for _, path in images]]
