//! Setups: the "mix and match" of images onto a machine's disks.

use super::{check_name, DiskSelector, ImageId, SetupId, Timestamp, UserId, VersionRef};
use crate::{Error, Result};

/// One image in a setup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetupEntry {
    /// The image (owned by the setup's owner, or readable by them).
    pub image: ImageId,
    /// Which version; `Latest` is resolved when a job is queued.
    pub version: VersionRef,
    /// Target disk; `None` uses the image's own selector.
    pub disk: Option<DiskSelector>,
    /// Capture the disk as a new version of the image when the session ends.
    /// Only allowed for images the setup's owner may write.
    pub capture: bool,
}

/// An ordered list of entries, owned by a user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setup {
    /// Stable id.
    pub id: SetupId,
    /// Owner.
    pub owner: UserId,
    /// Name.
    pub name: String,
    /// Entries, written in order.
    pub entries: Vec<SetupEntry>,
    /// Creation time.
    pub created_at: Timestamp,
    /// Last change.
    pub updated_at: Timestamp,
}

/// Most entries a setup may hold.
pub const MAX_SETUP_ENTRIES: usize = 32;

/// Validates a setup's name and entry count.
pub fn check_setup(name: &str, entries: &[SetupEntry]) -> Result<()> {
    check_name("name", name, 128)?;
    if entries.len() > MAX_SETUP_ENTRIES {
        return Err(Error::invalid(
            "entries",
            format!("at most {MAX_SETUP_ENTRIES} entries"),
        ));
    }
    Ok(())
}
