"""Benchmarks: commands that print our figures next to a peer measured in the same run.

Run ``python -m harness.bench`` for the list, e.g. ``python -m harness.bench quantize``.
"""
