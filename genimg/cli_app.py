"""What every `genimg` command shares: the Typer app, one-line errors on stderr, and --json
output (exactly one JSON object on stdout)."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from functools import wraps
from typing import Any, ParamSpec, TypeVar

import typer

from genimg.errors import GenimgError, TrainingInterrupted, first_line, redact_credentials

app = typer.Typer(
    name="genimg",
    help="Train, evaluate and promote generative image models (GAN, VAE, recurrent VAE).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

P = ParamSpec("P")
R = TypeVar("R")
NOT_PROMOTED_EXIT = 3  # `promote --check`: a decision against the challenger, for scripts


# The shell's code for a process ended by SIGINT (128 + 2), which scripts and schedulers test for.
INTERRUPTED_EXIT_CODE = 130


def fail(message: str, code: int = 1) -> typer.Exit:
    typer.echo(f"error: {redact_credentials(message)}", err=True)
    return typer.Exit(code=code)


REAL_STDOUT: list[Any] = []


def out_of_memory(command: str, exc: BaseException) -> str | None:
    """One line for an allocation that failed (Python's MemoryError, PyTorch's allocators),
    else None. The sizes a command allocates are checked beforehand where they are known; this
    is what is left."""
    torch = sys.modules.get("torch")
    torch_oom = torch is not None and isinstance(exc, getattr(torch, "OutOfMemoryError", ()))
    allocator = isinstance(exc, RuntimeError) and "can't allocate memory" in str(exc)
    if not (isinstance(exc, MemoryError) or torch_oom or allocator):
        return None
    detail = first_line(str(exc))
    return (
        f"out of memory while running `genimg {command}`{f' ({detail})' if detail else ''}: "
        "reduce the sizes involved (batch size, model width or latent size, number of samples, "
        "dataset size) or free memory, and run it again"
    )


def tracking_failure(exc: BaseException) -> str | None:
    """One line for an error of MLflow's (its messages hold the tracking URI, so the password),
    else None. An unreachable server is caught before (tracking.connection); this is one that
    failed or refused a request since."""
    exceptions = sys.modules.get("mlflow.exceptions")  # not imported: not MLflow's error
    if exceptions is None or not isinstance(exc, exceptions.MlflowException):
        return None
    return f"MLflow tracking request failed: {first_line(str(exc.message), type(exc).__name__)}"


def one_line_errors(command: Callable[P, R]) -> Callable[P, R]:
    """One-line errors on stderr; with --json, stdout holds the JSON object and nothing else
    (anything libraries print meanwhile, Ray's node messages say, goes to stderr)."""

    @wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        saved = sys.stdout
        if kwargs.get("as_json"):
            REAL_STDOUT.append(saved)
            sys.stdout = sys.stderr
        try:
            return command(*args, **kwargs)
        except TrainingInterrupted as exc:
            if kwargs.get("as_json"):
                emit(True, exc.as_dict(), "")
            raise fail(str(exc), code=INTERRUPTED_EXIT_CODE) from None
        except GenimgError as exc:
            raise fail(str(exc)) from None
        except KeyboardInterrupt:
            raise fail("interrupted", code=INTERRUPTED_EXIT_CODE) from None
        except Exception as exc:
            message = out_of_memory(command.__name__, exc) or tracking_failure(exc)
            if message is None:
                raise
            raise fail(message) from None
        finally:
            if kwargs.get("as_json"):
                sys.stdout = saved
                REAL_STDOUT.pop()

    return wrapper


def emit(as_json: bool, payload: dict[str, Any], summary: str) -> None:
    if as_json:
        out = REAL_STDOUT[-1] if REAL_STDOUT else sys.stdout
        out.write(json.dumps(payload) + "\n")
        out.flush()
    else:
        typer.echo(summary)
