"""numba kernels for NumPy arrays."""
