"""Hand-written kernels, installed as ``minires.kernels``.

``cpu/`` holds numba kernels (and small NumPy routines) for NumPy arrays; ``cuda/`` holds CUDA C
compiled through CuPy for CuPy arrays. Both implement the same interface, family by family
(:mod:`minires.kernels.interface`); ``minires.backend.kernels_for`` picks one for given arrays.
"""
