"""Storage: one small database abstraction (SQLite or PostgreSQL) and the repositories on it."""
