"""Benchmarks for rst (not tests: nothing here is timed against a threshold).

Run from the repository root: ``scripts/bench`` (installs what is missing first) or
``python -m benchmarks [--only throughput,pull,memory,concurrency,qido,stow,s3] [--quick]``;
``python -m benchmarks.throughput`` runs the throughput benchmark alone. See docs/benchmarks.md.
"""
