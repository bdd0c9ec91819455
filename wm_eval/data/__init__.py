"""Datasets: the Minari-layout HDF5 schema, the kill-safe writer, the reader and the collection loop."""

from wm_eval.data.collect import collect
from wm_eval.data.hdf5 import FORMAT_VERSION, Dataset, DatasetWriter, load_dataset, write_dataset

__all__ = ["FORMAT_VERSION", "Dataset", "DatasetWriter", "collect", "load_dataset", "write_dataset"]
