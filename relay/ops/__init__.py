"""What operators use to watch and steer the relay: health, readiness, and (later) admin and metrics."""
