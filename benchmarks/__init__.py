"""Reproducible comparisons of prun against peer servers (python -m benchmarks)."""
