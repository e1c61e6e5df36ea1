"""bench/ingest_throughput.py --source cifar10, run tiny on a CIFAR-like archive made here (the
real archive lives outside the repository, and tests must not need it); no timings asserted."""

import json
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).parents[2]
BENCH = ROOT / "bench" / "ingest_throughput.py"


def run_bench(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(BENCH), *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT), "PATH": "", "HOME": str(tmp_path), "GENIMG_HOME": str(tmp_path / "home")},
    )


def make_cifar_like_archive(tmp_path: Path) -> Path:
    """train/<class>/NNNN.jpg: 2 classes of 6 random 32×32 RGB JPEGs, as a .tar.gz."""
    rng = np.random.default_rng(0)
    for label in ("airplane", "cat"):
        (tmp_path / "train" / label).mkdir(parents=True)
        for i in range(6):
            pixels = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / "train" / label / f"{i:04d}.jpg", quality=90)
    archive = tmp_path / "cifar10-train-jpg.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tmp_path / "train", arcname="train")
    return archive


def test_the_cifar10_bench_runs_on_a_tiny_archive(tmp_path):
    archive = make_cifar_like_archive(tmp_path)
    out = run_bench(tmp_path, "--source", "cifar10", "--cifar10", str(archive), "--repeats", "1", "--json")
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["source"] == "cifar10" and result["images"] == 12
    assert result["genimg_img_s"] > 0 and result["pil_img_s"] > 0 and result["ratio"] > 0


def test_the_cifar10_bench_without_its_archive_says_where_to_get_it(tmp_path):
    out = run_bench(tmp_path, "--source", "cifar10", "--cifar10", str(tmp_path / "absent.tar.gz"))
    assert out.returncode == 2 and out.stdout == ""
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "absent.tar.gz not found" in lines[0]
    assert "cifar10/README.md" in lines[0] and "--cifar10 PATH" in lines[0]
