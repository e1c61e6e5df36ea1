"""Names a user gives: run names, search names, registered model names. One rule, matched in
full (a `^…$` pattern would also accept a trailing newline)."""

from __future__ import annotations

import re

from genimg.errors import GenimgError

RUN_NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def check_run_name(name: str, what: str = "--run-name") -> str:
    if not RUN_NAME_PATTERN.fullmatch(name):
        raise GenimgError(
            f"invalid {what} {name!r}: use 1–128 letters, digits, '.', '_' and '-', starting with a letter or digit"
        )
    return name
