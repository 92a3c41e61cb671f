//! BAAS opened the way programs embed it: the services suite on SQLite plus
//! a chunk directory, and on PostgreSQL plus a chunk directory; and what
//! `open` promises about data directories and URLs.

use std::any::Any;
use std::io::{Cursor, Read};

use baas_core::model::{DiskSelector, VersionRef, Visibility};
use baas_core::services::{ImportOptions, NewImage, Ports};
use baas_core::{Actor, ErrorKind};
use baas_embedded::Options;

fn sqlite_ports() -> (Ports, Box<dyn Any>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let ports = baas_embedded::open_ports(&Options::data_dir(dir.path())).expect("open");
    (ports, Box::new(dir))
}

fn postgres_ports() -> Option<(Ports, Box<dyn Any>)> {
    let db = baas_store_diesel::testing::postgres_database()?;
    let dir = tempfile::tempdir().expect("tempdir");
    let options = Options {
        database_url: Some(db.url.clone()),
        ..Options::data_dir(dir.path())
    };
    let ports = baas_embedded::open_ports(&options).expect("open");
    Some((ports, Box::new((dir, db))))
}

mod sqlite_and_directory {
    baas_core::services_conformance!(crate::sqlite_ports());
}

mod postgres_and_directory {
    baas_core::services_conformance!(match crate::postgres_ports() {
        Some(p) => p,
        None => return,
    });
}

#[test]
fn a_data_directory_is_created_and_reopened_with_its_data() {
    let parent = tempfile::tempdir().expect("tempdir");
    let dir = parent.path().join("new").join("baas-data");
    let (version, image) = {
        let baas = baas_embedded::open_data_dir(&dir).expect("open creates the directory");
        let (admin, secret) = baas
            .bootstrap_admin("admin")
            .expect("bootstrap")
            .expect("fresh");
        assert!(baas.bootstrap_admin("admin").expect("second").is_none());
        assert_eq!(
            baas.authenticate(&secret).expect("token"),
            Actor::user(&admin)
        );
        let (img, _) = baas
            .create_image(
                &Actor::user(&admin),
                NewImage {
                    owner: None,
                    name: "persist".into(),
                    disk: DiskSelector::first(),
                    size: 1 << 20,
                    metadata: Default::default(),
                    visibility: Visibility::Private,
                },
            )
            .expect("image");
        let v = baas
            .import_version(
                &Actor::System,
                img.id,
                &mut Cursor::new(vec![7u8; 300_000]),
                ImportOptions::default(),
            )
            .expect("import");
        (v, img.id)
    };
    assert!(dir.join("baas.sqlite3").is_file());
    assert!(dir.join("chunks").is_dir());
    let baas = baas_embedded::open_data_dir(&dir).expect("reopen");
    let mut back = Vec::new();
    baas.open_version(&Actor::System, image, VersionRef::Latest)
        .expect("open version")
        .read_to_end(&mut back)
        .expect("read");
    assert_eq!(back, vec![7u8; 300_000]);
    assert_eq!(
        baas.get_version(&Actor::System, image, VersionRef::Latest)
            .expect("v")
            .root,
        version.root
    );
}

#[test]
fn a_mistyped_database_url_creates_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("typo.db");
    for url in [
        format!("sqlte://{}", file.display()),
        file.display().to_string(),
    ] {
        let options = Options {
            database_url: Some(url.clone()),
            ..Options::data_dir(dir.path().join("data"))
        };
        let err = baas_embedded::open(&options).expect_err("bad URL");
        assert_eq!(err.kind(), ErrorKind::Invalid, "{url}: {err:?}");
        assert!(!file.exists(), "{url} created a file");
    }
}
