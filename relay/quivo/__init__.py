"""The outbound edge: a Quivo API client (login, token renewal, ratings) and its answer models."""
