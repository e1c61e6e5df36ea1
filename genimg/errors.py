"""Errors that carry a one-line, user-facing reason (the CLI prints them as they are)."""


class GenimgError(Exception):
    """A failure the user can act on: bad input, missing file, unknown name."""


class ConfigError(GenimgError, ValueError):
    """A configuration key or value is invalid; the message names the key."""


class DataError(GenimgError):
    """A data source cannot be read at all (as opposed to single rejected records)."""
