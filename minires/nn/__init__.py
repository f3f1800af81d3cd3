"""Neural-network building blocks: Module (parameters counted once) and layers.

``Module.named_parameters`` (in ``minires/nn/module.py``) is where a Parameter shared by two
layers is de-duplicated; the layers in ``minires/nn/layers.py`` express sharing by accepting an
existing Parameter (``Conv2d(..., weight=other.weight)``).
"""
from minires.nn.layers import (BatchNorm2d, Conv2d, Dropout, GlobalAvgPool2d, Linear, ReLU,
                               Sequential, manual_seed)
from minires.nn.module import LoadResult, Module, RemovableHandle

__all__ = ["Module", "LoadResult", "RemovableHandle", "Conv2d", "BatchNorm2d", "Linear", "ReLU",
           "Dropout", "GlobalAvgPool2d", "Sequential", "manual_seed"]
