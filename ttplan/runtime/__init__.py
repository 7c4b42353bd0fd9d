"""Running plans in PyTorch: decomposition of dense kernels, the lowering, TT layers and generated code."""
