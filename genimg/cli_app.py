"""What every `genimg` command shares: the Typer app, one-line errors on stderr, and --json
output (exactly one JSON object on stdout)."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

import typer

from genimg.errors import GenimgError, redact_credentials

app = typer.Typer(
    name="genimg",
    help="Train, evaluate and promote generative image models (GAN, VAE, recurrent VAE).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

F = TypeVar("F", bound=Callable[..., Any])
NOT_PROMOTED_EXIT = 3  # `promote --check`: a decision against the challenger, for scripts


def fail(message: str) -> typer.Exit:
    typer.echo(f"error: {redact_credentials(message)}", err=True)
    return typer.Exit(code=1)


REAL_STDOUT: list[Any] = []


def one_line_errors(command: F) -> F:
    """One-line errors on stderr; with --json, stdout holds the JSON object and nothing else
    (anything libraries print meanwhile, Ray's node messages say, goes to stderr)."""

    @wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        saved = sys.stdout
        if kwargs.get("as_json"):
            REAL_STDOUT.append(saved)
            sys.stdout = sys.stderr
        try:
            return command(*args, **kwargs)
        except GenimgError as exc:
            raise fail(str(exc)) from None
        except KeyboardInterrupt:
            raise fail("interrupted") from None
        finally:
            if kwargs.get("as_json"):
                sys.stdout = saved
                REAL_STDOUT.pop()

    return wrapper  # type: ignore[return-value]


def emit(as_json: bool, payload: dict[str, Any], summary: str) -> None:
    if as_json:
        out = REAL_STDOUT[-1] if REAL_STDOUT else sys.stdout
        out.write(json.dumps(payload) + "\n")
        out.flush()
    else:
        typer.echo(summary)
