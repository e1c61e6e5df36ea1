import math

import pytest
import torch

from genimg.data.handle import resolve_dataset
from genimg.errors import GenimgError
from genimg.evaluation.config import EvalConfig
from genimg.evaluation.evaluate import evaluate_model
from genimg.evaluation.report import write_report
from genimg.models import build_model
from genimg.training.config import TrainConfig
from genimg.training.loop import train_model

QUICK = EvalConfig(samples=150, nll_k=10, best_of=2, extractor_steps=150)
DISTANCES = {
    "fid",
    "fid_std",
    "kid_mean",
    "kid_std",
    "precision",
    "recall",
    "density",
    "coverage",
    "precision_se",
    "recall_se",
    "density_se",
    "coverage_se",
}


@pytest.fixture(scope="module")
def digits_splits():
    return resolve_dataset("builtin:digits")


def trained(name, source, steps, **model):
    config = {"image_shape": list(source.record_shape[-3:]), **model}
    if name == "rvae":
        config["num_frames"] = source.record_shape[0]
    network = build_model(name, config)
    records = torch.from_numpy(source.load("train").data)
    train_model(network, records, TrainConfig(steps=steps, batch_size=32, log_every=max(1, steps)))
    return network


def test_a_vae_trained_longer_has_a_lower_test_nll(digits_splits):
    short = evaluate_model(trained("vae", digits_splits, 5, latent_dim=8, width=16), digits_splits, "test", QUICK)
    longer = evaluate_model(trained("vae", digits_splits, 600, latent_dim=8, width=16), digits_splits, "test", QUICK)
    assert set(longer.metrics) == DISTANCES | {"nll", "nll_se", "bits_per_dim", "bits_per_dim_se"}
    assert longer.metrics["nll"] < short.metrics["nll"] - 20, (short.metrics["nll"], longer.metrics["nll"])
    assert longer.metrics["fid"] < short.metrics["fid"]
    assert longer.metrics["bits_per_dim"] == pytest.approx(longer.metrics["nll"] / (256 * math.log(2)))
    assert longer.settings["nll_k"] == 10 and longer.num_real == len(digits_splits.load("test"))


@pytest.mark.parametrize("name", ["gan", "gan-mlp"])
def test_gans_get_distances_and_knn_metrics_only(digits_splits, name):
    small = {"gan": {"width": 4, "latent_dim": 8}, "gan-mlp": {"generator_hidden": [32], "discriminator_hidden": [32]}}
    evaluation = evaluate_model(trained(name, digits_splits, 3, **small[name]), digits_splits, "test", QUICK)
    assert set(evaluation.metrics) == DISTANCES
    assert evaluation.features["name"] == "classifier" and len(evaluation.features["weights_sha256"]) == 64
    assert evaluation.samples.shape[1:] == (1, 16, 16)


def test_the_same_inputs_and_seed_give_the_same_numbers(digits_splits):
    model = trained("vae", digits_splits, 20, latent_dim=4, width=4)
    first = evaluate_model(model, digits_splits, "test", QUICK)
    again = evaluate_model(model, digits_splits, "test", QUICK)
    other_seed = evaluate_model(model, digits_splits, "test", EvalConfig(**{**QUICK.__dict__, "seed": 1}))
    assert first.metrics == again.metrics and first.features["weights_sha256"] == again.features["weights_sha256"]
    assert again.features["reused"] is True  # the second evaluation used the cached network
    assert other_seed.metrics["fid"] != first.metrics["fid"]


def test_a_model_of_another_shape_is_refused_with_both_shapes(digits_splits):
    model = build_model("vae", {"image_shape": [1, 28, 28], "width": 4, "latent_dim": 4})
    with pytest.raises(GenimgError, match="1×28×28 images but builtin:digits@.* holds 1×16×16"):
        evaluate_model(model, digits_splits, "test", QUICK)


def test_sequence_metrics_baseline_and_report(small_sequences, tmp_path):
    from genimg.data.dataset import Dataset
    from genimg.data.handle import handle_of

    # Enough sequences that every split has some: repeat the fixture's sequences shifted.
    data = torch.from_numpy(small_sequences)
    data = torch.cat([data.roll(shift, dims=-1) for shift in range(12)]).numpy()
    dataset = Dataset("sequences", data, "shifted-sequences")
    source = handle_of(dataset, "shifted")
    model = trained("rvae", source, 2, latent_dim=4, width=4, frame_dim=16, hidden_dim=16)
    evaluation = evaluate_model(model, source, "test", QUICK)
    frames = data.shape[1]
    context = frames // 2
    predicted = [f"frame_{t:02d}" for t in range(context + 1, frames + 1)]
    scored = [
        f"{metric}{kind}"
        for metric in ("mse", "mae", "ssim", "psnr")
        for kind in ("", "_best_of_k", "_copy_last_baseline")
    ]
    expected = (
        DISTANCES
        | {"nll_bound_per_frame", *scored}
        | {f"{name}_se" for name in scored}
        | {f"{name}_{frame}" for frame in predicted for name in scored}
    )
    assert set(evaluation.metrics) == expected
    assert evaluation.settings["best_of"] == 2 and evaluation.settings["context_frames"] == context
    assert "mean over the K" in evaluation.settings["sequence_metrics"]
    metrics = evaluation.metrics
    # The best of K is at least as good as their mean, metric by metric.
    assert metrics["mse_best_of_k"] <= metrics["mse"] and metrics["mae_best_of_k"] <= metrics["mae"]
    assert metrics["ssim_best_of_k"] >= metrics["ssim"] and metrics["psnr_best_of_k"] >= metrics["psnr"]
    # Per frame MSE is a sum over the frame's pixels: at most its pixel count.
    assert 0 <= metrics[f"mse_{predicted[0]}"] <= data.shape[-1] * data.shape[-2]
    assert evaluation.features["name"] == "autoencoder"  # sequences carry no labels
    files = write_report(evaluation, tmp_path, title="rvae", history={"loss": [(1, 3.0), (2, 2.0)]})
    names = {path.name for path in files}
    assert names == {
        "report.md",
        "report.html",
        "metrics.json",
        "continuations.gif",
        "continuations.png",
        "samples.png",
        "per_frame.png",
        "loss_curves.png",
    }
    report = (tmp_path / "report.md").read_text()
    assert "| ssim_copy_last_baseline |" in report and "![Training curves](loss_curves.png)" in report
    # Per-frame scores are a plot, not ~140 table rows; each score says which way is better.
    assert "_frame_" not in report and "![Scores per predicted frame](per_frame.png)" in report
    assert "| mse | " in report and "| lower is better |" in report and "| higher is better |" in report
    # The page stands alone (MLflow's artifact viewer shows it without its folder).
    page = (tmp_path / "report.html").read_text()
    assert "src='data:image/gif;base64," in page and "src='data:image/png;base64," in page
    assert ".gif'" not in page and ".png'" not in page
    with pytest.raises(GenimgError, match="leaves no frame to predict"):
        evaluate_model(model, source, "test", EvalConfig(**{**QUICK.__dict__, "context_frames": frames}))


def test_a_sequence_report_when_fewer_sequences_are_continued_than_the_split_holds(small_sequences, tmp_path):
    """--samples below the split's sequence count: the report pairs each continuation with its
    own ground truth (it once stacked 7 ground truths with 4 continuations and crashed)."""
    from genimg.data.dataset import Dataset
    from genimg.data.handle import handle_of

    source = handle_of(Dataset("sequences", small_sequences, "small-sequences"), "small")
    assert source.counts["test"] > 3
    model = trained("rvae", source, 1, latent_dim=4, width=4, frame_dim=16, hidden_dim=16)
    config = EvalConfig(samples=3, nll_k=2, best_of=2, extractor_steps=20)
    evaluation = evaluate_model(model, source, "test", config)
    assert evaluation.continuations is not None and evaluation.ground_truth is not None
    assert len(evaluation.continuations) == len(evaluation.ground_truth) == 3
    write_report(evaluation, tmp_path, title="rvae")
    assert (tmp_path / "continuations.gif").stat().st_size > 0
