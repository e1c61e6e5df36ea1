"""Reaching the tracking backend before MLflow does, so that one that is down is one line, soon.

MLflow alone retries an HTTP server for about four minutes in silence
(MLFLOW_HTTP_REQUEST_MAX_RETRIES, backoff MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR) and a SQL database
for about 100 s, then raises a long traceback whose URLs hold the URI's password. genimg checks
the server (or database) once per process: if it does not answer, genimg says what it waits for,
retries with the same backoff (fewer retries unless MLFLOW_HTTP_REQUEST_MAX_RETRIES is set), and
then stops with one line, credentials redacted. Later calls keep MLflow's own retries, which
ride out a server restart in the middle of a run.
"""

from __future__ import annotations

import os
import re
import time

from genimg.errors import ConfigError, GenimgError, first_line, redact_credentials, without_userinfo
from genimg.feedback import say, seconds

DEFAULT_RETRIES = 3  # 2 + 4 + 8 s with MLflow's backoff factor of 2
MAX_BACKOFF_SECONDS = 120.0  # urllib3's cap on one backoff step, which MLflow's retries use
DEFAULT_CONNECT_SECONDS = 10.0  # per try, unless MLFLOW_HTTP_REQUEST_TIMEOUT says otherwise
SQL_SCHEMES = ("postgresql", "mysql", "mssql")  # MLflow's SQL stores but SQLite (a local file)
REACHED: set[str] = set()  # tracking URIs this process has reached (each is checked once)


def setting(name: str, default: float) -> float:
    text = os.environ.get(name)
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"{name}={text!r} is not a number") from None
    if value < 0:
        raise ConfigError(f"{name}={text!r} must be ≥ 0")
    return value


def retry_delays() -> list[float]:
    """The waits between tries: MLflow's exponential backoff, over MLflow's retry count when
    the user set it, else over DEFAULT_RETRIES."""
    retries = int(setting("MLFLOW_HTTP_REQUEST_MAX_RETRIES", DEFAULT_RETRIES))
    factor = setting("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", 2)
    return [min(factor * 2**attempt, MAX_BACKOFF_SECONDS) for attempt in range(retries)]


def scheme_of(uri: str) -> str:
    return uri.split("://", 1)[0].split("+", 1)[0].lower() if "://" in uri else ""


def reason(error: BaseException) -> str:
    """What went wrong in a few words: the OS's reason when there is one ("Connection refused")."""
    text = str(error)
    found = re.search(r"\[Errno -?\d+\] ([^'\"()\]]+)", text)
    if found:
        return found.group(1).strip()
    return first_line(text, type(error).__name__)[:300]


def http_problem(uri: str, timeout: float) -> str | None:
    """None if the server answers at all (any status: authentication is MLflow's business), else why not."""
    import warnings

    import requests
    import urllib3

    health = without_userinfo(uri).rstrip("/") + "/health"
    try:
        with warnings.catch_warnings():
            # Only whether something answers: no credentials go along, and a certificate that
            # MLflow's own settings (MLFLOW_TRACKING_SERVER_CERT_PATH) accept is not refused here.
            warnings.simplefilter("ignore", urllib3.exceptions.InsecureRequestWarning)
            requests.get(health, timeout=timeout, verify=False, allow_redirects=False)
    except requests.exceptions.Timeout:
        return f"no answer within {seconds(timeout)}"
    except requests.exceptions.RequestException as exc:
        return reason(exc)
    return None


def sql_problem(uri: str, timeout: float) -> str | None:
    """None if the database accepts a connection, else why not."""
    import sqlalchemy
    from sqlalchemy.pool import NullPool

    # Without a timeout a database host that drops packets holds the connection for minutes.
    connect_args = {"connect_timeout": int(max(timeout, 1))} if scheme_of(uri) in ("postgresql", "mysql") else {}
    try:
        engine = sqlalchemy.create_engine(uri, poolclass=NullPool, connect_args=connect_args)
    except (ImportError, sqlalchemy.exc.ArgumentError):
        return None  # a missing driver or a malformed URI: MLflow's own error says which
    try:
        with engine.connect():
            return None
    except sqlalchemy.exc.DBAPIError as exc:
        return reason(exc.orig or exc)
    finally:
        engine.dispose()


def problem(uri: str) -> str | None:
    timeout = setting("MLFLOW_HTTP_REQUEST_TIMEOUT", DEFAULT_CONNECT_SECONDS)
    scheme = scheme_of(uri)
    if scheme in ("http", "https"):
        return http_problem(uri, timeout)
    if scheme in SQL_SCHEMES:
        return sql_problem(uri, timeout)
    return None  # SQLite, Databricks, …: nothing to wait for


def wait_for_tracking(uri: str, doing: str) -> None:
    """Return once the tracking backend at `uri` answers; after the retries, a GenimgError
    naming it (credentials redacted) and what genimg was `doing`."""
    if uri in REACHED:
        return
    delays = retry_delays()
    why = problem(uri)
    shown = redact_credentials(uri)
    if why is not None and delays:
        say(
            "waiting for the tracking server at %s (%s): retrying for up to %s "
            "(MLFLOW_HTTP_REQUEST_MAX_RETRIES sets how many times) …",
            shown,
            why,
            seconds(sum(delays)),
        )
    for delay in delays:
        if why is None:
            break
        time.sleep(delay)
        why = problem(uri)
    if why is not None:
        raise GenimgError(
            f"cannot reach the tracking server at {shown} (MLFLOW_TRACKING_URI) while {doing}: "
            f"{why}; check that it is running and that the URI is right"
        )
    REACHED.add(uri)


__all__ = ["retry_delays", "wait_for_tracking"]
