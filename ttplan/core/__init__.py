"""The planning core, torch-free: layer geometry, formats, the tensor network, the cost model, the search."""
