//! The metadata store: users, tokens, images, versions, setups, machines
//! and upload sessions. Jobs are in [`super::BootQueue`].

use std::collections::HashSet;

use crate::content::{ChunkHash, Manifest};
use crate::model::*;
use crate::Result;

/// Which images to list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageFilter {
    /// Only images of this owner.
    pub owner: Option<UserId>,
    /// Only images this user may read: owned, shared with them, or public.
    /// `None` lists every image.
    pub readable_by: Option<UserId>,
}

/// An import in progress. While it lives, garbage collection keeps every
/// chunk written or touched since `started_at`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadSession {
    /// Id.
    pub id: UploadId,
    /// Target image.
    pub image: ImageId,
    /// Who uploads.
    pub created_by: UserId,
    /// For chunk-level uploads: the manifest the client will commit.
    pub manifest: Option<Manifest>,
    /// Origin of the version it will become.
    pub source: VersionSource,
    /// Start.
    pub started_at: Timestamp,
    /// Last activity; a session idle for longer than the configured timeout
    /// is dead and protects nothing.
    pub last_active: Timestamp,
    /// Compressed bytes its chunks added to the store so far.
    pub added_bytes: u64,
}

/// Persistent metadata. Every method is one transaction.
///
/// Contract, checked by `baas_core::conformance::metadata_store`:
/// - names: user names are unique (`Conflict`); machine MACs and names are
///   unique (`Conflict`).
/// - `insert_image` stores the image and its blank version 0 together.
/// - `commit_version` assigns the image's next number (never reused, even
///   after deletes) in the same transaction that makes the version visible;
///   concurrent commits get distinct consecutive numbers.
/// - deleting an image or version that a queued or active job needs is
///   `Conflict`; deleting a user with queued or active jobs is `Conflict`.
/// - `get`-style methods return `Ok(None)` for missing rows; updates and
///   deletes of missing rows are `NotFound`.
pub trait MetadataStore: Send + Sync + std::fmt::Debug {
    // --- users and tokens

    /// Adds a user.
    fn insert_user(&self, user: &User) -> Result<()>;
    /// A user by id.
    fn user(&self, id: UserId) -> Result<Option<User>>;
    /// A user by login name.
    fn user_by_name(&self, name: &str) -> Result<Option<User>>;
    /// Every user, by name.
    fn users(&self) -> Result<Vec<User>>;
    /// Replaces a user's fields.
    fn update_user(&self, user: &User) -> Result<()>;
    /// Deletes a user with their tokens, images, setups and finished jobs.
    fn delete_user(&self, id: UserId) -> Result<()>;
    /// Adds a token.
    fn insert_token(&self, token: &Token) -> Result<()>;
    /// A token by the hash of its secret.
    fn token_by_hash(&self, secret_hash: &[u8; 32]) -> Result<Option<Token>>;
    /// A token by id.
    fn token(&self, id: TokenId) -> Result<Option<Token>>;
    /// A user's tokens, oldest first.
    fn tokens(&self, user: UserId) -> Result<Vec<Token>>;
    /// Marks a token revoked at `at`.
    fn revoke_token(&self, id: TokenId, at: Timestamp) -> Result<()>;
    /// In one transaction, serialised per machine: revokes (at `at`) every
    /// not yet revoked token of `machine` named `name`, then adds `new`
    /// (a token of that machine, when given). Returns how many it revoked.
    /// Two concurrent calls for one machine leave at most one of their new
    /// tokens unrevoked.
    fn rotate_machine_tokens(
        &self,
        machine: MachineId,
        name: &str,
        at: Timestamp,
        new: Option<&Token>,
    ) -> Result<u64>;

    // --- images and versions

    /// Adds an image and its blank version 0, in one transaction.
    fn insert_image(&self, image: &Image, blank: &NewVersion) -> Result<Version>;
    /// An image by id.
    fn image(&self, id: ImageId) -> Result<Option<Image>>;
    /// Images matching `filter`, by creation time.
    fn images(&self, filter: &ImageFilter) -> Result<Vec<Image>>;
    /// Replaces an image's fields and share list.
    fn update_image(&self, image: &Image) -> Result<()>;
    /// Deletes an image, its versions and the setup entries that use it.
    fn delete_image(&self, id: ImageId) -> Result<()>;
    /// Commits a version, assigning its number.
    fn commit_version(&self, version: &NewVersion) -> Result<Version>;
    /// A version.
    fn version(&self, image: ImageId, number: u32) -> Result<Option<Version>>;
    /// The highest-numbered committed version.
    fn latest_version(&self, image: ImageId) -> Result<Option<Version>>;
    /// All versions, by number.
    fn versions(&self, image: ImageId) -> Result<Vec<Version>>;
    /// A version's manifest.
    fn manifest(&self, image: ImageId, number: u32) -> Result<Option<Manifest>>;
    /// Deletes a version.
    fn delete_version(&self, image: ImageId, number: u32) -> Result<()>;
    /// Every chunk some committed version references.
    fn referenced_chunks(&self) -> Result<HashSet<ChunkHash>>;
    /// Sum of `added_bytes` over a user's versions (for quotas).
    fn bytes_added_by_owner(&self, owner: UserId) -> Result<u64>;

    // --- upload sessions

    /// Records an import in progress.
    fn insert_upload(&self, upload: &UploadSession) -> Result<()>;
    /// An upload session.
    fn upload(&self, id: UploadId) -> Result<Option<UploadSession>>;
    /// Marks a session active at `at` and adds `added_bytes` to its count.
    fn touch_upload(&self, id: UploadId, at: Timestamp, added_bytes: u64) -> Result<()>;
    /// Ends a session.
    fn delete_upload(&self, id: UploadId) -> Result<()>;
    /// The earliest `started_at` among sessions active at or after
    /// `alive_since`.
    fn oldest_live_upload(&self, alive_since: Timestamp) -> Result<Option<Timestamp>>;
    /// Deletes sessions inactive since before `alive_since`; returns how many.
    fn delete_dead_uploads(&self, alive_since: Timestamp) -> Result<u64>;

    // --- setups

    /// Adds a setup.
    fn insert_setup(&self, setup: &Setup) -> Result<()>;
    /// A setup.
    fn setup(&self, id: SetupId) -> Result<Option<Setup>>;
    /// Setups of `owner` (all with `None`), by creation time.
    fn setups(&self, owner: Option<UserId>) -> Result<Vec<Setup>>;
    /// Replaces a setup's name and entries.
    fn update_setup(&self, setup: &Setup) -> Result<()>;
    /// Deletes a setup (queued jobs keep their resolved entries).
    fn delete_setup(&self, id: SetupId) -> Result<()>;

    // --- machines

    /// Adds a machine.
    fn insert_machine(&self, machine: &Machine) -> Result<()>;
    /// A machine by id.
    fn machine(&self, id: MachineId) -> Result<Option<Machine>>;
    /// A machine by MAC.
    fn machine_by_mac(&self, mac: MacAddress) -> Result<Option<Machine>>;
    /// Every machine, by name.
    fn machines(&self) -> Result<Vec<Machine>>;
    /// Replaces a machine's fields.
    fn update_machine(&self, machine: &Machine) -> Result<()>;
    /// Records contact with a machine at `at`: its `last_seen` becomes the
    /// later of the stored one and `at`, touching no other field.
    fn touch_machine(&self, id: MachineId, at: Timestamp) -> Result<()>;
    /// Adds a line to a machine's own history (what happened to it outside
    /// any job, such as power actions).
    fn append_machine_event(&self, id: MachineId, event: &JobEvent) -> Result<()>;
    /// A machine's history, newest first, at most `limit` lines.
    fn machine_events(&self, id: MachineId, limit: u32) -> Result<Vec<JobEvent>>;

    // --- server settings an admin changes at runtime

    /// The value of setting `key`, if set.
    fn setting(&self, key: &str) -> Result<Option<String>>;
    /// Sets `key` to `value`.
    fn set_setting(&self, key: &str, value: &str) -> Result<()>;
    /// Sets `key` to `value` unless it is set already (concurrent callers
    /// agree on one); returns the value in force.
    fn init_setting(&self, key: &str, value: &str) -> Result<String>;
}
