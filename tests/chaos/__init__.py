"""Fault-injection scenarios: real relay and Quivo stand-in processes, broken on purpose."""
