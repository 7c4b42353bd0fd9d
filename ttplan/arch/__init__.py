"""Whole-architecture planning: per-layer configs, the default policy, budgets and the report tables."""
