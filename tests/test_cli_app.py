"""An allocation that fails inside a command (whatever size check did not catch it) is one line
that says what ran out and what to do, not a MemoryError or allocator traceback."""

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
