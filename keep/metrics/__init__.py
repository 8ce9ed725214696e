"""Benchmark metrics (docs/benchmark.md): pure functions over images, plus builders for the learned ones."""
