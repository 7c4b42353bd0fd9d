"""Model presets (CIFAR/ImageNet ResNets, VGG-16), loading any nn.Module, and tracing its conv/linear layers."""

from ttplan.models.registry import PRESETS, Preset, load_model
from ttplan.models.trace import (
    ModelTrace,
    TracedLayer,
    UntracedOp,
    count_model_params,
    dense_totals,
    layer_macs,
    layer_params,
    trace,
    trace_layers,
    traced_macs,
)

__all__ = [
    "ModelTrace",
    "PRESETS",
    "Preset",
    "TracedLayer",
    "UntracedOp",
    "count_model_params",
    "dense_totals",
    "layer_macs",
    "layer_params",
    "load_model",
    "trace",
    "trace_layers",
    "traced_macs",
]
