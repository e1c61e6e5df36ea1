"""genimg: train, evaluate and promote generative image models.

Importing the package is cheap: heavy optional dependencies (ray, mlflow, prefect) are imported
only inside the subpackages that own them.
"""

__version__ = "0.1.0"
