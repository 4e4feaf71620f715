"""Benchmarks of the relay: `make bench` runs them all and writes bench/RESULTS.md."""
