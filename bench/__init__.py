"""Benchmarks (a tool, not tests): ``python -m bench --help``."""
