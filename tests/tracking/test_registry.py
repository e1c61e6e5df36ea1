"""Register trained runs as pyfunc generators and promote by metric (MLflow on SQLite)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from genimg.cli import app

runner = CliRunner()
VAE = [
    "--model",
    "vae",
    "--workers",
    "0",
    "--set",
    "model.width=8",
    "--set",
    "model.latent_dim=8",
    "--batch-size",
    "32",
    "--set",
    "eval.at_end_of_training=false",
]
EVAL = ["--samples", "150", "--nll-k", "8"]


def cli(*args):
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, (result.output, result.exception)
    return json.loads(result.stdout) if "--json" in args else result


def trained_vae(steps, run_name):
    run_id = cli("train", *VAE, "--dataset", "digits", "--steps", str(steps), "--run-name", run_name, "--json")[
        "run_id"
    ]
    cli("evaluate", run_id, *EVAL, "--json")  # the test-split evaluation registration records
    return run_id


def mlflow_client():
    from mlflow.tracking import MlflowClient

    from genimg.tracking.runs import tracking_uri

    return MlflowClient(tracking_uri())


@pytest.fixture
def digits_in_store(tmp_path, monkeypatch):
    monkeypatch.setenv("GENIMG_STORE", (tmp_path / "store").as_uri())
    cli("ingest", "builtin:digits", "--name", "digits")


def test_champion_moves_only_to_a_better_version_and_reasons_are_recorded(digits_in_store):
    from genimg.tracking.registry import decisions_of

    weak, strong, worse = trained_vae(5, "weak"), trained_vae(300, "strong"), trained_vae(1, "worse")
    ended = mlflow_client().get_run(weak).info.end_time
    first = cli("register", weak, "--json")
    # Registering later does not stretch the training run's duration in MLflow.
    assert mlflow_client().get_run(weak).info.end_time == ended
    assert first["name"] == "genimg-digits-vae" and first["version"] == 1
    tags = first["tags"]
    assert tags["genimg.dataset"].startswith("digits@") and len(tags["genimg.dataset.manifest_sha256"]) == 64
    assert tags["genimg.run_id"] == weak and tags["genimg.code_version"].startswith("0.1.0")
    assert tags["genimg.eval.num_samples"] == "150" and tags["genimg.eval.features"] == "classifier"
    assert "genimg.eval.metric.nll" in tags and len(tags["genimg.config_sha256"]) == 16
    assert cli("promote", "genimg-digits-vae", "--json")["reason"].startswith("first champion")

    cli("register", strong, "--json")
    decision = cli("promote", "genimg-digits-vae", "--json")
    assert decision["promoted"] and decision["champion"] == 2 and decision["metric"] == "nll"
    assert decision["challenger_value"] < decision["champion_value"] and not decision["champion_reevaluated"]

    cli("register", worse, "--json")
    kept = cli("promote", "genimg-digits-vae", "--json")
    assert not kept["promoted"] and kept["champion"] == 2 and "does not beat champion version 2" in kept["reason"]
    client = mlflow_client()
    assert str(client.get_model_version_by_alias("genimg-digits-vae", "champion").version) == "2"
    for number in ("2", "3"):  # the decision is recorded on both versions
        last = decisions_of(client.get_model_version("genimg-digits-vae", number))[-1]
        assert last["id"] == kept["decision_id"] and last["decision"] == "kept" and "does not beat" in last["reason"]
    # What MLflow's version page shows first: test metrics, data, settings, report, the decision.
    promoted, not_promoted = (client.get_model_version("genimg-digits-vae", n).description for n in ("2", "3"))
    assert f"training run `{strong}` on `{tags['genimg.dataset']}`" in promoted and "## Test evaluation" in promoted
    assert "150 generated vs" in promoted and "| nll |" in promoted and "_se |" not in promoted
    assert f"Report: `runs:/{strong}/evaluation/test-" in promoted and promoted.count("## Promotion") == 1
    assert "## Promotion\nPromoted to @champion" in promoted and "## Promotion\nNot promoted" in not_promoted
    assert "does not beat champion version 2" in not_promoted

    # For scripts: --check exits 3 when the challenger is not promoted (the JSON says the same).
    checked = runner.invoke(app, ["promote", "genimg-digits-vae", "--version", "3", "--check", "--json"])
    assert checked.exit_code == 3 and json.loads(checked.stdout)["promoted"] is False, checked.output

    forced = cli("promote", "genimg-digits-vae", "--version", "3", "--force", "--json")
    assert forced["promoted"] and forced["reason"].startswith("forced")
    assert str(client.get_model_version_by_alias("genimg-digits-vae", "champion").version) == "3"
    human = cli("promote", "genimg-digits-vae", "--version", "2", "--check")  # promoted: exit 0
    assert "promoted" in human.stdout and "beats champion version 3" in human.stdout


def test_every_decision_is_kept_and_the_champions_winning_evaluation_is_unchanged(digits_in_store, monkeypatch):
    from genimg.store import open_store
    from genimg.tracking import registry

    name = "genimg-digits-vae"
    first = trained_vae(200, "first")
    cli("evaluate", first, "--samples", "120", "--nll-k", "8", "--json")  # now scored with 120 samples
    winning = cli("register", first, "--json")["tags"]
    cli("register", trained_vae(3, "second"), "--json")  # scored with 150 samples, as EVAL
    cli("register", trained_vae(2, "third"), "--json")
    decisions = [cli("promote", name, "--version", "1", "--json")]
    reevaluating = runner.invoke(
        app, ["promote", name, "--version", "2", "--json"]
    )  # the champion is re-evaluated its way
    assert reevaluating.exit_code == 0, reevaluating.output
    assert f"genimg: re-evaluating champion version 1 of {name} as the challenger was evaluated" in reevaluating.stderr
    decisions.append(json.loads(reevaluating.stdout))
    assert decisions[1]["champion_reevaluated"] and decisions[1]["champion_evaluation"] == "reevaluated"
    assert not decisions[1]["promoted"]

    def no_second_evaluation(*args, **kwargs):
        raise AssertionError("the champion was re-evaluated again on the same evaluation")

    monkeypatch.setattr(registry, "evaluate_model", no_second_evaluation)
    decisions += [cli("promote", name, "--version", "3", "--json")]  # 150 samples again: reused
    assert decisions[2]["champion_evaluation"] == "reused" and not decisions[2]["promoted"]
    decisions += [cli("promote", name, "--version", "2", "--force", "--json")]
    assert decisions[3]["promoted"] and decisions[3]["champion"] == 2

    client = mlflow_client()
    versions = {n: client.get_model_version(name, str(n)) for n in (1, 2, 3)}
    ids = [d["decision_id"] for d in decisions]
    assert [d["id"] for d in registry.decisions_of(versions[1])] == ids  # one record per decision
    assert [d["id"] for d in registry.decisions_of(versions[2])] == [ids[1], ids[3]]
    assert [d["id"] for d in registry.decisions_of(versions[3])] == [ids[2]]
    for record, returned in zip(registry.decisions_of(versions[1]), decisions, strict=True):
        assert record["reason"] == returned["reason"] and record["champion"] == returned["champion"]
    compared = registry.decisions_of(versions[3])[0]
    assert compared["evaluation"]["num_samples"] == "150" and compared["champion_evaluation"] == "reused"
    assert compared["champion_value"] == decisions[2]["champion_value"] and not compared["forced"]

    # Version 1 keeps the evaluation it won with, and why it became champion; its re-evaluation
    # on the challengers' evaluation is kept beside them, under that evaluation's id.
    assert {k: v for k, v in versions[1].tags.items() if k.startswith("genimg.eval.")} == {
        k: v for k, v in winning.items() if k.startswith("genimg.eval.")
    }
    assert versions[1].tags["genimg.eval.num_samples"] == "120"
    assert versions[1].tags["genimg.promoted.decision"] == ids[0]
    assert versions[1].tags["genimg.promoted.reason"].startswith("first champion")
    reevaluation = json.loads(versions[1].tags[f"genimg.reevaluation.{compared['evaluation']['id']}"])
    assert reevaluation["num_samples"] == "150" and reevaluation["metrics"]["nll"] == decisions[1]["champion_value"]
    assert versions[2].tags["genimg.promoted.reason"].startswith("forced")

    # A promotion whose lock was taken over (its holder stalled past the TTL) moves nothing.
    real_decide = registry.decide

    def decide_then_lose_the_lock(*args, **kwargs):
        decision = real_decide(*args, **kwargs)
        store, key = open_store(), "locks/promote-genimg-digits-vae.json"
        assert store.replace_if(key, b'{"token": "successor"}', store.read_versioned(key)[1])
        return decision

    monkeypatch.setattr(registry, "decide", decide_then_lose_the_lock)
    result = runner.invoke(app, ["promote", name, "--version", "1", "--force"])
    assert result.exit_code == 1 and "lost the promotion lock" in result.stderr, result.output
    assert str(client.get_model_version_by_alias(name, "champion").version) == "2"
    assert len(registry.decisions_of(client.get_model_version(name, "1"))) == len(ids)


def test_racing_promotions_leave_the_alias_on_the_best(digits_in_store):
    import threading

    from genimg.services.register import register as register_run
    from genimg.tracking.registry import promote

    base, good, best = trained_vae(2, "base"), trained_vae(100, "good"), trained_vae(400, "best")
    for run_id in (base, good, best):
        register_run(run_id)
    promote("genimg-digits-vae", 1)
    results = {}

    def run(number):
        results[number] = promote("genimg-digits-vae", number)

    threads = [threading.Thread(target=run, args=(n,)) for n in (3, 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # Serialised: whichever ran second compared itself with the first's outcome.
    assert str(mlflow_client().get_model_version_by_alias("genimg-digits-vae", "champion").version) == "3"
    if results[2]["promoted"]:  # 2 went first and beat 1; 3 then compared itself with 2
        assert results[3]["champion_before"] == 2 and results[3]["promoted"]
    else:  # 3 went first; 2 then lost against it
        assert results[2]["champion_before"] == 3 and results[3]["promoted"]


def test_the_champion_loads_as_a_pyfunc_in_a_fresh_process_and_samples(digits_in_store, tmp_path):
    run_id = trained_vae(20, "pyfunc")
    registered = cli("register", run_id, "--json")
    cli("promote", registered["name"], "--json")
    code = (
        "import json, mlflow, numpy as np\n"
        "m = mlflow.pyfunc.load_model('models:/genimg-digits-vae@champion')\n"
        "a = m.predict({'num_samples': 3, 'seed': 7})\n"
        "b = m.predict({'num_samples': 3, 'seed': 7})\n"
        "print(json.dumps({'shape': list(a.shape), 'dtype': str(a.dtype), 'same': bool((a == b).all()), 'max': int(a.max())}))\n"
    )
    from genimg.tracking.runs import tracking_uri

    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "MLFLOW_TRACKING_URI": tracking_uri()}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert (
        result == {"shape": [3, 1, 16, 16], "dtype": "uint8", "same": True, "max": result["max"]} and result["max"] > 0
    )
    # No pickles among the model's files: weights are safetensors, the model is its code.
    local = Path(mlflow_download(registered["model_uri"], tmp_path / "model"))
    files = [p.name for p in local.rglob("*") if p.is_file()]
    assert "model.safetensors" in files and "model.json" in files and "pyfunc_model.py" in files
    assert not [f for f in files if f.endswith((".pkl", ".pickle", ".pt", ".pth", ".cloudpickle"))]
    sample = cli("sample", "models:/genimg-digits-vae@champion", "-n", "4", "-o", str(tmp_path / "s.png"), "--json")
    assert sample["shape"] == [4, 1, 16, 16] and (tmp_path / "s.png").is_file()
    evaluated = cli("evaluate", "models:/genimg-digits-vae@champion", *EVAL, "--json")
    # The version holds the run's weights, evaluated with these settings already: reused.
    assert evaluated["dataset"].startswith("digits@") and evaluated["reused"] and evaluated["run_id"] == run_id


def test_register_and_a_pyfunc_load_print_no_mlflow_warnings(digits_in_store, tmp_path):
    """Only genimg's lines: no MLflow UserWarning (type hints, input example) on either."""
    from genimg.tracking.runs import tracking_uri

    run_id = trained_vae(2, "quiet")
    genimg = Path(sys.executable).parent / "genimg"
    registered = subprocess.run(
        [str(genimg), "register", run_id, "--json"], capture_output=True, text=True, timeout=300
    )
    assert registered.returncode == 0, registered.stderr[-3000:]
    code = (
        "import mlflow; m = mlflow.pyfunc.load_model('models:/genimg-digits-vae/1'); "
        "print(m.predict({'num_samples': 2, 'seed': 0}).shape)"
    )
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "MLFLOW_TRACKING_URI": tracking_uri()}
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300
    )
    assert loaded.returncode == 0 and loaded.stdout.strip().endswith("(2, 1, 16, 16)"), loaded.stderr[-3000:]
    for stderr in (registered.stderr, loaded.stderr):
        assert "Warning" not in stderr and "\x1b[" not in stderr, stderr
    assert "mlflow" not in registered.stderr, registered.stderr


def test_register_says_it_evaluates_a_run_without_a_test_evaluation_first(digits_in_store):
    run_id = cli("train", *VAE, "--dataset", "digits", "--steps", "2", "--json")["run_id"]
    small = ["--samples", "60", "--nll-k", "4", "--extractor-steps", "100"]  # the default is 1,000 samples
    result = runner.invoke(app, ["register", run_id, *small])
    assert result.exit_code == 0, result.output
    lines = result.stderr.splitlines()
    assert any(
        line.startswith(f"genimg: test evaluation of run {run_id} on digits@") and line.endswith(" …") for line in lines
    ), result.stderr
    assert any(f"test evaluation of run {run_id}" in line and ": done in" in line for line in lines)
    assert any(line.startswith("genimg: logging the vae generator to MLflow") for line in lines)
    again = runner.invoke(app, ["register", run_id, *small])  # the same settings: reused, not recomputed
    assert again.exit_code == 0 and "already recorded: reused, not recomputed" in again.stderr, again.output


def mlflow_download(uri, destination):
    import mlflow

    from genimg.tracking.registry import fluent_tracking

    destination.mkdir(parents=True)
    with fluent_tracking():
        return mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(destination))


@pytest.mark.slow
def test_a_sequence_model_predicts_continuations_of_given_frames(tmp_path):
    import io

    run_id = cli(
        "train",
        "--model",
        "rvae",
        "--dataset",
        "builtin:moving-digits",
        "--workers",
        "0",
        "--steps",
        "2",
        "--set",
        "model.width=4",
        "--set",
        "model.frame_dim=16",
        "--set",
        "model.hidden_dim=16",
        "--batch-size",
        "4",
        "--set",
        "eval.at_end_of_training=false",
        "--json",
    )["run_id"]
    cli("evaluate", run_id, "--samples", "20", "--best-of", "1", "--extractor-steps", "30", "--json")
    summary = cli("register", run_id).stdout
    assert summary.startswith("registered models:/genimg-moving-digits-rvae/1 "), summary
    assert "ssim=" in summary and "mse=" in summary and "nll_bound_per_frame=" in summary, summary
    assert "_frame_" not in summary and "copy_last" not in summary and "_se=" not in summary, summary
    import mlflow

    from genimg.tracking.registry import fluent_tracking

    with fluent_tracking():
        model = mlflow.pyfunc.load_model("models:/genimg-moving-digits-rvae/1")
    context = np.zeros((2, 3, 1, 32, 32), np.uint8)
    context[:, :, :, 10:20, 10:20] = 255
    buffer = io.BytesIO()
    np.save(buffer, context)
    out = model.predict({"num_samples": 2, "seed": 1, "num_frames": 6, "context": buffer.getvalue()})
    assert out.shape == (2, 6, 1, 32, 32) and out.dtype == np.uint8
    assert (out[:, :3] == context).all()  # the given frames come back as they were
    plain = model.predict({"num_samples": 3, "seed": 1})
    assert plain.shape == (3, 10, 1, 32, 32)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["promote", "genimg-none-vae"], "no registered model genimg-none-vae"),
        (["register", "0" * 32], "no MLflow run 00000000000000000000000000000000"),
        (["promote", "x", "--mode", "best"], "--mode must be min or max"),
        (
            ["sample", "models:/genimg-none-vae/1", "-o", "x.png"],
            "models:/genimg-none-vae/1: not found in the registry",
        ),
    ],
)
def test_registry_errors_are_one_line(args, message):
    result = runner.invoke(app, args)
    assert result.exit_code == 1 and message in result.stderr, result.output


@pytest.mark.parametrize(
    ("model", "options"),
    [
        ("gan", ["--set", "model.width=4", "--set", "model.latent_dim=8"]),
        ("gan-mlp", ["--set", "model.generator_hidden=[32]", "--set", "model.discriminator_hidden=[32]"]),
    ],
)
def test_gan_generators_predict_uint8_image_arrays(model, options):
    import mlflow

    from genimg.tracking.registry import fluent_tracking

    run_id = cli(
        "train",
        "--model",
        model,
        "--dataset",
        "builtin:digits",
        "--workers",
        "0",
        "--steps",
        "2",
        "--batch-size",
        "16",
        "--set",
        "eval.at_end_of_training=false",
        *options,
        "--json",
    )["run_id"]
    cli("evaluate", run_id, *EVAL, "--json")
    registered = cli("register", run_id, "--json")
    assert registered["name"] == f"genimg-digits-{model}"
    assert registered["tags"]["genimg.dataset.manifest_sha256"] == "none (raw source)"
    with fluent_tracking():
        generator = mlflow.pyfunc.load_model(registered["model_uri"])
    images = generator.predict({"num_samples": 5, "seed": 3})
    assert images.shape == (5, 1, 16, 16) and images.dtype == np.uint8
    assert (generator.predict({"num_samples": 5, "seed": 3}) == images).all()


def test_registered_weights_are_checked_on_every_load(digits_in_store, tmp_path):
    import shutil

    from genimg.settings import genimg_home

    versions = [cli("register", trained_vae(steps, f"weights-{steps}"), "--json") for steps in (2, 3)]
    assert all(len(v["tags"]["genimg.weights_sha256"]) == 64 for v in versions)
    folders = {}
    for version in versions:  # each version's weights folder in the local artifact store
        model_id = version["source"].rsplit("/", 1)[-1]
        folders[version["version"]] = next(genimg_home().rglob(f"{model_id}/**/artifacts/weights"))
    one, two = folders[1], folders[2]
    for name in ("model.safetensors", "model.json"):  # a consistent folder, but version 2's
        shutil.copy(two / name, one / name)
    for command in (
        ["sample", "models:/genimg-digits-vae/1", "-n", "2", "-o", str(tmp_path / "x.png")],
        ["evaluate", "models:/genimg-digits-vae/1", *EVAL],
    ):
        result = runner.invoke(app, command)
        assert result.exit_code == 1 and "are not the ones registered" in result.stderr, result.output
        assert len(result.stderr.strip().splitlines()) == 1
    # genimg reads a version's safetensors and JSON only: stored code that would stop any process
    # importing it changes nothing (mlflow.pyfunc.load_model would run it).
    model_root = next(folder for folder in two.parents if (folder / "MLmodel").is_file())
    stored_code = list(model_root.rglob("*.py"))
    assert stored_code, f"no stored code under {model_root}"
    for path in stored_code:
        path.write_text("raise SystemExit('stored code ran')\n")
    result = runner.invoke(app, ["sample", "models:/genimg-digits-vae/2", "-n", "2", "-o", str(tmp_path / "z.png")])
    assert result.exit_code == 0 and (tmp_path / "z.png").stat().st_size > 0, result.output
    weights = bytearray((two / "model.safetensors").read_bytes())
    weights[-1] ^= 0xFF  # one flipped bit of a weight
    (two / "model.safetensors").write_bytes(bytes(weights))
    result = runner.invoke(app, ["sample", "models:/genimg-digits-vae/2", "-n", "2", "-o", str(tmp_path / "y.png")])
    assert result.exit_code == 1 and "corrupt or replaced" in result.stderr, result.output
