"""Errors that carry a one-line, user-facing reason (the CLI prints them as they are), and the
redaction of credentials from anything shown."""

import re

# scheme://user:password@host — the userinfo part of a URI, wherever it appears in a text.
USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)[^/\s@]+@")


def redact_credentials(text: str) -> str:
    """`http://user:secret@mlflow:5000` → `http://***@mlflow:5000`, for every URI in `text`."""
    return USERINFO.sub(r"\g<scheme>***@", text)


def without_userinfo(uri: str) -> str:
    """The URI with no credentials in it (`http://user:secret@host` → `http://host`)."""
    return USERINFO.sub(r"\g<scheme>", uri)


def first_line(text: str, default: str = "") -> str:
    """The first non-blank line of `text`, credentials redacted (library errors run to many lines)."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return redact_credentials(lines[0]) if lines else default


class GenimgError(Exception):
    """A failure the user can act on: bad input, missing file, unknown name."""


class ConfigError(GenimgError, ValueError):
    """A configuration key or value is invalid; the message names the key."""


class DataError(GenimgError):
    """A data source cannot be read at all (as opposed to single rejected records)."""


class TrainingDiverged(GenimgError):
    """The losses stopped being finite (NaN or inf); the run is stopped, not retried."""


class TrainingInterrupted(GenimgError):
    """Ctrl-C (SIGINT) while a run trained: its MLflow run is KILLED and what it saved is kept."""

    def __init__(self, run_name: str, run_id: str, checkpoint: str | None) -> None:
        self.run_name, self.run_id, self.checkpoint = run_name, run_id, checkpoint
        if checkpoint is None:
            message = f"interrupted: run {run_id} ({run_name}) stopped before its first checkpoint; nothing to resume"
        else:
            message = (
                f"interrupted: run {run_id} saved (checkpoint {checkpoint}): `genimg evaluate {run_id}`, "
                f"or continue it with `genimg train … --run-name {run_name} --resume`"
            )
        super().__init__(message)

    def as_dict(self) -> dict[str, str | bool | None]:
        return {"interrupted": True, "run_id": self.run_id, "run_name": self.run_name, "checkpoint": self.checkpoint}
