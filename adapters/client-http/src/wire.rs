//! The server's JSON as this client reads and writes it, and the explicit
//! conversions to and from the core's types (which are not serialisable on
//! purpose). The shapes mirror `rocket-server`'s DTOs; the round-trip tests
//! against a real server keep the two in step.

use baas_core::content::ChunkHash;
use baas_core::model::*;
use baas_core::{Error, ErrorKind, Result};
use serde::{Deserialize, Serialize};

/// `{"error": {"code", "message", "field"}}`.
#[derive(Debug, Deserialize)]
pub struct Envelope {
    pub error: EnvelopeBody,
}

/// The envelope's body.
#[derive(Debug, Deserialize)]
pub struct EnvelopeBody {
    pub code: String,
    pub message: String,
    #[serde(default)]
    pub field: Option<String>,
}

/// The core's kind for a server error code, falling back on the status.
pub fn kind_of(code: Option<&str>, status: u16) -> ErrorKind {
    match code {
        Some("not_found") => ErrorKind::NotFound,
        Some("conflict") => ErrorKind::Conflict,
        Some("invalid_input" | "malformed_json" | "bad_request" | "unsupported_media_type") => {
            ErrorKind::Invalid
        }
        Some("too_large") => ErrorKind::TooLarge,
        Some("unauthenticated") => ErrorKind::Unauthenticated,
        Some("forbidden") => ErrorKind::Forbidden,
        Some("unavailable") => ErrorKind::Unavailable,
        Some("internal") => ErrorKind::Internal,
        _ => match status {
            400 | 405 | 415 | 416 | 422 => ErrorKind::Invalid,
            401 => ErrorKind::Unauthenticated,
            403 => ErrorKind::Forbidden,
            404 | 410 => ErrorKind::NotFound,
            409 | 412 => ErrorKind::Conflict,
            413 => ErrorKind::TooLarge,
            408 | 429 | 502 | 503 | 504 => ErrorKind::Unavailable,
            _ => ErrorKind::Internal,
        },
    }
}

/// The core error for an error answer: the envelope's code and message
/// (and field), or the status when the body is no envelope.
pub fn error_of(what: &str, status: u16, body: &[u8]) -> Error {
    match serde_json::from_slice::<Envelope>(body) {
        Ok(Envelope { error }) => {
            let kind = kind_of(Some(&error.code), status);
            match (kind, error.field) {
                (ErrorKind::Invalid, Some(field)) => {
                    let prefix = format!("{field}: ");
                    let msg = error
                        .message
                        .strip_prefix(&prefix)
                        .unwrap_or(&error.message)
                        .to_string();
                    Error::invalid(field, format!("{msg} ({what})"))
                }
                _ => Error::new(kind, format!("{what}: {}", error.message)),
            }
        }
        Err(_) => Error::new(
            kind_of(None, status),
            format!("{what}: the server answered {status}"),
        ),
    }
}

fn bad(what: &str, detail: impl std::fmt::Display) -> Error {
    Error::internal(format!("the server sent a malformed {what}: {detail}"))
}

/// Parses the server's `2026-01-31T12:00:00.000Z` (RFC 3339, UTC; the
/// fraction optional).
pub fn parse_time(s: &str) -> Result<Timestamp> {
    let err = || bad("time", format!("{s:?}"));
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' {
        return Err(err());
    }
    let num = |r: std::ops::Range<usize>| -> Result<i64> {
        s.get(r)
            .filter(|d| d.bytes().all(|c| c.is_ascii_digit()))
            .and_then(|d| d.parse::<i64>().ok())
            .ok_or_else(err)
    };
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hh, mm, ss) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let rest = s.get(19..).ok_or_else(err)?;
    let rest = rest.strip_suffix('Z').ok_or_else(err)?;
    let millis = match rest.strip_prefix('.') {
        None if rest.is_empty() => 0,
        Some(frac) if !frac.is_empty() && frac.bytes().all(|c| c.is_ascii_digit()) => {
            let mut ms = 0i64;
            for (i, c) in frac.bytes().take(3).enumerate() {
                ms += i64::from(c - b'0') * [100, 10, 1][i];
            }
            ms
        }
        _ => return Err(err()),
    };
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || hh > 23 || mm > 59 || ss > 60 {
        return Err(err());
    }
    // Howard Hinnant's days_from_civil.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Ok(Timestamp(
        ((days * 86_400 + hh * 3600 + mm * 60 + ss) * 1000) + millis,
    ))
}

fn opt_time(s: &Option<String>) -> Result<Option<Timestamp>> {
    s.as_deref().map(parse_time).transpose()
}

fn parsed<T: std::str::FromStr<Err = Error>>(what: &str, s: &str) -> Result<T> {
    s.parse::<T>().map_err(|e| bad(what, e.message()))
}

// --- inventory and machines

/// A disk, both ways.
#[derive(Debug, Serialize, Deserialize)]
pub struct DiskWire {
    pub path: String,
    #[serde(default)]
    pub by_id: Vec<String>,
    pub serial: Option<String>,
    pub wwn: Option<String>,
    pub model: Option<String>,
    pub size: u64,
    pub logical_block: u32,
    pub physical_block: u32,
    pub rotational: bool,
    pub removable: bool,
}

/// A NIC, both ways.
#[derive(Debug, Serialize, Deserialize)]
pub struct NicWire {
    pub name: String,
    pub mac: String,
    pub speed_mbps: Option<u32>,
}

/// An inventory, both ways.
#[derive(Debug, Serialize, Deserialize)]
pub struct InventoryWire {
    pub disks: Vec<DiskWire>,
    pub nics: Vec<NicWire>,
    pub memory_bytes: u64,
    pub cpu_model: String,
    pub cpus: u32,
}

impl From<&Inventory> for InventoryWire {
    fn from(i: &Inventory) -> Self {
        InventoryWire {
            disks: i
                .disks
                .iter()
                .map(|d| DiskWire {
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
                .map(|n| NicWire {
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

impl InventoryWire {
    fn into_core(self) -> Result<Inventory> {
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
                        mac: parsed("MAC", &n.mac)?,
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

/// A machine as the server shows it.
#[derive(Debug, Deserialize)]
pub struct MachineWire {
    pub id: String,
    pub mac: String,
    pub name: String,
    pub arch: String,
    pub pool: Option<String>,
    pub state: String,
    pub inventory: Option<InventoryWire>,
    pub last_seen: Option<String>,
    pub created_at: String,
}

impl MachineWire {
    /// The core's machine.
    pub fn into_core(self) -> Result<Machine> {
        let state = match self.state.as_str() {
            "pending" => MachineState::Pending,
            "ready" => MachineState::Ready,
            "retired" => MachineState::Retired,
            other => return Err(bad("machine state", other)),
        };
        Ok(Machine {
            id: parsed("machine id", &self.id)?,
            mac: parsed("MAC", &self.mac)?,
            name: self.name,
            arch: parsed("architecture", &self.arch)?,
            pool: self.pool,
            state,
            inventory: self.inventory.map(InventoryWire::into_core).transpose()?,
            last_seen: opt_time(&self.last_seen)?,
            created_at: parse_time(&self.created_at)?,
            boot: MachineBoot::default(),
        })
    }
}

// --- jobs

/// One entry of a job.
#[derive(Debug, Deserialize)]
pub struct JobEntryWire {
    pub image_id: String,
    pub version: u32,
    pub disk: String,
    pub capture: bool,
}

/// Progress, both ways.
#[derive(Debug, Serialize, Deserialize)]
pub struct ProgressWire {
    pub phase: String,
    pub bytes_done: u64,
    pub bytes_total: u64,
    pub rate: u64,
}

impl From<&Progress> for ProgressWire {
    fn from(p: &Progress) -> Self {
        ProgressWire {
            phase: p.phase.clone(),
            bytes_done: p.bytes_done,
            bytes_total: p.bytes_total,
            rate: p.rate,
        }
    }
}

/// A job as the server shows it.
#[derive(Debug, Deserialize)]
pub struct JobWire {
    pub id: String,
    pub seq: i64,
    pub machine_id: String,
    pub owner_id: String,
    pub setup_id: Option<String>,
    pub entries: Vec<JobEntryWire>,
    pub state: String,
    pub progress: ProgressWire,
    pub error: Option<String>,
    pub created_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
}

impl JobWire {
    /// The core's job.
    pub fn into_core(self) -> Result<Job> {
        Ok(Job {
            id: parsed("job id", &self.id)?,
            seq: self.seq,
            machine: parsed("machine id", &self.machine_id)?,
            owner: parsed("user id", &self.owner_id)?,
            setup: self
                .setup_id
                .as_deref()
                .map(|s| parsed("setup id", s))
                .transpose()?,
            entries: self
                .entries
                .into_iter()
                .map(|e| {
                    Ok(JobEntry {
                        image: parsed("image id", &e.image_id)?,
                        version: e.version,
                        disk: parsed("disk selector", &e.disk)?,
                        capture: e.capture,
                    })
                })
                .collect::<Result<_>>()?,
            state: parsed("job state", &self.state)?,
            progress: Progress {
                phase: self.progress.phase,
                bytes_done: self.progress.bytes_done,
                bytes_total: self.progress.bytes_total,
                rate: self.progress.rate,
            },
            error: self.error,
            created_at: parse_time(&self.created_at)?,
            started_at: opt_time(&self.started_at)?,
            finished_at: opt_time(&self.finished_at)?,
            session: Session::default(),
        })
    }
}

/// `{"state", "message"}`.
#[derive(Debug, Serialize)]
pub struct AdvanceWire<'a> {
    pub state: &'a str,
    pub message: &'a str,
}

/// `{"phase", "reason"}`.
#[derive(Debug, Serialize)]
pub struct FailWire<'a> {
    pub phase: &'a str,
    pub reason: &'a str,
}

/// `{"job_id", "lines"}`.
#[derive(Debug, Serialize)]
pub struct LogWire<'a> {
    pub job_id: Option<String>,
    pub lines: &'a [String],
}

/// `{"hashes"}`.
#[derive(Debug, Serialize)]
pub struct ChunksWire {
    pub hashes: Vec<String>,
}

// --- captures and versions

/// A capture that has begun.
#[derive(Debug, Deserialize)]
pub struct UploadWire {
    pub upload_id: String,
    pub missing: Vec<String>,
}

impl UploadWire {
    /// The upload and the chunks the server lacks.
    pub fn into_core(self) -> Result<(UploadId, Vec<ChunkHash>)> {
        Ok((
            parsed("upload id", &self.upload_id)?,
            self.missing
                .iter()
                .map(|h| parsed("chunk hash", h))
                .collect::<Result<_>>()?,
        ))
    }
}

/// A committed version.
#[derive(Debug, Deserialize)]
pub struct VersionWire {
    pub image_id: String,
    pub number: u32,
    pub size: u64,
    pub root: String,
    pub data_chunks: u64,
    pub added_bytes: u64,
    pub created_by: String,
    pub created_at: String,
    pub source: String,
    pub source_job_id: Option<String>,
    pub note: Option<String>,
}

impl VersionWire {
    /// The core's version.
    pub fn into_core(self) -> Result<Version> {
        let source = match (self.source.as_str(), &self.source_job_id) {
            ("blank", _) => VersionSource::Blank,
            ("upload", _) => VersionSource::Upload,
            ("capture", Some(job)) => VersionSource::Capture {
                job: parsed("job id", job)?,
            },
            (other, _) => return Err(bad("version source", other)),
        };
        Ok(Version {
            image: parsed("image id", &self.image_id)?,
            number: self.number,
            size: self.size,
            root: parsed("root hash", &self.root)?,
            data_chunks: self.data_chunks,
            added_bytes: self.added_bytes,
            created_by: parsed("user id", &self.created_by)?,
            created_at: parse_time(&self.created_at)?,
            source,
            note: self.note,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_as_the_server_writes_them() {
        for (s, ms) in [
            ("1970-01-01T00:00:00.000Z", 0),
            ("2000-02-29T00:00:00.123Z", 951_782_400_123),
            ("2025-12-31T23:59:59.999Z", 1_767_225_599_999),
            ("1969-12-31T23:59:59.999Z", -1),
            ("2025-12-31T23:59:59Z", 1_767_225_599_000),
        ] {
            assert_eq!(parse_time(s).ok(), Some(Timestamp(ms)), "{s}");
        }
        for s in [
            "",
            "2025-12-31 23:59:59Z",
            "2025-13-01T00:00:00Z",
            "2025-12-31T23:59:59",
            "2025-12-31T23:59:59.Z",
            "+025-12-31T23:59:59Z",
        ] {
            assert!(parse_time(s).is_err(), "{s:?}");
        }
    }

    #[test]
    fn envelopes_map_to_kinds_and_keep_the_field() {
        let e = error_of(
            "inventory",
            400,
            br#"{"error": {"code": "invalid_input", "message": "mac: bad", "field": "mac"}}"#,
        );
        assert_eq!(e.kind(), ErrorKind::Invalid);
        assert_eq!(e.field(), Some("mac"));
        assert_eq!(e.message(), "mac: bad (inventory)");
        let e = error_of(
            "x",
            404,
            br#"{"error": {"code": "not_found", "message": "job 1 not found"}}"#,
        );
        assert_eq!(e.kind(), ErrorKind::NotFound);
        assert_eq!(error_of("x", 503, b"<html>").kind(), ErrorKind::Unavailable);
        assert_eq!(error_of("x", 500, b"").kind(), ErrorKind::Internal);
        assert_eq!(error_of("x", 403, b"").kind(), ErrorKind::Forbidden);
    }
}
