"""`genimg train --workers 0`: the plain-PyTorch loop in this process, tracked in MLflow like a
Ray run (same tags, params, metrics and result fields), checkpoints in $GENIMG_HOME/runs."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from genimg.errors import GenimgError


def recorded_dataset(run_dir: Path) -> str | None:
    """The pinned dataset an earlier attempt of this local run trained on, if it says."""
    try:
        return json.loads((run_dir / "run.json").read_text()).get("dataset")
    except (OSError, ValueError):
        return None


def train_in_process(
    model: str, dataset: str, sections: dict[str, dict[str, Any]], name: str, epochs: float | None,
    resume: bool | Literal["auto"], output: Path | None, gpu: bool,
    on_progress: Callable[[int, dict[str, float]], None],
) -> dict[str, Any]:
    """`--workers 0`: the plain-PyTorch loop in this process, checkpoints in $GENIMG_HOME/runs.
    The MLflow run is created only once the config and the data have been checked, so bad input
    leaves no run behind."""
    from genimg.data.sources import dataset_location
    from genimg.feedback import say
    from genimg.settings import local_runs_dir
    from genimg.tracking.runs import TrainingRun
    from genimg.training.run import check_resume_dataset, train_locally

    run_dir = local_runs_dir() / name
    checkpoints = run_dir / "checkpoints"
    has_checkpoints = checkpoints.is_dir() and any(checkpoints.iterdir())
    if has_checkpoints and not resume:
        raise GenimgError(f"run {name} already has checkpoints in {run_dir}; pass --resume to continue it or pick another --run-name")
    if resume == "auto":  # the retrain flow: continue a run a retried task started, silently
        resume = has_checkpoints
    elif resume and not has_checkpoints:
        say("run %s has no checkpoints in %s: starting it fresh", name, run_dir)
    tracking: TrainingRun | None = None

    def on_start(run: Any, data: Any) -> None:
        nonlocal tracking
        if has_checkpoints:
            check_resume_dataset(name, recorded_dataset(run_dir), data.source, dataset)
        tracking = TrainingRun(name, tags={"genimg.model": model, "genimg.dataset": data.source})
        tracking.log_params(run.as_dict() | {"dataset": data.source, "workers": "0"})
        tracking.log_dataset(data.source, dataset_location(data.source), len(data), data.record_shape)
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "run.json").write_text(json.dumps(run.as_dict() | {"dataset": data.source}, indent=2))

    def on_log(step: int, metrics: dict[str, float]) -> None:
        assert tracking is not None
        tracking.add_metrics(step, metrics, int(time.time() * 1000))
        on_progress(step, metrics)

    try:
        result = train_locally(
            model, dataset, sections, run_dir=run_dir, run_name=name, epochs=epochs, resume=resume,
            export_dir=output, device="cuda" if gpu else "cpu", on_log=on_log, on_start=on_start,
        )
    except BaseException as exc:
        if tracking is not None:
            reason = str(exc) if isinstance(exc, GenimgError) else f"{type(exc).__name__}: {exc}"
            tracking.finish("KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED", reason=reason)
        raise
    assert tracking is not None
    checkpoint = result.checkpoint.as_uri() if result.checkpoint else None
    tracking.set_tags({"genimg.checkpoint": checkpoint or ""})
    tracking.finish()
    return {
        "model": model, "dataset": result.dataset.source, "run_name": name, "run_id": tracking.run_id,
        "checkpoint": checkpoint, "export": str(result.export) if result.export else None,
        "metrics": result.metrics, "restarts": 0, "resumed_from_step": result.resumed_from_step,
        "workers": {}, "records": len(result.dataset),
        "rejected": [r.as_dict() for r in result.dataset.rejected],
        "seconds": round(result.seconds, 3), "images_per_second": round(result.images_per_second, 1),
    }
