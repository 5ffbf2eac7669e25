//! Storage trait with SQLite and PostgreSQL.
