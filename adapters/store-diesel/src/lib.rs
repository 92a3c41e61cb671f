//! The BAAS metadata store and boot queue on diesel: SQLite and PostgreSQL
