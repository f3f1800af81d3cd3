"""Datasets: official archives converted once to HDF5, an embedded default, and a loader."""
