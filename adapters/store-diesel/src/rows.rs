//! Rows as stored, and their conversion to and from the domain types.
//! Enums, selectors and ids are stored as their text forms and parsed back;
//! a row that does not parse is corrupted, which is `Internal`.

use std::collections::BTreeMap;
use std::fmt::Display;
use std::str::FromStr;

use baas_core::content::{ChunkHash, Manifest};
use baas_core::model::*;
use baas_core::ports::UploadSession;
use baas_core::{Error, Result};
use diesel::prelude::*;
use serde::{Deserialize, Serialize};

use crate::schema::*;

// --- helpers

/// A value read back from `table.column` that does not make sense.
pub(crate) fn corrupt(table: &str, column: &str, value: impl Display) -> Error {
    Error::internal(format!("corrupted row in {table}: {column} holds {value}"))
}

/// Parses a text column back into its domain type.
pub(crate) fn parse<T>(table: &str, column: &str, value: &str) -> Result<T>
where
    T: FromStr<Err = Error>,
{
    value
        .parse()
        .map_err(|e: Error| corrupt(table, column, format_args!("{value:?}")).with_source(e))
}

/// A `u64` for a BIGINT column.
pub(crate) fn to_db(field: &str, value: u64) -> Result<i64> {
    i64::try_from(value)
        .map_err(|_| Error::invalid(field, format!("{value} is too large to store")))
}

/// A BIGINT column holding a `u64`.
pub(crate) fn from_db(table: &str, column: &str, value: i64) -> Result<u64> {
    u64::try_from(value).map_err(|_| corrupt(table, column, value))
}

/// A BIGINT column holding a `u32` (version numbers).
pub(crate) fn u32_from_db(table: &str, column: &str, value: i64) -> Result<u32> {
    u32::try_from(value).map_err(|_| corrupt(table, column, value))
}

fn hash_from_db(table: &str, column: &str, value: &[u8]) -> Result<[u8; 32]> {
    <[u8; 32]>::try_from(value)
        .map_err(|_| corrupt(table, column, format_args!("{} bytes, not 32", value.len())))
}

fn manifest_from_db(table: &str, value: &[u8]) -> Result<Manifest> {
    Manifest::decode(value)
        .map_err(|e| corrupt(table, "manifest", "an undecodable manifest").with_source(e))
}

/// A version's origin as (`source`, `source_job`).
fn source_to_db(source: &VersionSource) -> (&'static str, Option<String>) {
    match source {
        VersionSource::Blank => ("blank", None),
        VersionSource::Upload => ("upload", None),
        VersionSource::Capture { job } => ("capture", Some(job.to_string())),
    }
}

fn source_from_db(table: &str, source: &str, job: Option<&str>) -> Result<VersionSource> {
    match (source, job) {
        ("blank", None) => Ok(VersionSource::Blank),
        ("upload", None) => Ok(VersionSource::Upload),
        ("capture", Some(job)) => Ok(VersionSource::Capture {
            job: parse(table, "source_job", job)?,
        }),
        (other, _) => Err(corrupt(
            table,
            "source",
            format_args!("{other:?} with job {job:?}"),
        )),
    }
}

fn visibility_from_db(value: &str) -> Result<Visibility> {
    parse("images", "visibility", value)
}

// --- users and tokens

#[derive(Queryable, Selectable, Insertable, AsChangeset)]
#[diesel(table_name = users, treat_none_as_null = true)]
pub(crate) struct UserRow {
    pub id: String,
    pub name: String,
    pub display_name: String,
    pub email: String,
    pub role: String,
    pub password_hash: Option<String>,
    pub created_at: i64,
}

impl UserRow {
    pub(crate) fn new(u: &User) -> Self {
        UserRow {
            id: u.id.to_string(),
            name: u.name.clone(),
            display_name: u.display_name.clone(),
            email: u.email.clone(),
            role: u.role.to_string(),
            password_hash: u.password_hash.clone(),
            created_at: u.created_at.millis(),
        }
    }

    pub(crate) fn into_model(self) -> Result<User> {
        Ok(User {
            id: parse("users", "id", &self.id)?,
            name: self.name,
            display_name: self.display_name,
            email: self.email,
            role: parse("users", "role", &self.role)?,
            password_hash: self.password_hash,
            created_at: Timestamp(self.created_at),
        })
    }
}

#[derive(Queryable, Selectable, Insertable)]
#[diesel(table_name = tokens)]
pub(crate) struct TokenRow {
    pub id: String,
    pub user_id: Option<String>,
    pub machine_id: Option<String>,
    pub name: String,
    pub secret_hash: Vec<u8>,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
}

impl TokenRow {
    pub(crate) fn new(t: &Token) -> Self {
        TokenRow {
            id: t.id.to_string(),
            user_id: match t.subject {
                TokenSubject::User(u) => Some(u.to_string()),
                TokenSubject::Machine(_) => None,
            },
            machine_id: match t.subject {
                TokenSubject::Machine(m) => Some(m.to_string()),
                TokenSubject::User(_) => None,
            },
            name: t.name.clone(),
            secret_hash: t.secret_hash.to_vec(),
            created_at: t.created_at.millis(),
            expires_at: t.expires_at.map(Timestamp::millis),
            revoked_at: t.revoked_at.map(Timestamp::millis),
        }
    }

    pub(crate) fn into_model(self) -> Result<Token> {
        Ok(Token {
            id: parse("tokens", "id", &self.id)?,
            subject: match (&self.user_id, &self.machine_id) {
                (Some(u), None) => TokenSubject::User(parse("tokens", "user_id", u)?),
                (None, Some(m)) => TokenSubject::Machine(parse("tokens", "machine_id", m)?),
                _ => {
                    return Err(Error::internal(format!(
                        "token {} has no single subject",
                        self.id
                    )))
                }
            },
            name: self.name,
            secret_hash: hash_from_db("tokens", "secret_hash", &self.secret_hash)?,
            created_at: Timestamp(self.created_at),
            expires_at: self.expires_at.map(Timestamp),
            revoked_at: self.revoked_at.map(Timestamp),
        })
    }
}

// --- images and versions

#[derive(Queryable, Selectable, Insertable, AsChangeset)]
#[diesel(table_name = images)]
pub(crate) struct ImageRow {
    pub id: String,
    pub owner_id: String,
    pub name: String,
    pub disk: String,
    pub size: i64,
    pub metadata: String,
    pub visibility: String,
    pub created_at: i64,
}

impl ImageRow {
    pub(crate) fn new(i: &Image) -> Result<Self> {
        let metadata = serde_json::to_string(&i.metadata).map_err(|e| {
            Error::internal("encoding image metadata as JSON failed").with_source(e)
        })?;
        Ok(ImageRow {
            id: i.id.to_string(),
            owner_id: i.owner.to_string(),
            name: i.name.clone(),
            disk: i.disk.to_string(),
            size: to_db("size", i.size)?,
            metadata,
            visibility: i.visibility.as_str().to_string(),
            created_at: i.created_at.millis(),
        })
    }

    /// The image, with its share list in stored order.
    pub(crate) fn into_model(self, shared_with: Vec<UserId>) -> Result<Image> {
        let metadata: BTreeMap<String, String> =
            serde_json::from_str(&self.metadata).map_err(|e| {
                corrupt("images", "metadata", "text that is not a JSON string map").with_source(e)
            })?;
        Ok(Image {
            id: parse("images", "id", &self.id)?,
            owner: parse("images", "owner_id", &self.owner_id)?,
            name: self.name,
            disk: parse("images", "disk", &self.disk)?,
            size: from_db("images", "size", self.size)?,
            metadata,
            visibility: visibility_from_db(&self.visibility)?,
            shared_with,
            created_at: Timestamp(self.created_at),
        })
    }
}

#[derive(Queryable, Selectable, Insertable)]
#[diesel(table_name = image_shares)]
pub(crate) struct ShareRow {
    pub image_id: String,
    pub position: i32,
    pub user_id: String,
}

/// The share rows of `image`, in list order.
pub(crate) fn share_rows(image: &Image) -> Vec<ShareRow> {
    image
        .shared_with
        .iter()
        .zip(0..)
        .map(|(u, position)| ShareRow {
            image_id: image.id.to_string(),
            position,
            user_id: u.to_string(),
        })
        .collect()
}

/// A version's record, without its manifest.
#[derive(Queryable, Selectable)]
#[diesel(table_name = versions)]
pub(crate) struct VersionRow {
    pub image_id: String,
    pub number: i64,
    pub size: i64,
    pub root: Vec<u8>,
    pub data_chunks: i64,
    pub added_bytes: i64,
    pub created_by: String,
    pub created_at: i64,
    pub source: String,
    pub source_job: Option<String>,
    pub note: Option<String>,
}

impl VersionRow {
    pub(crate) fn into_model(self) -> Result<Version> {
        const T: &str = "versions";
        Ok(Version {
            image: parse(T, "image_id", &self.image_id)?,
            number: u32_from_db(T, "number", self.number)?,
            size: from_db(T, "size", self.size)?,
            root: ChunkHash(hash_from_db(T, "root", &self.root)?),
            data_chunks: from_db(T, "data_chunks", self.data_chunks)?,
            added_bytes: from_db(T, "added_bytes", self.added_bytes)?,
            created_by: parse(T, "created_by", &self.created_by)?,
            created_at: Timestamp(self.created_at),
            source: source_from_db(T, &self.source, self.source_job.as_deref())?,
            note: self.note,
        })
    }
}

#[derive(Insertable)]
#[diesel(table_name = versions)]
pub(crate) struct NewVersionRow {
    pub image_id: String,
    pub number: i64,
    pub size: i64,
    pub root: Vec<u8>,
    pub data_chunks: i64,
    pub added_bytes: i64,
    pub created_by: String,
    pub created_at: i64,
    pub source: String,
    pub source_job: Option<String>,
    pub note: Option<String>,
    pub manifest: Vec<u8>,
}

impl NewVersionRow {
    pub(crate) fn new(v: &NewVersion, number: u32) -> Result<Self> {
        let (source, source_job) = source_to_db(&v.source);
        Ok(NewVersionRow {
            image_id: v.image.to_string(),
            number: i64::from(number),
            size: to_db("size", v.manifest.size())?,
            root: v.manifest.root().0.to_vec(),
            data_chunks: to_db("data_chunks", v.manifest.data_chunks() as u64)?,
            added_bytes: to_db("added_bytes", v.added_bytes)?,
            created_by: v.created_by.to_string(),
            created_at: v.created_at.millis(),
            source: source.to_string(),
            source_job,
            note: v.note.clone(),
            manifest: v.manifest.encode(),
        })
    }
}

/// Decodes a stored manifest.
pub(crate) fn manifest_of(bytes: &[u8]) -> Result<Manifest> {
    manifest_from_db("versions", bytes)
}

// --- uploads

#[derive(Queryable, Selectable, Insertable)]
#[diesel(table_name = uploads)]
pub(crate) struct UploadRow {
    pub id: String,
    pub image_id: String,
    pub created_by: String,
    pub manifest: Option<Vec<u8>>,
    pub source: String,
    pub source_job: Option<String>,
    pub started_at: i64,
    pub last_active: i64,
    pub added_bytes: i64,
}

impl UploadRow {
    pub(crate) fn new(u: &UploadSession) -> Result<Self> {
        let (source, source_job) = source_to_db(&u.source);
        Ok(UploadRow {
            id: u.id.to_string(),
            image_id: u.image.to_string(),
            created_by: u.created_by.to_string(),
            manifest: u.manifest.as_ref().map(Manifest::encode),
            source: source.to_string(),
            source_job,
            started_at: u.started_at.millis(),
            last_active: u.last_active.millis(),
            added_bytes: to_db("added_bytes", u.added_bytes)?,
        })
    }

    pub(crate) fn into_model(self) -> Result<UploadSession> {
        const T: &str = "uploads";
        Ok(UploadSession {
            id: parse(T, "id", &self.id)?,
            image: parse(T, "image_id", &self.image_id)?,
            created_by: parse(T, "created_by", &self.created_by)?,
            manifest: self
                .manifest
                .as_deref()
                .map(|m| manifest_from_db(T, m))
                .transpose()?,
            source: source_from_db(T, &self.source, self.source_job.as_deref())?,
            started_at: Timestamp(self.started_at),
            last_active: Timestamp(self.last_active),
            added_bytes: from_db(T, "added_bytes", self.added_bytes)?,
        })
    }
}

// --- setups

#[derive(Queryable, Selectable, Insertable)]
#[diesel(table_name = setups)]
pub(crate) struct SetupRow {
    pub id: String,
    pub owner_id: String,
    pub name: String,
    pub created_at: i64,
    pub updated_at: i64,
}

impl SetupRow {
    pub(crate) fn new(s: &Setup) -> Self {
        SetupRow {
            id: s.id.to_string(),
            owner_id: s.owner.to_string(),
            name: s.name.clone(),
            created_at: s.created_at.millis(),
            updated_at: s.updated_at.millis(),
        }
    }

    pub(crate) fn into_model(self, entries: Vec<SetupEntryRow>) -> Result<Setup> {
        Ok(Setup {
            id: parse("setups", "id", &self.id)?,
            owner: parse("setups", "owner_id", &self.owner_id)?,
            name: self.name,
            entries: entries
                .into_iter()
                .map(SetupEntryRow::into_model)
                .collect::<Result<_>>()?,
            created_at: Timestamp(self.created_at),
            updated_at: Timestamp(self.updated_at),
        })
    }
}

#[derive(Queryable, Selectable, Insertable)]
#[diesel(table_name = setup_entries)]
pub(crate) struct SetupEntryRow {
    pub setup_id: String,
    pub position: i32,
    pub image_id: String,
    pub version: String,
    pub disk: Option<String>,
    pub capture: bool,
}

impl SetupEntryRow {
    /// The entry rows of `setup`, in order.
    pub(crate) fn all(setup: &Setup) -> Vec<SetupEntryRow> {
        setup
            .entries
            .iter()
            .zip(0..)
            .map(|(e, position)| SetupEntryRow {
                setup_id: setup.id.to_string(),
                position,
                image_id: e.image.to_string(),
                version: e.version.to_string(),
                disk: e.disk.as_ref().map(ToString::to_string),
                capture: e.capture,
            })
            .collect()
    }

    fn into_model(self) -> Result<SetupEntry> {
        const T: &str = "setup_entries";
        Ok(SetupEntry {
            image: parse(T, "image_id", &self.image_id)?,
            version: parse(T, "version", &self.version)?,
            disk: self
                .disk
                .as_deref()
                .map(|d| parse(T, "disk", d))
                .transpose()?,
            capture: self.capture,
        })
    }
}

// --- machines

#[derive(Queryable, Selectable, Insertable, AsChangeset)]
#[diesel(table_name = machines, treat_none_as_null = true)]
pub(crate) struct MachineRow {
    pub id: String,
    pub mac: String,
    pub name: String,
    pub arch: String,
    pub pool: Option<String>,
    pub state: String,
    pub inventory: Option<String>,
    pub last_seen: Option<i64>,
    pub created_at: i64,
    pub power: Option<String>,
    pub neutral: Option<String>,
}

impl MachineRow {
    pub(crate) fn new(m: &Machine) -> Result<Self> {
        let inventory = m
            .inventory
            .as_ref()
            .map(|i| {
                serde_json::to_string(&InventoryJson::from(i)).map_err(|e| {
                    Error::internal("encoding an inventory as JSON failed").with_source(e)
                })
            })
            .transpose()?;
        Ok(MachineRow {
            id: m.id.to_string(),
            mac: m.mac.to_string(),
            name: m.name.clone(),
            arch: m.arch.as_str().to_string(),
            pool: m.pool.clone(),
            state: m.state.as_str().to_string(),
            inventory,
            last_seen: m.last_seen.map(Timestamp::millis),
            created_at: m.created_at.millis(),
            power: power_to_db(&m.boot.power)?,
            neutral: match m.boot.neutral {
                NeutralState::Keep => None,
                n => Some(n.to_string()),
            },
        })
    }

    pub(crate) fn into_model(self) -> Result<Machine> {
        const T: &str = "machines";
        let inventory = match self.inventory.as_deref() {
            None => None,
            Some(text) => {
                let json: InventoryJson = serde_json::from_str(text).map_err(|e| {
                    corrupt(T, "inventory", "text that is not an inventory").with_source(e)
                })?;
                Some(json.into_model()?)
            }
        };
        Ok(Machine {
            id: parse(T, "id", &self.id)?,
            mac: parse(T, "mac", &self.mac)?,
            name: self.name,
            arch: parse(T, "arch", &self.arch)?,
            pool: self.pool,
            state: parse(T, "state", &self.state)?,
            inventory,
            last_seen: self.last_seen.map(Timestamp),
            created_at: Timestamp(self.created_at),
            boot: MachineBoot {
                power: power_from_db(self.power.as_deref())?,
                neutral: self
                    .neutral
                    .as_deref()
                    .map(|n| parse(T, "neutral", n))
                    .transpose()?
                    .unwrap_or_default(),
            },
        })
    }
}

/// The stored form of a [`PowerConfig`]; `None` for manual.
#[derive(Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
enum PowerJson {
    Qmp {
        address: String,
    },
    Ipmi {
        host: String,
        username: String,
        password: String,
    },
}

fn power_to_db(p: &PowerConfig) -> Result<Option<String>> {
    let json = match p {
        PowerConfig::Manual => return Ok(None),
        PowerConfig::Qmp { address } => PowerJson::Qmp {
            address: address.clone(),
        },
        PowerConfig::Ipmi {
            host,
            username,
            password,
        } => PowerJson::Ipmi {
            host: host.clone(),
            username: username.clone(),
            password: password.clone(),
        },
    };
    serde_json::to_string(&json)
        .map(Some)
        .map_err(|e| Error::internal("encoding a power configuration failed").with_source(e))
}

fn power_from_db(text: Option<&str>) -> Result<PowerConfig> {
    let Some(text) = text else {
        return Ok(PowerConfig::Manual);
    };
    let json: PowerJson = serde_json::from_str(text).map_err(|e| {
        corrupt(
            "machines",
            "power",
            "text that is not a power configuration",
        )
        .with_source(e)
    })?;
    Ok(match json {
        PowerJson::Qmp { address } => PowerConfig::Qmp { address },
        PowerJson::Ipmi {
            host,
            username,
            password,
        } => PowerConfig::Ipmi {
            host,
            username,
            password,
        },
    })
}

/// The stored form of an [`Inventory`]; private to this adapter, so the
/// core types stay unserialisable.
#[derive(Serialize, Deserialize)]
struct InventoryJson {
    disks: Vec<DiskJson>,
    nics: Vec<NicJson>,
    memory_bytes: u64,
    cpu_model: String,
    cpus: u32,
}

#[derive(Serialize, Deserialize)]
struct DiskJson {
    path: String,
    by_id: Vec<String>,
    serial: Option<String>,
    wwn: Option<String>,
    model: Option<String>,
    size: u64,
    logical_block: u32,
    physical_block: u32,
    rotational: bool,
    removable: bool,
}

#[derive(Serialize, Deserialize)]
struct NicJson {
    name: String,
    mac: String,
    speed_mbps: Option<u32>,
}

impl From<&Inventory> for InventoryJson {
    fn from(i: &Inventory) -> Self {
        InventoryJson {
            disks: i
                .disks
                .iter()
                .map(|d| DiskJson {
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
                .map(|n| NicJson {
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

impl InventoryJson {
    fn into_model(self) -> Result<Inventory> {
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
                        mac: parse("machines", "inventory", &n.mac)?,
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

// --- jobs

#[derive(Queryable, Selectable)]
#[diesel(table_name = jobs)]
pub(crate) struct JobRow {
    pub seq: i64,
    pub id: String,
    pub machine_id: String,
    pub owner_id: String,
    pub setup_id: Option<String>,
    pub state: String,
    pub progress_phase: String,
    pub progress_done: i64,
    pub progress_total: i64,
    pub progress_rate: i64,
    pub error: Option<String>,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub session: Option<String>,
}

/// The stored form of a job's [`Session`].
#[derive(Serialize, Deserialize)]
struct SessionJson {
    hold_ms: Option<u64>,
    ends_at: Option<i64>,
    cycled_at: Option<i64>,
    #[serde(default)]
    not_before: Option<i64>,
}

/// A job's session column (`None` when it holds nothing).
pub(crate) fn session_to_db(s: &Session) -> Result<Option<String>> {
    if *s == Session::default() {
        return Ok(None);
    }
    serde_json::to_string(&SessionJson {
        hold_ms: s.hold_ms,
        ends_at: s.ends_at.map(Timestamp::millis),
        cycled_at: s.cycled_at.map(Timestamp::millis),
        not_before: s.not_before.map(Timestamp::millis),
    })
    .map(Some)
    .map_err(|e| Error::internal("encoding a job session failed").with_source(e))
}

fn session_from_db(text: Option<&str>) -> Result<Session> {
    let Some(text) = text else {
        return Ok(Session::default());
    };
    let j: SessionJson = serde_json::from_str(text)
        .map_err(|e| corrupt("jobs", "session", "text that is not a session").with_source(e))?;
    Ok(Session {
        hold_ms: j.hold_ms,
        ends_at: j.ends_at.map(Timestamp),
        cycled_at: j.cycled_at.map(Timestamp),
        not_before: j.not_before.map(Timestamp),
    })
}

impl JobRow {
    pub(crate) fn into_model(self, entries: Vec<JobEntryRow>) -> Result<Job> {
        const T: &str = "jobs";
        Ok(Job {
            id: parse(T, "id", &self.id)?,
            seq: self.seq,
            machine: parse(T, "machine_id", &self.machine_id)?,
            owner: parse(T, "owner_id", &self.owner_id)?,
            setup: self
                .setup_id
                .as_deref()
                .map(|s| parse(T, "setup_id", s))
                .transpose()?,
            entries: entries
                .into_iter()
                .map(JobEntryRow::into_model)
                .collect::<Result<_>>()?,
            state: parse(T, "state", &self.state)?,
            progress: Progress {
                phase: self.progress_phase,
                bytes_done: from_db(T, "progress_done", self.progress_done)?,
                bytes_total: from_db(T, "progress_total", self.progress_total)?,
                rate: from_db(T, "progress_rate", self.progress_rate)?,
            },
            error: self.error,
            created_at: Timestamp(self.created_at),
            started_at: self.started_at.map(Timestamp),
            finished_at: self.finished_at.map(Timestamp),
            session: session_from_db(self.session.as_deref())?,
        })
    }
}

#[derive(Insertable)]
#[diesel(table_name = jobs)]
pub(crate) struct NewJobRow {
    pub id: String,
    pub machine_id: String,
    pub owner_id: String,
    pub setup_id: Option<String>,
    pub state: String,
    pub progress_phase: String,
    pub progress_done: i64,
    pub progress_total: i64,
    pub progress_rate: i64,
    pub error: Option<String>,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub session: Option<String>,
}

impl NewJobRow {
    pub(crate) fn new(j: &Job) -> Result<Self> {
        Ok(NewJobRow {
            session: session_to_db(&j.session)?,
            id: j.id.to_string(),
            machine_id: j.machine.to_string(),
            owner_id: j.owner.to_string(),
            setup_id: j.setup.map(|s| s.to_string()),
            state: j.state.to_string(),
            progress_phase: j.progress.phase.clone(),
            progress_done: to_db("bytes_done", j.progress.bytes_done)?,
            progress_total: to_db("bytes_total", j.progress.bytes_total)?,
            progress_rate: to_db("rate", j.progress.rate)?,
            error: j.error.clone(),
            created_at: j.created_at.millis(),
            started_at: j.started_at.map(Timestamp::millis),
            finished_at: j.finished_at.map(Timestamp::millis),
        })
    }
}

#[derive(Queryable, Selectable, Insertable)]
#[diesel(table_name = job_entries)]
pub(crate) struct JobEntryRow {
    pub job_id: String,
    pub position: i32,
    pub image_id: String,
    pub version: i64,
    pub disk: String,
    pub capture: bool,
}

impl JobEntryRow {
    /// The entry rows of `job`, in order.
    pub(crate) fn all(job: &Job) -> Vec<JobEntryRow> {
        job.entries
            .iter()
            .zip(0..)
            .map(|(e, position)| JobEntryRow {
                job_id: job.id.to_string(),
                position,
                image_id: e.image.to_string(),
                version: i64::from(e.version),
                disk: e.disk.to_string(),
                capture: e.capture,
            })
            .collect()
    }

    fn into_model(self) -> Result<JobEntry> {
        const T: &str = "job_entries";
        Ok(JobEntry {
            image: parse(T, "image_id", &self.image_id)?,
            version: u32_from_db(T, "version", self.version)?,
            disk: parse(T, "disk", &self.disk)?,
            capture: self.capture,
        })
    }
}

#[derive(Queryable, Selectable, Insertable)]
#[diesel(table_name = job_events)]
pub(crate) struct JobEventRow {
    pub job_id: String,
    pub at: i64,
    pub kind: String,
    pub message: String,
}

impl JobEventRow {
    pub(crate) fn new(job: JobId, e: &JobEvent) -> Self {
        JobEventRow {
            job_id: job.to_string(),
            at: e.at.millis(),
            kind: e.kind.clone(),
            message: e.message.clone(),
        }
    }

    pub(crate) fn into_model(self) -> JobEvent {
        JobEvent {
            at: Timestamp(self.at),
            kind: self.kind,
            message: self.message,
        }
    }
}

#[derive(Queryable, Selectable, Insertable)]
#[diesel(table_name = machine_events)]
pub(crate) struct MachineEventRow {
    pub machine_id: String,
    pub at: i64,
    pub kind: String,
    pub message: String,
}

impl MachineEventRow {
    pub(crate) fn new(machine: MachineId, e: &JobEvent) -> Self {
        MachineEventRow {
            machine_id: machine.to_string(),
            at: e.at.millis(),
            kind: e.kind.clone(),
            message: e.message.clone(),
        }
    }

    pub(crate) fn into_model(self) -> JobEvent {
        JobEvent {
            at: Timestamp(self.at),
            kind: self.kind,
            message: self.message,
        }
    }
}
