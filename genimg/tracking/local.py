"""`genimg train --workers 0`: the plain-PyTorch loop in this process, tracked in MLflow like a
Ray run (same tags, params, metrics and result fields), checkpoints in $GENIMG_HOME/runs."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from genimg.errors import GenimgError


def train_in_process(
    model: str, dataset: str, sections: dict[str, dict[str, Any]], name: str, epochs: float | None,
    resume: bool, output: Path | None, gpu: bool, on_progress: Callable[[int, dict[str, float]], None],
) -> dict[str, Any]:
    """`--workers 0`: the plain-PyTorch loop in this process, checkpoints in $GENIMG_HOME/runs."""
    from genimg.settings import local_runs_dir
    from genimg.tracking.runs import TrainingRun
    from genimg.training.run import train_locally

    run_dir = local_runs_dir() / name
    checkpoints = run_dir / "checkpoints"
    if checkpoints.is_dir() and any(checkpoints.iterdir()) and not resume:
        raise GenimgError(f"run {name} already has checkpoints in {run_dir}; pass --resume to continue it or pick another --run-name")
    tracking = TrainingRun(name, tags={"genimg.model": model, "genimg.dataset": dataset})

    def on_start(run: Any, data: Any) -> None:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "run.json").write_text(json.dumps(run.as_dict() | {"dataset": dataset}, indent=2))
        tracking.log_params(run.as_dict() | {"dataset": dataset, "workers": "0"})

    def on_log(step: int, metrics: dict[str, float]) -> None:
        tracking.add_metrics(step, metrics, int(time.time() * 1000))
        on_progress(step, metrics)

    try:
        result = train_locally(
            model, dataset, sections, run_dir=run_dir, run_name=name, epochs=epochs, resume=resume,
            export_dir=output, device="cuda" if gpu else "cpu", on_log=on_log, on_start=on_start,
        )
    except BaseException:
        tracking.finish("FAILED")
        raise
    checkpoint = result.checkpoint.as_uri() if result.checkpoint else None
    tracking.set_tags({"genimg.checkpoint": checkpoint or ""})
    tracking.finish()
    return {
        "model": model, "dataset": dataset, "run_name": name, "run_id": tracking.run_id,
        "checkpoint": checkpoint, "export": str(result.export) if result.export else None,
        "metrics": result.metrics, "restarts": 0, "resumed_from_step": result.resumed_from_step,
        "workers": {}, "records": len(result.dataset),
        "rejected": [r.as_dict() for r in result.dataset.rejected],
        "seconds": round(result.seconds, 3), "images_per_second": round(result.images_per_second, 1),
    }
