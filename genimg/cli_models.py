"""`genimg evaluate`, `register`, `promote` and `sample`: the commands on trained models
(registered on the app by `genimg.cli`, in the order `--help` lists them).

Each command imports its service when it runs, so `genimg --help` starts without torch."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from genimg import summaries
from genimg.cli_app import NOT_PROMOTED_EXIT, emit, one_line_errors
from genimg.errors import GenimgError
from genimg.evaluation.reliability import headline_metrics


@one_line_errors
def evaluate(
    target: Annotated[
        str, typer.Argument(help="an MLflow RUN_ID, models:/NAME/VERSION, models:/NAME@ALIAS or a model folder")
    ],
    dataset: Annotated[
        str | None,
        typer.Option("--dataset", "-d", help="NAME[@VERSION] or a raw source; default: what the run trained on"),
    ] = None,
    split: Annotated[str, typer.Option("--split", help="train, val or test")] = "test",
    samples: Annotated[int, typer.Option("--samples", "-n", help="generated images (sequences for rvae)")] = 1000,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    nll_k: Annotated[int, typer.Option("--nll-k", help="importance samples per image for the VAE's NLL")] = 100,
    best_of: Annotated[int, typer.Option("--best-of", help="continuations per test sequence (rvae)")] = 5,
    context_frames: Annotated[
        int | None, typer.Option("--context-frames", help="frames given before continuing (rvae); default half")
    ] = None,
    features: Annotated[str, typer.Option("--features", help="auto, inception or classifier")] = "auto",
    extractor_steps: Annotated[
        int | None,
        typer.Option(
            "--extractor-steps",
            help="training steps of the dataset's own feature network, when it is not cached "
            "yet (default: a budget from the train split's size, stopping early)",
        ),
    ] = None,
    out: Annotated[Path | None, typer.Option("--out", help="also write the report files here")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object", metavar="")] = False,
) -> None:
    """Score a trained model on a dataset split: FID/KID, precision/recall, NLL, sequence SSIM/PSNR."""
    from genimg.config import config_from_dict
    from genimg.evaluation.config import EvalConfig
    from genimg.services.evaluate import evaluate_target

    if split not in ("train", "val", "test"):
        raise GenimgError(f"--split must be train, val or test, got {split!r}")
    config = config_from_dict(
        EvalConfig,
        {
            "samples": samples,
            "seed": seed,
            "nll_k": nll_k,
            "best_of": best_of,
            "context_frames": context_frames,
            "features": features,
            "extractor_steps": extractor_steps,
        },
        where="eval",
    )
    payload = evaluate_target(target, dataset, config, split=split, out_dir=out)
    emit(as_json, payload, summaries.evaluation(payload, target, split, seed))


@one_line_errors
def register(
    run_id: Annotated[str, typer.Argument(help="the MLflow run id of a finished genimg training run")],
    name: Annotated[
        str | None, typer.Option("--name", help="registered model name (default genimg-<dataset>-<model>)")
    ] = None,
    samples: Annotated[
        int | None,
        typer.Option(
            "--samples",
            "-n",
            help="generated images for the test evaluation (default: the run's eval.samples, else 1000)",
        ),
    ] = None,
    seed: Annotated[int | None, typer.Option("--seed")] = None,
    nll_k: Annotated[int | None, typer.Option("--nll-k", help="importance samples per image for the VAE's NLL")] = None,
    best_of: Annotated[int | None, typer.Option("--best-of", help="continuations per test sequence (rvae)")] = None,
    features: Annotated[str | None, typer.Option("--features", help="auto, inception or classifier")] = None,
    extractor_steps: Annotated[
        int | None,
        typer.Option(
            "--extractor-steps",
            help="training steps of the dataset's own feature network, when it is not cached "
            "yet (default: a budget from the train split's size, stopping early)",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object", metavar="")] = False,
) -> None:
    """Register a training run's model as a new MLflow model version (pyfunc, with lineage tags).
    Its test evaluation follows the run's eval: section and these options; one already recorded
    with the same settings is reused."""
    from genimg.feedback import format_losses
    from genimg.services.register import register as register_run
    from genimg.tracking import tags

    payload = register_run(
        run_id,
        name,
        evaluation={
            "samples": samples,
            "seed": seed,
            "nll_k": nll_k,
            "best_of": best_of,
            "features": features,
            "extractor_steps": extractor_steps,
        },
    )
    prefix = tags.EVAL_PREFIX + "metric."
    metrics = {k[len(prefix) :]: float(v) for k, v in payload["tags"].items() if k.startswith(prefix)}
    emit(
        as_json,
        payload,
        f"registered {payload['model_uri']} from run {run_id} "
        f"(dataset {payload['tags'][tags.DATASET]}); test: {format_losses(headline_metrics(metrics))}",
    )


@one_line_errors
def promote(
    model: Annotated[str, typer.Argument(help="registered model name, e.g. genimg-digits-vae")],
    version: Annotated[
        int | None, typer.Option("--version", help="the challenger (default: the latest version)")
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="make it champion without comparing (the reason is recorded)", metavar="")
    ] = False,
    min_delta: Annotated[float, typer.Option("--min-delta", help="required improvement of the primary metric")] = 0.0,
    metric: Annotated[
        str | None,
        typer.Option("--metric", help="compare on this test metric instead (gan: fid, vae: nll, rvae: ssim)"),
    ] = None,
    mode: Annotated[str | None, typer.Option("--mode", help="min or max, with --metric")] = None,
    check: Annotated[
        bool,
        typer.Option(
            "--check", help=f"exit with status {NOT_PROMOTED_EXIT} when the challenger is not promoted", metavar=""
        ),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object", metavar="")] = False,
) -> None:
    """Move @champion to a version only if it beats the champion on the same evaluation.
    Exit status: 0 decided (promoted or not), 1 failed; with --check, 3 when not promoted."""
    from genimg.tracking.registry import promote as promote_version

    if mode is not None and mode not in ("min", "max"):
        raise GenimgError(f"--mode must be min or max, got {mode!r}")
    if min_delta < 0:
        raise GenimgError(f"--min-delta must be ≥ 0, got {min_delta}")
    payload = promote_version(model, version, force=force, min_delta=min_delta, metric=metric, mode=mode)
    verb = "promoted" if payload["promoted"] else "kept the champion"
    emit(as_json, payload, f"{model}: {verb} — {payload['reason']}")
    if check and not payload["promoted"]:
        raise typer.Exit(code=NOT_PROMOTED_EXIT)


@one_line_errors
def sample(
    model_dir: Annotated[
        str, typer.Argument(help="an exported model or checkpoint folder, or models:/NAME/VERSION | models:/NAME@ALIAS")
    ],
    output: Annotated[Path, typer.Option("--output", "-o", help="FILE.png (grid) or FILE.gif (sequences)")],
    n: Annotated[int, typer.Option("-n", "--num-samples", help="how many samples")] = 64,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    frames: Annotated[int | None, typer.Option("--frames", help="sequence length (sequence models)")] = None,
    classes: Annotated[
        list[str] | None,
        typer.Option(
            "--class",
            help="class-conditional models: this class (index or name), repeatable; the samples "
            "are split between the classes in order",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object", metavar="")] = False,
) -> None:
    """Draw samples from a trained model into a PNG grid or an animated GIF."""
    from genimg.services.sample import sample as draw_samples

    outcome = draw_samples(model_dir, output, n, seed=seed, frames=frames, classes=classes)
    emit(
        as_json,
        outcome.as_dict(),
        f"wrote {n} samples of {outcome.model} to {output}"
        + (f" (classes {', '.join(dict.fromkeys(outcome.classes))})" if outcome.classes else ""),
    )
