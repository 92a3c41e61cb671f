//! Opens BAAS on real storage with one call: the one place that wires the
//! concrete adapters (diesel metadata store, filesystem chunk store, system
//! clock, OS randomness) into the core's services. The server, the Python
//! bindings' embedded mode and Rust programs that embed BAAS all call it.
//!
//! ```no_run
//! let baas = baas_embedded::open_data_dir("/var/lib/baas")?;
//! # Ok::<(), baas_core::Error>(())
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;

use baas_chunks_fs::FsChunkStore;
use baas_core::services::Ports;
use baas_core::{Baas, Config, Error, Result};
use baas_memory::{OsEntropy, SystemClock};

/// Where and how to open BAAS.
#[derive(Debug, Clone)]
pub struct Options {
    /// The data directory: holds `chunks/` and, without a database URL,
    /// the SQLite file `baas.sqlite3`. Created if missing.
    pub data_dir: PathBuf,
    /// `postgres://...` or `sqlite://...`; `None` uses SQLite in
    /// `data_dir`.
    pub database_url: Option<String>,
    /// Chunk directory; `None` uses `data_dir/chunks`. Several servers on
    /// one PostgreSQL share one chunk directory.
    pub chunk_dir: Option<PathBuf>,
    /// Database connections to keep.
    pub pool_size: u32,
    /// Service tunables.
    pub config: Config,
}

impl Options {
    /// The embedded default: SQLite and chunks in `data_dir`.
    pub fn data_dir(dir: impl Into<PathBuf>) -> Options {
        Options {
            data_dir: dir.into(),
            database_url: None,
            chunk_dir: None,
            pool_size: 8,
            config: Config::default(),
        }
    }

    /// The SQLite URL used when no database URL is given.
    pub fn default_database_url(&self) -> String {
        format!("sqlite://{}", self.data_dir.join("baas.sqlite3").display())
    }
}

/// Opens (creating on first use) BAAS in `dir` with the default settings.
pub fn open_data_dir(dir: impl AsRef<Path>) -> Result<Baas> {
    open(&Options::data_dir(dir.as_ref()))
}

/// The ports `options` describe, without the services on top.
pub fn open_ports(options: &Options) -> Result<Ports> {
    std::fs::create_dir_all(&options.data_dir).map_err(|e| {
        Error::unavailable(format!(
            "cannot create data directory {}",
            options.data_dir.display()
        ))
        .with_source(e)
    })?;
    let url = options
        .database_url
        .clone()
        .unwrap_or_else(|| options.default_database_url());
    let store = Arc::new(baas_store_diesel::open(&url, options.pool_size)?);
    let chunk_dir = options
        .chunk_dir
        .clone()
        .unwrap_or_else(|| options.data_dir.join("chunks"));
    let chunks = Arc::new(FsChunkStore::open(&chunk_dir)?);
    Ok(Ports {
        meta: store.clone(),
        queue: store,
        chunks,
        clock: Arc::new(SystemClock),
        entropy: Arc::new(OsEntropy),
    })
}

/// Opens BAAS as `options` describe.
pub fn open(options: &Options) -> Result<Baas> {
    Ok(Baas::new(open_ports(options)?, options.config.clone()))
}
