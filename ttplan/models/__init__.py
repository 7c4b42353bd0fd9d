"""Model presets (CIFAR/ImageNet ResNets, VGG-16), loading any nn.Module, and tracing its conv/linear layers."""

from ttplan.models.registry import PRESETS, Preset, load_model
from ttplan.models.trace import (
    TracedLayer,
    count_model_params,
    dense_totals,
    layer_macs,
    layer_params,
    trace_layers,
    traced_macs,
)

__all__ = [
    "PRESETS",
    "Preset",
    "TracedLayer",
    "count_model_params",
    "dense_totals",
    "layer_macs",
    "layer_params",
    "load_model",
    "trace_layers",
    "traced_macs",
]
