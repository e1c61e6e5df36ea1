"""genimg: train, evaluate and promote generative image models.

Importing the package is cheap: its Python API (`genimg.ingest`, `genimg.train`,
`genimg.evaluate`, `genimg.register`, `genimg.promote`, `genimg.sample`, `genimg.load_model`,
`genimg.datasets`, `genimg.show_progress`; see `genimg.api`) is
loaded on first use, and heavy dependencies (ray, mlflow, prefect) only inside the subpackages
that own them.
"""

from typing import Any

from genimg.version import __version__

API = ("datasets", "evaluate", "ingest", "load_model", "promote", "register", "sample", "show_progress", "train")


def __getattr__(name: str) -> Any:
    if name in API:
        from genimg import api

        return getattr(api, name)
    raise AttributeError(f"module 'genimg' has no attribute {name!r}")


__all__ = ["__version__", *API]
