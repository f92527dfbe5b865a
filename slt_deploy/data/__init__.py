"""Data sets as decoded uint8 tensors in memory, through a registry (`DATASETS`)."""

from slt_deploy.data import sources  # noqa: F401  (registers the built-in data sets)
from slt_deploy.data.base import DATASETS, DataSpec, DataSplit, load_dataset

__all__ = ["DATASETS", "DataSpec", "DataSplit", "load_dataset"]
