"""CUDA C kernels for CuPy arrays, compiled once per process through cupy.RawModule."""
