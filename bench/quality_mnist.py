"""Sample quality on real MNIST digits: train vae, gan and gan-mlp for the same CPU time budget
each, evaluate all three on the test split with one feature network, print a table.

    .venv/bin/python bench/quality_mnist.py [--mnist ../shared/data/mnist] [--budget 240] [--json]

The MNIST test set (10,000 digits) is ingested like any source, so its deterministic split gives
≈ 8,500 train / 500 val / 1,000 test records. Targets: VAE test NLL ≤ 90 nats (IWAE, k = 1000;
published 89.8 for a VAE trained on the full 60k training set; pythae 0.1.2's VAE with its ResNet
MNIST networks reached 90.6 on this split and budget); the conv GAN's FID below the VAE's and below
the gan-mlp baseline's, on the same extractor. Ratios are against those in-run baselines.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch
from budget import print_table, train_for

DEFAULT_MNIST = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "mnist"
PUBLISHED_VAE_NLL = 89.8
VAE_NLL_TARGET = 90.0
FAMILIES: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    # model config, train config (batch sizes and learning rates of genimg/configs/*-digits.yaml)
    "vae": (
        {
            "architecture": "resnet",
            "latent_dim": 32,
            "width": 16,
            "decoder_width": 32,
            "decoder_stage_blocks": 1,
            "ema_decay": 0.999,
        },
        {"batch_size": 64, "lr": 2e-3},
    ),
    "gan": ({"latent_dim": 64, "width": 32, "ema_decay": 0.999}, {"batch_size": 64, "lr": 2e-4, "betas": (0.5, 0.999)}),
    "gan-mlp": (
        {"latent_dim": 100, "generator_hidden": [128, 128, 1024], "discriminator_hidden": [128, 128]},
        {"batch_size": 64, "lr": 2e-4, "betas": (0.5, 0.999)},
    ),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mnist", type=Path, default=DEFAULT_MNIST)
    parser.add_argument("--budget", type=float, default=240.0, help="training seconds per family")
    parser.add_argument("--families", default="vae,gan,gan-mlp")
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--nll-k", type=int, default=1000)
    parser.add_argument("--grids", type=Path, help="write <family>.png sample grids into this folder")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if not args.mnist.is_dir():
        print(f"MNIST folder not found: {args.mnist} (pass --mnist DIR)", file=sys.stderr)
        return 2
    home = Path(tempfile.mkdtemp(prefix="genimg-quality-"))
    os.environ["GENIMG_HOME"] = str(home)
    os.environ.pop("GENIMG_STORE", None)

    from genimg.data.handle import resolve_dataset
    from genimg.data.readers import read_source
    from genimg.data.versions import ingest_dataset
    from genimg.evaluation.config import EvalConfig
    from genimg.evaluation.evaluate import evaluate_model
    from genimg.evaluation.grids import save_image_grid
    from genimg.models import build_model
    from genimg.store import open_store

    store = open_store()
    # The images file; its labels file beside it is picked up by the IDX reader.
    ingested = ingest_dataset(read_source(str(args.mnist / "t10k-images-idx3-ubyte.gz")), "mnist", store=store)
    source = resolve_dataset(f"mnist@{ingested.version}", store=store)
    records = torch.from_numpy(source.load("train").data)
    shape = list(source.record_shape)
    config = EvalConfig(samples=args.samples, nll_k=args.nll_k, features="classifier")
    results: dict[str, Any] = {"dataset": source.ref, "counts": ingested.counts, "budget_s": args.budget}
    for name in args.families.split(","):
        model_config, train = FAMILIES[name]
        model_config = {**model_config, "image_shape": shape}
        torch.manual_seed(0)
        model = build_model(name, model_config)
        steps, seconds = train_for(model, records, train, args.budget)
        evaluation = evaluate_model(model, source, "test", config, store=store)
        results[name] = {"steps": steps, "train_s": round(seconds, 1), **evaluation.metrics}
        results["features"] = evaluation.features
        if args.grids:
            save_image_grid(model.sample(64, seed=0), args.grids / f"mnist-{name}-{steps}-steps.png")
        print(
            f"{name}: {steps} steps in {seconds:.0f} s, "
            + ", ".join(f"{k}={v:.4g}" for k, v in evaluation.metrics.items()),
            file=sys.stderr,
        )
    summary = {}
    if "vae" in results:
        summary["vae_nll_vs_published"] = round(results["vae"]["nll"] / PUBLISHED_VAE_NLL, 3)
        summary["vae_nll_target_met"] = results["vae"]["nll"] <= VAE_NLL_TARGET
    for other in ("vae", "gan-mlp"):
        if "gan" in results and other in results:
            summary[f"fid_gan_over_{other}"] = round(results["gan"]["fid"] / results[other]["fid"], 3)
    results["summary"] = summary
    if args.json:
        print(json.dumps(results))
    else:
        print(
            f"dataset {results['dataset']} {results['counts']}; features {results['features']['name']} "
            f"(held-out accuracy {results['features'].get('accuracy')}); {args.budget:.0f} s per family"
        )
        print_table(
            results,
            args.families.split(","),
            ["steps", "train_s", "fid", "kid_mean", "precision", "recall", "density", "coverage", "nll"],
        )
        print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
