"""Ratio benchmarks: each measures a target against a reference in the same run (machines are noisy)."""
