"""The version of genimg (also `genimg.__version__`)."""

__version__ = "0.1.0"
