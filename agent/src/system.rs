//! What the machine has, read from the kernel (`/sys/block`,
//! `/sys/class/net`, `/proc/meminfo`, `/proc/cpuinfo`, `/dev/disk/by-id`),
//! and where a disk selector points on it. Everything is read under a root
//! directory, `/` on a real machine and a fake tree in tests.
//!
//! Disks are listed in a stable order (natural order of their kernel names:
//! `nvme0n1 < nvme1n1 < sda < sdb < ... < sdz < sdaa < vda`); loop, RAM,
//! zram, optical, floppy and empty devices are not disks. `first` and
//! `index:N` count only non-removable disks in that order. Partitions are
//! found by their number in `/sys/block/<disk>/<part>/partition`, so
//! `nvme0n1p2`, `sda2` and `mmcblk0p2` need no naming rules. Nothing assumes
//! `/dev/sda`.

use std::cmp::Ordering;
use std::path::{Path, PathBuf};

use baas_core::model::*;
use baas_core::{Error, Result};

/// Name prefixes of block devices that are never disks to write.
const NOT_DISKS: [&str; 6] = ["loop", "ram", "zram", "sr", "fd", "nbd"];

/// The kernel's view of the machine, under a root directory.
#[derive(Debug, Clone)]
pub struct System {
    root: PathBuf,
}

/// A resolved disk selector: the device to open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Kernel name: `nvme0n1`, `sda2`.
    pub name: String,
    /// The device node to open (`/dev/<name>` under the root).
    pub path: PathBuf,
    /// Size in bytes, as the kernel reports it.
    pub size: u64,
}

fn read_trim(path: &Path) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

fn read_u64(path: &Path) -> Option<u64> {
    read_trim(path).and_then(|s| s.parse().ok())
}

/// Natural order: runs of digits compare as numbers, other runs as bytes
/// (`eth2 < eth10`).
pub fn natural_cmp(a: &str, b: &str) -> Ordering {
    fn runs(s: &str) -> Vec<(bool, &str)> {
        let mut out = Vec::new();
        let mut start = 0;
        let bytes = s.as_bytes();
        for i in 1..=bytes.len() {
            if i == bytes.len() || bytes[i].is_ascii_digit() != bytes[start].is_ascii_digit() {
                out.push((bytes[start].is_ascii_digit(), &s[start..i]));
                start = i;
            }
        }
        out
    }
    let (ra, rb) = (runs(a), runs(b));
    for ((da, x), (db, y)) in ra.iter().zip(rb.iter()) {
        let o = if *da && *db {
            let (xt, yt) = (x.trim_start_matches('0'), y.trim_start_matches('0'));
            xt.len().cmp(&yt.len()).then(xt.cmp(yt))
        } else {
            x.cmp(y)
        };
        if o != Ordering::Equal {
            return o;
        }
    }
    ra.len().cmp(&rb.len()).then(a.cmp(b))
}

/// Kernel-order key of a disk name: letters prefix, then a shorter name
/// first within one prefix family (`sdz` before `sdaa`).
fn disk_order(a: &str, b: &str) -> Ordering {
    let family =
        |s: &str| -> String { s.chars().take_while(|c| c.is_ascii_alphabetic()).collect() };
    let (fa, fb) = (family(a), family(b));
    // `sd`, `vd`, `hd`, `xvd`: the kernel's letters grow in length; compare
    // the family by its stem, then by length, then naturally.
    let stem = |f: &str| -> String {
        for p in ["xvd", "sd", "vd", "hd"] {
            if f.starts_with(p) {
                return p.to_string();
            }
        }
        f.to_string()
    };
    let (sa, sb) = (stem(&fa), stem(&fb));
    sa.cmp(&sb)
        .then_with(|| {
            if sa != fa || sb != fb {
                fa.len().cmp(&fb.len())
            } else {
                Ordering::Equal
            }
        })
        .then_with(|| natural_cmp(a, b))
}

/// Normalises a World Wide Name for comparison: lower case, without the
/// `wwn-`, `0x`, `naa.`, `eui.`, `t10.` decorations udev and sysfs add.
fn norm_wwn(s: &str) -> String {
    let mut s = s.trim().to_ascii_lowercase();
    for p in ["wwn-", "0x", "naa.", "eui.", "t10.", "nvme."] {
        if let Some(rest) = s.strip_prefix(p) {
            s = rest.to_string();
        }
    }
    s
}

/// The serial in a SCSI VPD page 0x80 (unit serial number).
fn vpd_serial(page: &[u8]) -> Option<String> {
    if page.len() < 4 || page[1] != 0x80 {
        return None;
    }
    let len = usize::from(page[3]);
    let s = String::from_utf8_lossy(page.get(4..4 + len)?)
        .trim()
        .to_string();
    (!s.is_empty()).then_some(s)
}

impl System {
    /// The machine under `root` (`/` for the real one).
    pub fn new(root: impl Into<PathBuf>) -> System {
        System { root: root.into() }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel.trim_start_matches('/'))
    }

    /// Block device names that are disks, in kernel order.
    fn disk_names(&self) -> Result<Vec<String>> {
        let dir = self.path("sys/block");
        let entries = std::fs::read_dir(&dir).map_err(|e| {
            Error::unavailable(format!("cannot list {}", dir.display())).with_source(e)
        })?;
        let mut names: Vec<String> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| !NOT_DISKS.iter().any(|p| n.starts_with(p)))
            .filter(|n| read_u64(&dir.join(n).join("size")).unwrap_or(0) > 0)
            .collect();
        names.sort_by(|a, b| disk_order(a, b));
        Ok(names)
    }

    /// `/dev/disk/by-id` names and the kernel names they point at.
    fn by_id(&self) -> Vec<(String, String)> {
        let dir = self.path("dev/disk/by-id");
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return Vec::new();
        };
        let mut out: Vec<(String, String)> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let link = e.file_name().into_string().ok()?;
                let target = std::fs::read_link(e.path()).ok()?;
                let name = target.file_name()?.to_str()?.to_string();
                Some((link, name))
            })
            .collect();
        out.sort();
        out
    }

    fn disk_info(&self, name: &str, by_id: &[(String, String)]) -> DiskInfo {
        let d = self.path("sys/block").join(name);
        let dev = d.join("device");
        let serial = read_trim(&dev.join("serial"))
            .or_else(|| read_trim(&d.join("serial")))
            .or_else(|| {
                std::fs::read(dev.join("vpd_pg80"))
                    .ok()
                    .and_then(|p| vpd_serial(&p))
            });
        let links: Vec<String> = by_id
            .iter()
            .filter(|(_, n)| n == name)
            .map(|(l, _)| l.clone())
            .collect();
        let wwn = read_trim(&d.join("wwid"))
            .or_else(|| read_trim(&dev.join("wwid")))
            .or_else(|| read_trim(&d.join("device/wwn")))
            .or_else(|| {
                links
                    .iter()
                    .find(|l| l.starts_with("wwn-"))
                    .map(|l| l.trim_start_matches("wwn-").to_string())
            });
        DiskInfo {
            path: format!("/dev/{name}"),
            by_id: links,
            serial,
            wwn,
            model: read_trim(&dev.join("model")),
            size: read_u64(&d.join("size")).unwrap_or(0).saturating_mul(512),
            logical_block: read_u64(&d.join("queue/logical_block_size"))
                .and_then(|v| u32::try_from(v).ok())
                .unwrap_or(512),
            physical_block: read_u64(&d.join("queue/physical_block_size"))
                .and_then(|v| u32::try_from(v).ok())
                .unwrap_or(512),
            rotational: read_u64(&d.join("queue/rotational")) == Some(1),
            removable: read_u64(&d.join("removable")) == Some(1),
        }
    }

    /// The disks, in kernel order.
    pub fn disks(&self) -> Result<Vec<DiskInfo>> {
        let by_id = self.by_id();
        Ok(self
            .disk_names()?
            .iter()
            .map(|n| self.disk_info(n, &by_id))
            .collect())
    }

    /// The network interfaces with a hardware address (not loopback).
    pub fn nics(&self) -> Vec<NicInfo> {
        let dir = self.path("sys/class/net");
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return Vec::new();
        };
        let mut out: Vec<NicInfo> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                let d = dir.join(&name);
                if name == "lo" || read_u64(&d.join("type")).is_some_and(|t| t != 1) {
                    return None;
                }
                let mac: MacAddress = read_trim(&d.join("address"))?.parse().ok()?;
                let speed_mbps = read_trim(&d.join("speed"))
                    .and_then(|s| s.parse::<i64>().ok())
                    .filter(|s| *s > 0)
                    .and_then(|s| u32::try_from(s).ok());
                Some(NicInfo {
                    name,
                    mac,
                    speed_mbps,
                })
            })
            .collect();
        out.sort_by(|a, b| natural_cmp(&a.name, &b.name));
        out
    }

    /// Memory in bytes (`MemTotal`).
    pub fn memory(&self) -> u64 {
        read_trim(&self.path("proc/meminfo"))
            .and_then(|t| {
                t.lines().find_map(|l| {
                    let v = l.strip_prefix("MemTotal:")?.trim();
                    let kb: u64 = v.trim_end_matches("kB").trim().parse().ok()?;
                    Some(kb.saturating_mul(1024))
                })
            })
            .unwrap_or(0)
    }

    /// CPU model and logical CPU count.
    pub fn cpu(&self) -> (String, u32) {
        let text = read_trim(&self.path("proc/cpuinfo")).unwrap_or_default();
        let field = |key: &str| {
            text.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                (k.trim() == key).then(|| v.trim().to_string())
            })
        };
        let model = field("model name")
            .or_else(|| field("Processor"))
            .or_else(|| field("cpu model"))
            .or_else(|| field("uarch"))
            .or_else(|| field("CPU part").map(|p| format!("CPU part {p}")))
            .unwrap_or_else(|| "unknown".into());
        let cpus = text
            .lines()
            .filter(|l| {
                l.split_once(':')
                    .is_some_and(|(k, _)| k.trim() == "processor")
            })
            .count();
        (model, u32::try_from(cpus.max(1)).unwrap_or(u32::MAX))
    }

    /// Everything the server keeps about the machine.
    pub fn inventory(&self) -> Result<Inventory> {
        let (cpu_model, cpus) = self.cpu();
        Ok(Inventory {
            disks: self.disks()?,
            nics: self.nics(),
            memory_bytes: self.memory(),
            cpu_model,
            cpus,
        })
    }

    /// Partition `number` of disk `disk`: its kernel name.
    fn partition(&self, disk: &str, number: u32) -> Result<String> {
        let dir = self.path("sys/block").join(disk);
        let entries = std::fs::read_dir(&dir).map_err(|e| {
            Error::unavailable(format!("cannot list {}", dir.display())).with_source(e)
        })?;
        entries
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().into_string().ok())
            .find(|p| read_u64(&dir.join(p).join("partition")) == Some(u64::from(number)))
            .ok_or_else(|| Error::not_found(format!("partition {number} of /dev/{disk}")))
    }

    /// The disk a partition named `name` belongs to, if it is one.
    fn parent_of(&self, disks: &[String], name: &str) -> Option<String> {
        let block = self.path("sys/block");
        disks
            .iter()
            .find(|d| block.join(d).join(name).join("partition").is_file())
            .cloned()
    }

    fn target(&self, disk: &str, name: &str) -> Result<Target> {
        let sys = if disk == name {
            self.path("sys/block").join(disk)
        } else {
            self.path("sys/block").join(disk).join(name)
        };
        Ok(Target {
            name: name.to_string(),
            path: self.path("dev").join(name),
            size: read_u64(&sys.join("size")).unwrap_or(0).saturating_mul(512),
        })
    }

    /// The device `selector` points at on this machine.
    pub fn resolve(&self, selector: &DiskSelector) -> Result<Target> {
        let names = self.disk_names()?;
        let disks = self.disks()?;
        let none = || Error::not_found(format!("a disk matching {selector}"));
        // (disk, Some(partition name)) when the match itself is a partition.
        let (disk, part): (String, Option<String>) = match &selector.disk {
            DiskMatch::First | DiskMatch::Index(_) => {
                let n = match selector.disk {
                    DiskMatch::Index(n) => n as usize,
                    _ => 0,
                };
                let fixed: Vec<&DiskInfo> = disks.iter().filter(|d| !d.removable).collect();
                let d = fixed.get(n).ok_or_else(|| {
                    Error::not_found(format!(
                        "disk {selector}: the machine has {} non-removable disks ({})",
                        fixed.len(),
                        fixed
                            .iter()
                            .map(|d| d.path.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ))
                })?;
                (d.path.trim_start_matches("/dev/").to_string(), None)
            }
            DiskMatch::Serial(s) => {
                let d = disks
                    .iter()
                    .find(|d| d.serial.as_deref() == Some(s.as_str()))
                    .ok_or_else(none)?;
                (d.path.trim_start_matches("/dev/").to_string(), None)
            }
            DiskMatch::Wwn(w) => {
                let want = norm_wwn(w);
                let d = disks
                    .iter()
                    .find(|d| {
                        d.wwn.as_deref().map(norm_wwn).as_deref() == Some(want.as_str())
                            || d.by_id
                                .iter()
                                .any(|l| l.starts_with("wwn-") && norm_wwn(l) == want)
                    })
                    .ok_or_else(none)?;
                (d.path.trim_start_matches("/dev/").to_string(), None)
            }
            DiskMatch::ById(link) => {
                let target = self
                    .by_id()
                    .into_iter()
                    .find(|(l, _)| l == link)
                    .map(|(_, n)| n)
                    .ok_or_else(none)?;
                self.disk_or_partition(&names, &target, selector)?
            }
            DiskMatch::Path(p) => {
                let rel = p.strip_prefix("/dev/").ok_or_else(none)?;
                let node = self.path("dev").join(rel);
                let name = match std::fs::read_link(&node) {
                    Ok(t) => t
                        .file_name()
                        .and_then(|n| n.to_str())
                        .map(str::to_string)
                        .ok_or_else(none)?,
                    Err(_) => rel.rsplit('/').next().unwrap_or(rel).to_string(),
                };
                self.disk_or_partition(&names, &name, selector)?
            }
        };
        match (part, selector.partition) {
            (Some(_), Some(_)) => Err(Error::invalid(
                "disk",
                format!("{selector}: names a partition and a partition number"),
            )),
            (Some(p), None) => self.target(&disk, &p),
            (None, Some(n)) => {
                let p = self.partition(&disk, n)?;
                self.target(&disk, &p)
            }
            (None, None) => self.target(&disk, &disk),
        }
    }

    fn disk_or_partition(
        &self,
        names: &[String],
        name: &str,
        selector: &DiskSelector,
    ) -> Result<(String, Option<String>)> {
        if names.iter().any(|n| n == name) {
            return Ok((name.to_string(), None));
        }
        match self.parent_of(names, name) {
            Some(d) => Ok((d, Some(name.to_string()))),
            None => Err(Error::not_found(format!(
                "a disk matching {selector} ({name} is not a disk or partition here)"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disks_sort_in_kernel_order() {
        let mut v = vec![
            "sdaa", "sdb", "nvme10n1", "sda", "nvme1n1", "vda", "sdz", "nvme0n1", "mmcblk0",
        ];
        v.sort_by(|a, b| disk_order(a, b));
        assert_eq!(
            v,
            ["mmcblk0", "nvme0n1", "nvme1n1", "nvme10n1", "sda", "sdb", "sdz", "sdaa", "vda"]
        );
    }

    #[test]
    fn wwns_compare_without_decorations() {
        assert_eq!(
            norm_wwn("wwn-0x5000C500A1B2C3D4"),
            norm_wwn("naa.5000c500a1b2c3d4")
        );
        assert_eq!(norm_wwn("eui.0025385b71b0b2c1"), "0025385b71b0b2c1");
    }

    #[test]
    fn vpd_pages_give_serials() {
        let mut page = vec![0u8, 0x80, 0, 8];
        page.extend_from_slice(b"  ABC123");
        assert_eq!(vpd_serial(&page).as_deref(), Some("ABC123"));
        assert_eq!(vpd_serial(&[0, 0x83, 0, 1, b'x']), None);
        assert_eq!(vpd_serial(&[0, 0x80, 0, 9, b'x']), None);
    }
}
