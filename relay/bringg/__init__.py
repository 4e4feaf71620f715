"""The inbound edge: Bringg's webhook payloads, how Bringg authenticates, and the webhook route."""
