"""Scripts run by make: the demo and the reliability report."""
