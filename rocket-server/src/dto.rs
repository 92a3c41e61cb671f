//! The clean API's wire types (snake_case JSON) and their explicit
//! conversions from and to the core's types, which are not serialisable on
//! purpose. Request bodies reject unknown keys, so a typo is an error rather
//! than a silently ignored field.

use std::collections::BTreeMap;

use baas_core::content::ChunkHash;
use baas_core::model::*;
use baas_core::ports::{SweepStats, Usage};
use baas_core::services::{GcReport, ImagePatch, MachinePatch, NewImage, NewMachine, UserPatch};
use baas_core::{Error, Result};
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

/// An RFC 3339 UTC time with milliseconds, e.g. `2026-01-31T12:00:00.000Z`.
pub fn rfc3339(t: Timestamp) -> String {
    let ms = t.millis();
    let secs = ms.div_euclid(1000);
    let milli = ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{milli:03}Z",
        sod / 3600,
        sod % 3600 / 60,
        sod % 60
    )
}

fn opt_time(t: Option<Timestamp>) -> Option<String> {
    t.map(rfc3339)
}

/// Deserialises a field that may be absent (keep), `null` (clear) or a value.
fn double_option<'de, D, T>(d: D) -> std::result::Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

// --- users and tokens

/// A user.
#[derive(Debug, Serialize, ToSchema)]
pub struct UserView {
    /// Id.
    pub id: Uuid,
    /// Login name.
    pub name: String,
    /// Display name.
    pub display_name: String,
    /// Contact address (may be empty).
    pub email: String,
    /// `user`, `moderator` or `admin`.
    pub role: String,
    /// Creation time.
    pub created_at: String,
}

impl From<&User> for UserView {
    fn from(u: &User) -> Self {
        UserView {
            id: u.id.uuid(),
            name: u.name.clone(),
            display_name: u.display_name.clone(),
            email: u.email.clone(),
            role: u.role.to_string(),
            created_at: rfc3339(u.created_at),
        }
    }
}

/// A user to create (admins).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewUserBody {
    /// Login name: 1 to 64 of `A-Z a-z 0-9 _ . -`.
    pub name: String,
    /// Display name; the login name when empty.
    #[serde(default)]
    pub display_name: String,
    /// Contact address.
    #[serde(default)]
    pub email: String,
    /// `user` (default), `moderator` or `admin`.
    #[serde(default = "default_role")]
    pub role: String,
}

fn default_role() -> String {
    "user".into()
}

impl NewUserBody {
    /// The core's request.
    pub fn into_core(self) -> Result<baas_core::services::NewUser> {
        Ok(baas_core::services::NewUser {
            role: self.role.parse()?,
            name: self.name,
            display_name: self.display_name,
            email: self.email,
        })
    }
}

/// Changes to a user; absent fields are kept.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserPatchBody {
    /// New display name.
    pub display_name: Option<String>,
    /// New e-mail.
    pub email: Option<String>,
    /// New role (admins only, never your own).
    pub role: Option<String>,
}

impl UserPatchBody {
    /// The core's patch.
    pub fn into_core(self) -> Result<UserPatch> {
        Ok(UserPatch {
            display_name: self.display_name,
            email: self.email,
            role: self.role.map(|r| r.parse()).transpose()?,
            password_hash: None,
        })
    }
}

/// An API token (never its secret).
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenView {
    /// Id (to revoke it).
    pub id: Uuid,
    /// The user it authenticates as (user tokens).
    pub user_id: Option<Uuid>,
    /// The machine whose agent it authenticates (agent tokens).
    pub machine_id: Option<Uuid>,
    /// Label.
    pub name: String,
    /// Creation time.
    pub created_at: String,
    /// Expiry, if any.
    pub expires_at: Option<String>,
    /// When it was revoked, if it was.
    pub revoked_at: Option<String>,
}

impl From<&Token> for TokenView {
    fn from(t: &Token) -> Self {
        TokenView {
            id: t.id.uuid(),
            user_id: match t.subject {
                TokenSubject::User(u) => Some(u.uuid()),
                TokenSubject::Machine(_) => None,
            },
            machine_id: match t.subject {
                TokenSubject::Machine(m) => Some(m.uuid()),
                TokenSubject::User(_) => None,
            },
            name: t.name.clone(),
            created_at: rfc3339(t.created_at),
            expires_at: opt_time(t.expires_at),
            revoked_at: opt_time(t.revoked_at),
        }
    }
}

/// A token to create.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewTokenBody {
    /// A label.
    pub name: String,
    /// Lifetime in seconds (at most a year); none means no expiry.
    pub ttl_seconds: Option<u64>,
}

impl NewTokenBody {
    /// The lifetime in milliseconds, as the core takes it.
    pub fn ttl_ms(&self) -> Result<Option<i64>> {
        self.ttl_seconds
            .map(|s| {
                s.checked_mul(1000)
                    .and_then(|ms| i64::try_from(ms).ok())
                    .ok_or_else(|| Error::invalid("ttl_seconds", "too large"))
            })
            .transpose()
    }
}

/// A new token and its secret, shown only this once.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedToken {
    /// The token.
    pub token: TokenView,
    /// The secret for `Authorization: Bearer <secret>`. Not retrievable later.
    pub secret: String,
}

// --- images and versions

/// An image.
#[derive(Debug, Serialize, ToSchema)]
pub struct ImageView {
    /// Id.
    pub id: Uuid,
    /// Owner.
    pub owner_id: Uuid,
    /// Name.
    pub name: String,
    /// Default target disk selector (`first`, `index:N`, `serial:S`,
    /// `wwn:W`, `by-id:NAME`, `/dev/X`, optionally `#PART`).
    pub disk: String,
    /// Declared size in bytes (the blank version 0).
    pub size: u64,
    /// Free-form metadata.
    pub metadata: BTreeMap<String, String>,
    /// `private`, `shared` or `public`.
    pub visibility: String,
    /// With `shared`: who else may read it.
    pub shared_with: Vec<Uuid>,
    /// Creation time.
    pub created_at: String,
}

impl From<&Image> for ImageView {
    fn from(i: &Image) -> Self {
        ImageView {
            id: i.id.uuid(),
            owner_id: i.owner.uuid(),
            name: i.name.clone(),
            disk: i.disk.to_string(),
            size: i.size,
            metadata: i.metadata.clone(),
            visibility: i.visibility.as_str().to_string(),
            shared_with: i.shared_with.iter().map(|u| u.uuid()).collect(),
            created_at: rfc3339(i.created_at),
        }
    }
}

/// An image to create.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewImageBody {
    /// Name.
    pub name: String,
    /// Default target disk selector; `first` when absent.
    pub disk: Option<String>,
    /// Declared size in bytes (1 B to 16 TiB).
    pub size: u64,
    /// Free-form metadata.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// `private` (default), `shared` or `public` (moderators and admins).
    pub visibility: Option<String>,
    /// Owner; the caller when absent (only admins create for others).
    pub owner_id: Option<Uuid>,
}

impl NewImageBody {
    /// The core's request.
    pub fn into_core(self) -> Result<NewImage> {
        Ok(NewImage {
            owner: self.owner_id.map(UserId),
            name: self.name,
            disk: match self.disk {
                Some(d) => d.parse()?,
                None => DiskSelector::first(),
            },
            size: self.size,
            metadata: self.metadata,
            visibility: match self.visibility {
                Some(v) => v.parse()?,
                None => Visibility::Private,
            },
        })
    }
}

/// Changes to an image; absent fields are kept.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ImagePatchBody {
    /// New name.
    pub name: Option<String>,
    /// New default target disk.
    pub disk: Option<String>,
    /// New metadata (replaces the old).
    pub metadata: Option<BTreeMap<String, String>>,
    /// New visibility.
    pub visibility: Option<String>,
    /// New share list.
    pub shared_with: Option<Vec<Uuid>>,
}

impl ImagePatchBody {
    /// The core's patch.
    pub fn into_core(self) -> Result<ImagePatch> {
        Ok(ImagePatch {
            name: self.name,
            disk: self.disk.map(|d| d.parse()).transpose()?,
            metadata: self.metadata,
            visibility: self.visibility.map(|v| v.parse()).transpose()?,
            shared_with: self
                .shared_with
                .map(|v| v.into_iter().map(UserId).collect()),
        })
    }
}

/// A committed, immutable version.
#[derive(Debug, Serialize, ToSchema)]
pub struct VersionView {
    /// The image.
    pub image_id: Uuid,
    /// Version number (0 is the blank image).
    pub number: u32,
    /// Size in bytes.
    pub size: u64,
    /// Root hash (hex); also the download's `ETag`.
    pub root: String,
    /// Chunks that are not all zeros.
    pub data_chunks: u64,
    /// Compressed bytes this version added to the store.
    pub added_bytes: u64,
    /// Who made it.
    pub created_by: Uuid,
    /// When it was committed.
    pub created_at: String,
    /// `blank`, `upload` or `capture`.
    pub source: String,
    /// With `capture`: the job whose session was captured.
    pub source_job_id: Option<Uuid>,
    /// Optional note.
    pub note: Option<String>,
}

impl From<&Version> for VersionView {
    fn from(v: &Version) -> Self {
        let (source, job) = match &v.source {
            VersionSource::Blank => ("blank", None),
            VersionSource::Upload => ("upload", None),
            VersionSource::Capture { job } => ("capture", Some(job.uuid())),
        };
        VersionView {
            image_id: v.image.uuid(),
            number: v.number,
            size: v.size,
            root: v.root.to_hex(),
            data_chunks: v.data_chunks,
            added_bytes: v.added_bytes,
            created_by: v.created_by.uuid(),
            created_at: rfc3339(v.created_at),
            source: source.into(),
            source_job_id: job,
            note: v.note.clone(),
        }
    }
}

/// A new image and its blank version 0.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedImage {
    /// The image.
    pub image: ImageView,
    /// Its version 0.
    pub version: VersionView,
}

/// A version: a number, or `"latest"`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum VersionRefDto {
    /// Exactly this version.
    Number(u32),
    /// `"latest"`: resolved when a job is queued.
    Name(String),
}

impl VersionRefDto {
    /// The core's reference.
    pub fn into_core(self) -> Result<VersionRef> {
        match self {
            VersionRefDto::Number(n) => Ok(VersionRef::Number(n)),
            VersionRefDto::Name(s) => s.parse(),
        }
    }
}

impl From<VersionRef> for VersionRefDto {
    fn from(v: VersionRef) -> Self {
        match v {
            VersionRef::Number(n) => VersionRefDto::Number(n),
            VersionRef::Latest => VersionRefDto::Name("latest".into()),
        }
    }
}

/// A chunk-level upload that has begun.
#[derive(Debug, Serialize, ToSchema)]
pub struct UploadView {
    /// The upload session; use it in the following calls.
    pub upload_id: Uuid,
    /// The target image.
    pub image_id: Uuid,
    /// Hashes (hex) of the chunks the server lacks: send only these.
    pub missing: Vec<String>,
}

/// The chunks an upload still lacks.
#[derive(Debug, Serialize, ToSchema)]
pub struct MissingView {
    /// The upload session.
    pub upload_id: Uuid,
    /// Hashes (hex) still to send.
    pub missing: Vec<String>,
}

/// Hex strings of `hashes`.
pub fn hexes(hashes: &[ChunkHash]) -> Vec<String> {
    hashes.iter().map(ChunkHash::to_hex).collect()
}

/// What storing one chunk did.
#[derive(Debug, Serialize, ToSchema)]
pub struct ChunkStored {
    /// Whether the chunk was new to the store.
    pub new: bool,
    /// Bytes stored for it (0 when it was there already).
    pub stored_bytes: u64,
}

/// Options of a commit.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CommitBody {
    /// A note stored with the version.
    pub note: Option<String>,
}

// --- setups

/// One image in a setup.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetupEntryDto {
    /// The image.
    pub image_id: Uuid,
    /// A version number or `"latest"` (the default).
    #[serde(default = "latest")]
    pub version: VersionRefDto,
    /// Target disk; the image's own when absent.
    #[serde(default)]
    pub disk: Option<String>,
    /// Capture the disk as a new version when the session ends.
    #[serde(default)]
    pub capture: bool,
}

fn latest() -> VersionRefDto {
    VersionRefDto::Name("latest".into())
}

impl SetupEntryDto {
    fn into_core(self) -> Result<SetupEntry> {
        Ok(SetupEntry {
            image: ImageId(self.image_id),
            version: self.version.into_core()?,
            disk: self.disk.map(|d| d.parse()).transpose()?,
            capture: self.capture,
        })
    }
}

impl From<&SetupEntry> for SetupEntryDto {
    fn from(e: &SetupEntry) -> Self {
        SetupEntryDto {
            image_id: e.image.uuid(),
            version: e.version.into(),
            disk: e.disk.as_ref().map(ToString::to_string),
            capture: e.capture,
        }
    }
}

/// A setup.
#[derive(Debug, Serialize, ToSchema)]
pub struct SetupView {
    /// Id.
    pub id: Uuid,
    /// Owner.
    pub owner_id: Uuid,
    /// Name.
    pub name: String,
    /// Entries, written in order.
    pub entries: Vec<SetupEntryDto>,
    /// Creation time.
    pub created_at: String,
    /// Last change.
    pub updated_at: String,
}

impl From<&Setup> for SetupView {
    fn from(s: &Setup) -> Self {
        SetupView {
            id: s.id.uuid(),
            owner_id: s.owner.uuid(),
            name: s.name.clone(),
            entries: s.entries.iter().map(SetupEntryDto::from).collect(),
            created_at: rfc3339(s.created_at),
            updated_at: rfc3339(s.updated_at),
        }
    }
}

/// A setup's name and entries (create, or replace with `PUT`).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetupBody {
    /// Name.
    pub name: String,
    /// Entries, in order.
    #[serde(default)]
    pub entries: Vec<SetupEntryDto>,
}

impl SetupBody {
    /// The core's request.
    pub fn into_core(self) -> Result<baas_core::services::NewSetup> {
        Ok(baas_core::services::NewSetup {
            name: self.name,
            entries: self
                .entries
                .into_iter()
                .map(SetupEntryDto::into_core)
                .collect::<Result<_>>()?,
        })
    }
}

// --- machines

/// A disk as the agent found it: in its inventory report and in a
/// machine's view.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DiskDto {
    /// Kernel path, e.g. `/dev/nvme0n1`.
    pub path: String,
    /// `/dev/disk/by-id` names.
    #[serde(default)]
    pub by_id: Vec<String>,
    /// Serial number.
    pub serial: Option<String>,
    /// World Wide Name.
    pub wwn: Option<String>,
    /// Model.
    pub model: Option<String>,
    /// Size in bytes.
    pub size: u64,
    /// Logical block size.
    pub logical_block: u32,
    /// Physical block size.
    pub physical_block: u32,
    /// Spinning disk.
    pub rotational: bool,
    /// Removable media.
    pub removable: bool,
}

/// A NIC as the agent found it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NicDto {
    /// Interface name.
    pub name: String,
    /// MAC address.
    pub mac: String,
    /// Link speed in Mbit/s.
    pub speed_mbps: Option<u32>,
}

/// What the agent reports about its machine (`POST
/// /api/v1/agent/machines/{machine}/inventory`), and what a machine's view
/// shows of its last report: one shape both ways.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InventoryDto {
    /// Disks in kernel order.
    pub disks: Vec<DiskDto>,
    /// NICs.
    pub nics: Vec<NicDto>,
    /// Memory in bytes.
    pub memory_bytes: u64,
    /// CPU model.
    pub cpu_model: String,
    /// Logical CPUs.
    pub cpus: u32,
}

impl From<&Inventory> for InventoryDto {
    fn from(i: &Inventory) -> Self {
        InventoryDto {
            disks: i
                .disks
                .iter()
                .map(|d| DiskDto {
                    path: d.path.clone(),
                    by_id: d.by_id.clone(),
                    serial: d.serial.clone(),
                    wwn: d.wwn.clone(),
                    model: d.model.clone(),
                    size: d.size,
                    logical_block: d.logical_block,
                    physical_block: d.physical_block,
                    rotational: d.rotational,
                    removable: d.removable,
                })
                .collect(),
            nics: i
                .nics
                .iter()
                .map(|n| NicDto {
                    name: n.name.clone(),
                    mac: n.mac.to_string(),
                    speed_mbps: n.speed_mbps,
                })
                .collect(),
            memory_bytes: i.memory_bytes,
            cpu_model: i.cpu_model.clone(),
            cpus: i.cpus,
        }
    }
}

impl InventoryDto {
    /// The core's inventory.
    pub fn into_core(self) -> Result<Inventory> {
        Ok(Inventory {
            disks: self
                .disks
                .into_iter()
                .map(|d| DiskInfo {
                    path: d.path,
                    by_id: d.by_id,
                    serial: d.serial,
                    wwn: d.wwn,
                    model: d.model,
                    size: d.size,
                    logical_block: d.logical_block,
                    physical_block: d.physical_block,
                    rotational: d.rotational,
                    removable: d.removable,
                })
                .collect(),
            nics: self
                .nics
                .into_iter()
                .map(|n| {
                    Ok(NicInfo {
                        mac: n.mac.parse()?,
                        name: n.name,
                        speed_mbps: n.speed_mbps,
                    })
                })
                .collect::<Result<_>>()?,
            memory_bytes: self.memory_bytes,
            cpu_model: self.cpu_model,
            cpus: self.cpus,
        })
    }
}

/// A lab machine.
#[derive(Debug, Serialize, ToSchema)]
pub struct MachineView {
    /// Id.
    pub id: Uuid,
    /// MAC address, lower-case colon form.
    pub mac: String,
    /// Name.
    pub name: String,
    /// Architecture.
    pub arch: String,
    /// Pool.
    pub pool: Option<String>,
    /// `pending`, `ready` or `retired`.
    pub state: String,
    /// Last inventory the agent reported.
    pub inventory: Option<InventoryDto>,
    /// Last time its agent talked to the server.
    pub last_seen: Option<String>,
    /// Registration time.
    pub created_at: String,
    /// How the server reaches its power: `manual`, `qmp` or `ipmi`.
    pub power: String,
    /// Where: the QMP address, or `user@bmc` (never the BMC password).
    pub power_address: Option<String>,
    /// What it returns to between jobs: `keep`, `wipe` or `setup:<id>`.
    pub neutral: String,
    /// Whether it is offline: expected to talk (its agent works on a job,
    /// it enrolls, or it was power-cycled to boot) and silent for longer
    /// than the server's limit, or its power adapter says it is off. A
    /// user's OS runs no agent, so its silence is not offline. In the
    /// machine list and reads only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offline: Option<bool>,
    /// Why it is offline: `silent` or `powered off`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offline_reason: Option<String>,
}

impl From<&Machine> for MachineView {
    fn from(m: &Machine) -> Self {
        MachineView {
            id: m.id.uuid(),
            mac: m.mac.to_string(),
            name: m.name.clone(),
            arch: m.arch.as_str().to_string(),
            pool: m.pool.clone(),
            state: m.state.as_str().to_string(),
            inventory: m.inventory.as_ref().map(InventoryDto::from),
            last_seen: opt_time(m.last_seen),
            created_at: rfc3339(m.created_at),
            power: m.boot.power.kind().to_string(),
            power_address: match &m.boot.power {
                PowerConfig::Manual => None,
                PowerConfig::Qmp { address } => Some(address.clone()),
                PowerConfig::Ipmi { host, username, .. } => Some(format!("{username}@{host}")),
            },
            neutral: m.boot.neutral.to_string(),
            offline: None,
            offline_reason: None,
        }
    }
}

/// A machine to register (moderators and admins).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewMachineBody {
    /// The MAC it PXE-boots with.
    pub mac: String,
    /// Name; the MAC in hyphen form when absent.
    pub name: Option<String>,
    /// Architecture; `x86_64` when absent.
    pub arch: Option<String>,
    /// Pool.
    pub pool: Option<String>,
}

impl NewMachineBody {
    /// The core's request.
    pub fn into_core(self) -> Result<NewMachine> {
        Ok(NewMachine {
            mac: self.mac.parse()?,
            name: self.name,
            arch: match self.arch {
                Some(a) => a.parse()?,
                None => Arch::X86_64,
            },
            pool: self.pool,
        })
    }
}

/// Changes to a machine; absent fields are kept.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MachinePatchBody {
    /// New name.
    pub name: Option<String>,
    /// New architecture.
    pub arch: Option<String>,
    /// New pool; `null` clears it.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub pool: Option<Option<String>>,
    /// `ready` (accept), `retired` (retire) or `pending`.
    pub state: Option<String>,
}

impl MachinePatchBody {
    /// The core's patch.
    pub fn into_core(self) -> Result<MachinePatch> {
        Ok(MachinePatch {
            name: self.name,
            arch: self.arch.map(|a| a.parse()).transpose()?,
            pool: self.pool,
            state: self.state.map(|s| s.parse()).transpose()?,
        })
    }
}

// --- jobs

/// One image version a job writes.
#[derive(Debug, Serialize, ToSchema)]
pub struct JobEntryView {
    /// The image.
    pub image_id: Uuid,
    /// The pinned version.
    pub version: u32,
    /// Target disk.
    pub disk: String,
    /// Capture the disk when the session ends.
    pub capture: bool,
}

/// Progress of the current phase.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProgressView {
    /// Phase name.
    pub phase: String,
    /// Bytes done.
    pub bytes_done: u64,
    /// Bytes in this phase.
    pub bytes_total: u64,
    /// Bytes per second.
    pub rate: u64,
}

/// A job in a machine's boot queue.
#[derive(Debug, Serialize, ToSchema)]
pub struct JobView {
    /// Id.
    pub id: Uuid,
    /// Queue order.
    pub seq: i64,
    /// The machine.
    pub machine_id: Uuid,
    /// Who queued it.
    pub owner_id: Uuid,
    /// The setup it came from, if any.
    pub setup_id: Option<Uuid>,
    /// What it writes, in order.
    pub entries: Vec<JobEntryView>,
    /// `queued`, `provisioning`, `running`, `capturing`, `succeeded`,
    /// `failed` or `cancelled`.
    pub state: String,
    /// Progress of the current phase.
    pub progress: ProgressView,
    /// Why it failed, or who cancelled it.
    pub error: Option<String>,
    /// When queued.
    pub created_at: String,
    /// When the agent took it.
    pub started_at: Option<String>,
    /// When it ended.
    pub finished_at: Option<String>,
    /// The session length asked for, in seconds (the admin's maximum
    /// applies when absent).
    pub hold_seconds: Option<u64>,
    /// When the user's session ends (set once the job runs; moved to the
    /// release time by `POST /jobs/{id}/release`).
    pub session_ends_at: Option<String>,
    /// The earliest the job may start.
    pub not_before: Option<String>,
}

impl From<&Job> for JobView {
    fn from(j: &Job) -> Self {
        JobView {
            id: j.id.uuid(),
            seq: j.seq,
            machine_id: j.machine.uuid(),
            owner_id: j.owner.uuid(),
            setup_id: j.setup.map(|s| s.uuid()),
            entries: j
                .entries
                .iter()
                .map(|e| JobEntryView {
                    image_id: e.image.uuid(),
                    version: e.version,
                    disk: e.disk.to_string(),
                    capture: e.capture,
                })
                .collect(),
            state: j.state.as_str().to_string(),
            progress: ProgressView {
                phase: j.progress.phase.clone(),
                bytes_done: j.progress.bytes_done,
                bytes_total: j.progress.bytes_total,
                rate: j.progress.rate,
            },
            error: j.error.clone(),
            created_at: rfc3339(j.created_at),
            started_at: opt_time(j.started_at),
            finished_at: opt_time(j.finished_at),
            hold_seconds: j.session.hold_ms.map(|h| h / 1000),
            session_ends_at: opt_time(j.session.ends_at),
            not_before: opt_time(j.session.not_before),
        }
    }
}

/// A line of a job's timeline.
#[derive(Debug, Serialize, ToSchema)]
pub struct JobEventView {
    /// When.
    pub at: String,
    /// A state name, `progress`, `log`, `capture`...
    pub kind: String,
    /// Text.
    pub message: String,
}

impl From<&JobEvent> for JobEventView {
    fn from(e: &JobEvent) -> Self {
        JobEventView {
            at: rfc3339(e.at),
            kind: e.kind.clone(),
            message: e.message.clone(),
        }
    }
}

/// A job to queue: either `setup_id`, or `image_id` with an optional
/// `version`, `disk` and `capture`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewJobBody {
    /// Write every entry of this setup.
    pub setup_id: Option<Uuid>,
    /// Or write this one image.
    pub image_id: Option<Uuid>,
    /// Its version (`"latest"` when absent).
    pub version: Option<VersionRefDto>,
    /// Its target disk (the image's own when absent).
    pub disk: Option<String>,
    /// Capture it when the session ends.
    #[serde(default)]
    pub capture: bool,
    /// How long the user's session may run once flashed, in seconds
    /// (at most the admin's maximum, which applies when absent).
    pub hold_seconds: Option<u64>,
    /// Start no earlier than this many seconds from now (a window that
    /// opens later); at once when absent.
    pub start_after_seconds: Option<u64>,
}

impl NewJobBody {
    /// The core's target.
    pub fn into_target(self) -> Result<baas_core::services::JobTarget> {
        use baas_core::services::JobTarget;
        match (self.setup_id, self.image_id) {
            (Some(setup), None) => {
                if self.version.is_some() || self.disk.is_some() || self.capture {
                    return Err(Error::invalid(
                        "setup_id",
                        "version, disk and capture go with image_id; a setup's entries carry their own",
                    ));
                }
                Ok(JobTarget::Setup(SetupId(setup)))
            }
            (None, Some(image)) => Ok(JobTarget::Image {
                image: ImageId(image),
                version: match self.version {
                    Some(v) => v.into_core()?,
                    None => VersionRef::Latest,
                },
                disk: self.disk.map(|d| d.parse()).transpose()?,
                capture: self.capture,
            }),
            _ => Err(Error::invalid(
                "setup_id",
                "give exactly one of setup_id and image_id",
            )),
        }
    }
}

// --- administration

/// Space used by the chunk store.
#[derive(Debug, Serialize, ToSchema)]
pub struct UsageView {
    /// Stored chunks.
    pub chunks: u64,
    /// Stored bytes (compressed frames).
    pub bytes: u64,
}

impl From<Usage> for UsageView {
    fn from(u: Usage) -> Self {
        UsageView {
            chunks: u.chunks,
            bytes: u.bytes,
        }
    }
}

/// What a garbage collection did.
#[derive(Debug, Serialize, ToSchema)]
pub struct GcReportView {
    /// Chunks referenced by committed versions.
    pub referenced: u64,
    /// Chunks looked at.
    pub scanned: u64,
    /// Chunks removed.
    pub removed: u64,
    /// Bytes freed.
    pub freed_bytes: u64,
    /// Unreferenced chunks kept because an import may still need them.
    pub kept_recent: u64,
    /// Dead upload sessions removed.
    pub dead_uploads: u64,
    /// Space used afterwards.
    pub usage: UsageView,
}

impl From<GcReport> for GcReportView {
    fn from(r: GcReport) -> Self {
        let SweepStats {
            scanned,
            removed,
            freed_bytes,
            kept_recent,
        } = r.sweep;
        GcReportView {
            referenced: r.referenced,
            scanned,
            removed,
            freed_bytes,
            kept_recent,
            dead_uploads: r.dead_uploads,
            usage: r.usage.into(),
        }
    }
}

/// Raw bytes (an image, a manifest, a chunk frame), for the OpenAPI document.
#[derive(Debug, ToSchema)]
#[schema(value_type = String, format = Binary)]
pub struct Binary(pub Vec<u8>);

/// A multipart upload: the first part (any name; `file` by convention) is
/// the image; a `note` text part before it becomes the version's note.
#[derive(Debug, ToSchema)]
pub struct UploadForm {
    /// A note stored with the version.
    pub note: Option<String>,
    /// The image bytes.
    #[schema(value_type = String, format = Binary)]
    pub file: Vec<u8>,
}

/// `{"status": "ok"}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// Always `ok` when the server answers.
    pub status: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_format_as_rfc3339() {
        assert_eq!(rfc3339(Timestamp(0)), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            rfc3339(Timestamp(951_782_400_123)),
            "2000-02-29T00:00:00.123Z"
        );
        assert_eq!(
            rfc3339(Timestamp(1_767_225_599_999)),
            "2025-12-31T23:59:59.999Z"
        );
        assert_eq!(rfc3339(Timestamp(-1)), "1969-12-31T23:59:59.999Z");
    }

    #[test]
    fn job_bodies_need_exactly_one_target() {
        let both = NewJobBody {
            setup_id: Some(Uuid::nil()),
            image_id: Some(Uuid::nil()),
            version: None,
            disk: None,
            capture: false,
            hold_seconds: None,
            start_after_seconds: None,
        };
        assert!(both.into_target().is_err());
    }
}
