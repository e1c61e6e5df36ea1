"""Sample quality on CIFAR-10: the DCGAN `gan`, `gan-resnet` + DiffAugment (unconditional and
class-conditional) and the RGB `vae`, each trained for the same time budget, all evaluated on the
test split in one feature space (the dataset's own classifier), one table.

    .venv/bin/python bench/quality_cifar10.py [--cifar10 ../shared/data/cifar10] [--budget 600]
        [--families gan,gan-resnet,gan-resnet-cond,vae] [--device cpu|cuda] [--grids docs/] [--json]

The 50,000 training JPEGs are ingested like any source (split by content hash: ≈ 42.5k train,
2.5k val, 5k test). Goal: `gan-resnet` + DiffAugment has a lower FID than the DCGAN at equal
budget. Runs on torch alone (no Ray, MLflow or Prefect), so it also runs on a bare GPU machine
(bench/gpu_quality.sh). Budgets are wall-clock seconds of training per family (evaluation and
the feature network's training come on top).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from budget import print_table, train_for

DEFAULT_CIFAR10 = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "cifar10"
ARCHIVE = "cifar10-train-jpg.tar.gz"
# (registered model, model config, train config) per benchmark entry, at widths that suit a few
# CPU cores for the default budget. gan-resnet runs SNGAN's "setting C" (one D step per G step,
# Adam β = (0.5, 0.999)): at 150 s on 2 cores it reached FID 0.42 where 2 D steps with β = (0, 0.9)
# reached 0.52 and width 16 (2.6× slower per step) 0.76, against DCGAN's 0.74.
FAMILIES: dict[str, tuple[str, dict[str, Any], dict[str, Any]]] = {
    "gan": (
        "gan",
        {"latent_dim": 128, "width": 32, "ema_decay": 0.999},
        {"batch_size": 64, "lr": 2e-4, "betas": (0.5, 0.999)},
    ),
    "gan-resnet": (
        "gan-resnet",
        {"latent_dim": 128, "width": 8, "ema_decay": 0.999, "augment": "color,translation,cutout"},
        {"batch_size": 64, "lr": 2e-4, "betas": (0.5, 0.999), "d_steps": 1},
    ),
    "gan-resnet-cond": (
        "gan-resnet",
        {"latent_dim": 128, "width": 8, "ema_decay": 0.999, "augment": "color,translation,cutout", "conditional": True},
        {"batch_size": 64, "lr": 2e-4, "betas": (0.5, 0.999), "d_steps": 1},
    ),
    "vae": (
        "vae",
        {
            "architecture": "resnet",
            "likelihood": "logistic",
            "latent_dim": 128,
            "width": 16,
            "decoder_width": 32,
            "decoder_stage_blocks": 1,
            "ema_decay": 0.999,
        },
        {"batch_size": 64, "lr": 1e-3},
    ),
}
# --widths preset: the channel widths of genimg/configs/cifar10-*.yaml (for a GPU).
PRESET_WIDTHS: dict[str, dict[str, int]] = {
    "gan": {"width": 64},
    "gan-resnet": {"width": 64},
    "gan-resnet-cond": {"width": 64},
    "vae": {"width": 64, "decoder_width": 128},
}


def unpack(cifar10: Path, into: Path) -> Path:
    with tarfile.open(cifar10 / ARCHIVE) as archive:
        archive.extractall(into, filter="data")
    return into / "train"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cifar10", type=Path, default=DEFAULT_CIFAR10)
    parser.add_argument("--budget", type=float, default=600.0, help="training seconds per family")
    parser.add_argument("--families", default=",".join(FAMILIES))
    parser.add_argument("--samples", type=int, default=2000, help="generated images per evaluation")
    parser.add_argument("--nll-k", type=int, default=20)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--precision", default=None, choices=["fp32", "bf16"], help="default: bf16 on cuda")
    parser.add_argument(
        "--widths",
        default="cpu",
        choices=["cpu", "preset"],
        help="cpu: narrow networks for a few cores; preset: the widths of genimg/configs/cifar10-*.yaml",
    )
    parser.add_argument("--limit", type=int, default=0, help="ingest only this many images (0: all; smoke tests)")
    parser.add_argument(
        "--extractor-steps",
        type=int,
        default=None,
        help="feature network training steps (default 4,000 for colour; fewer for smoke tests)",
    )
    parser.add_argument("--grids", type=Path, help="write cifar10-<family>-<steps>-steps.png sample grids here")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if not (args.cifar10 / ARCHIVE).is_file():
        print(f"CIFAR-10 archive not found: {args.cifar10 / ARCHIVE} (pass --cifar10 DIR)", file=sys.stderr)
        return 2
    unknown = [name for name in args.families.split(",") if name not in FAMILIES]
    if unknown:
        print(f"unknown family {unknown[0]!r} (known: {', '.join(FAMILIES)})", file=sys.stderr)
        return 2
    precision = args.precision or ("bf16" if args.device == "cuda" else "fp32")
    home = Path(tempfile.mkdtemp(prefix="genimg-cifar10-"))
    os.environ["GENIMG_HOME"] = str(home)
    os.environ.pop("GENIMG_STORE", None)

    from genimg.data.handle import resolve_dataset
    from genimg.data.readers import read_source
    from genimg.data.versions import ingest_dataset
    from genimg.evaluation.config import EvalConfig
    from genimg.evaluation.evaluate import evaluate_model
    from genimg.evaluation.features import dataset_extractor
    from genimg.evaluation.grids import save_image_grid
    from genimg.models import build_model
    from genimg.store import open_store
    from genimg.training.run import class_layout

    started = time.perf_counter()
    folder = unpack(args.cifar10, home / "cifar10")
    if args.limit:
        for class_dir in sorted(folder.iterdir()):
            for extra in sorted(class_dir.iterdir())[args.limit // 10 :]:
                extra.unlink()
    store = open_store()
    ingested = ingest_dataset(read_source(str(folder)), "cifar10", store=store)
    source = resolve_dataset(f"cifar10@{ingested.version}", store=store)
    train = source.load("train")
    records, labels = torch.from_numpy(train.data), torch.from_numpy(train.labels)  # type: ignore[arg-type]
    classes, names = class_layout(train)
    ingest_seconds = time.perf_counter() - started
    print(
        f"ingested {sum(ingested.counts.values())} images in {ingest_seconds:.0f} s: {ingested.counts}", file=sys.stderr
    )
    config = EvalConfig(
        samples=args.samples, nll_k=args.nll_k, features="classifier", extractor_steps=args.extractor_steps
    )
    started = time.perf_counter()
    extractor = dataset_extractor(source, config, store)
    extractor_seconds = time.perf_counter() - started
    if args.device == "cuda":
        extractor.to("cuda")
    results: dict[str, Any] = {
        "dataset": source.ref,
        "counts": ingested.counts,
        "budget_s": args.budget,
        "device": args.device,
        "precision": precision,
        "widths": args.widths,
        "features": extractor.describe(),
        "extractor_s": round(extractor_seconds, 1),
    }
    for name in args.families.split(","):
        registered, model_config, train_config = FAMILIES[name]
        model_config = {
            **model_config,
            "image_shape": list(source.record_shape),
            **(PRESET_WIDTHS[name] if args.widths == "preset" else {}),
        }
        if model_config.get("conditional"):
            model_config |= {"num_classes": classes, "class_names": list(names)}
        torch.manual_seed(0)
        model = build_model(registered, model_config)
        steps, seconds = train_for(
            model,
            records,
            {**train_config, "precision": precision, "channels_last": args.device == "cuda"},
            args.budget,
            labels=labels,
            device=args.device,
        )
        rate = steps * train_config["batch_size"] / seconds
        evaluation = evaluate_model(model, source, "test", config, store=store, extractor=extractor)
        results[name] = {
            "steps": steps,
            "train_s": round(seconds, 1),
            "images_per_second": round(rate, 1),
            **evaluation.metrics,
        }
        if args.grids:
            args.grids.mkdir(parents=True, exist_ok=True)
            grid_labels = torch.arange(64) // 8 % classes if model.num_classes else None  # rows of one class
            save_image_grid(
                model.sample(64, seed=0, labels=grid_labels), args.grids / f"cifar10-{name}-{steps}-steps.png"
            )
        print(
            f"{name}: {steps} steps in {seconds:.0f} s ({rate:.0f} img/s), "
            + ", ".join(f"{k}={v:.4g}" for k, v in evaluation.metrics.items() if "consistency_" not in k),
            file=sys.stderr,
        )
    summary = {}
    if "gan" in results and "gan-resnet" in results:
        summary["fid_gan_resnet_over_gan"] = round(results["gan-resnet"]["fid"] / results["gan"]["fid"], 3)
        summary["goal_met"] = results["gan-resnet"]["fid"] < results["gan"]["fid"]
    results["summary"] = summary
    if args.json:
        print(json.dumps(results))
        return 0
    accuracy = results["features"].get("accuracy")
    print(
        f"dataset {results['dataset']} {results['counts']}; {args.device} ({precision}); "
        f"features {results['features']['name']} (val accuracy {accuracy}, trained in {extractor_seconds:.0f} s); "
        f"{args.budget:.0f} s of training per family"
    )
    print_table(
        results,
        args.families.split(","),
        [
            "steps",
            "images_per_second",
            "fid",
            "kid_mean",
            "precision",
            "recall",
            "coverage",
            "bits_per_dim",
            "class_consistency",
        ],
    )
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
