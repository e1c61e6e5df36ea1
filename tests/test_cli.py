import json
import subprocess
import sys

import pytest
from PIL import Image
from typer.testing import CliRunner

from genimg.cli import app

runner = CliRunner()
# In process (--workers 0): these tests are about the command line, not Ray (tests/distributed).
# A small end-of-training evaluation (its feature network trains 100 steps).
TINY_EVAL = ["--set", "eval.extractor_steps=100", "--set", "eval.samples=40", "--set", "eval.nll_k=4"]
TINY_VAE = ["--workers", "0", "--set", "model.width=4", "--set", "model.latent_dim=4", "--batch-size", "16", *TINY_EVAL]
TINY_RVAE = [
    "--workers",
    "0",
    "--set",
    "model.width=4",
    "--set",
    "model.frame_dim=16",
    "--set",
    "model.hidden_dim=16",
    "--batch-size",
    "4",
    *TINY_EVAL,
]


def invoke(*args: str):
    return runner.invoke(app, list(args))


def test_train_json_then_sample_a_png_grid(tmp_path):
    result = invoke(
        "train",
        "--model",
        "vae",
        "--dataset",
        "builtin:digits",
        "--steps",
        "3",
        *TINY_VAE,
        "-o",
        str(tmp_path / "vae"),
        "--run-name",
        "t1",
        "--json",
    )
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["metrics"]["step"] == 3 and payload["resumed_from_step"] == 0
    assert payload["restarts"] == 0 and payload["checkpoint"].endswith("step-00000003")
    sampled = invoke("sample", str(tmp_path / "vae"), "-n", "9", "--seed", "1", "-o", str(tmp_path / "g.png"))
    assert sampled.exit_code == 0, sampled.output
    with Image.open(tmp_path / "g.png") as grid:
        assert grid.size == (3 * 64 + 4 * 2, 3 * 64 + 4 * 2)  # 3×3 cells of 16 px shown at 4×


def test_resume_continues_the_named_run_and_a_rerun_without_it_is_refused(tmp_path):
    base = ["train", "--model", "vae", "--dataset", "builtin:digits", *TINY_VAE, "--run-name", "r1", "--json"]
    assert invoke(*base, "--steps", "2").exit_code == 0
    refused = invoke(*base, "--steps", "4")
    assert refused.exit_code == 1 and "pass --resume" in refused.stderr
    resumed = invoke(*base, "--steps", "4", "--resume")
    payload = json.loads(resumed.stdout)
    assert payload["resumed_from_step"] == 2 and payload["metrics"]["step"] == 4


def test_sequence_model_samples_to_gif_and_png_strips(tmp_path):
    result = invoke(
        "train",
        "--model",
        "rvae",
        "--dataset",
        "builtin:moving-digits",
        "--steps",
        "1",
        *TINY_RVAE,
        "-o",
        str(tmp_path / "rvae"),
        "--json",
    )
    assert result.exit_code == 0, result.output
    assert (
        invoke("sample", str(tmp_path / "rvae"), "-n", "4", "--frames", "5", "-o", str(tmp_path / "s.gif")).exit_code
        == 0
    )
    with Image.open(tmp_path / "s.gif") as gif:
        assert gif.n_frames == 5
    assert invoke("sample", str(tmp_path / "rvae"), "-n", "2", "-o", str(tmp_path / "s.png")).exit_code == 0
    with Image.open(tmp_path / "s.png") as strips:  # 2 rows × 10 frames of 32 px at 2×
        assert strips.size == (10 * 64 + 11 * 2, 2 * 64 + 3 * 2)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["train", "--model", "diffusion", "--dataset", "builtin:digits"], "unknown model 'diffusion'"),
        (["train", "--model", "vae", "--dataset", "nowhere/at/all"], "dataset source not found: nowhere/at/all"),
        (["train", "--model", "vae", "--dataset", "builtin:digits", "--set", "model.beta=-1"], "model.beta"),
        (
            ["train", "--model", "vae", "--dataset", "builtin:digits", "--set", "train.stepz=3"],
            "unknown config key train.stepz",
        ),
        (["train", "--model", "vae", "--dataset", "builtin:digits", "--steps", "2", "--epochs", "1"], "not both"),
        (["train", "--model", "gan", "--dataset", "builtin:moving-digits"], "holds sequences, not images"),
        (["sample", "no/such/model", "-o", "x.png"], "model folder not found: no/such/model"),
    ],
)
def test_errors_are_one_line_naming_the_bad_item(args, message):
    result = invoke(*args)
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.stderr
    assert result.stdout == ""


def test_still_image_models_refuse_gif_output(tmp_path):
    invoke(
        "train", "--model", "vae", "--dataset", "builtin:digits", "--steps", "1", *TINY_VAE, "-o", str(tmp_path / "m")
    )
    result = invoke("sample", str(tmp_path / "m"), "-o", str(tmp_path / "x.gif"))
    assert result.exit_code == 1 and "write a .png" in result.stderr


def test_epochs_set_the_step_count(tmp_path):
    result = invoke(
        "train",
        "--model",
        "vae",
        "--dataset",
        "builtin:digits",
        "--epochs",
        "0.5",
        "--workers",
        "0",
        "--set",
        "model.width=4",
        "--batch-size",
        "256",
        "--json",
    )
    payload = json.loads(result.stdout)
    # Raw sources train on their train split, like ingested ones: 1,491 of the 1,797 digits.
    assert payload["records"] == 1491
    assert payload["metrics"]["step"] == 3  # 1491 // 256 = 5 batches an epoch, half of it rounded up


def test_the_console_script_is_installed():
    out = subprocess.run([sys.executable, "-m", "genimg.cli", "--help"], capture_output=True, text=True, check=True)
    assert "train" in out.stdout and "sample" in out.stdout


def test_rvae_reads_a_folder_of_sequence_folders(tmp_path, small_sequences):
    for s in range(4):
        (tmp_path / "seqs" / f"s{s}").mkdir(parents=True)
        for t in range(6):
            Image.fromarray(small_sequences[s, t, 0]).save(tmp_path / "seqs" / f"s{s}" / f"{t}.png")
    result = invoke(
        "train",
        "--model",
        "rvae",
        "--dataset",
        str(tmp_path / "seqs"),
        "--steps",
        "1",
        *TINY_RVAE,
        "-o",
        str(tmp_path / "m"),
        "--json",
    )
    assert result.exit_code == 0, result.output
    config = json.loads((tmp_path / "m" / "model.json").read_text())["config"]
    assert config["image_shape"] == [1, 16, 16] and config["num_frames"] == 6


def test_version_and_flags_read_plainly_in_help():
    """`--version` answers; a flag shows no `<bool>` value to type; --json says what it does."""
    from genimg.version import __version__

    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.stdout.strip() == f"genimg {__version__}"
    for command in ("train", "tune", "retrain", "deploy", "ingest", "datasets", "evaluate", "register", "promote"):
        help_text = runner.invoke(app, [command, "--help"], terminal_width=200).stdout
        options = [line for line in help_text.splitlines() if "--" in line and "--help" not in line]
        assert not [line for line in options if "<bool>" in line], (command, help_text)
        json_lines = [line for line in options if "--json" in line]
        assert json_lines and all("print one JSON object" in line for line in json_lines), (command, help_text)
    sample_help = runner.invoke(app, ["sample", "--help"], terminal_width=200).stdout
    assert "print one JSON object" in sample_help
