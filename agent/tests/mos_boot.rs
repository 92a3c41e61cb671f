//! The management OS boots for real: `agent/mos/build.sh` builds it (Debian's
//! kernel, busybox-static, the agent), QEMU (TCG) boots it with a virtio NIC
//! and a virtio disk on user networking restricted to the test's server, the
//! agent registers the machine's inventory, takes the queued job, flashes the
//! image onto the virtio disk and the VM powers off; the disk file then holds
//! the image.
//!
//! Under `CI=true` a missing `qemu-system-x86_64` fails the test; elsewhere it
//! prints a note and returns.

#[path = "../../adapters/client-http/tests/common/mod.rs"]
mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use common::{disk_image, Lab};

const MAC: &str = "52:54:00:4d:4f:53";
const DISK_BYTES: u64 = 64 << 20;
const IMAGE_BYTES: usize = 2 << 20;
/// `baas.qemu_exit=16`: QEMU ends with (16 << 1) | 1 when the agent exited 0.
const QEMU_OK: i32 = 33;
const BOOT_TIMEOUT: Duration = Duration::from_secs(120);

fn target_dir() -> PathBuf {
    // target/<profile>/baas-agent
    let exe = Path::new(env!("CARGO_BIN_EXE_baas-agent"));
    exe.parent()
        .and_then(Path::parent)
        .expect("the target directory")
        .to_path_buf()
}

fn have_qemu() -> bool {
    Command::new("qemu-system-x86_64")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Relays loopback connections to the server and notes when the first one
/// came (the guest's first request; guestfwd connects only when the guest
/// does).
struct Relay {
    port: u16,
    first: Arc<OnceLock<Instant>>,
}

impl Relay {
    fn start(upstream: u16) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let first = Arc::new(OnceLock::new());
        let f = first.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(down) = conn else { continue };
                let _ = f.set(Instant::now());
                let Ok(up) = TcpStream::connect(("127.0.0.1", upstream)) else {
                    continue;
                };
                let (d2, u2) = (
                    down.try_clone().expect("clone"),
                    up.try_clone().expect("clone"),
                );
                std::thread::spawn(move || pipe(down, up));
                std::thread::spawn(move || pipe(u2, d2));
            }
        });
        Relay { port, first }
    }
}

fn pipe(mut from: TcpStream, mut to: TcpStream) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

/// Prints the serial console if the test fails after the VM started.
struct Console(PathBuf);

impl Drop for Console {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let text = std::fs::read(&self.0).unwrap_or_default();
            eprintln!(
                "----- serial console ({}) -----\n{}\n----- end of serial console -----",
                self.0.display(),
                String::from_utf8_lossy(&text)
            );
        }
    }
}

/// Runs agent/mos/build.sh with the agent cargo built for this test; returns
/// the output directory.
fn build_mos() -> PathBuf {
    let target = target_dir();
    let out = target.join("mos-test");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("mos/build.sh");
    let t = Instant::now();
    let o = Command::new("bash")
        .arg(&script)
        .arg("--out")
        .arg(&out)
        .arg("--agent")
        .arg(env!("CARGO_BIN_EXE_baas-agent"))
        .env("BAAS_MOS_CACHE", target.join("mos/cache"))
        .stdin(Stdio::null())
        .output()
        .expect("run agent/mos/build.sh");
    let log = String::from_utf8_lossy(&o.stderr);
    assert!(
        o.status.success(),
        "agent/mos/build.sh failed: {}\n{}{log}",
        o.status,
        String::from_utf8_lossy(&o.stdout)
    );
    eprintln!(
        "{log}mos_boot: build.sh took {:.1} s",
        t.elapsed().as_secs_f64()
    );
    out
}

#[test]
fn the_management_os_boots_in_qemu_registers_and_flashes_the_virtio_disk() {
    if !have_qemu() {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("CI=true and qemu-system-x86_64 is missing: .ci/run installs qemu-system-x86");
        }
        eprintln!(
            "\n!!!!! mos_boot: qemu-system-x86_64 is not installed: the management OS boot test \
             DID NOT RUN (apt-get install qemu-system-x86 ipxe-qemu qemu-utils/bookworm cpio kmod \
             --allow-downgrades --no-install-recommends) !!!!!\n"
        );
        return;
    }
    let out = build_mos();
    let initrd = std::fs::metadata(out.join("initrd.gz"))
        .expect("initrd.gz")
        .len();
    assert!(initrd <= 30 << 20, "the initramfs is {initrd} bytes");

    let lab = Lab::new();
    let machine = lab.machine(MAC);
    let image = lab.image("mos-smoke", IMAGE_BYTES as u64);
    let data = disk_image(IMAGE_BYTES, 5);
    lab.upload(&image, &data);
    let job = lab.queue(&machine, &image, 1, "first", false);
    let token = lab.agent_token(&machine);
    let relay = Relay::start(lab.port);

    let vm = tempfile::tempdir().expect("vm dir");
    let disk = vm.path().join("disk.img");
    // A sparse disk holding garbage where the image goes: the flash must
    // overwrite it.
    {
        let mut f = std::fs::File::create(&disk).expect("disk");
        f.set_len(DISK_BYTES).expect("sparse disk");
        f.write_all(&vec![0xA5u8; IMAGE_BYTES]).expect("garbage");
    }
    let serial = vm.path().join("serial.log");
    let _console = Console(serial.clone());
    let busybox = target_dir().join("mos/cache/busybox/bin/busybox");
    assert!(
        busybox.exists(),
        "{} (build.sh extracts it)",
        busybox.display()
    );
    let append = format!(
        "console=ttyS0 panic=-1 baas.server=http://10.0.2.100 baas.mac={MAC} \
         baas.token={token} baas.poweroff baas.qemu_exit=16"
    );
    let netdev = format!(
        "user,id=n0,restrict=on,guestfwd=tcp:10.0.2.100:80-cmd:{} nc 127.0.0.1 {}",
        busybox.display(),
        relay.port
    );
    let start = Instant::now();
    let mut qemu = Command::new("qemu-system-x86_64")
        .args(["-accel", "tcg", "-m", "256", "-smp", "2"])
        .args(["-display", "none", "-no-reboot", "-monitor", "none"])
        .arg("-kernel")
        .arg(out.join("vmlinuz"))
        .arg("-initrd")
        .arg(out.join("initrd.gz"))
        .args(["-append", &append])
        .args(["-netdev", &netdev])
        .args([
            "-device",
            &format!("virtio-net-pci,netdev=n0,mac={MAC},romfile="),
        ])
        .args([
            "-drive",
            &format!("file={},if=virtio,format=raw", disk.display()),
        ])
        .args(["-serial", &format!("file:{}", serial.display())])
        .args(["-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start qemu-system-x86_64");
    let status = loop {
        if let Some(s) = qemu.try_wait().expect("wait for qemu") {
            break s;
        }
        if start.elapsed() > BOOT_TIMEOUT {
            let _ = qemu.kill();
            let _ = qemu.wait();
            panic!("the VM did not finish within {BOOT_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let total = start.elapsed();
    let mut qerr = String::new();
    if let Some(mut e) = qemu.stderr.take() {
        let _ = e.read_to_string(&mut qerr);
    }
    assert_eq!(
        status.code(),
        Some(QEMU_OK),
        "QEMU's status ({QEMU_OK}: the agent finished and exited 0): {status}\n{qerr}"
    );
    let serial_text =
        String::from_utf8_lossy(&std::fs::read(&serial).expect("serial")).into_owned();

    // The agent registered the machine's inventory: the virtio disk.
    let m = lab
        .get(&format!("/api/v1/machines/{machine}"), &lab.admin)
        .json(200);
    let disks = m["inventory"]["disks"]
        .as_array()
        .expect("disks in the inventory");
    let vda = disks
        .iter()
        .find(|d| d["path"] == "/dev/vda")
        .unwrap_or_else(|| panic!("/dev/vda in the inventory: {m}"));
    assert_eq!(vda["size"].as_u64(), Some(DISK_BYTES), "{m}");
    assert!(
        m["inventory"]["nics"]
            .as_array()
            .is_some_and(|n| n.iter().any(|n| n["mac"] == MAC)),
        "the NIC in the inventory: {m}"
    );

    // The job flashed the image onto the disk.
    let j = lab.job(&job);
    assert_eq!(
        j["state"], "running",
        "flashed, the user's session runs: {j}"
    );
    let written = std::fs::read(&disk).expect("read the disk back");
    assert_eq!(written.len() as u64, DISK_BYTES);
    assert!(
        written[..IMAGE_BYTES] == data[..],
        "the disk starts with the image"
    );
    assert!(
        written[IMAGE_BYTES..].iter().all(|b| *b == 0),
        "the rest of the disk is zero"
    );

    for l in serial_text.lines().filter(|l| l.starts_with("MOS:")) {
        eprintln!("  {}", l.trim_end());
    }
    let first = relay
        .first
        .get()
        .map(|t| t.duration_since(start).as_secs_f64());
    let uptime = serial_text
        .lines()
        .find(|l| l.contains("starting baas-agent"))
        .unwrap_or("")
        .trim()
        .to_string();
    eprintln!(
        "mos_boot: initramfs {:.1} MiB (gzip; the original booted a full Debian rootfs of several \
         hundred MB); QEMU start to the agent's first request {}; VM done (flashed {} KiB, powered \
         off) in {:.1} s; {uptime}",
        initrd as f64 / 1048576.0,
        first.map_or("never".to_string(), |s| format!("{s:.1} s")),
        IMAGE_BYTES / 1024,
        total.as_secs_f64()
    );
}
