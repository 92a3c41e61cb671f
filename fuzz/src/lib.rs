//! Helpers shared by the fuzz targets: a BAAS on in-memory ports with one
//! user and one image, and the checks every upload path must pass (what
//! was imported reads back byte for byte, under the root hash computed
//! independently from the bytes).

use std::io::Read;

use baas_core::content::{is_zero, ChunkHash, Manifest, CHUNK_SIZE};
use baas_core::model::{DiskSelector, ImageId, Role, Version, VersionRef, Visibility};
use baas_core::services::{Config, ImportOptions, NewImage, NewUser};
use baas_core::{Actor, Baas, ErrorKind};

/// A BAAS on in-memory ports, a user and an image of theirs.
pub struct Lab {
    /// The services.
    pub baas: Baas,
    /// The image's owner.
    pub owner: Actor,
    /// The image uploads go to.
    pub image: ImageId,
}

impl Lab {
    /// A fresh lab. Small limits keep every execution fast.
    pub fn new() -> Lab {
        let config = Config {
            import_workers: 1,
            ..Config::default()
        };
        let baas = Baas::new(baas_memory::ports(), config);
        let user = baas
            .create_user(
                &Actor::System,
                NewUser {
                    name: "fuzz".into(),
                    display_name: String::new(),
                    email: String::new(),
                    role: Role::User,
                },
            )
            .expect("create user");
        let owner = Actor::User {
            id: user.id,
            name: user.name.clone(),
            role: Role::User,
        };
        let (image, _) = baas
            .create_image(
                &owner,
                NewImage {
                    owner: None,
                    name: "target".into(),
                    disk: DiskSelector::first(),
                    size: 1 << 20,
                    metadata: Default::default(),
                    visibility: Visibility::Private,
                },
            )
            .expect("create image");
        Lab {
            baas,
            owner,
            image: image.id,
        }
    }

    /// Imports `body` as a version, as an upload handler does.
    pub fn import(&self, body: &[u8], note: Option<String>) -> baas_core::Result<Version> {
        let mut reader = body;
        self.baas
            .import_version(&self.owner, self.image, &mut reader, ImportOptions { note })
    }
}

impl Default for Lab {
    fn default() -> Self {
        Lab::new()
    }
}

/// The manifest of `bytes`, computed here from the bytes alone.
pub fn manifest_of(bytes: &[u8]) -> Manifest {
    let chunks = bytes
        .chunks(CHUNK_SIZE as usize)
        .map(|c| (!is_zero(c)).then(|| ChunkHash::of(c)))
        .collect();
    Manifest::new(bytes.len() as u64, CHUNK_SIZE, chunks).expect("a manifest of real bytes")
}

/// Imports `body` and checks the version: its root is the one computed from
/// the bytes, and it reads back exactly. A rejected import leaves no
/// version behind and is a client error, never an internal one.
pub fn check_import(lab: &Lab, body: &[u8], note: Option<String>) {
    let before = lab
        .baas
        .list_versions(&lab.owner, lab.image)
        .expect("list versions")
        .len();
    match lab.import(body, note.clone()) {
        Ok(v) => {
            assert_eq!(v.size, body.len() as u64);
            assert_eq!(v.root, manifest_of(body).root(), "root hash of the import");
            assert_eq!(v.note, note);
            let mut r = lab
                .baas
                .open_version(&lab.owner, lab.image, VersionRef::Number(v.number))
                .expect("open the new version");
            let mut back = Vec::new();
            r.read_to_end(&mut back).expect("read back");
            assert!(back == body, "version reads back different bytes");
        }
        Err(e) => {
            assert!(
                matches!(e.kind(), ErrorKind::Invalid | ErrorKind::TooLarge),
                "import failed with {e:?}"
            );
            let after = lab
                .baas
                .list_versions(&lab.owner, lab.image)
                .expect("list versions")
                .len();
            assert_eq!(before, after, "a failed import left a version");
        }
    }
}
