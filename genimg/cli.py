"""The `genimg` command: a thin shell over genimg's services (`genimg.services`, the same ones
the Python API and the retrain flow call). Every command prints a short human summary, or with
--json exactly one JSON object on stdout; failures exit non-zero with a one-line reason on stderr.

Each command imports its service when it runs, so `genimg --help` starts without torch."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TypedDict, cast

import typer

from genimg import cli_models, summaries
from genimg.cli_app import app, emit, one_line_errors
from genimg.errors import GenimgError
from genimg.version import __version__

if TYPE_CHECKING:
    from genimg.data.dataset import DataKind


class DatasetEntry(TypedDict):
    """One dataset version, as `genimg datasets --json` lists it."""

    name: str
    version: str
    uri: str
    kind: str
    record_shape: list[int]
    counts: dict[str, int]
    created_at: str | None
    source: str | None


@app.command()
@one_line_errors
def train(
    model: Annotated[str, typer.Option("--model", "-m", help="gan-mlp, gan, gan-resnet, vae or rvae")],
    dataset: Annotated[
        str,
        typer.Option(
            "--dataset",
            "-d",
            help="NAME[@VERSION] in the store, builtin:digits, builtin:moving-digits, moving-mnist:IDX[?…], a path or s3:// URI",
        ),
    ],
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            "-c",
            help="YAML with model: and train: sections, or a packaged preset's name (e.g. cifar10-gan)",
        ),
    ] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="override, e.g. model.latent_dim=32 or train.lr=1e-3")
    ] = None,
    workers: Annotated[
        str,
        typer.Option(
            "--workers", "-w", help="Ray Train workers: N, or MIN-MAX (elastic); 0 = in this process, without Ray"
        ),
    ] = "1",
    gpu: Annotated[
        bool,
        typer.Option(
            "--gpu", help="one GPU per worker (CUDA; bf16 + channels_last for conv models from 64 px)", metavar=""
        ),
    ] = False,
    cpus_per_worker: Annotated[
        int | None, typer.Option("--cpus-per-worker", help="default: the cluster's CPUs / workers")
    ] = None,
    steps: Annotated[int | None, typer.Option("--steps", help="total optimisation steps")] = None,
    epochs: Annotated[float | None, typer.Option("--epochs", help="passes over the data (instead of --steps)")] = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size", help="per worker")] = None,
    seed: Annotated[int | None, typer.Option("--seed")] = None,
    max_failures: Annotated[int, typer.Option("--max-failures", help="worker-group restarts allowed")] = 3,
    run_name: Annotated[
        str | None, typer.Option("--run-name", help="names the run (checkpoints, MLflow); reuse with --resume")
    ] = None,
    resume: Annotated[bool, typer.Option("--resume", help="continue the run's latest checkpoint", metavar="")] = False,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="export the final model to this folder")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object", metavar="")] = False,
) -> None:
    """Train a model: on Ray Train (local Ray, or the cluster at RAY_ADDRESS), or in process."""
    from genimg.config import parse_overrides
    from genimg.distributed.trainer import parse_workers
    from genimg.models import model_spec
    from genimg.services.train import TrainRequest
    from genimg.services.train import train as train_model
    from genimg.training.run import load_config_file, merge_sections

    model_spec(model)
    if steps is not None and epochs is not None:
        raise GenimgError("give --steps or --epochs, not both")
    cli_train = {
        key: value
        for key, value in {"steps": steps, "batch_size": batch_size, "seed": seed}.items()
        if value is not None
    }
    sections = merge_sections(
        load_config_file(config) if config else {}, parse_overrides(set_ or []), {"train": cli_train}
    )
    request = TrainRequest(
        model,
        dataset,
        sections,
        workers=0 if workers.strip() == "0" else parse_workers(workers),
        gpu=gpu,
        cpus_per_worker=cpus_per_worker,
        run_name=run_name,
        resume=resume,
        epochs=epochs,
        max_failures=max_failures,
        export_dir=output,
    )
    payload = train_model(request).as_dict()
    emit(as_json, payload, summaries.training(payload))


@app.command()
@one_line_errors
def tune(
    model: Annotated[str, typer.Option("--model", "-m", help="gan-mlp, gan, gan-resnet, vae or rvae")],
    dataset: Annotated[str, typer.Option("--dataset", "-d", help="NAME[@VERSION] in the store or a raw source")],
    trials: Annotated[int, typer.Option("--trials", help="configurations to try")] = 8,
    max_concurrent: Annotated[
        int | None, typer.Option("--max-concurrent", help="trials at once (default: as many as the cluster holds)")
    ] = None,
    workers_per_trial: Annotated[int, typer.Option("--workers-per-trial", help="Ray Train workers of each trial")] = 1,
    cpus_per_worker: Annotated[int, typer.Option("--cpus-per-worker")] = 1,
    steps: Annotated[int, typer.Option("--steps", help="training steps of a trial that is not stopped early")] = 500,
    space: Annotated[
        Path | None, typer.Option("--space", help="search space YAML (default configs/tune-<model>.yaml)")
    ] = None,
    metric: Annotated[
        str | None, typer.Option("--metric", help="overrides the space file's metric (val_nll_bound, val_fid)")
    ] = None,
    mode: Annotated[str | None, typer.Option("--mode", help="min or max (with --metric)")] = None,
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="YAML with the fixed model: and train: settings")
    ] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="fixed override, e.g. train.batch_size=32")] = None,
    gpu: Annotated[bool, typer.Option("--gpu", help="one GPU per worker", metavar="")] = False,
    name: Annotated[
        str | None, typer.Option("--name", help="names the search (MLflow parent run, Tune state); reuse with --resume")
    ] = None,
    resume: Annotated[
        bool,
        typer.Option(
            "--resume",
            help="continue an interrupted search of this --name (unpickles Tune's state from the store: the store must be as trusted as the code)",
            metavar="",
        ),
    ] = False,
    seed: Annotated[int, typer.Option("--seed", help="seeds the sampling of configurations")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object", metavar="")] = False,
) -> None:
    """Search hyperparameters with Ray Tune (ASHA); each trial is a tracked Ray Train run."""
    from dataclasses import replace

    from genimg.config import parse_overrides
    from genimg.distributed.search_space import load_space
    from genimg.distributed.tune import tune_search
    from genimg.models import model_spec
    from genimg.names import check_run_name
    from genimg.services.train import default_run_name
    from genimg.training.run import load_config_file, merge_sections

    model_spec(model)
    if resume and not name:
        raise GenimgError("--resume needs the --name of the search to continue")
    search = name or default_run_name(f"tune-{model}")
    check_run_name(search, "--name")
    search_space = load_space(model, space)
    if metric:
        search_space = replace(search_space, metric=metric, mode=mode or search_space.mode)
    elif mode:
        raise GenimgError("--mode goes with --metric")
    sections = merge_sections(load_config_file(config) if config else {}, parse_overrides(set_ or []))
    result = tune_search(
        model,
        dataset,
        sections,
        space=search_space,
        trials=trials,
        steps=steps,
        search=search,
        max_concurrent=max_concurrent,
        workers_per_trial=workers_per_trial,
        cpus_per_worker=cpus_per_worker,
        use_gpu=gpu,
        resume=resume,
        seed=seed,
    ).as_dict()
    emit(as_json, result, summaries.search(result, search_space.metric))
    if result["best"] is None:
        raise typer.Exit(code=1)


@app.command()
@one_line_errors
def retrain(
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="retrain YAML (default: the packaged retrain.yaml)")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object", metavar="")] = False,
) -> None:
    """Run the retrain flow (Prefect): ingest, train, evaluate, register and promote each family."""
    from genimg.flows.retrain import retrain as retrain_flow
    from genimg.flows.settings import load_retrain_config

    load_retrain_config(config)  # a bad config fails before Prefect starts
    payload = retrain_flow(str(config) if config else None)
    emit(as_json, payload, summaries.retraining(payload))
    if all(model["error"] for model in payload["models"]):
        raise typer.Exit(code=1)


@app.command()
@one_line_errors
def deploy(
    cron: Annotated[str, typer.Option("--cron", help="when the retrain flow runs (cron, in --timezone)")] = "0 3 * * *",
    work_pool: Annotated[
        str, typer.Option("--work-pool", help="process work pool (created if missing)")
    ] = "genimg-process",
    name: Annotated[str, typer.Option("--name", help="deployment name")] = "genimg-retrain",
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", help="retrain YAML the scheduled runs use (default configs/retrain.yaml)"),
    ] = None,
    timezone: Annotated[str, typer.Option("--timezone", help="IANA time zone of --cron")] = "UTC",
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object", metavar="")] = False,
) -> None:
    """Create or update the scheduled deployment of the retrain flow on the Prefect server at PREFECT_API_URL."""
    from genimg.flows.deploy import deploy_retrain

    payload = deploy_retrain(cron, work_pool, name, str(config.resolve()) if config else None, timezone)
    schedules = ", ".join(f"{s['cron']} ({s['timezone']})" for s in payload["schedules"])
    emit(
        as_json,
        payload,
        f"deployment {payload['name']} ({payload['deployment_id']}) on {payload['api_url']}\n"
        f"schedule:  {schedules}\nwork pool: {payload['work_pool']} — start a worker with "
        f"`prefect worker start --pool {payload['work_pool']}`",
    )


for command in (cli_models.evaluate, cli_models.register, cli_models.promote, cli_models.sample):
    app.command()(command)


@app.command()
@one_line_errors
def ingest(
    source: Annotated[
        str,
        typer.Argument(
            help="builtin:digits, builtin:moving-digits, moving-mnist:IDX[?frames=20&size=64&digits=2&count=N&seed=S], a path or an s3:// URI"
        ),
    ],
    name: Annotated[str, typer.Option("--name", help="dataset name (lowercase letters, digits, - and _)")],
    kind: Annotated[str | None, typer.Option("--kind", help="images or sequences (default: from the source)")] = None,
    resolution: Annotated[
        int | None,
        typer.Option(
            "--resolution",
            help="make every image N×N px (default: the most common size wins)",
        ),
    ] = None,
    resize: Annotated[
        str | None,
        typer.Option(
            "--resize",
            help="with --resolution: center-crop (default), pad (black bars) or stretch",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object", metavar="")] = False,
) -> None:
    """Validate SOURCE and publish it as a versioned dataset in the object store."""
    from genimg.services.ingest import ingest as ingest_source

    # The service checks --kind, naming it.
    result = ingest_source(source, name, kind=cast("DataKind | None", kind), resolution=resolution, resize=resize)
    emit(as_json, result.as_dict(), summaries.ingestion(result, resolution, resize or "center-crop"))


@app.command()
@one_line_errors
def datasets(
    name: Annotated[str | None, typer.Argument(help="only the versions of this dataset")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object", metavar="")] = False,
) -> None:
    """List the dataset versions in the object store (oldest first)."""
    from genimg.data.versions import list_versions
    from genimg.store import open_store

    store = open_store()
    versions = list_versions(store, name)
    entries: list[DatasetEntry] = [
        {
            "name": v.name,
            "version": v.version,
            "uri": v.uri,
            "kind": v.kind,
            "record_shape": list(v.record_shape),
            "counts": v.counts,
            "created_at": v.created_at,
            "source": v.source,
        }
        for v in versions
    ]
    lines = [
        f"{e['name']}@{e['version']}  {e['kind']} {'x'.join(map(str, e['record_shape']))}  "
        f"{sum(e['counts'].values())} records  {e['created_at']}  {e['source']}"
        for e in entries
    ]
    emit(
        as_json, {"store": store.uri, "datasets": entries}, "\n".join(lines) if lines else f"no datasets in {store.uri}"
    )


def print_version(asked: bool) -> None:
    if asked:
        typer.echo(f"genimg {__version__}")
        raise typer.Exit()


@app.callback()
def show_feedback(
    version: Annotated[
        bool,
        typer.Option(
            "--version", help="print genimg's version and exit", callback=print_version, is_eager=True, metavar=""
        ),
    ] = False,
) -> None:
    """Train, evaluate and promote generative image models (GAN, VAE, recurrent VAE)."""
    from genimg.feedback import show_on_stderr

    show_on_stderr()  # phases and progress of every command, on stderr


def main() -> None:
    app()


# `app` is what the `genimg` script and `python -m genimg` run (the commands register on it).
__all__ = ["app", "main"]


if __name__ == "__main__":
    main()
