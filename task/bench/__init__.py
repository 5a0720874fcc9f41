"""Benchmarks, apart from what a worker imports at run time: ``taskbus bench`` (``app``), the
raw client loops it compares against (``raw``) and the memory benchmark (``memory``)."""

from task.bench.app import RAW_LOOPS, BenchApp, BenchSettings, bench_launcher

__all__ = ["RAW_LOOPS", "BenchApp", "BenchSettings", "bench_launcher"]
