"""The benchmarks' code paths, run tiny on the CPU so they cannot rot (no timings asserted)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]


@pytest.mark.slow
def test_the_gpu_check_runs_on_the_cpu(tmp_path):
    """bench/gpu_check.sh (gpu_throughput.py: genimg's steps beside the reference DCGAN, the real
    loop beside the step; gpu_train_check.py: a timed train_model run), tiny, on the CPU."""
    env = {
        "PYTHON": sys.executable,
        "DEVICE": "cpu",
        "SECONDS_PER_RUN": "0.05",
        "TRAIN_SECONDS": "1",
        "TRAIN_ARGS": "--records 256 --batch-size 8 --probe-steps 2",
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
    }
    out = subprocess.run(
        [
            "bash",
            str(ROOT / "bench" / "gpu_check.sh"),
            "--sizes",
            "32",
            "--batches",
            "4",
            "--warmup",
            "1",
            "--loop-steps",
            "2",
            "--models",
            "gan,vae",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    results = json.loads(out.stdout.strip().splitlines()[-1])
    assert {"gan_over_reference_32px_b4_bf16", "bf16_over_fp32_vae_32px_b4", "loop_over_step_gan_32px_b4_fp32"} <= set(
        results["summary"]
    )
    kinds = {(row["model"], row["kind"]) for row in results["rows"]}
    assert kinds == {("reference", "step"), ("gan", "step"), ("vae", "step"), ("gan", "loop")}
    assert results["train_check"]["finite"] and results["train_check"]["steps"] >= 2


@pytest.mark.slow
def test_quality_bench_runs_on_a_tiny_mnist_like_folder(tmp_path, digits):
    import numpy as np

    from tests.conftest import write_idx

    # The digits in MNIST's file format (28×28 after padding), a few hundred of them.
    images = np.pad(digits[:400, 0], ((0, 0), (6, 6), (6, 6)))
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", images, compress=True)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", (np.arange(400) % 10).astype(np.uint8), compress=True)
    out = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "quality_mnist.py"),
            "--mnist",
            str(tmp_path),
            "--budget",
            "0.5",
            "--samples",
            "30",
            "--nll-k",
            "2",
            "--json",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT), "PATH": "", "HOME": str(tmp_path)},
    )
    assert out.returncode == 0, out.stderr[-2000:]
    results = json.loads(out.stdout.strip().splitlines()[-1])
    assert {"vae", "gan", "gan-mlp"} <= set(results) and results["vae"]["nll"] > 0
    assert set(results["summary"]) == {
        "vae_nll_vs_published",
        "vae_nll_target_met",
        "fid_gan_over_vae",
        "fid_gan_over_gan-mlp",
    }


@pytest.mark.slow
def test_the_moving_mnist_gpu_script_runs_on_the_cpu(tmp_path, digits):
    """bench/gpu_quality_mmnist.sh (which runs quality_moving_mnist.py with its GPU widths),
    tiny: a few steps of batch 2 on 16 sequences, 4 test sequences."""
    import numpy as np

    from tests.conftest import write_idx

    # MNIST-shaped digits, more than the 2,000 the bench holds out for its test sequences.
    images = np.pad(np.concatenate([digits[:, 0], digits[:400, 0]]), ((0, 0), (6, 6), (6, 6)))
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", images, compress=True)
    env = {
        "PYTHON": sys.executable,
        "DEVICE": "cpu",
        "BUDGET": "0.1",
        "OUT": str(tmp_path / "out"),
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
    }
    out = subprocess.run(
        [
            "bash",
            str(ROOT / "bench" / "gpu_quality_mmnist.sh"),
            str(tmp_path),
            "--train-sequences",
            "16",
            "--test-sequences",
            "4",
            "--best-of",
            "2",
            "--set",
            "train.batch_size=2",
            "--json",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    results = json.loads(out.stdout.strip().splitlines()[-1])
    assert results["model"]["width"] == 32 and results["train"]["batch_size"] == 2 and results["steps"] >= 10
    rows = results["rows"]
    assert {"copy last context frame", "genimg rvae, mean of K=2", "genimg rvae, best of K=2"} <= set(rows)
    assert rows["genimg rvae, best of K=2"]["mse"] <= rows["genimg rvae, mean of K=2"]["mse"]
    assert (tmp_path / "out" / "moving-mnist-rvae-gpu.gif").stat().st_size > 0


@pytest.mark.slow
def test_the_data_throughput_bench_runs_tiny(tmp_path):
    """Both modes on a few MB: the code path of the ≥ 4 GB run, not its figures."""
    import os

    env = {**os.environ, "PYTHONPATH": str(ROOT), "HOME": str(tmp_path), "RAY_USAGE_STATS_ENABLED": "0"}
    out = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "data_throughput.py"),
            "--gigabytes",
            "0.004",
            "--image-size",
            "16",
            "--steps",
            "3",
            "--batch-size",
            "8",
            "--json",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    results = json.loads(out.stdout.strip().splitlines()[-1])
    assert results["train_gb"] >= 0.004 and results["stream"]["worker_peak_rss_gb"] > 0
    assert results["memory"]["images_per_second"] > 0 and "throughput_ratio_at_least_0.95" in results["goals"]


@pytest.mark.slow
def test_the_allreduce_bench_runs_tiny(tmp_path):
    """2 gloo ranks, each way of averaging for 2 steps: the code path, not its figures."""
    out = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "allreduce_overlap.py"),
            "--steps",
            "2",
            "--rounds",
            "1",
            "--batch",
            "4",
            "--size",
            "16",
            "--width",
            "8",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    )
    assert out.returncode == 0, out.stderr[-2000:]
    results = json.loads(out.stdout.strip().splitlines()[-1])
    assert set(results["steps_per_second"]) == {"none", "blocking", "overlapped", "ddp"}
    assert all(rate > 0 for rate in results["steps_per_second"].values())
    assert {"overlapped_over_ddp", "blocking_over_ddp", "none_over_ddp"} <= set(results)


def test_the_eval_overhead_bench_splits_a_flows_time_by_its_tasks():
    """bench/eval_overhead.py's split of `genimg retrain`'s timed stderr (the flow itself is what
    `make run` runs; tests/flows runs it)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("eval_overhead", ROOT / "bench" / "eval_overhead.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    lines = [
        (10.0, "12:00:10.000 | INFO    | Task run 'ingest-a1' - Finished in state Completed()"),
        (50.0, "12:00:50.000 | INFO    | Task run 'train-b2' - Finished in state Completed()"),
        (51.0, "genimg: training d@1's own classifier feature network for FID/KID (at most 200 steps) …"),
        (61.0, "genimg: training d@1's own classifier feature network for FID/KID (at most 200 steps): done in 10.0 s"),
        (62.0, "12:01:02.000 | INFO    | Task run 'evaluate-c3' - Finished in state Completed()"),
        (63.0, "genimg: test evaluation of run r on d@1 for its registration (200 samples) …"),
        (70.0, "genimg: test evaluation of run r on d@1 for its registration (200 samples): done in 7.0 s"),
        (72.0, "12:01:12.000 | INFO    | Task run 'register-d4' - Finished in state Completed()"),
        (73.0, "12:01:13.000 | INFO    | Task run 'promote-e5' - Finished in state Completed()"),
        (75.0, "<exit>"),
    ]
    split = bench.split_time(lines)
    assert split == {
        "training": 40.0,
        "evaluation": 19.0,
        "orchestration": 16.0,
        "total": 75.0,
        "training_share": round(40 / 75, 3),
    }
