//! Fake kernel trees for the agent's tests: `/sys/block`, `/sys/class/net`,
//! `/proc` and `/dev/disk/by-id` laid out as Linux lays them out, for an
//! NVMe machine and a SATA machine, in a temporary directory.

#![allow(dead_code)]

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

/// A fake root.
pub struct Tree {
    /// The temporary directory.
    pub dir: tempfile::TempDir,
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(path, text).expect("write");
}

impl Tree {
    /// An empty tree with `/proc` filled in.
    pub fn new() -> Tree {
        let t = Tree {
            dir: tempfile::tempdir().expect("temp dir"),
        };
        write(
            &t.path("proc/meminfo"),
            "MemTotal:       16314180 kB\nMemFree:         1000000 kB\n",
        );
        write(
            &t.path("proc/cpuinfo"),
            "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) Test CPU @ 2.00GHz\n\n\
             processor\t: 1\nmodel name\t: Intel(R) Xeon(R) Test CPU @ 2.00GHz\n\n\
             processor\t: 2\nmodel name\t: Intel(R) Xeon(R) Test CPU @ 2.00GHz\n\n\
             processor\t: 3\nmodel name\t: Intel(R) Xeon(R) Test CPU @ 2.00GHz\n",
        );
        std::fs::create_dir_all(t.path("dev/disk/by-id")).expect("mkdir");
        t
    }

    /// The root.
    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// A path under the root.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// A block device of `bytes` bytes.
    pub fn disk(&self, name: &str, bytes: u64) -> DiskBuilder<'_> {
        let d = self.path(&format!("sys/block/{name}"));
        write(&d.join("size"), &format!("{}\n", bytes / 512));
        write(&d.join("removable"), "0\n");
        write(&d.join("queue/logical_block_size"), "512\n");
        write(&d.join("queue/physical_block_size"), "512\n");
        write(&d.join("queue/rotational"), "0\n");
        DiskBuilder {
            tree: self,
            name: name.to_string(),
        }
    }

    /// A `/dev/disk/by-id` link to a kernel name.
    pub fn by_id(&self, link: &str, target: &str) {
        symlink(
            format!("../../{target}"),
            self.path(&format!("dev/disk/by-id/{link}")),
        )
        .expect("symlink");
    }

    /// A NIC.
    pub fn nic(&self, name: &str, mac: &str, speed: &str, kind: u32) {
        let d = self.path(&format!("sys/class/net/{name}"));
        write(&d.join("address"), &format!("{mac}\n"));
        write(&d.join("speed"), &format!("{speed}\n"));
        write(&d.join("type"), &format!("{kind}\n"));
    }

    /// A device node standing in for a disk or partition: a file of
    /// `bytes` bytes filled with `fill`.
    pub fn node(&self, name: &str, bytes: usize, fill: u8) -> PathBuf {
        let p = self.path(&format!("dev/{name}"));
        std::fs::write(&p, vec![fill; bytes]).expect("node");
        p
    }

    /// A workstation with two NVMe drives (the first partitioned), a USB
    /// stick, a loop device, zram, an optical drive, and two NICs plus
    /// loopback and a tunnel.
    pub fn nvme_machine() -> Tree {
        let t = Tree::new();
        t.disk("nvme0n1", 512 << 30)
            .serial_at("device/serial", "S4EWNX0R123456")
            .file("wwid", "eui.0025385b71b0b2c1")
            .file("device/model", "Samsung SSD 980 PRO 512GB")
            .blocks(512, 4096)
            .part("nvme0n1p1", 1, 512 << 20)
            .part("nvme0n1p2", 2, 100 << 30);
        t.disk("nvme1n1", 1 << 40)
            .serial_at("device/serial", "PHLJ000111")
            .file("device/model", "INTEL SSDPE2KX010T8")
            .part("nvme1n1p1", 1, 1 << 40);
        t.disk("sda", 32 << 30)
            .file("removable", "1")
            .file("device/model", "Flash Drive");
        t.disk("loop0", 1 << 30);
        t.disk("zram0", 4 << 30);
        t.disk("sr0", 700 << 20).file("removable", "1");
        t.disk("ram0", 0);
        t.by_id("nvme-Samsung_SSD_980_PRO_512GB_S4EWNX0R123456", "nvme0n1");
        t.by_id(
            "nvme-Samsung_SSD_980_PRO_512GB_S4EWNX0R123456-part1",
            "nvme0n1p1",
        );
        t.by_id("nvme-eui.0025385b71b0b2c1", "nvme0n1");
        t.by_id("usb-Flash_Drive_0123-0:0", "sda");
        t.nic("lo", "00:00:00:00:00:00", "-1", 772);
        t.nic("eno1", "52:54:00:12:34:56", "1000", 1);
        t.nic("enp3s0", "52:54:00:ab:cd:ef", "-1", 1);
        t.nic("tun0", "", "10", 65534);
        t
    }

    /// A server with two SATA disks, the first partitioned, serials only
    /// in VPD page 0x80, and WWNs.
    pub fn sata_machine() -> Tree {
        let t = Tree::new();
        let mut vpd = vec![0u8, 0x80, 0, 20];
        vpd.extend_from_slice(b"            Z1D5ABCD");
        t.disk("sdb", 2 << 40)
            .file("device/model", "ST2000DM001")
            .file("queue/rotational", "1");
        t.disk("sda", 1 << 40)
            .bytes("device/vpd_pg80", &vpd)
            .file("device/wwid", "naa.5000c500a1b2c3d4")
            .file("device/model", "ST1000DM003-1CH1")
            .file("queue/rotational", "1")
            .blocks(512, 4096)
            .part("sda1", 1, 1 << 30)
            .part("sda2", 2, 500 << 30);
        t.by_id("ata-ST1000DM003-1CH1_Z1D5ABCD", "sda");
        t.by_id("ata-ST1000DM003-1CH1_Z1D5ABCD-part2", "sda2");
        t.by_id("wwn-0x5000c500a1b2c3d4", "sda");
        t.nic("eth0", "52:54:00:00:00:01", "10000", 1);
        t
    }
}

/// Adds attributes to a fake disk.
pub struct DiskBuilder<'a> {
    tree: &'a Tree,
    name: String,
}

impl DiskBuilder<'_> {
    fn dir(&self) -> PathBuf {
        self.tree.path(&format!("sys/block/{}", self.name))
    }

    /// A text attribute.
    pub fn file(self, rel: &str, text: &str) -> Self {
        write(&self.dir().join(rel), &format!("{text}\n"));
        self
    }

    /// A binary attribute.
    pub fn bytes(self, rel: &str, data: &[u8]) -> Self {
        let p = self.dir().join(rel);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(p, data).expect("write");
        self
    }

    /// The serial, at `rel`.
    pub fn serial_at(self, rel: &str, serial: &str) -> Self {
        // sysfs pads NVMe serials with spaces.
        self.file(rel, &format!("{serial}      "))
    }

    /// Block sizes.
    pub fn blocks(self, logical: u32, physical: u32) -> Self {
        self.file("queue/logical_block_size", &logical.to_string())
            .file("queue/physical_block_size", &physical.to_string())
    }

    /// A partition.
    pub fn part(self, name: &str, number: u32, bytes: u64) -> Self {
        let d = self.dir().join(name);
        write(&d.join("partition"), &format!("{number}\n"));
        write(&d.join("size"), &format!("{}\n", bytes / 512));
        write(&d.join("start"), "2048\n");
        self
    }
}
