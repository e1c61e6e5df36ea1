"""Ingest throughput: genimg ingest vs a bare PIL decode loop over the same image files.

    .venv/bin/python bench/ingest_throughput.py [--source mnist|cifar10] [--mnist DIR]
        [--cifar10 TAR_GZ] [--repeats 3] [--json]

Sources (made ready once, not timed):
- mnist (default): the real MNIST test set (10,000 digits, IDX) written out as 10,000 PNG files;
- cifar10: ../shared/data/cifar10/cifar10-train-jpg.tar.gz unpacked to a temporary folder: the
  50,000 CIFAR-10 training images, 32×32 RGB JPEGs in ten class folders.
Then times, in the same run and on the same files:
- pil:    open + decode + convert (L for MNIST, RGB for CIFAR-10) + to numpy for every file (the
          floor any reader pays);
- genimg: `read_source(folder)` + `ingest_dataset` into a fresh local store (decode, validate,
          hash, dedupe, split, write Parquet shards and the manifest).
Each is run `--repeats` times alternately and the best time kept. Prints images/s for both and
genimg/pil (goal ≥ 0.7). genimg decodes large folders in several processes and the PIL loop runs
in one, so the ratio depends on the free cores: report it with the machine's load.
"""

from __future__ import annotations

import argparse
import json
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from genimg.data.readers import read_source
from genimg.data.versions import ingest_dataset
from genimg.store import LocalStore

SHARED_DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data"
DEFAULT_MNIST = SHARED_DATA / "mnist"
DEFAULT_CIFAR10 = SHARED_DATA / "cifar10" / "cifar10-train-jpg.tar.gz"
MNIST_IMAGES = "t10k-images-idx3-ubyte.gz"


def write_pngs(mnist: Path, folder: Path) -> list[Path]:
    digits = read_source(str(mnist / MNIST_IMAGES))
    folder.mkdir()
    paths = []
    for index, image in enumerate(digits.data[:, 0]):
        path = folder / f"{index:05d}.png"
        Image.fromarray(image).save(path)
        paths.append(path)
    return paths


def unpack_cifar10(archive: Path, into: Path) -> tuple[Path, list[Path]]:
    """The archive's train/ folder (train/<class>/NNNN.jpg) and its JPEG files."""
    with tarfile.open(archive, "r:gz") as tar:
        tar.extractall(into, filter="data")  # "data": no links or paths out of `into`
    folder = into / "train"
    paths = sorted(folder.glob("*/*.jpg"))
    if not paths:
        raise SystemExit(f"error: {archive} holds no train/<class>/*.jpg files")
    return folder, paths


def pil_loop(paths: list[Path], mode: str) -> float:
    started = time.perf_counter()
    total = 0
    for path in paths:
        with Image.open(path) as image:
            pixels = np.asarray(image if image.mode == mode else image.convert(mode))
            total += int(pixels.shape[0])
    assert total
    return time.perf_counter() - started


def genimg_ingest(folder: Path, store_root: Path, expected: int) -> float:
    started = time.perf_counter()
    result = ingest_dataset(read_source(str(folder)), "bench", store=LocalStore(store_root))
    elapsed = time.perf_counter() - started
    # Exact duplicates (if a source has any) are dropped, not lost: they count as records read.
    assert sum(result.counts.values()) + result.duplicates == expected and not result.rejected, result.as_dict()
    return elapsed


def missing_input(args: argparse.Namespace) -> str | None:
    """Why this source's input cannot be used, in one line, or None."""
    if args.source == "cifar10" and not args.cifar10.is_file():
        return (
            f"{args.cifar10} not found: the CIFAR-10 JPEG archive (see "
            "../shared/data/cifar10/README.md), or pass --cifar10 PATH"
        )
    if args.source == "mnist" and not (args.mnist / MNIST_IMAGES).is_file():
        return f"{args.mnist / MNIST_IMAGES} not found: the MNIST test images, or pass --mnist DIR"
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", choices=["mnist", "cifar10"], default="mnist")
    parser.add_argument("--mnist", type=Path, default=DEFAULT_MNIST, help="folder of the MNIST IDX files")
    parser.add_argument("--cifar10", type=Path, default=DEFAULT_CIFAR10, help="cifar10-train-jpg.tar.gz")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    problem = missing_input(args)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        raise SystemExit(2)
    with tempfile.TemporaryDirectory(prefix="genimg-bench-") as tmp:
        if args.source == "cifar10":
            folder, paths = unpack_cifar10(args.cifar10, Path(tmp) / "unpacked")
            kind, mode = "JPEG", "RGB"
        else:
            folder = Path(tmp) / "pngs"
            paths = write_pngs(args.mnist, folder)
            kind, mode = "PNG", "L"
        pil_times, genimg_times = [], []
        for repeat in range(args.repeats):
            pil_times.append(pil_loop(paths, mode))
            genimg_times.append(genimg_ingest(folder, Path(tmp) / f"store{repeat}", len(paths)))
    pil_rate = len(paths) / min(pil_times)
    genimg_rate = len(paths) / min(genimg_times)
    result = {
        "source": args.source,
        "images": len(paths),
        "genimg_img_s": round(genimg_rate, 1),
        "pil_img_s": round(pil_rate, 1),
        "ratio": round(genimg_rate / pil_rate, 3),
    }
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{len(paths)} {kind} files ({args.source}), best of {args.repeats}")
        print(f"pil decode loop : {pil_rate:8.0f} images/s")
        print(f"genimg ingest   : {genimg_rate:8.0f} images/s")
        print(f"ratio           : {genimg_rate / pil_rate:8.2f}  (goal ≥ 0.7)")


if __name__ == "__main__":
    main()
