"""Training input at scale: streaming a store dataset's shards vs loading them into the worker.

    .venv/bin/python bench/data_throughput.py [--gigabytes 4] [--image-size 64] [--steps 240]
        [--batch-size 64] [--modes stream,memory] [--json]

Makes a synthetic store dataset whose train split holds `--gigabytes` GB of uint8 RGB records
(random pixels, so the Parquet shards do not compress: their size on disk is the data's size),
in a temporary local store that is deleted afterwards. Then, in the same run and on the same
model (`gan` at IMAGE_SIZE², one Ray Train worker with the machine's CPUs), trains `--steps`
steps of `genimg.train` with train.data_mode=memory (every record loaded into the worker before
the first step: the baseline) and with train.data_mode=stream (shards read as the steps need
them), and reports for each:
- steady-state img/s, as the worker measures it (the first step, which carries one-off costs and
  a stream's first shard, is not timed);
- the peak resident memory (RSS) of the Ray Train worker process, sampled every 0.2 s.
Prints stream/memory throughput (goal ≥ 0.95) and both RSS figures (goals: streaming < 1.5 GB,
in memory > the train split). Run it alone: the two modes share this machine's cores.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from genimg.data.dataset import Dataset
from genimg.data.versions import SPLIT_FRACTIONS, ingest_dataset
from genimg.store import open_store

WORKER_TITLE = "RayTrainWorker"
GB = 1e9


class PeakRss:
    """The largest RSS any Ray Train worker process reaches while this is running."""

    def __init__(self, every: float = 0.2) -> None:
        self.every, self.peak, self.running = every, 0, True
        self.thread = threading.Thread(target=self.sample, daemon=True)

    def sample(self) -> None:
        import psutil

        while self.running:
            for process in psutil.process_iter(["cmdline", "memory_info"]):
                try:
                    cmdline = " ".join(process.info["cmdline"] or [])
                    if WORKER_TITLE in cmdline and process.info["memory_info"] is not None:
                        self.peak = max(self.peak, process.info["memory_info"].rss)
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    continue
            time.sleep(self.every)

    def __enter__(self) -> PeakRss:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.running = False
        self.thread.join()


def make_dataset(store_uri: str, gigabytes: float, size: int, seed: int = 0) -> tuple[str, int, float]:
    """(ref, train records, train GB) of a synthetic version whose train split is ≥ `gigabytes`."""
    record_bytes = 3 * size * size
    # The train split takes ~85 % of the records (by content hash): a little more for the margin.
    count = int(gigabytes * GB / record_bytes / SPLIT_FRACTIONS["train"] * 1.02) + 1
    rng = np.random.default_rng(seed)
    data = np.empty((count, 3, size, size), np.uint8)
    for start in range(0, count, 8192):
        block = data[start : start + 8192]
        block[...] = rng.integers(0, 256, block.shape, dtype=np.uint8)
    dataset = Dataset(kind="images", data=data, source=f"synthetic:{count}x3x{size}x{size}")
    result = ingest_dataset(dataset, "synthetic", store=open_store(store_uri))
    del data, dataset
    train = result.counts["train"]
    return f"synthetic@{result.version}", train, train * record_bytes / GB


def train_once(ref: str, mode: str, steps: int, batch_size: int) -> dict[str, float]:
    import genimg

    with PeakRss() as rss:
        started = time.perf_counter()
        outcome = genimg.train(
            "gan",
            ref,
            steps=steps,
            workers=1,
            overrides={
                "train.data_mode": mode,
                "train.batch_size": batch_size,
                "train.log_every": 20,
                "train.checkpoint_every": steps,
                "eval.at_end_of_training": False,
            },
        )
        seconds = time.perf_counter() - started
    return {
        "images_per_second": outcome.images_per_second,
        "worker_peak_rss_gb": rss.peak / GB,
        "wall_seconds": seconds,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gigabytes", type=float, default=4.0, help="size of the train split, GB")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=240)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--modes", default="stream,memory")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    scratch = Path(tempfile.mkdtemp(prefix="genimg-data-bench-"))
    try:
        os.environ["GENIMG_HOME"] = str(scratch / "home")
        os.environ["GENIMG_STORE"] = (scratch / "store").as_uri()
        os.environ.pop("MLFLOW_TRACKING_URI", None)
        started = time.perf_counter()
        ref, records, train_gb = make_dataset(os.environ["GENIMG_STORE"], args.gigabytes, args.image_size)
        made = time.perf_counter() - started
        print(f"dataset {ref}: {records} train records, {train_gb:.2f} GB, made in {made:.0f} s", file=sys.stderr)
        results: dict[str, object] = {
            "dataset": ref,
            "train_records": records,
            "train_gb": round(train_gb, 3),
            "model": "gan",
            "image_size": args.image_size,
            "steps": args.steps,
            "batch_size": args.batch_size,
            "workers": 1,
        }
        for mode in args.modes.split(","):
            results[mode] = train_once(ref, mode, args.steps, args.batch_size)
            print(f"{mode}: {results[mode]}", file=sys.stderr)
        if "stream" in results and "memory" in results:
            stream, memory = results["stream"], results["memory"]
            assert isinstance(stream, dict) and isinstance(memory, dict)
            results["stream_over_memory_throughput"] = stream["images_per_second"] / memory["images_per_second"]
            results["goals"] = {
                "throughput_ratio_at_least_0.95": results["stream_over_memory_throughput"] >= 0.95,
                "stream_rss_under_1.5_gb": stream["worker_peak_rss_gb"] < 1.5,
                "memory_rss_over_the_train_split": memory["worker_peak_rss_gb"] > train_gb,
            }
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if args.json:
        print(json.dumps(results))
    else:
        for key, value in results.items():
            print(f"{key}: {value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
