"""MLflow: the only package that imports mlflow (runs, metrics, artifacts; registry later)."""
