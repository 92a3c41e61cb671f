//! Images and versions: create, list, change, delete, resolve versions.
//! Importing bytes is in `import`, reading them back in `export`.

use std::collections::BTreeMap;

use super::policy::{can_read_image, check_publish, check_user, check_write_image};
use super::{Actor, Baas};
use crate::content::Manifest;
use crate::model::*;
use crate::ports::ImageFilter;
use crate::{Error, Result};

/// An image to create.
#[derive(Debug, Clone)]
pub struct NewImage {
    /// Owner; `None` is the caller. Only admins create images for others.
    pub owner: Option<UserId>,
    /// Name.
    pub name: String,
    /// Default target disk.
    pub disk: DiskSelector,
    /// Declared size (the blank version 0).
    pub size: u64,
    /// Free-form metadata.
    pub metadata: BTreeMap<String, String>,
    /// Visibility; `Public` needs a moderator or admin.
    pub visibility: Visibility,
}

/// Changes to an image; `None` keeps a field.
#[derive(Debug, Clone, Default)]
pub struct ImagePatch {
    /// New name.
    pub name: Option<String>,
    /// New default target disk.
    pub disk: Option<DiskSelector>,
    /// New metadata (replaces the old).
    pub metadata: Option<BTreeMap<String, String>>,
    /// New visibility.
    pub visibility: Option<Visibility>,
    /// New share list (user ids).
    pub shared_with: Option<Vec<UserId>>,
}

impl Baas {
    /// Creates an image and its blank version 0 (which stores nothing).
    pub fn create_image(&self, actor: &Actor, new: NewImage) -> Result<(Image, Version)> {
        let owner = match new.owner {
            Some(o) if actor.user_id() != Some(o) => {
                super::policy::check_admin(actor, "create images for other users")?;
                o
            }
            Some(o) => o,
            None => check_user(actor)?,
        };
        if self.meta.user(owner)?.is_none() {
            return Err(Error::not_found(format!("user {owner}")));
        }
        check_image_name(&new.name)?;
        check_image_size(new.size)?;
        check_metadata(&new.metadata)?;
        if new.visibility == Visibility::Public {
            check_publish(actor)?;
        }
        let now = self.clock.now();
        let image = Image {
            id: ImageId(self.entropy.uuid()),
            owner,
            name: new.name,
            disk: new.disk,
            size: new.size,
            metadata: new.metadata,
            visibility: new.visibility,
            shared_with: Vec::new(),
            created_at: now,
        };
        let blank = NewVersion {
            image: image.id,
            manifest: Manifest::blank(new.size),
            added_bytes: 0,
            created_by: owner,
            created_at: now,
            source: VersionSource::Blank,
            note: None,
        };
        let v0 = self.meta.insert_image(&image, &blank)?;
        Ok((image, v0))
    }

    /// An image the caller may read.
    pub fn get_image(&self, actor: &Actor, id: ImageId) -> Result<Image> {
        match self.meta.image(id)? {
            Some(img) if can_read_image(actor, &img) => Ok(img),
            _ => Err(Error::not_found(format!("image {id}"))),
        }
    }

    /// Images the caller may read, optionally only those of `owner`.
    pub fn list_images(&self, actor: &Actor, owner: Option<UserId>) -> Result<Vec<Image>> {
        let readable_by = match actor {
            Actor::System => None,
            Actor::User {
                role: Role::Admin, ..
            } => None,
            Actor::User { id, .. } => Some(*id),
            Actor::Agent { .. } => return Err(Error::forbidden("agents do not list images")),
        };
        self.meta.images(&ImageFilter { owner, readable_by })
    }

    /// Changes an image (owner or admin; publishing needs a moderator).
    pub fn update_image(&self, actor: &Actor, id: ImageId, patch: ImagePatch) -> Result<Image> {
        let mut image = self.get_image(actor, id)?;
        check_write_image(actor, &image)?;
        if let Some(name) = patch.name {
            check_image_name(&name)?;
            image.name = name;
        }
        if let Some(disk) = patch.disk {
            image.disk = disk;
        }
        if let Some(m) = patch.metadata {
            check_metadata(&m)?;
            image.metadata = m;
        }
        if let Some(v) = patch.visibility {
            if v == Visibility::Public && image.visibility != Visibility::Public {
                check_publish(actor)?;
            }
            image.visibility = v;
        }
        if let Some(mut users) = patch.shared_with {
            users.sort();
            users.dedup();
            if users.len() > 256 {
                return Err(Error::invalid("shared_with", "at most 256 users"));
            }
            for u in &users {
                if self.meta.user(*u)?.is_none() {
                    return Err(Error::invalid(
                        "shared_with",
                        format!("user {u} does not exist"),
                    ));
                }
            }
            image.shared_with = users;
        }
        self.meta.update_image(&image)?;
        Ok(image)
    }

    /// Shares an image with the user whose login name is `name` (owner or
    /// admin), who may then read it and use it in setups; a private image
    /// becomes `shared`. Naming an unknown user is `Invalid`.
    pub fn share_image_with(&self, actor: &Actor, id: ImageId, name: &str) -> Result<Image> {
        let image = self.get_image(actor, id)?;
        check_write_image(actor, &image)?;
        let user = self.named_user(name)?;
        if user.id == image.owner {
            return Err(Error::invalid(
                "user",
                format!("{name} owns the image: there is nothing to share"),
            ));
        }
        let mut users = image.shared_with.clone();
        users.push(user.id);
        let patch = ImagePatch {
            shared_with: Some(users),
            visibility: (image.visibility == Visibility::Private).then_some(Visibility::Shared),
            ..ImagePatch::default()
        };
        self.update_image(actor, id, patch)
    }

    /// Stops sharing an image with the user called `name` (owner or admin).
    pub fn unshare_image_from(&self, actor: &Actor, id: ImageId, name: &str) -> Result<Image> {
        let image = self.get_image(actor, id)?;
        check_write_image(actor, &image)?;
        let user = self.named_user(name)?;
        let users = image
            .shared_with
            .iter()
            .copied()
            .filter(|u| *u != user.id)
            .collect();
        let patch = ImagePatch {
            shared_with: Some(users),
            ..ImagePatch::default()
        };
        self.update_image(actor, id, patch)
    }

    /// The login names of the users an image is shared with, sorted (owner
    /// or admin: they manage the list).
    pub fn image_shared_names(&self, actor: &Actor, id: ImageId) -> Result<Vec<String>> {
        let image = self.get_image(actor, id)?;
        check_write_image(actor, &image)?;
        let mut names = Vec::new();
        for u in &image.shared_with {
            if let Some(user) = self.meta.user(*u)? {
                names.push(user.name);
            }
        }
        names.sort();
        Ok(names)
    }

    fn named_user(&self, name: &str) -> Result<User> {
        let name = name.trim();
        if name.is_empty() {
            return Err(Error::invalid("user", "name the user to share with"));
        }
        self.meta
            .user_by_name(name)?
            .ok_or_else(|| Error::invalid("user", format!("no user is called {name:?}")))
    }

    /// Deletes one image (owner or admin). Its chunks are reclaimed by the
    /// next garbage collection; nothing else is touched.
    pub fn delete_image(&self, actor: &Actor, id: ImageId) -> Result<()> {
        let image = self.get_image(actor, id)?;
        check_write_image(actor, &image)?;
        self.meta.delete_image(id)
    }

    /// An image's versions, by number.
    pub fn list_versions(&self, actor: &Actor, image: ImageId) -> Result<Vec<Version>> {
        self.get_image(actor, image)?;
        self.meta.versions(image)
    }

    /// Resolves `version` of an image the caller may read.
    pub fn get_version(
        &self,
        actor: &Actor,
        image: ImageId,
        version: VersionRef,
    ) -> Result<Version> {
        self.get_image(actor, image)?;
        self.resolve_version(image, version)
    }

    pub(crate) fn resolve_version(&self, image: ImageId, version: VersionRef) -> Result<Version> {
        let v = match version {
            VersionRef::Latest => self.meta.latest_version(image)?,
            VersionRef::Number(n) => self.meta.version(image, n)?,
        };
        v.ok_or_else(|| Error::not_found(format!("version {version} of image {image}")))
    }

    /// A version and its manifest.
    pub fn get_manifest(
        &self,
        actor: &Actor,
        image: ImageId,
        version: VersionRef,
    ) -> Result<(Version, Manifest)> {
        let v = self.get_version(actor, image, version)?;
        let m = self
            .meta
            .manifest(image, v.number)?
            .ok_or_else(|| Error::not_found(format!("version {} of image {image}", v.number)))?;
        Ok((v, m))
    }

    /// Deletes a version (owner or admin), unless a queued or running job
    /// needs it.
    pub fn delete_version(&self, actor: &Actor, image: ImageId, number: u32) -> Result<()> {
        let img = self.get_image(actor, image)?;
        check_write_image(actor, &img)?;
        self.meta.delete_version(image, number)
    }
}
