"""Benchmark commands; each writes a report under reports/."""
