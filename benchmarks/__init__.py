"""Speed measurements, each run as ``python -m benchmarks.bench_<name>`` from the project root."""
