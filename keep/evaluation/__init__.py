"""Benchmark on the VFHQ test protocol (docs/benchmark.md): `run_benchmark(cfg)`."""

from .config import BenchmarkConfig, DataConfig, MetricsConfig, ModelConfig
from .runner import run_benchmark

__all__ = ["BenchmarkConfig", "DataConfig", "MetricsConfig", "ModelConfig", "run_benchmark"]
