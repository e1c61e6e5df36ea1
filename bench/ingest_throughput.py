"""Ingest throughput: genimg ingest vs a bare PIL decode loop over the same PNG files.

    .venv/bin/python bench/ingest_throughput.py [--mnist ../shared/data/mnist] [--repeats 3] [--json]

Writes the real MNIST test set (10,000 digits, IDX) out as 10,000 PNG files (not timed), then
times, in the same run and on the same files:
- pil:    open + decode + to numpy for every file (the floor any reader pays);
- genimg: `read_source(folder)` + `ingest_dataset` into a fresh local store (decode, validate,
          hash, dedupe, split, write Parquet shards and the manifest).
Each is run `--repeats` times alternately and the best time kept. Prints images/s for both and
genimg/pil (goal ≥ 0.7).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from genimg.data.readers import read_source
from genimg.data.versions import ingest_dataset
from genimg.store import LocalStore

DEFAULT_MNIST = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "mnist"


def write_pngs(mnist: Path, folder: Path) -> list[Path]:
    digits = read_source(str(mnist / "t10k-images-idx3-ubyte.gz"))
    paths = []
    for index, image in enumerate(digits.data[:, 0]):
        path = folder / f"{index:05d}.png"
        Image.fromarray(image).save(path)
        paths.append(path)
    return paths


def pil_loop(paths: list[Path]) -> float:
    started = time.perf_counter()
    total = 0
    for path in paths:
        with Image.open(path) as image:
            image.load()
            total += int(np.asarray(image).shape[0])
    assert total
    return time.perf_counter() - started


def genimg_ingest(folder: Path, store_root: Path, expected: int) -> float:
    started = time.perf_counter()
    result = ingest_dataset(read_source(str(folder)), "mnist-png", store=LocalStore(store_root))
    elapsed = time.perf_counter() - started
    assert sum(result.counts.values()) == expected and not result.rejected, result.as_dict()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mnist", type=Path, default=DEFAULT_MNIST)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="genimg-bench-") as tmp:
        folder = Path(tmp) / "pngs"
        folder.mkdir()
        paths = write_pngs(args.mnist, folder)
        pil_times, genimg_times = [], []
        for repeat in range(args.repeats):
            pil_times.append(pil_loop(paths))
            genimg_times.append(genimg_ingest(folder, Path(tmp) / f"store{repeat}", len(paths)))
    pil_rate = len(paths) / min(pil_times)
    genimg_rate = len(paths) / min(genimg_times)
    result = {"images": len(paths), "genimg_img_s": round(genimg_rate, 1),
              "pil_img_s": round(pil_rate, 1), "ratio": round(genimg_rate / pil_rate, 3)}
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{len(paths)} PNG files, best of {args.repeats}")
        print(f"pil decode loop : {pil_rate:8.0f} images/s")
        print(f"genimg ingest   : {genimg_rate:8.0f} images/s")
        print(f"ratio           : {genimg_rate / pil_rate:8.2f}  (goal ≥ 0.7)")


if __name__ == "__main__":
    main()
