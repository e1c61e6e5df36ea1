"""The benchmarks' code paths, run tiny on the CPU so they cannot rot (no timings asserted)."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parent.parent


def test_gpu_throughput_script_runs_on_the_cpu():
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "gpu_throughput.py"), "--device", "cpu", "--steps", "1",
         "--warmup", "1", "--batch-size", "4", "--families", "gan-mlp,vae"],
        capture_output=True, text=True, check=True, cwd=ROOT, env={"PYTHONPATH": str(ROOT), "PATH": ""},
    )
    results = json.loads(out.stdout.strip().splitlines()[-1])
    assert set(results) == {"gan-mlp", "vae"} and results["vae"]["bf16_img_s"] > 0
