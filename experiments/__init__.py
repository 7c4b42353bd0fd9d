"""Experiments that write reports/: run from the repository root (`python -m experiments.NAME`); not shipped."""
