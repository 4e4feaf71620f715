"""PostgreSQL behind the store interface: many relay processes on one database."""
