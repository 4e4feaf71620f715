"""The SQLite backend of the store: one file, one writer thread sharing commits, one reader."""
