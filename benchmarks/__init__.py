"""Benchmarks of sanitize (run as scripts: ``python benchmarks/defense.py``); a package so that
``benchmarks.peers`` can be imported by the benchmark and the tests."""
