//! The use cases. [`Baas`] holds the ports; each submodule adds the
//! methods of one area. Every method takes the calling [`Actor`] and
//! decides, through [`policy`], whether the call is allowed.

use std::sync::Arc;

use crate::model::*;
use crate::ports::*;

mod agent;
mod auth;
mod boot;
mod export;
mod gc;
mod idle;
mod images;
mod import;
mod jobs;
mod machines;
pub mod policy;
mod schedule;
mod setups;
mod users;

pub use agent::LocalAgentLink;
pub use auth::Actor;
pub use boot::{AdminSettings, AdminSettingsPatch, BootAction, EnrollPolicy, PowerRequest};
pub use export::VersionReader;
pub use gc::{CompactReport, GcReport, DICTIONARY_MIN_CHUNKS};
pub use idle::IDLE_MEMO_MS;
pub use images::{ImagePatch, NewImage};
pub use import::{ChunkSource, ImportOptions};
pub use jobs::{JobRequest, JobTarget};
pub use machines::{MachinePatch, NewMachine, Presence, CONTACT_EVERY_MS};
pub use schedule::{Candidate, Fit, Placed, PlacementStatus};
pub use setups::NewSetup;
pub use users::{NewUser, UserPatch};

/// Tunables of the services.
#[derive(Debug, Clone)]
pub struct Config {
    /// zstd level for new chunks.
    pub compression_level: i32,
    /// Threads that hash, compress and store chunks during an import.
    pub import_workers: usize,
    /// Largest version an import accepts, in bytes.
    pub max_version_size: u64,
    /// Per-user quota on stored (compressed, deduplicated-at-commit) bytes;
    /// `None` for unlimited. Admins are exempt.
    pub user_quota_bytes: Option<u64>,
    /// An upload session idle for this long is dead (milliseconds).
    pub upload_idle_timeout_ms: i64,
    /// Garbage collection keeps unreferenced chunks younger than this
    /// margin before its cutoff (milliseconds), for clock skew between
    /// servers that share a chunk directory.
    pub gc_margin_ms: i64,
    /// What happens to machines whose MAC the server does not know when
    /// they PXE-boot, until an admin changes it at runtime (the initial
    /// value of that setting).
    pub enroll: EnrollPolicy,
    /// Lifetime of the agent credential a management-OS boot gets.
    pub boot_token_ttl_ms: i64,
    /// The longest session (reservation) a job may have, in milliseconds;
    /// also a job's session when the user asks for none.
    pub max_hold_ms: u64,
    /// A machine expected to talk (its agent works on a job, it enrolls,
    /// or it was power-cycled to boot) and silent for longer than this is
    /// shown offline (milliseconds).
    pub offline_after_ms: i64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            compression_level: 3,
            import_workers: std::thread::available_parallelism().map_or(2, |n| n.get()) * 2,
            max_version_size: MAX_IMAGE_SIZE,
            user_quota_bytes: None,
            upload_idle_timeout_ms: 60 * 60 * 1000,
            gc_margin_ms: 5 * 60 * 1000,
            enroll: EnrollPolicy::Ignore,
            boot_token_ttl_ms: 4 * 3600 * 1000,
            max_hold_ms: 24 * 3600 * 1000,
            offline_after_ms: 3 * 60 * 1000,
        }
    }
}

/// The ports BAAS runs on.
#[derive(Debug, Clone)]
pub struct Ports {
    /// Metadata.
    pub meta: Arc<dyn MetadataStore>,
    /// Jobs.
    pub queue: Arc<dyn BootQueue>,
    /// Chunks.
    pub chunks: Arc<dyn ChunkStore>,
    /// Time.
    pub clock: Arc<dyn Clock>,
    /// Randomness.
    pub entropy: Arc<dyn Entropy>,
}

/// The BAAS services over a set of ports. Cheap to clone; share it.
#[derive(Debug, Clone)]
pub struct Baas {
    meta: Arc<dyn MetadataStore>,
    queue: Arc<dyn BootQueue>,
    chunks: Arc<dyn ChunkStore>,
    clock: Arc<dyn Clock>,
    entropy: Arc<dyn Entropy>,
    config: Arc<Config>,
    /// Recently used versions' chunk sets, most recent first (see
    /// `agent::chunk_set`).
    chunk_sets: Arc<std::sync::Mutex<ChunkSets>>,
    /// Recently authenticated credentials (see `auth::AuthCache`).
    auth_cache: Arc<auth::AuthCache>,
    /// Machines found idle a moment ago (see `idle`); `queue` tells it of
    /// every change.
    idle: Arc<idle::IdleMemo>,
}

type ChunkSets = Vec<(
    (ImageId, u32),
    Arc<std::collections::HashSet<crate::content::ChunkHash>>,
)>;

impl Baas {
    /// Services over `ports` with `config`.
    pub fn new(ports: Ports, config: Config) -> Baas {
        let idle = Arc::new(idle::IdleMemo::default());
        Baas {
            meta: ports.meta,
            queue: Arc::new(idle::WatchedQueue::new(ports.queue, idle.clone())),
            chunks: ports.chunks,
            clock: ports.clock,
            entropy: ports.entropy,
            config: Arc::new(config),
            chunk_sets: Arc::default(),
            auth_cache: Arc::default(),
            idle,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The current time, from the clock port.
    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    fn event(&self, kind: &str, message: impl Into<String>) -> JobEvent {
        JobEvent {
            at: self.clock.now(),
            kind: kind.to_string(),
            message: message.into(),
        }
    }
}
