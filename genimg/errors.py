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
