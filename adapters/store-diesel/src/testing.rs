//! Throwaway PostgreSQL databases for tests (feature `testing`): each test
//! gets a database of its own, dropped afterwards. Used by this crate's
//! tests and by every crate whose tests run on PostgreSQL.
//!
//! PostgreSQL comes from `BAAS_TEST_POSTGRES_URL` (an admin URL; default
//! `postgres://postgres:postgres@127.0.0.1:5432/postgres`). When it cannot
//! be reached the test fails under `CI=true`, and otherwise says so loudly
//! and passes without running.

use diesel::{Connection, PgConnection, RunQueryDsl};

const DEFAULT_ADMIN_URL: &str = "postgres://postgres:postgres@127.0.0.1:5432/postgres";

fn unique_suffix() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "{}_{}_{:x}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst),
        t
    )
}

/// A throwaway PostgreSQL database, dropped (connections and all) with
/// this guard.
pub struct PgDatabase {
    admin_url: String,
    name: String,
    /// The URL of the database itself.
    pub url: String,
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let dropped = PgConnection::establish(&self.admin_url).and_then(|mut c| {
            diesel::sql_query(format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .execute(&mut c)
            .map_err(|e| diesel::ConnectionError::BadConnection(e.to_string()))
        });
        if let Err(e) = dropped {
            eprintln!("could not drop test database {}: {e}", self.name);
        }
    }
}

/// `url` with its database name replaced by `name`.
fn with_database(url: &str, name: &str) -> String {
    let (scheme, rest) = url.split_once("://").expect("a postgres:// URL");
    let (rest, query) = match rest.split_once('?') {
        Some((r, q)) => (r, format!("?{q}")),
        None => (rest, String::new()),
    };
    let authority = rest.split('/').next().unwrap_or(rest);
    format!("{scheme}://{authority}/{name}{query}")
}

/// A new, empty PostgreSQL database, or `None` (after a loud note) when
/// PostgreSQL is unreachable outside CI.
pub fn postgres_database() -> Option<PgDatabase> {
    let admin_url =
        std::env::var("BAAS_TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_ADMIN_URL.to_string());
    let mut admin = match PgConnection::establish(&admin_url) {
        Ok(c) => c,
        Err(e) => {
            let e = e.to_string();
            let e = e.trim();
            let ci = std::env::var("CI").is_ok_and(|v| v == "true");
            assert!(
                !ci,
                "PostgreSQL is unreachable at BAAS_TEST_POSTGRES_URL ({e}); CI=true needs it: run .ci/postgres-up"
            );
            eprintln!(
                "\n!!!!! NOTE: PostgreSQL is unreachable ({e}); this PostgreSQL test did NOT run. \
                 Start it with .ci/postgres-up or set BAAS_TEST_POSTGRES_URL. !!!!!\n"
            );
            return None;
        }
    };
    let name = format!("baas_test_{}", unique_suffix());
    diesel::sql_query(format!("CREATE DATABASE {name}"))
        .execute(&mut admin)
        .expect("creating a test database");
    Some(PgDatabase {
        url: with_database(&admin_url, &name),
        admin_url,
        name,
    })
}

impl std::fmt::Debug for PgDatabase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the URLs: they carry the password.
        f.debug_struct("PgDatabase")
            .field("name", &self.name)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::with_database;

    #[test]
    fn database_urls_swap_the_name() {
        assert_eq!(
            with_database("postgres://u:p@h:5432/postgres?sslmode=disable", "x"),
            "postgres://u:p@h:5432/x?sslmode=disable"
        );
        assert_eq!(with_database("postgresql://h", "x"), "postgresql://h/x");
    }
}
