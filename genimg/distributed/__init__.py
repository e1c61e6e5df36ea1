"""Ray Train: the only package that imports ray. The per-worker function calls the
plain-PyTorch loop of `genimg.training`; the driver tracks the run in MLflow."""
