//! Images, their immutable versions, who may see them, and where they go on a
//! machine (the target-disk selector).

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use super::{check_name, ImageId, JobId, Timestamp, UserId};
use crate::content::{ChunkHash, Manifest};
use crate::{Error, Result};

/// Who may read an image. Only the owner (or an admin) ever writes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Visibility {
    /// The owner only.
    Private,
    /// The owner and the users in the image's share list.
    Shared,
    /// Everyone: a system image (base OS, toolchain) published by a
    /// moderator or admin.
    Public,
}

impl Visibility {
    /// The lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Visibility::Private => "private",
            Visibility::Shared => "shared",
            Visibility::Public => "public",
        }
    }
}

impl FromStr for Visibility {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "private" => Ok(Visibility::Private),
            "shared" => Ok(Visibility::Shared),
            "public" | "system" => Ok(Visibility::Public),
            other => Err(Error::invalid(
                "visibility",
                format!("{other:?} is not one of private, shared, public"),
            )),
        }
    }
}

/// Which disk (and optionally which partition) of a machine an image is
/// written to. Resolved by the agent against the machine's real inventory,
/// never by assuming `/dev/sda`.
///
/// Text form: `first`, `index:N`, `serial:S`, `wwn:W`, `by-id:NAME`,
/// `path:/dev/X` or a bare `/dev/X`, each optionally followed by `#N` for
/// partition number N.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DiskSelector {
    /// The disk.
    pub disk: DiskMatch,
    /// A partition number on that disk, or the whole disk.
    pub partition: Option<u32>,
}

/// How a disk is matched.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum DiskMatch {
    /// The first non-removable disk, by kernel enumeration order.
    First,
    /// The N-th non-removable disk (0-based), by kernel enumeration order.
    Index(u32),
    /// A disk with this serial number.
    Serial(String),
    /// A disk with this World Wide Name.
    Wwn(String),
    /// A `/dev/disk/by-id/` name.
    ById(String),
    /// A device path as the management OS sees it, e.g. `/dev/nvme0n1`.
    Path(String),
}

impl DiskSelector {
    /// The whole first disk.
    pub fn first() -> Self {
        DiskSelector {
            disk: DiskMatch::First,
            partition: None,
        }
    }
}

impl fmt::Display for DiskSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.disk {
            DiskMatch::First => f.write_str("first")?,
            DiskMatch::Index(n) => write!(f, "index:{n}")?,
            DiskMatch::Serial(s) => write!(f, "serial:{s}")?,
            DiskMatch::Wwn(s) => write!(f, "wwn:{s}")?,
            DiskMatch::ById(s) => write!(f, "by-id:{s}")?,
            DiskMatch::Path(s) => f.write_str(s)?,
        }
        if let Some(p) = self.partition {
            write!(f, "#{p}")?;
        }
        Ok(())
    }
}

fn selector_value(kind: &str, v: &str) -> Result<String> {
    let ok = !v.is_empty()
        && v.len() <= 128
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':' | '+'));
    if ok {
        Ok(v.to_string())
    } else {
        Err(Error::invalid(
            "disk",
            format!("{kind} value {v:?} must be 1 to 128 characters of A-Z, a-z, 0-9, '-', '_', '.', ':', '+'"),
        ))
    }
}

impl FromStr for DiskSelector {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let s = s.trim();
        let (disk, partition) = match s.rsplit_once('#') {
            Some((d, p)) => {
                let n: u32 = p.parse().ok().filter(|n| *n >= 1).ok_or_else(|| {
                    Error::invalid("disk", format!("partition {p:?} must be a number from 1"))
                })?;
                (d, Some(n))
            }
            None => (s, None),
        };
        let disk = if disk == "first" {
            DiskMatch::First
        } else if let Some(n) = disk.strip_prefix("index:") {
            DiskMatch::Index(
                n.parse()
                    .map_err(|_| Error::invalid("disk", format!("index {n:?} is not a number")))?,
            )
        } else if let Some(v) = disk.strip_prefix("serial:") {
            DiskMatch::Serial(selector_value("serial", v)?)
        } else if let Some(v) = disk.strip_prefix("wwn:") {
            DiskMatch::Wwn(selector_value("wwn", v)?)
        } else if let Some(v) = disk.strip_prefix("by-id:") {
            DiskMatch::ById(selector_value("by-id", v)?)
        } else {
            let path = disk.strip_prefix("path:").unwrap_or(disk);
            let name = path.strip_prefix("/dev/").ok_or_else(|| {
                Error::invalid(
                    "disk",
                    format!("{s:?} is not a disk selector (first, index:N, serial:S, wwn:W, by-id:NAME or /dev/NAME, optionally #PART)"),
                )
            })?;
            let ok = !name.is_empty()
                && !name
                    .split('/')
                    .any(|seg| seg.is_empty() || seg == "." || seg == "..")
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/' | ':'));
            if !ok {
                return Err(Error::invalid(
                    "disk",
                    format!("{path:?} is not a device path"),
                ));
            }
            DiskMatch::Path(path.to_string())
        };
        Ok(DiskSelector { disk, partition })
    }
}

/// An image: a named, owned series of immutable versions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    /// Stable id.
    pub id: ImageId,
    /// Owner; the only user (besides admins) who may write it.
    pub owner: UserId,
    /// Human name (not unique).
    pub name: String,
    /// Where it is written by default.
    pub disk: DiskSelector,
    /// Declared size in bytes: the size of the blank version 0.
    pub size: u64,
    /// Free-form key/value metadata.
    pub metadata: BTreeMap<String, String>,
    /// Who may read it.
    pub visibility: Visibility,
    /// With `Shared`, who besides the owner may read it.
    pub shared_with: Vec<UserId>,
    /// Creation time.
    pub created_at: Timestamp,
}

/// Limits for image fields.
pub const MAX_IMAGE_NAME: usize = 128;
/// Largest declared image size: 16 TiB.
pub const MAX_IMAGE_SIZE: u64 = 16 << 40;

/// Validates an image name.
pub fn check_image_name(name: &str) -> Result<()> {
    check_name("name", name, MAX_IMAGE_NAME)
}

/// Validates a declared image size.
pub fn check_image_size(size: u64) -> Result<()> {
    if size == 0 || size > MAX_IMAGE_SIZE {
        return Err(Error::invalid(
            "size",
            format!("{size} must be between 1 byte and 16 TiB"),
        ));
    }
    Ok(())
}

/// Validates free-form metadata: at most 64 keys, keys 1..=64 characters,
/// values at most 4096.
pub fn check_metadata(metadata: &BTreeMap<String, String>) -> Result<()> {
    if metadata.len() > 64 {
        return Err(Error::invalid("metadata", "at most 64 keys"));
    }
    for (k, v) in metadata {
        check_name("metadata", k, 64)?;
        if v.len() > 4096 {
            return Err(Error::invalid(
                "metadata",
                format!("value of {k:?} is longer than 4096 bytes"),
            ));
        }
    }
    Ok(())
}

/// Where a version came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VersionSource {
    /// Version 0: zeros of the declared size.
    Blank,
    /// Uploaded by a user.
    Upload,
    /// Captured from a machine's disk at the end of a job.
    Capture {
        /// The job whose session was captured.
        job: JobId,
    },
}

/// A committed, immutable version of an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    /// The image.
    pub image: ImageId,
    /// Consecutive from 0; never reused, even after deletion.
    pub number: u32,
    /// Size in bytes.
    pub size: u64,
    /// Root hash over the manifest (see [`Manifest::root`]).
    pub root: ChunkHash,
    /// Chunks that are not all zeros.
    pub data_chunks: u64,
    /// Compressed bytes this version added to the store (chunks that were
    /// new when it was committed).
    pub added_bytes: u64,
    /// Who made it.
    pub created_by: UserId,
    /// When it was committed.
    pub created_at: Timestamp,
    /// Where it came from.
    pub source: VersionSource,
    /// An optional note (at most 1024 characters).
    pub note: Option<String>,
}

/// A version about to be committed; the store assigns the number.
#[derive(Debug, Clone)]
pub struct NewVersion {
    /// The image.
    pub image: ImageId,
    /// The content.
    pub manifest: Manifest,
    /// Compressed bytes newly stored for it.
    pub added_bytes: u64,
    /// Author.
    pub created_by: UserId,
    /// Commit time.
    pub created_at: Timestamp,
    /// Origin.
    pub source: VersionSource,
    /// Note.
    pub note: Option<String>,
}

impl NewVersion {
    /// The version record this becomes once the store assigns `number`.
    pub fn into_version(&self, number: u32) -> Version {
        Version {
            image: self.image,
            number,
            size: self.manifest.size(),
            root: self.manifest.root(),
            data_chunks: self.manifest.data_chunks() as u64,
            added_bytes: self.added_bytes,
            created_by: self.created_by,
            created_at: self.created_at,
            source: self.source.clone(),
            note: self.note.clone(),
        }
    }
}

/// A reference to a version: a number, or whatever is latest when resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VersionRef {
    /// The highest committed version at resolution time.
    Latest,
    /// Exactly this version.
    Number(u32),
}

impl fmt::Display for VersionRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VersionRef::Latest => f.write_str("latest"),
            VersionRef::Number(n) => write!(f, "{n}"),
        }
    }
}

impl FromStr for VersionRef {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("latest") {
            return Ok(VersionRef::Latest);
        }
        s.parse().map(VersionRef::Number).map_err(|_| {
            Error::invalid(
                "version",
                format!("{s:?} is not a version number or \"latest\""),
            )
        })
    }
}

/// Validates a version note.
pub fn check_note(note: &Option<String>) -> Result<()> {
    match note {
        Some(n) if n.chars().count() > 1024 => {
            Err(Error::invalid("note", "must be at most 1024 characters"))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_selectors_round_trip() {
        for s in [
            "first",
            "index:2",
            "serial:S3Z9NB0K123",
            "wwn:0x5002538e40a1b2c3",
            "by-id:nvme-Samsung_SSD_970_EVO_1TB_S467",
            "/dev/sda",
            "/dev/nvme0n1",
            "/dev/disk/by-path/pci-0000:00:04.0",
            "first#2",
            "/dev/sda#1",
        ] {
            let parsed: DiskSelector = s.parse().expect(s);
            assert_eq!(parsed.to_string(), s);
        }
        let p: DiskSelector = "path:/dev/vda".parse().expect("path prefix");
        assert_eq!(p.to_string(), "/dev/vda");
    }

    #[test]
    fn disk_selectors_reject_garbage_and_traversal() {
        for s in [
            "",
            "sda",
            "/dev/",
            "/dev/../etc/passwd",
            "/dev/a//b",
            "first#0",
            "first#x",
            "serial:",
            "serial:a b",
            "index:-1",
        ] {
            assert!(s.parse::<DiskSelector>().is_err(), "{s:?}");
        }
    }

    #[test]
    fn version_refs() {
        assert_eq!(
            "latest".parse::<VersionRef>().ok(),
            Some(VersionRef::Latest)
        );
        assert_eq!("7".parse::<VersionRef>().ok(), Some(VersionRef::Number(7)));
        assert!("-1".parse::<VersionRef>().is_err());
    }
}
