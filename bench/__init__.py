"""Benchmark harness: run the real stack and measure it against baselines from the same run."""
