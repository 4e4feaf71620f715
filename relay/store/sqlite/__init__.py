"""The SQLite backend of the store: one file, a writer thread and a process for new webhooks, one reader."""
