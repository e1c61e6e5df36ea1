"""Readers for every image source, moving-digits sequences and the in-memory Dataset."""

from genimg.data.dataset import DataKind, Dataset, Rejection
from genimg.data.moving_digits import make_moving_digits
from genimg.data.readers import read_source

__all__ = ["DataKind", "Dataset", "Rejection", "make_moving_digits", "read_source"]
