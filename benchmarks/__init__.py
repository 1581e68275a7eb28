"""Benchmarks: the reference notebooks' own training loops against the pipeline, and kernel-level timings."""
