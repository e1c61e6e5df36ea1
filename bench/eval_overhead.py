"""Where `make run`'s time goes: training, evaluation and orchestration of the embedded retrain.

    .venv/bin/python bench/eval_overhead.py [--baseline-ref GIT_REV] [--config FILE] [--json]

Runs `genimg retrain` (the flow `make run` runs; genimg/configs/retrain.yaml unless --config) in a
fresh GENIMG_HOME, reads the time of every line it writes to stderr as the line arrives, and
splits the wall time by the flow's task runs (Prefect's "Task run 'train-…' - Finished" lines; the
tasks run one after another, so each task's time is the span since the line before it ended):
- training: the `train` (or `tune`) task runs, Ray worker start included;
- evaluation: the `evaluate` task runs, and inside `register` / `promote` any test evaluation or
  champion re-evaluation they run (the spans of their "evaluat…" phase lines);
- orchestration: the rest: the flow's and Prefect's start, ingest, registering the model in
  MLflow, promotion's bookkeeping, the process's exit.

With --baseline-ref, the same is measured first on that revision of genimg (checked out into a
temporary git worktree and put first on PYTHONPATH, so its package, configs included, is the one
that runs), then on this checkout, in the same run on the same machine; it prints both splits
and the ratios (this / baseline). Run it alone: the CPU is the measurement.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TASK_DONE = re.compile(r"Task run '(?P<task>[a-z_]+)-[0-9a-z]+' - Finished")
PHASE_START = re.compile(r"^genimg: (?P<what>.*) …$")
PHASE_DONE = re.compile(r"^genimg: (?P<what>.*): done in ")
EVALUATION_PHASE = re.compile(r"evaluat|feature network", re.IGNORECASE)
TRAINING_TASKS = {"train", "tune"}


def run_retrain(config: Path | None, pythonpath: str | None, log: Path) -> list[tuple[float, str]]:
    """`genimg retrain` in a fresh GENIMG_HOME; every stderr line with the seconds since start."""
    home = Path(tempfile.mkdtemp(prefix="genimg-eval-overhead-"))
    env = {
        **os.environ,
        "GENIMG_HOME": str(home),
        "PYTHONUNBUFFERED": "1",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        "RAY_USAGE_STATS_ENABLED": "0",
    }
    env.pop("GENIMG_STORE", None)
    env.pop("MLFLOW_TRACKING_URI", None)
    if pythonpath:
        env["PYTHONPATH"] = pythonpath + os.pathsep + env.get("PYTHONPATH", "")
    command = [sys.executable, "-m", "genimg", "retrain", *(["--config", str(config)] if config else [])]
    started = time.perf_counter()
    process = subprocess.Popen(
        command, env=env, cwd=home, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, bufsize=1
    )
    lines: list[tuple[float, str]] = []
    assert process.stderr is not None
    with log.open("w") as out:
        for line in process.stderr:
            stamp = time.perf_counter() - started
            lines.append((stamp, line.rstrip("\n")))
            out.write(f"{stamp:8.2f} {line}")
    process.wait()
    lines.append((time.perf_counter() - started, "<exit>"))
    if process.returncode != 0:
        raise SystemExit(f"genimg retrain failed (exit {process.returncode}); its stderr is in {log}")
    return lines


def evaluation_spans(lines: list[tuple[float, str]], start: float, end: float) -> float:
    """Seconds inside [start, end] covered by phases about evaluation (outermost ones only)."""
    total, open_at, depth = 0.0, 0.0, 0
    for stamp, line in lines:
        if not start <= stamp <= end:
            continue
        text = re.sub(r"^\S+ \| \w+ +\| ", "", line)
        if (match := PHASE_START.match(text)) and EVALUATION_PHASE.search(match["what"]):
            depth += 1
            if depth == 1:
                open_at = stamp
        elif (match := PHASE_DONE.match(text)) and EVALUATION_PHASE.search(match["what"]) and depth:
            depth -= 1
            if depth == 0:
                total += stamp - open_at
    return total


def split_time(lines: list[tuple[float, str]]) -> dict[str, float]:
    phases = {"training": 0.0, "evaluation": 0.0, "orchestration": 0.0}
    previous = 0.0
    for stamp, line in lines:
        match = TASK_DONE.search(line)
        if match is None:
            continue
        task, span = match["task"], stamp - previous
        if task in TRAINING_TASKS:
            phases["training"] += span
        elif task == "evaluate":
            phases["evaluation"] += span
        else:
            inside = min(span, evaluation_spans(lines, previous, stamp))
            phases["evaluation"] += inside
            phases["orchestration"] += span - inside
        previous = stamp
    total = lines[-1][0]
    phases["orchestration"] += total - previous  # after the last task: the flow's end, exit
    return {
        **{k: round(v, 1) for k, v in phases.items()},
        "total": round(total, 1),
        "training_share": round(phases["training"] / total, 3),
    }


def measure(label: str, config: Path | None, pythonpath: str | None, folder: Path) -> dict[str, float]:
    print(f"eval_overhead: running genimg retrain ({label}) …", file=sys.stderr, flush=True)
    result = split_time(run_retrain(config, pythonpath, folder / f"{label}.log"))
    print(f"eval_overhead: {label}: {json.dumps(result)}", file=sys.stderr, flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline-ref", help="a git revision of genimg to measure first, as the baseline")
    parser.add_argument("--config", type=Path, help="a retrain config (default: the packaged retrain.yaml)")
    parser.add_argument("--logs", type=Path, default=None, help="keep the timed stderr logs here")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    folder = args.logs or Path(tempfile.mkdtemp(prefix="genimg-eval-overhead-logs-"))
    folder.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict[str, float]] = {}
    if args.baseline_ref:
        worktree = Path(tempfile.mkdtemp(prefix="genimg-baseline-")) / "tree"
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(worktree), args.baseline_ref],
            check=True,
            capture_output=True,
        )
        try:
            results["baseline"] = measure("baseline", args.config, str(worktree), folder)
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(worktree)], check=False)
    results["this"] = measure("this", args.config, None, folder)
    if "baseline" in results:
        base, now = results["baseline"], results["this"]
        results["ratios"] = {
            key: round(now[key] / base[key], 3) if base[key] else float("nan")
            for key in ("training", "evaluation", "orchestration", "total")
        }
    if args.json:
        print(json.dumps(results))
        return
    print(
        f"{'':14}"
        + "".join(f"{key:>15}" for key in ("training", "evaluation", "orchestration", "total", "training_share"))
    )
    for label, values in results.items():
        if label != "ratios":
            print(
                f"{label:14}"
                + "".join(
                    f"{values[key]:>15}"
                    for key in ("training", "evaluation", "orchestration", "total", "training_share")
                )
            )
    if "ratios" in results:
        print(
            f"{'this/baseline':14}"
            + "".join(f"{results['ratios'][key]:>15}" for key in ("training", "evaluation", "orchestration", "total"))
        )
    print(f"logs: {folder}")


if __name__ == "__main__":
    main()
