"""Benchmarks: the reference notebooks' own training loops against the pipeline, and kernel-level timings."""

import os

# A benchmark times training from scratch: a network reused from the replica cache
# (pipeline/files/replica_cache.py) would time a file read. Set here so that every benchmark module, and every
# `make repro` or stage it starts in a subprocess, inherits it.
os.environ["PIPELINE_REPLICA_CACHE"] = "off"
