"""Tenants: several Bringg merchants, each onto its own Quivo account, in one relay."""
