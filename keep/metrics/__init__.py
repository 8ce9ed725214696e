"""Benchmark metrics (issue #5): pure functions over images, plus builders for the learned ones."""
