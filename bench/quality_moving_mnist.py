"""The RVAE on Moving MNIST (64×64, two digits, 10 frames → 10) with the field's protocol.

    .venv/bin/python bench/quality_moving_mnist.py [--mnist ../shared/data/mnist] [--budget 900]
        [--train-sequences 10000] [--test-sequences 500] [--best-of 5] [--gif docs/FILE.gif] [--json]

Builds Moving MNIST (Srivastava et al. 2015: 20 frames, two 28×28 digits bouncing in 64×64,
overlaps by maximum) from the MNIST test set's digits — the first 8,000 digits make the training
sequences, the last 2,000 the held-out test sequences, so no test digit is ever seen in training —
trains the RVAE of genimg/configs/rvae-moving-mnist.yaml for `--budget` seconds, continues each test
sequence's first 10 frames K times and scores the 10 predicted frames: per frame MSE and MAE
(summed over the 64×64 pixels of [0, 1] frames), SSIM (scikit-image's definition) and PSNR,
as the mean over the K draws and as the best of K, beside the copy-last-frame baseline of the same
run, beside all-black frames (where a model whose digits fade ends up) and beside published
figures (cited, not run: OpenSTL's Moving MNIST model zoo, models trained
200 epochs or more on 10,000 sequences per epoch on a GPU). Goal on a CPU: SSIM above copy-last by
≥ 0.10 and MSE at most half of copy-last's.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from budget import train_for

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MNIST = ROOT.parent / "shared" / "data" / "mnist"
PRESET = ROOT / "genimg" / "configs" / "rvae-moving-mnist.yaml"  # packaged preset
CONTEXT, FRAMES, SIZE = 10, 20, 64
TEST_DIGITS = 2000  # the last digits of the file: only test sequences use them
# OpenSTL, docs/en/model_zoos/video_benchmarks.md (Moving MNIST, 10 → 10): ConvLSTM as quoted in
# genimg's issue 13 (200 epochs); PredRNN and SimVP+gSTA-S from the table at commit 033a2dd.
PUBLISHED = {
    "ConvLSTM (OpenSTL, cited)": {"mse": 29.80, "mae": 90.64, "ssim": 0.929},
    "PredRNN (OpenSTL, cited)": {"mse": 25.04, "mae": 76.26, "ssim": 0.944},
    "SimVP+gSTA-S (OpenSTL, cited)": {"mse": 15.05, "mae": 49.80, "ssim": 0.967},
}
COLUMNS = ["mse", "mae", "ssim", "psnr"]


def moving_mnist(digits: np.ndarray, count: int, seed: int) -> np.ndarray:
    from genimg.data.moving_mnist import make_moving_mnist

    return make_moving_mnist(digits, count, num_frames=FRAMES, size=SIZE, digits_per_sequence=2, seed=seed)


def preset() -> tuple[dict[str, Any], dict[str, Any]]:
    from genimg.training.run import load_config_file

    config = load_config_file(PRESET)
    train = {k: v for k, v in config["train"].items() if k in ("batch_size", "lr", "betas", "grad_clip")}
    return dict(config["model"]), train


def black_frames_baseline(future: torch.Tensor) -> dict[str, float]:
    """The scores of predicting empty frames: what a model whose digits fade away tends to."""
    from genimg.evaluation.evaluate import SEQUENCE_METRICS

    frames = future.flatten(0, 1)
    return {
        name: float(function(torch.zeros_like(frames), frames).mean())
        for name, (function, _) in SEQUENCE_METRICS.items()
    }


def save_comparison_gif(truth: torch.Tensor, predicted: torch.Tensor, path: Path) -> None:
    """Per GIF frame: one row per sequence, ground truth on the left, the model on the right
    (identical for the context frames, which are given)."""
    from PIL import Image

    from genimg.evaluation.grids import image_grid, to_uint8

    pairs = torch.stack([truth, predicted], dim=1).flatten(0, 1)  # (2N, T, C, H, W)
    array = to_uint8(pairs)
    frames = [
        Image.fromarray(image_grid(array[:, t], columns=2).squeeze(2), "L").convert("P") for t in range(array.shape[1])
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=250, loop=0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mnist", type=Path, default=DEFAULT_MNIST)
    parser.add_argument("--budget", type=float, default=900.0, help="training seconds")
    parser.add_argument("--train-sequences", type=int, default=10000)
    parser.add_argument("--test-sequences", type=int, default=500)
    parser.add_argument("--best-of", type=int, default=5, help="K continuations per test sequence")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="model.KEY=VALUE",
        help="override a model or train option of the preset (repeatable)",
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--gif", type=Path, help="write context + prediction + truth of 4 test sequences here")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    images = args.mnist / "t10k-images-idx3-ubyte.gz" if args.mnist.is_dir() else args.mnist
    if not images.is_file():
        print(f"MNIST images not found: {images} (pass --mnist DIR or the IDX file)", file=sys.stderr)
        return 2

    import yaml

    from genimg.data.idx import read_idx
    from genimg.evaluation.config import EvalConfig
    from genimg.evaluation.evaluate import sequence_metrics
    from genimg.models.base import build_model

    digits = read_idx(images).data
    if len(digits) <= TEST_DIGITS:
        print(f"{images}: {len(digits)} digits, need more than {TEST_DIGITS}", file=sys.stderr)
        return 2
    started = time.perf_counter()
    train = moving_mnist(digits[:-TEST_DIGITS], args.train_sequences, seed=0)
    test = moving_mnist(digits[-TEST_DIGITS:], args.test_sequences, seed=1)
    built = time.perf_counter() - started
    model_config, train_config = preset()
    for item in args.set:
        key, _, value = item.partition("=")
        section, _, name = key.partition(".")
        target = {"model": model_config, "train": train_config}.get(section)
        if target is None or not name or not value:
            print(f"--set {item!r}: expected model.KEY=VALUE or train.KEY=VALUE", file=sys.stderr)
            return 2
        target[name] = yaml.safe_load(value)
    torch.manual_seed(0)
    model = build_model("rvae", {**model_config, "image_shape": (1, SIZE, SIZE), "num_frames": FRAMES}).to(args.device)
    steps, seconds = train_for(model, torch.from_numpy(train), train_config, args.budget, device=args.device)
    evaluated = time.perf_counter()
    with torch.no_grad():
        metrics, closest = sequence_metrics(
            model.eval(),
            torch.from_numpy(test),
            EvalConfig(best_of=args.best_of, context_frames=CONTEXT, batch_size=100),
        )
    evaluation_seconds = time.perf_counter() - evaluated

    rows: dict[str, dict[str, float]] = {
        f"genimg rvae, mean of K={args.best_of}": {c: metrics[c] for c in COLUMNS},
        f"genimg rvae, best of K={args.best_of}": {c: metrics[f"{c}_best_of_k"] for c in COLUMNS},
        "copy last context frame": {c: metrics[f"{c}_copy_last_baseline"] for c in COLUMNS},
        "all-black frames": black_frames_baseline(torch.from_numpy(test[:, CONTEXT:]).float() / 255.0),
        **PUBLISHED,
    }
    copy_last = rows["copy last context frame"]
    mean = rows[f"genimg rvae, mean of K={args.best_of}"]
    goals = {
        "ssim_above_copy_last": mean["ssim"] - copy_last["ssim"],
        "mse_over_copy_last": mean["mse"] / copy_last["mse"],
        "mse_over_convlstm": mean["mse"] / PUBLISHED["ConvLSTM (OpenSTL, cited)"]["mse"],
        "ssim_below_convlstm": PUBLISHED["ConvLSTM (OpenSTL, cited)"]["ssim"] - mean["ssim"],
    }
    summary = {
        "train_sequences": args.train_sequences,
        "test_sequences": args.test_sequences,
        "best_of": args.best_of,
        "steps": steps,
        "train_seconds": round(seconds, 1),
        "evaluation_seconds": round(evaluation_seconds, 1),
        "build_seconds": round(built, 1),
        "model": model_config,
        "train": train_config,
        "nll_bound_per_frame": metrics["nll_bound_per_frame"],
        "rows": rows,
        "goals": goals,
        "per_frame_mse": [metrics[f"mse_frame_{t:02d}"] for t in range(CONTEXT + 1, FRAMES + 1)],
        "per_frame_ssim": [metrics[f"ssim_frame_{t:02d}"] for t in range(CONTEXT + 1, FRAMES + 1)],
    }
    if args.gif:
        shown = torch.from_numpy(test[:4]).float() / 255.0
        save_comparison_gif(shown, closest[:4], args.gif)
        summary["gif"] = str(args.gif)
    if args.json:
        print(json.dumps(summary))
        return 0
    print(
        f"Moving MNIST {FRAMES} frames of {SIZE}×{SIZE}, {CONTEXT} → {FRAMES - CONTEXT}: "
        f"{args.train_sequences} training sequences (digits 1–{len(digits) - TEST_DIGITS}), "
        f"{args.test_sequences} test sequences (other digits); {steps} steps in {seconds:.0f} s"
    )
    print("| model | MSE / frame | MAE / frame | SSIM | PSNR |\n| --- | --- | --- | --- | --- |")
    for name, row in rows.items():
        print(f"| {name} | " + " | ".join(f"{row[c]:.4g}" if c in row else "—" for c in COLUMNS) + " |")
    print(
        f"goals: SSIM − copy-last {goals['ssim_above_copy_last']:+.3f} (≥ +0.10), MSE / copy-last "
        f"{goals['mse_over_copy_last']:.2f} (≤ 0.5); vs ConvLSTM: MSE × {goals['mse_over_convlstm']:.2f}, "
        f"SSIM {-goals['ssim_below_convlstm']:+.3f}"
    )
    print(
        "per predicted frame, mean of K — MSE: "
        + ", ".join(f"{v:.0f}" for v in summary["per_frame_mse"])
        + "; SSIM: "
        + ", ".join(f"{v:.3f}" for v in summary["per_frame_ssim"])
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
