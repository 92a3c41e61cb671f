//! Setups: ordered lists of image versions and target disks.

use super::policy::{can_access_setup, can_read_image, can_write_image, check_user};
use super::{Actor, Baas};
use crate::model::*;
use crate::{Error, Result};

/// A setup to create.
#[derive(Debug, Clone)]
pub struct NewSetup {
    /// Name.
    pub name: String,
    /// Entries.
    pub entries: Vec<SetupEntry>,
}

impl Baas {
    /// Checks that `owner` may use every entry: read the image, write it
    /// when the entry captures, and that a pinned version exists.
    fn check_entries(&self, actor: &Actor, entries: &[SetupEntry]) -> Result<()> {
        for (i, e) in entries.iter().enumerate() {
            let image = match self.meta.image(e.image)? {
                Some(img) if can_read_image(actor, &img) => img,
                _ => {
                    return Err(Error::invalid(
                        format!("entries[{i}].image"),
                        format!("image {} does not exist or is not visible to you", e.image),
                    ))
                }
            };
            if e.capture && !can_write_image(actor, &image) {
                return Err(Error::forbidden(format!(
                    "entries[{i}]: capture needs write access to image {}",
                    e.image
                )));
            }
            if let VersionRef::Number(n) = e.version {
                if self.meta.version(e.image, n)?.is_none() {
                    return Err(Error::invalid(
                        format!("entries[{i}].version"),
                        format!("image {} has no version {n}", e.image),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Creates a setup owned by the caller.
    pub fn create_setup(&self, actor: &Actor, new: NewSetup) -> Result<Setup> {
        let owner = check_user(actor)?;
        check_setup(&new.name, &new.entries)?;
        self.check_entries(actor, &new.entries)?;
        let now = self.clock.now();
        let setup = Setup {
            id: SetupId(self.entropy.uuid()),
            owner,
            name: new.name,
            entries: new.entries,
            created_at: now,
            updated_at: now,
        };
        self.meta.insert_setup(&setup)?;
        Ok(setup)
    }

    /// A setup (owner or admin).
    pub fn get_setup(&self, actor: &Actor, id: SetupId) -> Result<Setup> {
        match self.meta.setup(id)? {
            Some(s) if can_access_setup(actor, &s) => Ok(s),
            _ => Err(Error::not_found(format!("setup {id}"))),
        }
    }

    /// The caller's setups (admins: everyone's, or `owner`'s).
    pub fn list_setups(&self, actor: &Actor, owner: Option<UserId>) -> Result<Vec<Setup>> {
        if actor.at_least(Role::Admin) {
            return self.meta.setups(owner);
        }
        let me = check_user(actor)?;
        if owner.is_some_and(|o| o != me) {
            return Err(Error::forbidden("you may list only your own setups"));
        }
        self.meta.setups(Some(me))
    }

    /// Replaces a setup's name and entries (owner or admin).
    pub fn update_setup(&self, actor: &Actor, id: SetupId, new: NewSetup) -> Result<Setup> {
        let mut setup = self.get_setup(actor, id)?;
        check_setup(&new.name, &new.entries)?;
        self.check_entries(actor, &new.entries)?;
        setup.name = new.name;
        setup.entries = new.entries;
        setup.updated_at = self.clock.now();
        self.meta.update_setup(&setup)?;
        Ok(setup)
    }

    /// Deletes a setup (owner or admin). Queued jobs keep what they
    /// resolved.
    pub fn delete_setup(&self, actor: &Actor, id: SetupId) -> Result<()> {
        self.get_setup(actor, id)?;
        self.meta.delete_setup(id)
    }
}
