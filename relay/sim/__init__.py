"""A faithful stand-in for Quivo's customer inquiry API, for the demo, the tests and the benchmarks."""
