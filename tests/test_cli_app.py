"""What one_line_errors makes of failures inside a command: an allocation that fails (whatever size
check did not catch it) is one line saying what ran out; Ctrl-C exits 130 saying what was saved."""

from collections.abc import Callable

import numpy as np
import pytest
import torch
import typer
from typer.testing import CliRunner

from genimg.cli_app import one_line_errors

EXABYTE = 2**60


@pytest.mark.parametrize(
    "allocate",
    [
        lambda: np.empty(EXABYTE, dtype=np.uint8),  # MemoryError
        lambda: torch.empty(EXABYTE, dtype=torch.uint8),  # RuntimeError from PyTorch's CPU allocator
    ],
    ids=["numpy", "torch"],
)
def test_an_allocation_that_fails_is_one_line(allocate: Callable[[], object]):
    app = typer.Typer()

    @app.command()
    @one_line_errors
    def sample() -> None:
        allocate()

    result = CliRunner().invoke(app, [])
    assert result.exit_code == 1, (result.output, result.exception)
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.output
    assert result.stderr.startswith("error: out of memory while running `genimg sample`")
    assert "reduce the sizes involved" in result.stderr


def test_ctrl_c_while_training_exits_130_and_says_how_to_evaluate_or_resume_the_saved_run(tmp_path):
    """SIGINT mid-run (in this process): exit 130, --json stdout holds what was saved, and the
    one line names the run, its checkpoint and the commands that use them."""
    import json
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    env = {**os.environ, "GENIMG_HOME": str(tmp_path / "home")}
    command = [str(Path(sys.executable).parent / "genimg"), "train", "--model", "vae", "--dataset", "builtin:digits"]
    command += ["--workers", "0", "--steps", "100000", "--run-name", "stopped", "--json"]
    command += ["--set", "model.width=4", "--set", "model.latent_dim=4", "--set", "train.checkpoint_every=5"]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    checkpoints = tmp_path / "home" / "runs" / "stopped" / "checkpoints"
    deadline = time.monotonic() + 120
    while not (checkpoints.is_dir() and any(checkpoints.glob("step-*"))):
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.1)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 130, err[-3000:]
    payload = json.loads(out)
    assert payload["interrupted"] is True and payload["run_name"] == "stopped"
    assert payload["checkpoint"].startswith(checkpoints.as_uri() + "/step-"), payload
    last = err.strip().splitlines()[-1]
    assert last == (
        f"error: interrupted: run {payload['run_id']} saved (checkpoint {payload['checkpoint']}): "
        f"`genimg evaluate {payload['run_id']}`, or continue it with `genimg train … --run-name stopped --resume`"
    )
