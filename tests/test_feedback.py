"""Slow phases say what they do on stderr (also without a terminal), long loops report progress,
and the summary's rate is the one measured where the steps run."""

import json

import pytest
from typer.testing import CliRunner

from genimg import feedback
from genimg.cli import app
from tests.test_cli import TINY_VAE

runner = CliRunner()


def test_training_prints_its_phases_and_periodic_progress_without_a_terminal(monkeypatch):
    monkeypatch.setattr(feedback, "PROGRESS_EVERY_SECONDS", 0.0)
    result = runner.invoke(
        app,
        [
            "train",
            "--model",
            "vae",
            "--dataset",
            "builtin:digits",
            *TINY_VAE,
            "--steps",
            "20",
            "--set",
            "train.log_every=5",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    lines = result.stderr.splitlines()
    assert any(line.startswith("genimg: step 5/20") and "img/s" in line for line in lines), result.stderr
    assert "genimg: evaluating the trained model on the val split of builtin:digits@" in result.stderr
    assert any("evaluating the trained model" in line and ": done in" in line for line in lines)
    assert any(line.startswith("genimg: training the classifier feature network: 1/100 steps") for line in lines)
    payload = json.loads(result.stdout)  # stdout holds the JSON object alone
    assert payload["images_per_second"] > 0 and payload["metrics"]["images_per_second"] > 0


def test_the_summary_of_a_short_run_shows_a_real_rate():
    result = runner.invoke(
        app,
        [
            "train",
            "--model",
            "vae",
            "--dataset",
            "builtin:digits",
            *TINY_VAE,
            "--steps",
            "3",
            "--set",
            "eval.at_end_of_training=false",
        ],
    )
    assert result.exit_code == 0, result.output
    rate = result.stdout.split(" s (", 1)[1].split(" img/s", 1)[0]
    assert float(rate) > 0, result.stdout


def test_progress_lines_come_periodically_and_a_quick_loop_prints_none(monkeypatch, caplog):
    caplog.set_level("INFO", logger="genimg")
    with feedback.progress("quick", 3) as update:
        for done in range(1, 4):
            update(done)
    assert [r.message for r in caplog.records] == []
    monkeypatch.setattr(feedback, "PROGRESS_EVERY_SECONDS", 0.0)
    with feedback.progress("slow", 3, "items") as update:
        for done in range(1, 4):
            update(done)
    messages = [r.getMessage() for r in caplog.records]
    assert messages[:2] and messages[0].startswith("slow: 1/3 items (") and messages[1].startswith("slow: 2/3 items (")


def test_progress_lines_carry_the_rate_and_the_time_left_and_slow_rates_keep_their_figures(monkeypatch, caplog):
    caplog.set_level("INFO", logger="genimg")
    monkeypatch.setattr(feedback, "PROGRESS_EVERY_SECONDS", 0.0)
    with feedback.progress("features", 4, "img") as update:
        update(1)
    assert " img/s, " in caplog.records[0].getMessage() and caplog.records[0].getMessage().endswith(" left)")
    assert feedback.rate(0.4, "img") == "0.4 img/s" and feedback.rate(0.0312, "img") == "0.0312 img/s"
    assert feedback.rate(12.34, "steps") == "12.3 steps/s" and feedback.rate(4321.6, "img") == "4322 img/s"
    assert feedback.rate_and_time_left(10, 100, 25.0, "img") == "0.4 img/s, 3.8 min left"
    assert feedback.rate_and_time_left(1, 1000, 5.0, "img") == "0.2 img/s, 83.2 min left"


def test_phases_say_when_they_start_and_how_long_they_took(caplog):
    caplog.set_level("INFO", logger="genimg")
    with feedback.phase("doing a thing"):
        pass
    first, second = [r.getMessage() for r in caplog.records]
    assert first == "doing a thing …" and second.startswith("doing a thing: done in ")


def test_lines_on_stderr_never_show_credentials(capsys):
    feedback.show_on_stderr()
    feedback.say("connecting to %s", "http://alice:s3cret@mlflow:5000")
    assert capsys.readouterr().err.strip().endswith("connecting to http://***@mlflow:5000")


@pytest.mark.parametrize("points", [1, 3])
def test_loss_curves_of_a_short_run_draw_every_point(tmp_path, points):
    """A line through one point draws nothing: short runs get markers."""
    import numpy as np
    from PIL import Image

    from genimg.evaluation.report import save_loss_curves

    history = {name: [(10 * (i + 1), 1.0 + i) for i in range(points)] for name in ("loss", "kl")}
    path = save_loss_curves(history, tmp_path / "curves.png")
    with Image.open(path) as image:
        pixels = np.asarray(image.convert("RGB")).astype(int)
    line = np.abs(pixels - np.array([31, 119, 180])).sum(-1) < 60  # matplotlib's first colour
    half = pixels.shape[1] // 2
    assert line[:, :half].sum() > 10 and line[:, half:].sum() > 10  # both panels show their data


def test_in_process_training_says_it_starts_and_reports_by_time_whatever_log_every_is(monkeypatch):
    """A run whose log_every is never reached still shows a start line, then progress lines driven
    by time, with the rate and the time left."""
    monkeypatch.setattr(feedback, "PROGRESS_EVERY_SECONDS", 0.0)
    result = runner.invoke(
        app,
        [
            "train",
            "--model",
            "vae",
            "--dataset",
            "builtin:digits",
            *TINY_VAE,
            "--steps",
            "6",
            "--set",
            "train.log_every=1000",
            "--set",
            "eval.at_end_of_training=false",
        ],
    )
    assert result.exit_code == 0, result.output
    lines = result.stderr.splitlines()
    assert any(line.startswith("genimg: training vae on builtin:digits@") and "6 steps" in line for line in lines)
    before_the_end = [line for line in lines if line.startswith(("genimg: step 3/6", "genimg: step 4/6"))]
    assert before_the_end and all("img/s" in line and " left" in line for line in before_the_end), result.stderr
