//! The agent's view of a machine on fake kernel trees: the inventory it
//! reports, and where each kind of disk selector points, on an NVMe and a
//! SATA machine, partitions included. Never `/dev/sda` by assumption.

mod fake;

use baas_agent::system::{System, Target};
use baas_core::model::DiskSelector;
use baas_core::ErrorKind;
use fake::Tree;

fn resolve(t: &Tree, sel: &str) -> baas_core::Result<Target> {
    let s: DiskSelector = sel.parse().expect("selector");
    System::new(t.root()).resolve(&s)
}

#[track_caller]
fn points_at(t: &Tree, sel: &str, name: &str, size: u64) {
    let got = resolve(t, sel).unwrap_or_else(|e| panic!("{sel}: {e:?}"));
    assert_eq!(
        got,
        Target {
            name: name.into(),
            path: t.path(&format!("dev/{name}")),
            size,
        },
        "{sel}"
    );
}

#[track_caller]
fn fails(t: &Tree, sel: &str, kind: ErrorKind) {
    match resolve(t, sel) {
        Ok(got) => panic!("{sel} resolved to {got:?}"),
        Err(e) => assert_eq!(e.kind(), kind, "{sel}: {}", e.message()),
    }
}

#[test]
fn nvme_inventory() {
    let t = Tree::nvme_machine();
    let inv = System::new(t.root()).inventory().expect("inventory");
    let paths: Vec<&str> = inv.disks.iter().map(|d| d.path.as_str()).collect();
    assert_eq!(paths, ["/dev/nvme0n1", "/dev/nvme1n1", "/dev/sda"]);
    let d = &inv.disks[0];
    assert_eq!(d.size, 512 << 30);
    assert_eq!(d.serial.as_deref(), Some("S4EWNX0R123456"));
    assert_eq!(d.wwn.as_deref(), Some("eui.0025385b71b0b2c1"));
    assert_eq!(d.model.as_deref(), Some("Samsung SSD 980 PRO 512GB"));
    assert_eq!((d.logical_block, d.physical_block), (512, 4096));
    assert!(!d.rotational && !d.removable);
    assert_eq!(
        d.by_id,
        [
            "nvme-Samsung_SSD_980_PRO_512GB_S4EWNX0R123456",
            "nvme-eui.0025385b71b0b2c1"
        ]
    );
    assert!(inv.disks[2].removable);
    let nics: Vec<(String, String, Option<u32>)> = inv
        .nics
        .iter()
        .map(|n| (n.name.clone(), n.mac.to_string(), n.speed_mbps))
        .collect();
    assert_eq!(
        nics,
        [
            ("eno1".into(), "52:54:00:12:34:56".into(), Some(1000)),
            ("enp3s0".into(), "52:54:00:ab:cd:ef".into(), None),
        ]
    );
    assert_eq!(inv.memory_bytes, 16_314_180 * 1024);
    assert_eq!(inv.cpu_model, "Intel(R) Xeon(R) Test CPU @ 2.00GHz");
    assert_eq!(inv.cpus, 4);
}

#[test]
fn nvme_selectors() {
    let t = Tree::nvme_machine();
    points_at(&t, "first", "nvme0n1", 512 << 30);
    points_at(&t, "first#2", "nvme0n1p2", 100 << 30);
    points_at(&t, "first#1", "nvme0n1p1", 512 << 20);
    points_at(&t, "index:0", "nvme0n1", 512 << 30);
    points_at(&t, "index:1", "nvme1n1", 1 << 40);
    points_at(&t, "index:1#1", "nvme1n1p1", 1 << 40);
    points_at(&t, "serial:PHLJ000111", "nvme1n1", 1 << 40);
    points_at(&t, "serial:S4EWNX0R123456#2", "nvme0n1p2", 100 << 30);
    points_at(&t, "wwn:eui.0025385b71b0b2c1", "nvme0n1", 512 << 30);
    points_at(&t, "wwn:0025385B71B0B2C1", "nvme0n1", 512 << 30);
    points_at(
        &t,
        "by-id:nvme-Samsung_SSD_980_PRO_512GB_S4EWNX0R123456",
        "nvme0n1",
        512 << 30,
    );
    points_at(
        &t,
        "by-id:nvme-Samsung_SSD_980_PRO_512GB_S4EWNX0R123456-part1",
        "nvme0n1p1",
        512 << 20,
    );
    points_at(
        &t,
        "by-id:nvme-eui.0025385b71b0b2c1#2",
        "nvme0n1p2",
        100 << 30,
    );
    points_at(&t, "/dev/nvme1n1", "nvme1n1", 1 << 40);
    points_at(&t, "/dev/nvme0n1#2", "nvme0n1p2", 100 << 30);
    points_at(&t, "/dev/nvme0n1p2", "nvme0n1p2", 100 << 30);
    points_at(
        &t,
        "/dev/disk/by-id/nvme-eui.0025385b71b0b2c1",
        "nvme0n1",
        512 << 30,
    );
    // The USB stick is a disk, but never `first` or `index:N`...
    fails(&t, "index:2", ErrorKind::NotFound);
    // ...though it can be named.
    points_at(&t, "by-id:usb-Flash_Drive_0123-0:0", "sda", 32 << 30);
    points_at(&t, "/dev/sda", "sda", 32 << 30);
    // Loop, zram, optical and empty devices are not disks.
    for sel in ["/dev/loop0", "/dev/zram0", "/dev/sr0", "/dev/ram0"] {
        fails(&t, sel, ErrorKind::NotFound);
    }
    fails(&t, "first#3", ErrorKind::NotFound);
    fails(&t, "serial:NOPE", ErrorKind::NotFound);
    fails(&t, "wwn:naa.1234", ErrorKind::NotFound);
    fails(&t, "by-id:nvme-missing", ErrorKind::NotFound);
    fails(&t, "/dev/nvme9n1", ErrorKind::NotFound);
    fails(&t, "/dev/nvme0n1p2#1", ErrorKind::Invalid);
}

#[test]
fn sata_inventory_and_selectors() {
    let t = Tree::sata_machine();
    let inv = System::new(t.root()).inventory().expect("inventory");
    let paths: Vec<&str> = inv.disks.iter().map(|d| d.path.as_str()).collect();
    assert_eq!(
        paths,
        ["/dev/sda", "/dev/sdb"],
        "kernel order, not listing order"
    );
    let d = &inv.disks[0];
    assert_eq!(d.serial.as_deref(), Some("Z1D5ABCD"), "from VPD page 0x80");
    assert_eq!(d.wwn.as_deref(), Some("naa.5000c500a1b2c3d4"));
    assert!(d.rotational);
    assert_eq!(
        d.by_id,
        ["ata-ST1000DM003-1CH1_Z1D5ABCD", "wwn-0x5000c500a1b2c3d4"]
    );
    assert_eq!(inv.disks[1].serial, None);
    assert_eq!(inv.nics[0].speed_mbps, Some(10_000));

    points_at(&t, "first", "sda", 1 << 40);
    points_at(&t, "first#2", "sda2", 500 << 30);
    points_at(&t, "index:1", "sdb", 2 << 40);
    points_at(&t, "serial:Z1D5ABCD#1", "sda1", 1 << 30);
    points_at(&t, "wwn:0x5000C500A1B2C3D4", "sda", 1 << 40);
    points_at(&t, "wwn:5000c500a1b2c3d4#2", "sda2", 500 << 30);
    points_at(
        &t,
        "by-id:ata-ST1000DM003-1CH1_Z1D5ABCD-part2",
        "sda2",
        500 << 30,
    );
    points_at(&t, "/dev/sda2", "sda2", 500 << 30);
    points_at(
        &t,
        "/dev/disk/by-id/wwn-0x5000c500a1b2c3d4#1",
        "sda1",
        1 << 30,
    );
    fails(&t, "index:2", ErrorKind::NotFound);
    fails(&t, "/dev/sdb#1", ErrorKind::NotFound);
}

#[test]
fn many_disks_sort_as_the_kernel_names_them() {
    let t = Tree::new();
    for name in ["sdab", "sdb", "sdaa", "sdz", "sda", "nvme10n1", "nvme2n1"] {
        t.disk(name, 1 << 30);
    }
    let inv = System::new(t.root()).inventory().expect("inventory");
    let paths: Vec<&str> = inv.disks.iter().map(|d| d.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "/dev/nvme2n1",
            "/dev/nvme10n1",
            "/dev/sda",
            "/dev/sdb",
            "/dev/sdz",
            "/dev/sdaa",
            "/dev/sdab"
        ]
    );
    points_at(&t, "index:5", "sdaa", 1 << 30);
}

#[test]
fn a_missing_sys_tree_is_an_error_not_an_empty_machine() {
    let dir = tempfile::tempdir().expect("dir");
    let e = System::new(dir.path())
        .inventory()
        .expect_err("no /sys/block");
    assert_eq!(e.kind(), ErrorKind::Unavailable);
}
