//! The whole boot path end to end, with real parts only: `baas-server`
//! (in-process, embedded SQLite store, enrollment on, the management OS
//! installed by `admin install-mos` from `agent/mos/build.sh`), and one QEMU
//! VM (TCG; virtio NIC with Debian's iPXE ROM and a virtio disk; user
//! networking restricted to the server only; DHCP's boot file is the
//! server's `/boot/chain.ipxe`; serial console to a file per boot;
//! `-no-reboot` and `panic=-1`; QMP on a unix socket). A harness thread
//! plays the lab's power supply: whenever QEMU exits (a reboot, a QMP
//! reset), it powers the VM on again.
//!
//! Through the REST API only: the VM enrolls with its inventory and an
//! admin accepts it; the original quickstart's five calls (plus the auth
//! header) queue a disk image built here (a boot sector that prints a
//! unique marker on COM1, writes a second marker to the disk with int 13h
//! and halts); the server power-cycles the VM through QMP; the VM flashes
//! and boots the image; the user releases it; the server cycles it into the
//! management OS, which captures the disk (the second marker is in the new
//! version) and restores the neutral setup; a slightly changed version is
//! reprovisioned transferring only the difference; a VM reset through QMP
//! mid-flash is completed by the next boot. Timings per phase are printed.
//!
//! Under `CI=true` a missing `qemu-system-x86_64` fails the test.

use std::io::Read;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use baas_core::model::*;
use baas_core::ports::{PowerAction, PowerControl};
use baas_core::services::EnrollPolicy;
use rocket::fairing::AdHoc;
use serde_json::{json, Value};

const MAC: &str = "52:54:00:e2:e0:01";
const DISK_BYTES: u64 = 128 << 20;
const IMAGE_BYTES: usize = 4 << 20;
/// Where the user's OS writes its second marker (LBA 4096).
const MARKER2_AT: usize = 2 << 20;
const STEP_TIMEOUT: Duration = Duration::from_secs(240);

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn have_qemu() -> bool {
    let ok = Command::new("qemu-system-x86_64")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true and qemu-system-x86_64 is missing: .ci/run installs qemu-system-x86"
        );
        eprintln!(
            "\n!!!!! pxe_e2e: qemu-system-x86_64 is not installed: the PXE end-to-end test \
             DID NOT RUN !!!!!\n"
        );
    }
    ok
}

fn target_dir() -> PathBuf {
    let exe = Path::new(env!("CARGO_BIN_EXE_baas-agent"));
    exe.parent()
        .and_then(Path::parent)
        .expect("the target directory")
        .to_path_buf()
}

/// agent/mos/build.sh with this test's agent; returns the output directory.
fn build_mos() -> PathBuf {
    let target = target_dir();
    let out = target.join("mos-e2e");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("mos/build.sh");
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
    assert!(
        o.status.success(),
        "agent/mos/build.sh failed: {}\n{}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    out
}

/// A 512-byte boot sector (GNU as, no nasm needed): prints `marker` on
/// COM1; when `write` is set, writes `marker2` into LBA 4096 of the boot
/// drive with int 13h (extended write) and says so; then halts.
fn boot_sector(dir: &Path, name: &str, marker: &str, write: Option<&str>) -> Vec<u8> {
    let write_code = match write {
        Some(_) => {
            "  mov $0x7e00, %di\n  mov $256, %cx\n  xor %ax, %ax\n  rep stosw\n\
             \x20 mov $msg2, %si\n  mov $0x7e00, %di\n1: lodsb\n  stosb\n  test %al, %al\n  jnz 1b\n\
             \x20 mov $0x4300, %ax\n  mov drive, %dl\n  mov $dap, %si\n  int $0x13\n  jc fail\n\
             \x20 mov $ok, %si\n  call puts\n  jmp halt\nfail:\n  mov $bad, %si\n  call puts\n"
        }
        None => "",
    };
    let asm = format!(
        ".code16\n.global _start\n_start:\n  cli\n  xor %ax, %ax\n  mov %ax, %ds\n  mov %ax, %es\n\
         \x20 mov %ax, %ss\n  mov $0x7c00, %sp\n  sti\n  mov %dl, drive\n  mov $msg, %si\n  call puts\n\
         {write_code}halt:\n  cli\n2: hlt\n  jmp 2b\nputs:\n  lodsb\n  test %al, %al\n  jz 3f\n\
         \x20 mov $0x3f8, %dx\n  out %al, (%dx)\n  jmp puts\n3: ret\n\
         drive: .byte 0\n.align 4\ndap: .byte 16, 0\n  .word 1\n  .word 0x7e00, 0\n  .quad {lba}\n\
         msg: .asciz \"\\r\\n{marker}\\r\\n\"\nmsg2: .asciz \"{marker2}\"\n\
         ok: .asciz \"second marker written\\r\\n\"\nbad: .asciz \"int 13h write FAILED\\r\\n\"\n\
         . = _start + 510\n.byte 0x55, 0xaa\n",
        lba = MARKER2_AT / 512,
        marker2 = write.unwrap_or(""),
    );
    let s = dir.join(format!("{name}.S"));
    let o = dir.join(format!("{name}.o"));
    let bin = dir.join(format!("{name}.bin"));
    std::fs::write(&s, asm).expect("write asm");
    let run = |cmd: &mut Command| {
        let out = cmd.output().expect("run binutils");
        assert!(
            out.status.success(),
            "{cmd:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(Command::new("as").arg("--32").arg("-o").arg(&o).arg(&s));
    run(Command::new("ld")
        .args(["-m", "elf_i386", "-Ttext=0x7c00", "--oformat=binary", "-o"])
        .arg(&bin)
        .arg(&o));
    let b = std::fs::read(&bin).expect("boot sector");
    assert_eq!(b.len(), 512, "one sector");
    b
}

/// Deterministic noise.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

struct Server {
    base: String,
    port: u16,
    admin: String,
    shutdown: rocket::Shutdown,
    http: ureq::Agent,
}

struct Resp {
    status: u16,
    body: Vec<u8>,
}

impl Resp {
    #[track_caller]
    fn ok(self, want: u16) -> Self {
        assert_eq!(
            self.status,
            want,
            "{}",
            String::from_utf8_lossy(&self.body[..self.body.len().min(2000)])
        );
        self
    }
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

impl Server {
    fn start(data: &Path) -> Server {
        let mut options = baas_embedded::Options::data_dir(data);
        options.config.enroll = EnrollPolicy::Enroll;
        let baas = baas_embedded::open(&options).expect("open the store");
        baas_server::cli::bootstrap(&baas, data).expect("bootstrap");
        let admin = std::fs::read_to_string(data.join("admin-token"))
            .expect("admin token")
            .trim()
            .to_string();
        let settings = baas_server::Settings {
            address: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: 0,
            handle_signals: false,
            mos_dir: Some(data.join("mos")),
            mos_cmdline: "console=ttyS0,115200n8 panic=-1 quiet".into(),
            power_every: Some(Duration::from_millis(250)),
            ..baas_server::Settings::default()
        };
        let (tx, rx) = mpsc::channel();
        let rocket =
            baas_server::build(baas, settings).attach(AdHoc::on_liftoff("port", move |r| {
                Box::pin(async move {
                    let _ = tx.send((r.config().port, r.shutdown()));
                })
            }));
        std::thread::spawn(move || {
            if let Err(e) = rocket::execute(rocket.launch()) {
                eprintln!("server stopped: {e}");
            }
        });
        let (port, shutdown) = rx.recv_timeout(Duration::from_secs(30)).expect("server up");
        Server {
            base: format!("http://127.0.0.1:{port}"),
            port,
            admin,
            shutdown,
            http: ureq::Agent::new_with_config(
                ureq::Agent::config_builder()
                    .http_status_as_error(false)
                    .build(),
            ),
        }
    }

    fn send(&self, method: &str, path: &str, ct: Option<&str>, body: Option<Vec<u8>>) -> Resp {
        let mut b = ureq::http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header("Authorization", format!("Bearer {}", self.admin));
        if let Some(ct) = ct {
            b = b.header("Content-Type", ct);
        }
        let mut res = match body {
            Some(bytes) => self.http.run(b.body(bytes).expect("request")),
            None => self.http.run(b.body(()).expect("request")),
        }
        .expect("request sent");
        let status = res.status().as_u16();
        let mut body = Vec::new();
        res.body_mut()
            .as_reader()
            .take(64 << 20)
            .read_to_end(&mut body)
            .expect("body");
        Resp { status, body }
    }

    fn get(&self, path: &str) -> Resp {
        self.send("GET", path, None, None)
    }

    fn post(&self, path: &str, body: &Value) -> Resp {
        self.send(
            "POST",
            path,
            Some("application/json"),
            Some(body.to_string().into_bytes()),
        )
    }

    fn put(&self, path: &str, body: &Value) -> Resp {
        self.send(
            "PUT",
            path,
            Some("application/json"),
            Some(body.to_string().into_bytes()),
        )
    }

    /// The original's `curl -F "file=@image"` upload; returns the version
    /// (`awk '{print $4}'` of the answer).
    fn quickstart_upload(&self, image: &str, bytes: &[u8]) -> u32 {
        let boundary = "baas-e2e-boundary-7f3a";
        let mut body = format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"image.img\"\r\n\
             Content-Type: application/octet-stream\r\n\r\n"
        )
        .into_bytes();
        body.extend_from_slice(bytes);
        body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
        let r = self
            .send(
                "POST",
                &format!("/image/{image}"),
                Some(&format!("multipart/form-data; boundary={boundary}")),
                Some(body),
            )
            .ok(200);
        r.text()
            .split_whitespace()
            .nth(3)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no version in {:?}", r.text()))
    }

    fn job(&self, id: &str) -> Value {
        self.get(&format!("/api/v1/jobs/{id}")).ok(200).json()
    }

    fn events(&self, id: &str) -> Vec<(i64, String, String)> {
        let v = self
            .get(&format!("/api/v1/jobs/{id}/events"))
            .ok(200)
            .json();
        v.as_array()
            .expect("events")
            .iter()
            .map(|e| {
                let at = e["at"].as_str().unwrap_or("");
                (
                    parse_rfc3339_ms(at),
                    e["kind"].as_str().unwrap_or("").to_string(),
                    e["message"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect()
    }

    fn content(&self, image: &str, version: u32) -> Vec<u8> {
        self.get(&format!(
            "/api/v1/images/{image}/versions/{version}/content"
        ))
        .ok(200)
        .body
    }
}

/// Milliseconds since the epoch of `2026-11-25T23:01:02.345Z`.
fn parse_rfc3339_ms(s: &str) -> i64 {
    let num = |a: usize, b: usize| s.get(a..b).and_then(|x| x.parse::<i64>().ok()).unwrap_or(0);
    let (y, mo, d) = (num(0, 4), num(5, 7), num(8, 10));
    let (h, mi, se) = (num(11, 13), num(14, 16), num(17, 19));
    let ms = if s.as_bytes().get(19) == Some(&b'.') {
        let frac: String = s[20..].chars().take_while(char::is_ascii_digit).collect();
        format!("{frac:0<3}")[..3].parse::<i64>().unwrap_or(0)
    } else {
        0
    };
    // Days from civil (Howard Hinnant).
    let y2 = if mo <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    ((days * 24 + h) * 60 + mi) * 60_000 + se * 1000 + ms
}

/// One power-on of the VM.
#[derive(Debug, Clone)]
struct Boot {
    started_ms: i64,
    ended_ms: Option<i64>,
    serial: PathBuf,
    status: Option<i32>,
}

/// The VM and the harness thread that powers it on whenever it stops.
struct Vm {
    boots: Arc<Mutex<Vec<Boot>>>,
    stop: Arc<AtomicBool>,
    child: Arc<Mutex<Option<Child>>>,
    qmp: String,
}

impl Vm {
    fn start(dir: &Path, mos: &Path, server_port: u16) -> Vm {
        let disk = dir.join("disk.img");
        let f = std::fs::File::create(&disk).expect("disk");
        f.set_len(DISK_BYTES).expect("sparse disk");
        let qmp_path = dir.join("qmp.sock");
        let qmp = format!("unix:{}", qmp_path.display());
        let busybox = target_dir().join("mos/cache/busybox/bin/busybox");
        assert!(busybox.exists(), "{}", busybox.display());
        let _ = mos;
        let netdev = format!(
            "user,id=n0,restrict=on,bootfile=http://10.0.2.100/boot/chain.ipxe,\
             guestfwd=tcp:10.0.2.100:80-cmd:{} nc 127.0.0.1 {server_port}",
            busybox.display()
        );
        let boots = Arc::new(Mutex::new(Vec::<Boot>::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let child = Arc::new(Mutex::new(None::<Child>));
        let (b2, s2, c2, dir2, qmp2) = (
            boots.clone(),
            stop.clone(),
            child.clone(),
            dir.to_path_buf(),
            qmp.clone(),
        );
        std::thread::spawn(move || {
            let mut n = 0;
            while !s2.load(Ordering::SeqCst) {
                n += 1;
                let serial = dir2.join(format!("serial-{n}.log"));
                let spawned = Command::new("qemu-system-x86_64")
                    .args(["-accel", "tcg", "-m", "256", "-smp", "2"])
                    .args(["-display", "none", "-machine", "graphics=off"])
                    .args(["-no-reboot", "-monitor", "none"])
                    .args(["-netdev", &netdev])
                    .args(["-device", &format!("virtio-net-pci,netdev=n0,mac={MAC}")])
                    .args([
                        "-drive",
                        &format!("file={},if=virtio,format=raw", disk.display()),
                    ])
                    .args(["-boot", "order=nc"])
                    .args(["-serial", &format!("file:{}", serial.display())])
                    .args(["-qmp", &format!("{qmp2},server=on,wait=off")])
                    .args(["-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"])
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("start qemu");
                b2.lock().expect("boots").push(Boot {
                    started_ms: now_ms(),
                    ended_ms: None,
                    serial,
                    status: None,
                });
                *c2.lock().expect("child") = Some(spawned);
                let status = loop {
                    let done = c2
                        .lock()
                        .expect("child")
                        .as_mut()
                        .and_then(|c| c.try_wait().ok().flatten());
                    if let Some(s) = done {
                        break s;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                };
                if let Some(b) = b2.lock().expect("boots").last_mut() {
                    b.ended_ms = Some(now_ms());
                    b.status = status.code();
                }
            }
        });
        Vm {
            boots,
            stop,
            child,
            qmp,
        }
    }

    fn boots(&self) -> Vec<Boot> {
        self.boots.lock().expect("boots").clone()
    }

    fn current(&self) -> usize {
        self.boots().len()
    }

    /// Waits until boot number `n` (1-based) or a later one prints `text`;
    /// returns (boot number, when it was seen).
    fn wait_serial(&self, from: usize, text: &str) -> (usize, i64) {
        let t = Instant::now();
        loop {
            let boots = self.boots();
            for (i, b) in boots.iter().enumerate().skip(from - 1) {
                let s = std::fs::read(&b.serial).unwrap_or_default();
                if String::from_utf8_lossy(&s).contains(text) {
                    return (i + 1, now_ms());
                }
            }
            assert!(
                t.elapsed() < STEP_TIMEOUT,
                "{text:?} never appeared on the console of boots {from}..; last console:\n{}",
                self.last_console()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn last_console(&self) -> String {
        self.boots()
            .last()
            .map(|b| {
                let s = std::fs::read(&b.serial).unwrap_or_default();
                let t = String::from_utf8_lossy(&s).into_owned();
                t.chars()
                    .rev()
                    .take(6000)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect()
            })
            .unwrap_or_default()
    }

    fn machine(&self) -> Machine {
        Machine {
            id: MachineId(uuid::Uuid::nil()),
            mac: MAC.parse().expect("mac"),
            name: "e2e".into(),
            arch: Arch::X86_64,
            pool: None,
            state: MachineState::Ready,
            inventory: None,
            last_seen: None,
            created_at: Timestamp(0),
            boot: MachineBoot {
                power: PowerConfig::Qmp {
                    address: self.qmp.clone(),
                },
                neutral: NeutralState::Keep,
            },
        }
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Ok(mut c) = self.child.lock() {
            if let Some(c) = c.as_mut() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        if std::thread::panicking() {
            eprintln!(
                "----- last serial console -----\n{}\n----- end -----",
                self.last_console()
            );
        }
    }
}

fn wait_until<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let t = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(t.elapsed() < STEP_TIMEOUT, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn wait_state(s: &Server, job: &str, state: &str) -> Value {
    wait_until(&format!("job {job} to be {state}"), || {
        let j = s.job(job);
        assert!(
            !(j["state"] == "failed" || j["state"] == "cancelled") || state == j["state"],
            "job {job}: {j}"
        );
        (j["state"] == state).then_some(j)
    })
}

fn event_at(events: &[(i64, String, String)], kind: &str, contains: &str) -> i64 {
    events
        .iter()
        .find(|(_, k, m)| k == kind && m.contains(contains))
        .map(|(at, _, _)| *at)
        .unwrap_or_else(|| panic!("no {kind:?} event with {contains:?}: {events:?}"))
}

/// `N chunks fetched (B bytes)` out of the `running` event.
fn fetched(events: &[(i64, String, String)]) -> (u64, u64) {
    let m = &events
        .iter()
        .find(|(_, k, _)| k == "running")
        .expect("a running event")
        .2;
    let words: Vec<&str> = m.split_whitespace().collect();
    let i = words
        .iter()
        .position(|w| *w == "fetched")
        .expect("fetched in the message");
    let chunks = words[i - 2].parse().expect("chunks");
    let bytes = words[i + 1].trim_start_matches('(').parse().expect("bytes");
    (chunks, bytes)
}

/// The phases of one reprovisioning, in seconds: from the power-on of
/// `boot` to the marker on the console of the next boot.
fn phases(vm: &Vm, boot: usize, events: &[(i64, String, String)], marker_ms: i64) -> String {
    let boots = vm.boots();
    let b = &boots[boot - 1];
    let next = &boots[boot];
    let mos = event_at(events, "boot", "management OS");
    let took = event_at(events, "provisioning", "");
    let flashed = event_at(events, "running", "");
    let local = events
        .iter()
        .rev()
        .find(|(_, k, m)| k == "boot" && m.contains("local disk"))
        .map(|e| e.0)
        .expect("a local-disk boot event");
    let s = |a: i64, b: i64| (b - a) as f64 / 1000.0;
    format!(
        "firmware+iPXE {:.1} s | management OS boot to the agent taking the job {:.1} s | flash {:.1} s | \
         reboot (agent done to QEMU exit {:.1} s, power-on to iPXE's decision {:.1} s) | user OS to marker {:.1} s | \
         total power-on to marker {:.1} s",
        s(b.started_ms, mos),
        s(mos, took),
        s(took, flashed),
        s(flashed, b.ended_ms.unwrap_or(flashed)),
        s(next.started_ms, local),
        s(local, marker_ms),
        s(b.started_ms, marker_ms)
    )
}

#[test]
fn a_qemu_machine_enrolls_and_is_reprovisioned_captured_restored_and_delta_flashed_over_pxe() {
    if !have_qemu() {
        return;
    }
    // Kept after the run (serial consoles of every boot, the server's data)
    // for a look when something fails; the next run starts afresh.
    let work_dir = target_dir().join("pxe-e2e");
    let _ = std::fs::remove_dir_all(&work_dir);
    std::fs::create_dir_all(&work_dir).expect("work dir");
    let work = Work(work_dir);
    let nonce = format!("{:x}", now_ms());
    let marker = format!("BAAS-E2E-USER-OS-{nonce}");
    let marker2 = format!("BAAS-E2E-CAPTURED-{nonce}");
    let neutral_marker = format!("BAAS-E2E-NEUTRAL-{nonce}");

    // The management OS, installed with the server's own command.
    let mos = build_mos();
    let initrd_bytes = std::fs::metadata(mos.join("initrd.gz"))
        .expect("initrd")
        .len();
    let data = work.path().join("data");
    baas_server::cli::run(<baas_server::cli::Cli as clap::Parser>::parse_from([
        "baas-server",
        "--data-dir",
        data.to_str().expect("utf-8"),
        "admin",
        "install-mos",
        "--kernel",
        mos.join("vmlinuz").to_str().expect("utf-8"),
        "--initrd",
        mos.join("initrd.gz").to_str().expect("utf-8"),
    ]))
    .expect("install-mos");
    let s = Server::start(&data);

    // The user's disk: a boot sector with the markers, some data.
    let mut v1 = vec![0u8; IMAGE_BYTES];
    v1[..512].copy_from_slice(&boot_sector(work.path(), "user", &marker, Some(&marker2)));
    v1[1 << 20..(1 << 20) + (512 << 10)].copy_from_slice(&noise(1, 512 << 10));
    let neutral_os = boot_sector(work.path(), "neutral", &neutral_marker, None);

    // 1. Power on: PXE, unknown MAC, enrollment; the agent reports the
    //    inventory; an admin sets the neutral setup and accepts it. The
    //    agent waits in the management OS for work.
    let vm = Vm::start(work.path(), &mos, s.port);
    let enrolled = wait_until("the enrollment inventory", || {
        let r = s.get(&format!("/api/v1/machines/{MAC}"));
        (r.status == 200 && r.json()["inventory"]["disks"].is_array()).then(|| r.json())
    });
    assert_eq!(enrolled["state"], "pending", "{enrolled}");
    assert!(
        enrolled["inventory"]["disks"].as_array().is_some_and(|d| d
            .iter()
            .any(|d| d["path"] == "/dev/vda" && d["size"] == DISK_BYTES)),
        "{enrolled}"
    );
    let enroll_boot = vm.boots()[0].clone();
    let enroll_secs = |t: &str| {
        (parse_rfc3339_ms(enrolled[t].as_str().unwrap_or("")) - enroll_boot.started_ms) as f64
            / 1000.0
    };
    eprintln!(
        "pxe_e2e: enrollment: power-on to the server's boot decision {:.1} s, to the agent's \
         inventory {:.1} s",
        enroll_secs("created_at"),
        enroll_secs("last_seen")
    );
    let machine = enrolled["id"].as_str().expect("id").to_string();
    let neutral_image = s
        .post(
            "/api/v1/images",
            &json!({"name": "neutral", "size": 65536, "disk": "/dev/vda", "visibility": "private"}),
        )
        .ok(201)
        .json()["image"]["id"]
        .as_str()
        .expect("image")
        .to_string();
    s.send(
        "POST",
        &format!("/api/v1/images/{neutral_image}/versions"),
        Some("application/octet-stream"),
        Some(neutral_os.clone()),
    )
    .ok(201);
    let neutral_setup = s
        .post(
            "/api/v1/setups",
            &json!({"name": "lab neutral", "entries": [{"image_id": neutral_image, "version": 1}]}),
        )
        .ok(201)
        .json()["id"]
        .as_str()
        .expect("setup")
        .to_string();
    let boot_config = |power: Value, neutral: &str| {
        s.put(
            &format!("/api/v1/machines/{MAC}/boot-config"),
            &json!({"power": power, "neutral": neutral}),
        )
        .ok(200)
    };
    let qmp = json!({"kind": "qmp", "address": vm.qmp});
    let to_neutral = format!("setup:{neutral_setup}");
    boot_config(json!({"kind": "manual"}), &to_neutral);
    s.post(&format!("/api/v1/machines/{MAC}/accept"), &json!({}))
        .ok(200);

    // 2. The quickstart's five calls, with the auth header.
    s.post(
        "/user",
        &json!({"name": "USER", "email": "EMAIL", "role": "user"}),
    )
    .ok(201);
    let r = s
        .post(
            "/user/USER/image",
            &json!({"name": "Test image", "DiskUUID": "/dev/vda"}),
        )
        .ok(201);
    let image = r.json()["UUID"].as_str().expect("UUID").to_string();
    let latest = s.get(&format!("/image/{image}/latest")).ok(200);
    assert!(latest.body.iter().all(|b| *b == 0), "a blank image");
    let version = s.quickstart_upload(&image, &v1);
    assert_eq!(version, 1);
    let queued = s
        .post(
            &format!("/machine/{MAC}/boot"),
            &json!({"Version": version, "ImageUUID": image, "update": true}),
        )
        .ok(200)
        .json();
    let job = s
        .get(&format!("/api/v1/machines/{machine}/queue"))
        .ok(200)
        .json()[0]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("the job in the queue: {queued}"))
        .to_string();

    // 3. The server power-cycles the VM to start the job; it flashes and
    //    boots the image: the marker on the console.
    let j = wait_state(&s, &job, "running");
    let (marker_boot, marker_ms) = vm.wait_serial(1, &marker);
    vm.wait_serial(marker_boot, "second marker written");
    let ev = s.events(&job);
    let (chunks1, bytes1) = fetched(&ev);
    {
        // The waiting agent took the job in the enrollment boot: the
        // firmware and management-OS phases are those of that boot.
        let boots = vm.boots();
        let decided = parse_rfc3339_ms(enrolled["created_at"].as_str().unwrap_or(""));
        let ready = parse_rfc3339_ms(enrolled["last_seen"].as_str().unwrap_or(""));
        let took = event_at(&ev, "provisioning", "");
        let flashed = event_at(&ev, "running", "");
        let local = event_at(&ev, "boot", "local disk");
        let (b1, b2) = (&boots[marker_boot - 2], &boots[marker_boot - 1]);
        let secs = |a: i64, b: i64| (b - a) as f64 / 1000.0;
        let parts = [
            secs(b1.started_ms, decided),
            secs(decided, ready),
            secs(took, flashed),
            secs(flashed, b1.ended_ms.unwrap_or(flashed)) + secs(b2.started_ms, local),
            secs(local, marker_ms),
        ];
        eprintln!(
            "pxe_e2e: first provisioning: firmware+iPXE {:.1} s | management OS boot to the agent {:.1} s | \
             flash {:.1} s | reboot to iPXE's decision {:.1} s | user OS to marker {:.1} s | sum {:.1} s; \
             {chunks1} chunks, {bytes1} bytes fetched",
            parts[0], parts[1], parts[2], parts[3], parts[4], parts.iter().sum::<f64>()
        );
    }
    assert!(j["session_ends_at"].is_string(), "{j}");
    // From now on the server cycles the VM's power through QMP.
    boot_config(qmp.clone(), &to_neutral);

    // 4. The user releases the machine: the server cycles it into the
    //    management OS, which captures the disk with the second marker, and
    //    the neutral setup is restored.
    s.post(&format!("/api/v1/jobs/{job}/release"), &json!({}))
        .ok(200);
    wait_state(&s, &job, "succeeded");
    let ev = s.events(&job);
    let captured: u32 = ev
        .iter()
        .find(|(_, k, _)| k == "succeeded")
        .and_then(|(_, _, m)| m.rsplit(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("the captured version in {ev:?}"));
    assert_eq!(captured, 2);
    let v2 = s.content(&image, captured);
    assert_eq!(&v2[..512], &v1[..512]);
    assert_eq!(
        &v2[MARKER2_AT..MARKER2_AT + marker2.len()],
        marker2.as_bytes(),
        "the capture holds what the user's OS wrote"
    );
    assert_eq!(
        &v2[1 << 20..(1 << 20) + (512 << 10)],
        &v1[1 << 20..(1 << 20) + (512 << 10)]
    );
    let neutral_job = ev
        .iter()
        .find(|(_, k, _)| k == "neutral")
        .and_then(|(_, _, m)| m.split_whitespace().nth(2).map(str::to_string))
        .unwrap_or_else(|| panic!("a neutral restore in {ev:?}"));
    wait_state(&s, &neutral_job, "succeeded");
    let (neutral_boot, _) = vm.wait_serial(marker_boot + 1, &neutral_marker);
    let kinds: Vec<&str> = ev.iter().map(|(_, k, _)| k.as_str()).collect();
    for k in [
        "queued",
        "power",
        "boot",
        "provisioning",
        "running",
        "session",
        "released",
        "capturing",
        "capture",
        "succeeded",
        "neutral",
    ] {
        assert!(kinds.contains(&k), "{k} in the timeline: {kinds:?}");
    }
    eprintln!("pxe_e2e: timeline of job {job}:");
    for (at, k, m) in &ev {
        eprintln!("  {:>8.1} s  {k:<12} {m}", (at - ev[0].0) as f64 / 1000.0);
    }

    // 5. A version that differs a little from the captured one. The disk
    //    holds the neutral setup now: only what differs from it travels.
    let mut v3 = v2.clone();
    v3[3 << 20..(3 << 20) + 65536].copy_from_slice(&noise(3, 65536));
    let mut neutral_disk = vec![0u8; v3.len()];
    neutral_disk[..512].copy_from_slice(&neutral_os);
    let differing = |a: &[u8], b: &[u8]| {
        a.chunks(65536)
            .zip(b.chunks(65536))
            .filter(|(x, y)| x != y)
            .count() as u64
    };
    let job3 = queue_version(&s, &image, &machine, &v3);
    wait_state(&s, &job3, "running");
    let (marker_boot3, _) = vm.wait_serial(neutral_boot + 1, &marker);
    let ev3 = s.events(&job3);
    let (chunks3, bytes3) = fetched(&ev3);
    assert_eq!(chunks3, differing(&v3, &neutral_disk), "{ev3:?}");
    eprintln!("pxe_e2e: onto the neutral disk: {chunks3} chunks, {bytes3} bytes fetched");

    //    The admin keeps disks as they are from now on; the user releases;
    //    a version that differs from the disk by one chunk travels alone.
    boot_config(qmp.clone(), "keep");
    s.post(&format!("/api/v1/jobs/{job3}/release"), &json!({}))
        .ok(200);
    wait_state(&s, &job3, "succeeded");
    let mut v4 = v3.clone();
    v4[3 << 19..(3 << 19) + 4096].copy_from_slice(&noise(5, 4096));
    assert_eq!(differing(&v4, &v3), 1);
    let job4 = queue_version(&s, &image, &machine, &v4);
    wait_state(&s, &job4, "running");
    let (marker_boot4, marker4_ms) = vm.wait_serial(marker_boot3 + 1, &marker);
    let ev4 = s.events(&job4);
    let (chunks4, bytes4) = fetched(&ev4);
    assert_eq!(chunks4, 1, "only the changed chunk: {ev4:?}");
    let delta = phases(&vm, marker_boot4 - 1, &ev4, marker4_ms);
    eprintln!("pxe_e2e: delta reprovisioning: {delta}; {chunks4} chunk, {bytes4} bytes fetched");
    s.post(&format!("/api/v1/jobs/{job4}/release"), &json!({}))
        .ok(200);
    wait_state(&s, &job4, "succeeded");

    // 6. The VM reset through QMP in the middle of a flash: the next boot
    //    completes the job.
    let mut v5 = v4.clone();
    v5.resize(48 << 20, 0);
    v5[8 << 20..].copy_from_slice(&noise(4, (48 << 20) - (8 << 20)));
    let job5 = queue_version(&s, &image, &machine, &v5);
    let progress = wait_until("the flash to be under way", || {
        let j = s.job(&job5);
        let done = j["progress"]["bytes_done"].as_u64().unwrap_or(0);
        (j["state"] == "provisioning" && done > 0).then_some(j)
    });
    let boots_before = vm.current();
    tokio_block(LabPowerCycle(vm.machine()));
    eprintln!(
        "pxe_e2e: reset through QMP at {} of {} bytes flashed",
        progress["progress"]["bytes_done"], progress["progress"]["bytes_total"]
    );
    let j5 = wait_state(&s, &job5, "running");
    assert!(vm.current() > boots_before);
    let ev5 = s.events(&job5);
    assert!(
        ev5.iter()
            .any(|(_, k, m)| k == "boot" && m.contains("again, after a reset")),
        "{ev5:?}"
    );
    assert!(j5["error"].is_null(), "{j5}");
    let disk = std::fs::read(work.path().join("disk.img")).expect("the VM's disk");
    assert!(
        disk[..v5.len()] == v5[..],
        "the disk holds the version after the interrupted flash"
    );
    vm.wait_serial(vm.current(), &marker);

    eprintln!(
        "pxe_e2e: management OS: initramfs {:.1} MiB (gzip), kernel {:.1} MiB; {} boots in all",
        initrd_bytes as f64 / 1048576.0,
        std::fs::metadata(mos.join("vmlinuz")).map_or(0, |m| m.len()) as f64 / 1048576.0,
        vm.current()
    );
    drop(vm);
    s.shutdown.notify();
}

struct Work(PathBuf);

impl Work {
    fn path(&self) -> &Path {
        &self.0
    }
}

/// Uploads `bytes` as the image's next version and queues it with the
/// original's boot call; returns the job.
fn queue_version(s: &Server, image: &str, machine: &str, bytes: &[u8]) -> String {
    let version = s.quickstart_upload(image, bytes);
    s.post(
        &format!("/machine/{MAC}/boot"),
        &json!({"Version": version, "ImageUUID": image, "update": false}),
    )
    .ok(200);
    wait_until("the job in the queue", || {
        s.get(&format!("/api/v1/machines/{machine}/queue"))
            .ok(200)
            .json()
            .as_array()?
            .iter()
            .find(|j| j["entries"][0]["version"] == version)
            .and_then(|j| j["id"].as_str().map(str::to_string))
    })
}

/// A power cycle through the same adapter the server uses.
struct LabPowerCycle(Machine);

fn tokio_block(c: LabPowerCycle) {
    let rt = rocket::tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        baas_power::LabPower::default()
            .apply(&c.0, PowerAction::Cycle)
            .await
            .expect("QMP system_reset");
    });
}
