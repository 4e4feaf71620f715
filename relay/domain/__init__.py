"""Pure rules of the relay: no I/O, called by the edges and the worker, tested without a server."""
