"""Packaging for minires.

The top-level ``kernels/`` and ``cli/`` folders are installed as ``minires.kernels`` and
``minires.cli``: they live beside the library for readability, but nothing named ``kernels`` or
``cli`` ever lands at the top of site-packages.
"""
from setuptools import setup

setup(
    name="minires",
    version="0.1.0",
    description="A from-scratch autograd engine reproducing 'Parameters Sharing in Residual "
                "Neural Networks' (Dai, Yu & Wei, 2019)",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    packages=[
        "minires",
        "minires.autograd",
        "minires.functions",
        "minires.nn",
        "minires.models",
        "minires.explain",
        "minires.data",
        "minires.kernels",
        "minires.kernels.cpu",
        "minires.kernels.cuda",
        "minires.cli",
    ],
    package_dir={"minires.kernels": "kernels", "minires.cli": "cli"},
    package_data={"minires.kernels.cuda": ["*.cu", "*.cuh"]},
    install_requires=["numpy>=1.24", "numba>=0.59", "h5py>=3.8", "click>=8.1",
                      "threadpoolctl>=3.1"],
    extras_require={
        "test": ["pytest>=7"],
        "cuda12": ["cupy-cuda12x>=13"],
        "cuda13": ["cupy-cuda13x>=14"],
        # CuPy's compiler and NVRTC, without a GPU: tests/test_cuda_compile.py compiles every
        # kernel as CuPy would at run time (the README's test command installs this). CuPy has
        # no macOS wheels, so there the compile test skips.
        "nvrtc": ["cupy-cuda13x>=14; platform_system != 'Darwin'",
                  "nvidia-cuda-nvrtc>=13; platform_system != 'Darwin'"],
        "plot": ["matplotlib>=3.7"],
    },
    entry_points={"console_scripts": ["minires = minires.cli.main:cli"]},
)
