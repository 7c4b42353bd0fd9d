"""Analysis of plans: rank sweeps and the figures drawn from sweeps, architectures and training runs."""
