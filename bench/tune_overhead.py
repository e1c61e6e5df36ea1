"""Ray Tune's own bookkeeping in a `genimg tune` search: the search's wall time against the sum
of its trials' own times (each trial: Ray Train worker start, training, reports), one trial at a
time so the two are directly comparable. Ray's documentation puts Tune's overhead under 20%.

    .venv/bin/python bench/tune_overhead.py [--trials 4] [--steps 200] [--json]

Prints wall_s, trials_s (Σ Tune's time_total_s per trial), overhead = 1 − trials_s / wall_s,
and the per-trial mean. Uses builtin:digits (ingested into a temporary store) and the VAE.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    home = tempfile.mkdtemp(prefix="genimg-tune-bench-")
    env = {**os.environ, "GENIMG_HOME": home, "GENIMG_STORE": Path(home, "store").as_uri()}
    genimg = str(Path(sys.executable).parent / "genimg")
    subprocess.run([genimg, "ingest", "builtin:digits", "--name", "digits"], env=env, check=True, capture_output=True)
    started = time.perf_counter()
    out = subprocess.run(
        [
            genimg,
            "tune",
            "--model",
            "vae",
            "--dataset",
            "digits",
            "--trials",
            str(args.trials),
            "--max-concurrent",
            "1",
            "--steps",
            str(args.steps),
            "--set",
            "model.width=8",
            "--json",
        ],
        env=env,
        capture_output=True,
        text=True,
    )
    command_s = time.perf_counter() - started
    if out.returncode != 0:
        print(out.stderr[-3000:], file=sys.stderr)
        return 1
    payload = json.loads(out.stdout)
    wall, trials = payload["search_seconds"], payload["trial_seconds"]
    result = {
        "trials": len(payload["trials"]),
        "steps": args.steps,
        "wall_s": wall,
        "trials_s": trials,
        "overhead": round(1 - trials / wall, 3) if wall else None,
        "command_s": round(command_s, 1),
        "per_trial_s": round(trials / max(1, len(payload["trials"])), 1),
        "statuses": [t["status"] for t in payload["trials"]],
    }
    print(
        json.dumps(result)
        if args.json
        else f"search wall {wall:.1f} s (whole command {command_s:.1f} s incl. Ray start), trials {trials:.1f} s "
        f"→ Tune overhead {result['overhead']:.1%} of the search's wall time; {result['per_trial_s']} s per trial"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
