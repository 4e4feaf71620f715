"""The relay: Bringg rating webhooks in, Quivo customer inquiry ratings out, exactly once."""
