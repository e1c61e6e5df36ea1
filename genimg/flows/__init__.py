"""Prefect flows over genimg's services: `retrain` (ingest → train/tune → evaluate → register →
promote per family) and its scheduled deployment. The only package that imports prefect besides
the top-level `pipelines/` entry points."""
