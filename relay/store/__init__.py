"""The only place with SQL: the SQLite database, its migrations, and the records the relay keeps."""
