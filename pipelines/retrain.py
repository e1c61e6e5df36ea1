"""The retrain flow as a file entry point (`pipelines/retrain.py:retrain`), kept for deployments
made from a checkout before `genimg deploy` and prefect.yaml named the module entry point
`genimg.flows.retrain:retrain` (which a wheel install has too); the flow is `genimg.flows.retrain`."""

from genimg.flows.retrain import retrain, source_fingerprint
from genimg.flows.settings import load_retrain_config

__all__ = ["load_retrain_config", "retrain", "source_fingerprint"]
