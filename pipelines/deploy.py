"""Prefect entry point of `genimg deploy` (the scheduled deployment of the retrain flow); the
code is `genimg.flows.deploy`."""

from genimg.flows.deploy import deploy_retrain

__all__ = ["deploy_retrain"]
