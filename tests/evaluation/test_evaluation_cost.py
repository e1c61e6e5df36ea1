"""What an evaluation costs and when its numbers count: computed once per (weights, dataset
version, split, settings) across train / evaluate / register / promote, the dataset's feature
network trained once per content, and no promotion on numbers below their floor or inside the noise."""

import json
from types import SimpleNamespace

import pytest

from genimg.cli import app
from tests.evaluation.test_evaluate_cli import cli, runner

TINY_VAE = [
    "--model",
    "vae",
    "--workers",
    "0",
    "--set",
    "model.width=4",
    "--set",
    "model.latent_dim=4",
    "--batch-size",
    "16",
]
TINY_GAN = [
    "--model",
    "gan",
    "--workers",
    "0",
    "--set",
    "model.width=4",
    "--set",
    "model.latent_dim=8",
    "--batch-size",
    "16",
    "--set",
    "eval.at_end_of_training=false",
]
SETTINGS = ["--samples", "40", "--nll-k", "4"]


@pytest.fixture
def counted(monkeypatch):
    """Counts each evaluation computed (by weights, dataset, split and settings) and each
    training of a dataset feature network; both still run as they would."""
    import genimg.evaluation.features as features
    import genimg.services.evaluate as service
    import genimg.tracking.registry as registry

    computed: list[tuple[str, str, str, str]] = []
    trainings: list[str] = []
    real_evaluate, real_train = service.evaluate_model, features.train_feature_network

    def evaluate_model(model, source, split="test", config=None, **kwargs):
        computed.append((service.weights_digest(model), source.ref, split, repr(config)))
        return real_evaluate(model, source, split, config, **kwargs)

    def train_feature_network(kind, *args, **kwargs):
        trainings.append(kind)
        return real_train(kind, *args, **kwargs)

    for module in (service, registry):
        monkeypatch.setattr(module, "evaluate_model", evaluate_model)
    monkeypatch.setattr(features, "train_feature_network", train_feature_network)
    return SimpleNamespace(computed=computed, trainings=trainings)


def image_folder(root, digits):
    """Three classes of 60 grey 16 px images, as PNG files in class folders."""
    from PIL import Image

    for label in range(3):
        folder = root / f"class-{label}"
        folder.mkdir(parents=True)
        for index, image in enumerate(digits[label::10][:60]):
            Image.fromarray(image[0]).save(folder / f"{index}.png")
    return root


def test_each_evaluation_is_computed_once_and_the_feature_network_once_per_content(tmp_path, digits, counted):
    folder = image_folder(tmp_path / "shapes", digits)
    cli("ingest", str(folder), "--name", "shapes", "--json")
    cli("ingest", str(folder), "--name", "shapes-copy", "--json")  # the same content under another name

    first = cli(
        "train",
        *TINY_VAE,
        "--dataset",
        "shapes",
        "--steps",
        "5",
        "--set",
        "eval.samples=40",
        "--set",
        "eval.nll_k=4",
        "--json",
    )
    # A 5-step run does not train a feature network of up to 200 steps for its val evaluation.
    assert "fid" not in first["evaluation"]["metrics"] and "nll" in first["evaluation"]["metrics"]
    assert "FID/KID/precision/recall skipped" in first["evaluation"]["features"]["note"]
    assert counted.trainings == []

    tested = cli("evaluate", first["run_id"], *SETTINGS, "--json")  # trains the network once
    assert not tested["reused"] and "fid" in tested["metrics"] and counted.trainings == ["classifier"]
    assert cli("evaluate", first["run_id"], *SETTINGS, "--json")["reused"]
    registered = cli("register", first["run_id"], *SETTINGS, "--json")  # the same key: reused
    assert registered["tags"]["genimg.eval.metric.nll"] == repr(tested["metrics"]["nll"])
    assert cli("promote", registered["name"], "--json")["reason"].startswith("first champion")

    second = cli(
        "train",
        *TINY_VAE,
        "--dataset",
        "shapes",
        "--steps",
        "6",
        "--set",
        "eval.samples=40",
        "--set",
        "eval.nll_k=4",
        "--json",
    )
    cli("register", second["run_id"], "--json")  # no test evaluation yet: the run's eval: section
    decision = cli("promote", registered["name"], "--json")  # the champion's own evaluation matches
    assert decision["champion_evaluation"] == "own"
    cli("evaluate", f"models:/{registered['name']}/1", "--dataset", "shapes", *SETTINGS, "--json")  # = run 1

    copy = cli("evaluate", first["run_id"], "--dataset", "shapes-copy", *SETTINGS, "--json")
    assert not copy["reused"] and copy["features"]["weights_sha256"] == tested["features"]["weights_sha256"]

    assert len(counted.computed) == len(set(counted.computed)) == 5  # 2 val, 2 test, 1 on the copy
    assert sorted(split for _, _, split, _ in counted.computed) == ["test", "test", "test", "val", "val"]
    assert counted.trainings == ["classifier"]  # one network for both names of the content


def test_noise_against_32_real_images_is_unreliable_and_promotion_refuses_to_decide(tmp_path):
    from genimg.services.register import register
    from genimg.tracking.registry import promote

    cli("ingest", "builtin:digits", "--name", "digits")
    small = {"samples": 64, "max_real": 32, "extractor_steps": 60}  # a 32-image test split, in effect
    versions = []
    for name in ("noise-1", "noise-2"):  # 1 step: generators of noise
        run = cli("train", *TINY_GAN, "--dataset", "digits", "--steps", "1", "--run-name", name, "--json")
        versions.append(register(run["run_id"], evaluation=small))
    evaluated = cli("evaluate", run["run_id"], "--samples", "64", "--json")  # the CLI line and JSON say so
    tags = versions[1]["tags"]
    reliability = json.loads(tags["genimg.eval.reliability"])
    assert reliability["fid"][:4] == [0, 32, 64, 2000] and reliability["kid_mean"][:4] == [0, 32, 64, 100]
    assert evaluated["reliability"]["fid"]["reliable"] is False

    first = promote("genimg-digits-gan", 1)
    assert first["promoted"] and "unreliable at this n" in first["reason"]
    refused = promote("genimg-digits-gan", 2)
    assert not refused["promoted"] and refused["champion"] == 1
    assert refused["reason"].startswith("refused: version 2 of genimg-digits-gan cannot be compared")
    assert "fid on 32 real and 64 generated images is below its floor of 2000" in refused["reason"]
    assert "kid_mean on 32 real and 64 generated images is below its floor of 100" in refused["reason"]
    checked = runner.invoke(app, ["promote", "genimg-digits-gan", "--version", "2", "--check"])
    assert checked.exit_code == 3 and "refused" in checked.stdout, checked.output


def version(number, model, metrics, reliability=None):
    """A model version as promotion reads it: its number and tags."""
    tags = {
        "genimg.model": model,
        "genimg.eval.dataset": "d@1",
        "genimg.eval.features_sha256": "f",
        "genimg.eval.num_samples": "500",
        "genimg.eval.seed": "0",
        "genimg.eval.settings": "k=5",
        **{f"genimg.eval.metric.{name}": repr(value) for name, value in metrics.items()},
    }
    if reliability is not None:
        tags["genimg.eval.reliability"] = json.dumps(reliability)
    return SimpleNamespace(version=str(number), tags=tags)


def test_a_challenger_must_win_by_more_than_the_noise():
    from genimg.tracking.registry import decide

    champion = version(1, "vae", {"nll": 101.0, "nll_se": 1.0})
    close = decide(
        "m",
        version(2, "vae", {"nll": 100.0, "nll_se": 1.0}),
        champion,
        force=False,
        min_delta=0.0,
        metric=None,
        mode=None,
    )
    assert not close.promoted and close.noise == pytest.approx(2 * 2**0.5)
    assert "does not beat champion version 1 nll=101 by more than the noise 2.828" in close.reason
    clear = decide(
        "m",
        version(3, "vae", {"nll": 96.0, "nll_se": 1.0}),
        champion,
        force=False,
        min_delta=0.0,
        metric=None,
        mode=None,
    )
    assert clear.promoted and "by 5 > the noise 2.828" in clear.reason
    larger_delta = decide(
        "m",
        version(3, "vae", {"nll": 96.0, "nll_se": 1.0}),
        champion,
        force=False,
        min_delta=6.0,
        metric=None,
        mode=None,
    )
    assert not larger_delta.promoted and "min_delta 6" in larger_delta.reason


def test_a_gan_is_compared_on_kid_where_its_fid_is_below_the_floor():
    from genimg.tracking.registry import decide

    verdicts = {"fid": [0, 180, 500, 2000, 0.5], "kid_mean": [1, 180, 500, 100, 0.001]}
    champion = version(1, "gan", {"fid": 9.0, "fid_std": 0.5, "kid_mean": 0.020, "kid_std": 0.001}, verdicts)
    challenger = version(2, "gan", {"fid": 7.0, "fid_std": 0.5, "kid_mean": 0.010, "kid_std": 0.001}, verdicts)
    decision = decide("m", challenger, champion, force=False, min_delta=0.0, metric=None, mode=None)
    assert decision.promoted and decision.metric == "kid_mean"
    asked = decide("m", challenger, champion, force=False, min_delta=0.0, metric="fid", mode="min")
    assert not asked.promoted and asked.reason.startswith("refused:") and "below its floor of 2000" in asked.reason
