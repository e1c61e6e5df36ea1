"""The `genimg` command. Every command prints a short human summary, or with --json exactly one
JSON object on stdout; failures exit non-zero with a one-line reason on stderr."""

from __future__ import annotations

import json
import sys
import time
import uuid
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from genimg.errors import GenimgError, redact_credentials
from genimg.names import check_run_name

app = typer.Typer(
    name="genimg",
    help="Train, evaluate and promote generative image models (GAN, VAE, recurrent VAE).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

F = TypeVar("F", bound=Callable[..., Any])
NOT_PROMOTED_EXIT = 3  # `promote --check`: a decision against the challenger, for scripts


def fail(message: str) -> typer.Exit:
    typer.echo(f"error: {redact_credentials(message)}", err=True)
    return typer.Exit(code=1)


REAL_STDOUT: list[Any] = []


def one_line_errors(command: F) -> F:
    """One-line errors on stderr; with --json, stdout holds the JSON object and nothing else
    (anything libraries print meanwhile, Ray's node messages say, goes to stderr)."""

    @wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        saved = sys.stdout
        if kwargs.get("as_json"):
            REAL_STDOUT.append(saved)
            sys.stdout = sys.stderr
        try:
            return command(*args, **kwargs)
        except GenimgError as exc:
            raise fail(str(exc)) from None
        except KeyboardInterrupt:
            raise fail("interrupted") from None
        finally:
            if kwargs.get("as_json"):
                sys.stdout = saved
                REAL_STDOUT.pop()

    return wrapper  # type: ignore[return-value]


def emit(as_json: bool, payload: dict[str, Any], summary: str) -> None:
    if as_json:
        out = REAL_STDOUT[-1] if REAL_STDOUT else sys.stdout
        out.write(json.dumps(payload) + "\n")
        out.flush()
    else:
        typer.echo(summary)


def format_metrics(metrics: dict[str, float]) -> str:
    from genimg.feedback import format_losses

    return format_losses(metrics)


@app.command()
@one_line_errors
def train(
    model: Annotated[str, typer.Option("--model", "-m", help="gan-mlp, gan, gan-resnet, vae or rvae")],
    dataset: Annotated[str, typer.Option("--dataset", "-d", help="NAME[@VERSION] in the store, builtin:digits, builtin:moving-digits, moving-mnist:IDX[?…], a path or s3:// URI")],
    config: Annotated[Path | None, typer.Option("--config", "-c", help="YAML with model: and train: sections")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="override, e.g. model.latent_dim=32 or train.lr=1e-3")] = None,
    workers: Annotated[str, typer.Option("--workers", "-w", help="Ray Train workers: N, or MIN-MAX (elastic); 0 = in this process, without Ray")] = "1",
    gpu: Annotated[bool, typer.Option("--gpu", help="one GPU per worker, CUDA with bf16 autocast")] = False,
    cpus_per_worker: Annotated[int | None, typer.Option("--cpus-per-worker", help="default: the cluster's CPUs / workers")] = None,
    steps: Annotated[int | None, typer.Option("--steps", help="total optimisation steps")] = None,
    epochs: Annotated[float | None, typer.Option("--epochs", help="passes over the data (instead of --steps)")] = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size", help="per worker")] = None,
    seed: Annotated[int | None, typer.Option("--seed")] = None,
    max_failures: Annotated[int, typer.Option("--max-failures", help="worker-group restarts allowed")] = 3,
    run_name: Annotated[str | None, typer.Option("--run-name", help="names the run (checkpoints, MLflow); reuse with --resume")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="continue the run's latest checkpoint")] = False,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="export the final model to this folder")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
) -> None:
    """Train a model: on Ray Train (local Ray, or the cluster at RAY_ADDRESS), or in process."""
    from genimg.config import parse_overrides
    from genimg.feedback import TrainingProgress
    from genimg.models import model_spec
    from genimg.training.run import load_config_file, merge_sections

    model_spec(model)
    if steps is not None and epochs is not None:
        raise GenimgError("give --steps or --epochs, not both")
    if epochs is not None and epochs <= 0:
        raise GenimgError(f"--epochs must be > 0, got {epochs}")
    cli_train: dict[str, Any] = {
        key: value for key, value in
        {"steps": steps, "batch_size": batch_size, "seed": seed}.items() if value is not None
    }
    if gpu:
        cli_train.setdefault("precision", "bf16")
    sections = merge_sections(
        load_config_file(config) if config else {},
        parse_overrides(set_ or []),
        {"train": cli_train},
    )
    eval_config = end_of_training_eval_config(sections["eval"])
    if gpu and "channels_last" not in sections["train"] and model_spec(model).name != "gan-mlp":
        sections["train"]["channels_last"] = True
    name = run_name or f"{model}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
    check_run_name(name, "--run-name")
    from genimg.training.config import TrainConfig

    total_steps = None if epochs is not None else int(sections["train"].get("steps", TrainConfig.steps))
    progress = TrainingProgress(total_steps)
    if workers.strip() == "0":
        from genimg.tracking.local import train_in_process

        try:
            payload = train_in_process(model, dataset, sections, name, epochs, resume, output, gpu, progress.update)
        finally:
            progress.close()
    else:
        from genimg.distributed.trainer import parse_workers, train_distributed

        try:
            result = train_distributed(
                model, dataset, sections, workers=parse_workers(workers), use_gpu=gpu,
                cpus_per_worker=cpus_per_worker, run_name=name, resume=resume, epochs=epochs,
                max_failures=max_failures, export_dir=output, on_progress=progress.update,
            )
        finally:
            progress.close()
        payload = {
            "model": model, "dataset": result.dataset, "run_name": name, "run_id": result.run_id,
            "checkpoint": result.checkpoint, "export": result.export, "metrics": result.metrics,
            "restarts": result.restarts, "resumed_from_step": result.resumed_from_step,
            "workers": {str(rank): node for rank, node in result.workers.items()},
            "records": result.records, "rejected": result.rejected,
            "seconds": round(result.seconds, 3),
            "images_per_second": round(result.images_per_second, 1),
        }
    payload["evaluation"] = evaluate_after_training(payload, eval_config) if eval_config.at_end_of_training else None
    rejected = payload["rejected"]
    summary = (
        f"trained {model} on {payload['dataset']} ({payload['records']} records"
        f"{f', {len(rejected)} rejected' if rejected else ''}): "
        f"step {int(payload['metrics'].get('step', 0))} in {payload['seconds']:.1f} s "
        f"({format_rate(payload['images_per_second'])}); {format_metrics(payload['metrics'])}\n"
        f"run:        {payload['run_name']} (MLflow run {payload['run_id']})"
        + (f", {payload['restarts']} restart(s)" if payload["restarts"] else "")
        + f"\ncheckpoint: {payload['checkpoint']}"
        + (f"\nexported:   {payload['export']}" if payload["export"] else "")
        + describe_evaluation(payload["evaluation"])
    )
    emit(as_json, payload, summary)


def format_rate(images_per_second: float) -> str:
    # A run of one step (or one resumed at its end) has no timed step: no rate to show.
    return f"{images_per_second:.0f} img/s" if images_per_second > 0 else "no steady-state rate: too few steps"


def end_of_training_eval_config(values: dict[str, Any]) -> Any:
    from genimg.config import config_from_dict
    from genimg.evaluation.config import END_OF_TRAINING_DEFAULTS, EvalConfig

    return config_from_dict(EvalConfig, {**END_OF_TRAINING_DEFAULTS, **values}, where="eval")


def evaluate_after_training(payload: dict[str, Any], config: Any) -> dict[str, Any] | None:
    """The small validation-split evaluation every run carries. The run itself is complete by
    now, so a failure here is reported beside its result instead of failing the command."""
    if not payload.get("checkpoint"):
        return None
    from genimg.data.sources import open_splits
    from genimg.evaluation.evaluate import evaluate_model
    from genimg.feedback import phase
    from genimg.models import model_spec
    from genimg.tracking.evaluations import load_model_at, record_evaluation

    try:
        with phase(f"evaluating the trained model on the val split of {payload['dataset']} "
                   "(eval.at_end_of_training=false skips this)"):
            model = load_model_at(payload["checkpoint"])
            source = open_splits(payload["dataset"], kind=model_spec(model.registry_name).data_kind)
            evaluation = evaluate_model(model, source, "val", config)
        return record_evaluation(
            evaluation, log_run_id=payload["run_id"], training_run_id=payload["run_id"],
            title=f"Run {payload['run_name']}: {evaluation.model} on {evaluation.dataset} (val)",
        )
    except GenimgError as exc:
        typer.echo(f"warning: evaluation after training failed: {exc}", err=True)
        return {"error": str(exc)}


def describe_evaluation(evaluation: dict[str, Any] | None) -> str:
    if not evaluation:
        return ""
    if "error" in evaluation:
        return f"\nevaluation: failed ({evaluation['error']})"
    shown = {k: v for k, v in evaluation["metrics"].items() if "_frame_" not in k and "copy_last" not in k}
    return (f"\nevaluation: {evaluation['dataset']} {evaluation['split']} split, "
            f"{evaluation['features']['name']} features: {format_metrics(shown)}")


@app.command()
@one_line_errors
def tune(
    model: Annotated[str, typer.Option("--model", "-m", help="gan-mlp, gan, gan-resnet, vae or rvae")],
    dataset: Annotated[str, typer.Option("--dataset", "-d", help="NAME[@VERSION] in the store or a raw source")],
    trials: Annotated[int, typer.Option("--trials", help="configurations to try")] = 8,
    max_concurrent: Annotated[int | None, typer.Option("--max-concurrent", help="trials at once (default: as many as the cluster holds)")] = None,
    workers_per_trial: Annotated[int, typer.Option("--workers-per-trial", help="Ray Train workers of each trial")] = 1,
    cpus_per_worker: Annotated[int, typer.Option("--cpus-per-worker")] = 1,
    steps: Annotated[int, typer.Option("--steps", help="training steps of a trial that is not stopped early")] = 500,
    space: Annotated[Path | None, typer.Option("--space", help="search space YAML (default configs/tune-<model>.yaml)")] = None,
    metric: Annotated[str | None, typer.Option("--metric", help="overrides the space file's metric (val_nll_bound, val_fid)")] = None,
    mode: Annotated[str | None, typer.Option("--mode", help="min or max (with --metric)")] = None,
    config: Annotated[Path | None, typer.Option("--config", "-c", help="YAML with the fixed model: and train: settings")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="fixed override, e.g. train.batch_size=32")] = None,
    gpu: Annotated[bool, typer.Option("--gpu", help="one GPU per worker")] = False,
    name: Annotated[str | None, typer.Option("--name", help="names the search (MLflow parent run, Tune state); reuse with --resume")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="continue an interrupted search of this --name (unpickles Tune's state from the store: the store must be as trusted as the code)")] = False,
    seed: Annotated[int, typer.Option("--seed", help="seeds the sampling of configurations")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
) -> None:
    """Search hyperparameters with Ray Tune (ASHA); each trial is a tracked Ray Train run."""
    from dataclasses import replace

    from genimg.config import parse_overrides
    from genimg.distributed.tune import load_space, tune_search
    from genimg.models import model_spec
    from genimg.training.run import load_config_file, merge_sections

    model_spec(model)
    if resume and not name:
        raise GenimgError("--resume needs the --name of the search to continue")
    search = name or f"tune-{model}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
    check_run_name(search, "--name")
    search_space = load_space(model, space)
    if metric:
        search_space = replace(search_space, metric=metric, mode=mode or search_space.mode)
    elif mode:
        raise GenimgError("--mode goes with --metric")
    sections = merge_sections(load_config_file(config) if config else {}, parse_overrides(set_ or []))
    result = tune_search(
        model, dataset, sections, space=search_space, trials=trials, steps=steps, search=search,
        max_concurrent=max_concurrent, workers_per_trial=workers_per_trial, cpus_per_worker=cpus_per_worker,
        use_gpu=gpu, resume=resume, seed=seed,
    ).as_dict()
    lines = [f"search {search}: {len(result['trials'])} trial(s) in {result['seconds']:.0f} s "
             f"(trials trained {result['trial_seconds']:.0f} s, {result['max_concurrent']} at a time); "
             f"MLflow parent run {result['parent_run_id']}"]
    lines += [f"  {t['trial_id']}  {t['status']:<13} {search_space.metric}={t['metric'] if t['metric'] is None else format(t['metric'], '.5g')}"
              f"  step {t['step']}  {json.dumps(t['config'])}" + (f"  ({t['error']})" if t.get("error") else "")
              for t in result["trials"]]
    best = result["best"]
    lines.append(f"best: {best['trial_id']} {search_space.metric}={best['value']:.5g} run {best['run_id']} {json.dumps(best['config'])}"
                 if best else "best: none (every trial failed)")
    lines += [f"note: {note}" for note in result["notes"]]
    emit(as_json, result, "\n".join(lines))
    if best is None:
        raise typer.Exit(code=1)


@app.command()
@one_line_errors
def retrain(
    config: Annotated[Path | None, typer.Option("--config", "-c", help="retrain YAML (default configs/retrain.yaml)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
) -> None:
    """Run the retrain flow (Prefect): ingest, train, evaluate, register and promote each family."""
    from pipelines.retrain import load_retrain_config, retrain as retrain_flow

    load_retrain_config(config)  # a bad config fails before Prefect starts
    payload = retrain_flow(str(config) if config else None)
    lines = [f"flow run {payload['flow_run_id']}"]
    lines += [f"dataset {d['name']}@{d['version']} ({'reused' if d['reused'] else 'new version'})" for d in payload["datasets"]]
    for model in payload["models"]:
        if model["error"]:
            lines.append(f"{model['model']}: FAILED — {model['error']}")
        else:
            lines.append(f"{model['model']}: models:/{model['name']}/{model['version']} "
                         f"{'promoted to @champion' if model['promoted'] else 'not promoted'} — {model['reason']}")
    emit(as_json, payload, "\n".join(lines))
    if all(model["error"] for model in payload["models"]):
        raise typer.Exit(code=1)


@app.command()
@one_line_errors
def deploy(
    cron: Annotated[str, typer.Option("--cron", help="when the retrain flow runs (cron, in --timezone)")] = "0 3 * * *",
    work_pool: Annotated[str, typer.Option("--work-pool", help="process work pool (created if missing)")] = "genimg-process",
    name: Annotated[str, typer.Option("--name", help="deployment name")] = "genimg-retrain",
    config: Annotated[Path | None, typer.Option("--config", "-c", help="retrain YAML the scheduled runs use (default configs/retrain.yaml)")] = None,
    timezone: Annotated[str, typer.Option("--timezone", help="IANA time zone of --cron")] = "UTC",
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
) -> None:
    """Create or update the scheduled deployment of the retrain flow on the Prefect server at PREFECT_API_URL."""
    from pipelines.deploy import deploy_retrain

    payload = deploy_retrain(cron, work_pool, name, str(config.resolve()) if config else None, timezone)
    schedules = ", ".join(f"{s['cron']} ({s['timezone']})" for s in payload["schedules"])
    emit(as_json, payload, f"deployment {payload['name']} ({payload['deployment_id']}) on {payload['api_url']}\n"
                           f"schedule:  {schedules}\nwork pool: {payload['work_pool']} — start a worker with "
                           f"`prefect worker start --pool {payload['work_pool']}`")


@app.command()
@one_line_errors
def evaluate(
    target: Annotated[str, typer.Argument(help="an MLflow RUN_ID, models:/NAME/VERSION, models:/NAME@ALIAS or a model folder")],
    dataset: Annotated[str | None, typer.Option("--dataset", "-d", help="NAME[@VERSION] or a raw source; default: what the run trained on")] = None,
    split: Annotated[str, typer.Option("--split", help="train, val or test")] = "test",
    samples: Annotated[int, typer.Option("--samples", "-n", help="generated images (sequences for rvae)")] = 1000,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    nll_k: Annotated[int, typer.Option("--nll-k", help="importance samples per image for the VAE's NLL")] = 100,
    best_of: Annotated[int, typer.Option("--best-of", help="continuations per test sequence (rvae)")] = 5,
    context_frames: Annotated[int | None, typer.Option("--context-frames", help="frames given before continuing (rvae); default half")] = None,
    features: Annotated[str, typer.Option("--features", help="auto, inception or classifier")] = "auto",
    extractor_steps: Annotated[int | None, typer.Option(
        "--extractor-steps", help="training steps of the dataset's own feature network, when it is not cached "
                                  "yet (default 1,000 for grey, 4,000 for colour images)")] = None,
    out: Annotated[Path | None, typer.Option("--out", help="also write the report files here")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
) -> None:
    """Score a trained model on a dataset split: FID/KID, precision/recall, NLL, sequence SSIM/PSNR."""
    from genimg.config import config_from_dict
    from genimg.evaluation.config import EvalConfig
    from genimg.tracking.evaluations import evaluate_target

    if split not in ("train", "val", "test"):
        raise GenimgError(f"--split must be train, val or test, got {split!r}")
    config = config_from_dict(EvalConfig, {
        "samples": samples, "seed": seed, "nll_k": nll_k, "best_of": best_of,
        "context_frames": context_frames, "features": features, "extractor_steps": extractor_steps,
    }, where="eval")
    payload = evaluate_target(target, dataset, config, split=split, out_dir=out)
    note = payload["features"].get("note")
    summary = (
        f"evaluated {payload['model']} ({target}) on {payload['dataset']} {split} split: "
        f"{payload['num_samples']} generated vs {payload['num_real']} real, seed {seed}\n"
        + "\n".join(f"  {name:<28} {value:.5g}" for name, value in payload["metrics"].items()
                    if "_frame_" not in name)
        + f"\nfeatures: {payload['features']['name']} ({payload['features']['weights_sha256'][:12]})"
        + (f"\nnote: {note}" if note else "")
        + f"\nreport:   {payload['report']} (MLflow run {payload['run_id']})"
    )
    emit(as_json, payload, summary)


@app.command()
@one_line_errors
def register(
    run_id: Annotated[str, typer.Argument(help="the MLflow run id of a finished genimg training run")],
    name: Annotated[str | None, typer.Option("--name", help="registered model name (default genimg-<dataset>-<model>)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
) -> None:
    """Register a training run's model as a new MLflow model version (pyfunc, with lineage tags)."""
    from genimg.tracking.registry import register_run

    payload = register_run(run_id, name)
    metrics = {k.rsplit(".", 1)[-1]: float(v) for k, v in payload["tags"].items() if k.startswith("genimg.eval.metric.")}
    emit(as_json, payload, f"registered {payload['model_uri']} from run {run_id} "
                           f"(dataset {payload['tags']['genimg.dataset']}); test: {format_metrics(metrics)}")


@app.command()
@one_line_errors
def promote(
    model: Annotated[str, typer.Argument(help="registered model name, e.g. genimg-digits-vae")],
    version: Annotated[int | None, typer.Option("--version", help="the challenger (default: the latest version)")] = None,
    force: Annotated[bool, typer.Option("--force", help="make it champion without comparing (the reason is recorded)")] = False,
    min_delta: Annotated[float, typer.Option("--min-delta", help="required improvement of the primary metric")] = 0.0,
    metric: Annotated[str | None, typer.Option("--metric", help="compare on this test metric instead (gan: fid, vae: nll, rvae: ssim)")] = None,
    mode: Annotated[str | None, typer.Option("--mode", help="min or max, with --metric")] = None,
    check: Annotated[bool, typer.Option("--check", help=f"exit with status {NOT_PROMOTED_EXIT} when the challenger is not promoted")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
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


@app.command()
@one_line_errors
def sample(
    model_dir: Annotated[str, typer.Argument(help="an exported model or checkpoint folder, or models:/NAME/VERSION | models:/NAME@ALIAS")],
    output: Annotated[Path, typer.Option("--output", "-o", help="FILE.png (grid) or FILE.gif (sequences)")],
    n: Annotated[int, typer.Option("-n", "--num-samples", help="how many samples")] = 64,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    frames: Annotated[int | None, typer.Option("--frames", help="sequence length (sequence models)")] = None,
    classes: Annotated[list[str] | None, typer.Option(
        "--class", help="class-conditional models: this class (index or name), repeatable; the samples "
                        "are split between the classes in order")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Draw samples from a trained model into a PNG grid or an animated GIF."""
    import torch

    from genimg.evaluation.grids import save_image_grid, save_sequence_gif, save_sequence_strips
    from genimg.models import load_model, model_spec
    from genimg.models.base import class_index

    suffix = output.suffix.lower()
    if suffix not in (".png", ".gif"):
        raise GenimgError(f"output must end in .png or .gif, got {output}")
    if n < 1:
        raise GenimgError(f"-n must be ≥ 1, got {n}")
    if model_dir.startswith("models:/"):
        from genimg.tracking.registry import load_registered_model

        model = load_registered_model(model_dir)
    else:
        model = load_model(Path(model_dir))
    kind = model_spec(model.registry_name).data_kind
    labels = None
    if classes:
        chosen = [class_index(model, value) for value in classes]
        if n < len(chosen):
            raise GenimgError(f"-n {n} is fewer than the {len(chosen)} classes asked for")
        labels = torch.tensor([chosen[i * len(chosen) // n] for i in range(n)])
    if kind == "images":
        if suffix == ".gif":
            raise GenimgError(f"{model.registry_name} draws still images: write a .png")
        samples = model.sample(n, seed=seed, labels=labels)  # type: ignore[call-arg]
        save_image_grid(samples, output)
    else:
        samples = model.sample(n, seed=seed, num_frames=frames)  # type: ignore[call-arg]
        (save_sequence_gif if suffix == ".gif" else save_sequence_strips)(samples, output)
    shown = [model.class_names[k] if model.class_names else str(k) for k in labels.tolist()] if labels is not None else None
    payload = {"model": model.registry_name, "output": str(output), "num_samples": n,
               "seed": seed, "shape": list(samples.shape), "classes": shown}
    emit(as_json, payload, f"wrote {n} samples of {model.registry_name} to {output}"
         + (f" (classes {', '.join(dict.fromkeys(shown))})" if shown else ""))


@app.command()
@one_line_errors
def ingest(
    source: Annotated[str, typer.Argument(help="builtin:digits, builtin:moving-digits, moving-mnist:IDX[?frames=20&size=64&digits=2&count=N&seed=S], a path or an s3:// URI")],
    name: Annotated[str, typer.Option("--name", help="dataset name (lowercase letters, digits, - and _)")],
    kind: Annotated[str | None, typer.Option("--kind", help="images or sequences (default: from the source)")] = None,
    resolution: Annotated[int | None, typer.Option(
        "--resolution", help="make every image N×N px (default: the most common size wins)",
    )] = None,
    resize: Annotated[str | None, typer.Option(
        "--resize", help="with --resolution: center-crop (default), pad (black bars) or stretch",
    )] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Validate SOURCE and publish it as a versioned dataset in the object store."""
    from genimg.data.normalize import ResizePolicy
    from genimg.data.readers import read_source
    from genimg.data.versions import check_name, ingest_dataset
    from genimg.feedback import phase, progress_callback
    from genimg.store import open_store

    check_name(name)
    if kind not in (None, "images", "sequences"):
        raise GenimgError(f"invalid --kind {kind!r} (expected images or sequences)")
    if resize is not None and resolution is None:
        raise GenimgError(f"--resize {resize} needs --resolution N (the square side in px)")
    mode = resize or "center-crop"  # ResizePolicy checks it, naming --resize
    policy = None if resolution is None else ResizePolicy(resolution, mode)  # type: ignore[arg-type]
    store = open_store()
    with phase(f"reading {source}"), progress_callback(f"decoding {source}") as progress:
        dataset = read_source(source, kind, progress=progress, resize=policy)  # type: ignore[arg-type]
    with phase(f"publishing {len(dataset)} records as a version of {name} in {store.uri}"), \
            progress_callback(f"writing {name}") as progress:
        result = ingest_dataset(dataset, name, store=store, progress=progress, resize=policy)
    counts = ", ".join(f"{split} {n}" for split, n in result.counts.items())
    lines = [
        f"{result.name}@{result.version}: {sum(result.counts.values())} records ({counts})",
        f"  {result.uri}",
        f"  every image {policy.resolution}x{policy.resolution} px ({policy.mode})" if policy
        else f"  records {'x'.join(map(str, dataset.record_shape))}",
        "  unchanged: this version already exists, nothing uploaded" if result.reused
        else f"  uploaded {result.uploaded_objects} objects, {result.uploaded_bytes / 1e6:.2f} MB",
    ]
    if result.duplicates:
        lines.append(f"  {result.duplicates} duplicate records dropped")
    if result.rejected:
        lines.append(f"  {len(result.rejected)} rejected:")
        lines += [f"    {r.item}: {r.reason}" for r in result.rejected[:20]]
        if len(result.rejected) > 20:
            lines.append(f"    … and {len(result.rejected) - 20} more (see --json)")
    emit(as_json, result.as_dict(), "\n".join(lines))


@app.command()
@one_line_errors
def datasets(
    name: Annotated[str | None, typer.Argument(help="only the versions of this dataset")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """List the dataset versions in the object store (oldest first)."""
    from genimg.data.versions import list_versions
    from genimg.store import open_store

    store = open_store()
    versions = list_versions(store, name)
    entries = [
        {
            "name": v.name,
            "version": v.version,
            "uri": v.uri,
            "kind": v.kind,
            "record_shape": v.manifest["record_shape"],
            "counts": v.manifest["counts"],
            "created_at": v.manifest.get("created_at"),
            "source": v.manifest.get("source"),
        }
        for v in versions
    ]
    lines = [f"{e['name']}@{e['version']}  {e['kind']} {'x'.join(map(str, e['record_shape']))}  "
             f"{sum(e['counts'].values())} records  {e['created_at']}  {e['source']}" for e in entries]
    emit(as_json, {"store": store.uri, "datasets": entries},
         "\n".join(lines) if lines else f"no datasets in {store.uri}")


@app.callback()
def show_feedback() -> None:
    """Train, evaluate and promote generative image models (GAN, VAE, recurrent VAE)."""
    from genimg.feedback import show_on_stderr

    show_on_stderr()  # phases and progress of every command, on stderr


def main() -> None:
    app()


if __name__ == "__main__":
    main()
