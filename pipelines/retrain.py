"""Prefect entry point of the retrain flow (`pipelines/retrain.py:retrain`, as deployments and
`prefect deploy` name it); the flow itself is `genimg.flows.retrain`."""

from genimg.flows.retrain import retrain, source_fingerprint
from genimg.flows.settings import load_retrain_config

__all__ = ["load_retrain_config", "retrain", "source_fingerprint"]
