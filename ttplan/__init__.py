"""ttplan: plan, cost and run contraction orders for tensor-train convolutions."""

__version__ = "0.1.0"
