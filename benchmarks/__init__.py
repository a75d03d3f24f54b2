"""Benchmarks for rst (not tests: nothing here is timed against a threshold).

Run from the repository root, e.g. ``scripts/bench`` or ``python -m benchmarks.throughput``.
"""
