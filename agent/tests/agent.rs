//! The `baas-agent` binary end to end against a real server: it flashes a
//! file-backed partition found through a fake kernel tree, the user's OS
//! changes the disk, the next boot captures it as a new version; it is
//! killed (SIGKILL) mid-flash and the next run finishes the job; the
//! server goes away mid-transfer and comes back on the same data
//! directory; a MAC that is not among the NICs is refused; scattered
//! changes cross as sub-chunk deltas.

#[path = "../../adapters/client-http/tests/common/mod.rs"]
mod common;
mod fake;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use baas_core::content::{ChunkHash, Manifest, CHUNK_SIZE};
use common::{disk_image, Lab, Mode, Proxy};
use fake::Tree;

const MAC: &str = "52:54:00:12:34:56";

/// A fake NVMe machine whose `nvme0n1p2` is a file of `part_bytes`
/// (filled with garbage) and whose NIC has the agent's MAC.
fn machine(part_bytes: usize) -> (Tree, PathBuf) {
    let t = Tree::nvme_machine();
    let node = t.node("nvme0n1p2", part_bytes, 0xAB);
    // The partition's size as the kernel would report it.
    std::fs::write(
        t.path("sys/block/nvme0n1/nvme0n1p2/size"),
        format!("{}\n", part_bytes / 512),
    )
    .expect("size");
    (t, node)
}

fn write_config(
    dir: &Path,
    server: &str,
    token: &str,
    root: &Path,
    disks: &[(&str, &Path)],
) -> PathBuf {
    let mut text = format!(
        "server = \"{server}\"\nmac = \"{MAC}\"\ntoken = \"{token}\"\nroot = \"{}\"\n",
        root.display()
    );
    if !disks.is_empty() {
        text.push_str("[disks]\n");
        for (sel, path) in disks {
            text.push_str(&format!("\"{sel}\" = \"{}\"\n", path.display()));
        }
    }
    let p = dir.join(format!("agent-{}.toml", rand_suffix()));
    std::fs::write(&p, text).expect("config");
    p
}

fn rand_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

fn agent(config: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_baas-agent"));
    c.arg("--config")
        .arg(config)
        .args(["--workers", "2"])
        .args(args)
        .stdin(Stdio::null());
    c
}

#[track_caller]
fn ok(out: Output) -> String {
    let text = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "agent failed: {}\n{text}", out.status);
    text
}

fn manifest_of(bytes: &[u8]) -> Manifest {
    let chunks = bytes
        .chunks(CHUNK_SIZE as usize)
        .map(|c| (!c.iter().all(|b| *b == 0)).then(|| ChunkHash::of(c)))
        .collect();
    Manifest::new(bytes.len() as u64, CHUNK_SIZE, chunks).expect("manifest")
}

#[test]
fn the_binary_flashes_then_the_next_boot_captures() {
    let lab = Lab::new();
    let machine_id = lab.machine(MAC);
    let size = 3 << 20;
    let image = lab.image("workstation", size as u64);
    let data = disk_image(size, 11);
    lab.upload(&image, &data);
    let (tree, node) = machine(5 << 20);
    let token = lab.agent_token(&machine_id);
    let config = write_config(lab.dir.path(), &lab.base(), &token, tree.root(), &[]);
    let job = lab.queue(&machine_id, &image, 1, "serial:S4EWNX0R123456#2", true);

    // Boot 1: flash, then stop instead of rebooting.
    let log = ok(agent(&config, &["--once", "--no-reboot"])
        .output()
        .expect("run the agent"));
    assert!(log.contains("nvme0n1p2"), "{log}");
    let disk = std::fs::read(&node).expect("disk");
    assert_eq!(&disk[..size], &data[..], "the partition holds the image");
    assert!(
        disk[size..].iter().all(|b| *b == 0),
        "the old tail is zeroed"
    );
    let j = lab.job(&job);
    assert_eq!(j["state"], "running", "{j}");
    let p = &j["progress"];
    assert!(
        p["bytes_total"].as_u64() > Some(0),
        "progress reached the server: {j}"
    );
    assert_eq!(
        p["bytes_done"], p["bytes_total"],
        "the last report is sent: {j}"
    );
    let m = lab
        .get(&format!("/api/v1/machines/{machine_id}"), &lab.admin)
        .json(200);
    assert_eq!(m["inventory"]["disks"][0]["path"], "/dev/nvme0n1");
    assert_eq!(m["inventory"]["disks"][0]["serial"], "S4EWNX0R123456");
    assert_eq!(m["inventory"]["nics"][0]["mac"], MAC);

    // The user's OS writes to the disk.
    let mut changed = disk.clone();
    changed[CHUNK_SIZE as usize * 2..CHUNK_SIZE as usize * 3].fill(0x42);
    changed[size - 10] = 7;
    std::fs::write(&node, &changed).expect("user writes");

    // Boot 2: the session has ended; capture, then the job succeeds.
    ok(agent(&config, &["--once", "--no-reboot"])
        .output()
        .expect("run the agent"));
    let j = lab.job(&job);
    assert_eq!(j["state"], "succeeded", "{j}");
    let v = lab.version(&image, "latest");
    assert_eq!(v["number"], 2);
    assert_eq!(v["source"], "capture");
    assert_eq!(v["source_job_id"], job.as_str());
    let want = manifest_of(&changed[..size]);
    assert_eq!(v["root"], want.root().to_hex());
    assert_eq!(lab.content(&image, 2), &changed[..size]);

    // The timeline shows every step and the agent's own log lines.
    let events = lab.events(&job);
    let kinds: Vec<&str> = events.iter().map(|(k, _)| k.as_str()).collect();
    for k in ["provisioning", "running", "capturing", "succeeded"] {
        assert!(kinds.contains(&k), "{k} in {events:?}");
    }
    assert!(
        events
            .iter()
            .any(|(k, m)| k == "log" && m.contains("opened")),
        "agent logs reach the timeline: {events:?}"
    );

    // Boot 3: nothing queued; --once waits (the long poll) until a job
    // comes, so instead check the idle poll with a short wait and a kill.
    let mut idle = agent(&config, &["--once", "--no-reboot", "--poll-secs", "1"])
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    std::thread::sleep(Duration::from_millis(1500));
    assert!(idle.try_wait().expect("wait").is_none(), "idles, polling");
    idle.kill().expect("kill");
    let _ = idle.wait();
}

#[test]
fn killed_mid_flash_the_agent_finishes_the_job_on_the_next_run() {
    let lab = Lab::new();
    let machine_id = lab.machine(MAC);
    let size = 8 << 20;
    let image = lab.image("big", size as u64);
    let data = disk_image(size, 23);
    lab.upload(&image, &data);
    let tree = Tree::nvme_machine();
    let disk = tree.path("disk.img");
    std::fs::write(&disk, vec![0x5Au8; size]).expect("disk");
    let token = lab.agent_token(&machine_id);
    let proxy = Proxy::start(lab.port);
    let via_proxy = write_config(
        lab.dir.path(),
        &proxy.base(),
        &token,
        tree.root(),
        &[("first", &disk)],
    );
    let job = lab.queue(&machine_id, &image, 1, "first", false);

    // The transfer stalls after about 1 MiB: the agent is mid-flash.
    proxy.set(Mode::StallAfter(1 << 20));
    let mut child = agent(&via_proxy, &["--once", "--no-reboot", "--batch", "4"])
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let t = Instant::now();
    while proxy.mode() != Mode::Down {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "the transfer never stalled"
        );
        assert!(
            child.try_wait().expect("wait").is_none(),
            "the agent ended early"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    child.kill().expect("SIGKILL");
    let _ = child.wait();
    let half = std::fs::read(&disk).expect("disk");
    assert_ne!(half, data, "killed before the end");
    assert_eq!(lab.job(&job)["state"], "provisioning");

    // Next boot: the same job again, finished; rebooting runs the command.
    proxy.set(Mode::Pass);
    let marker = tree.path("rebooted");
    let reboot = format!("touch {}", marker.display());
    ok(agent(&via_proxy, &["--once", "--reboot-command", &reboot])
        .output()
        .expect("run the agent"));
    assert_eq!(std::fs::read(&disk).expect("disk"), data);
    assert_eq!(lab.job(&job)["state"], "running");
    assert!(marker.exists(), "the reboot command ran");
    let events = lab.events(&job);
    assert!(
        events
            .iter()
            .any(|(k, m)| k == "provisioning" && m.contains("restarted")),
        "{events:?}"
    );
}

#[test]
fn the_server_restarted_mid_flash_on_the_same_data_dir_is_waited_for() {
    let mut lab = Lab::new();
    let machine_id = lab.machine(MAC);
    let size = 8 << 20;
    let image = lab.image("big", size as u64);
    let data = disk_image(size, 29);
    lab.upload(&image, &data);
    let tree = Tree::nvme_machine();
    let disk = tree.path("disk.img");
    std::fs::write(&disk, vec![0u8; size]).expect("disk");
    let token = lab.agent_token(&machine_id);
    let proxy = Proxy::start(lab.port);
    let config = write_config(
        lab.dir.path(),
        &proxy.base(),
        &token,
        tree.root(),
        &[("first", &disk)],
    );
    let job = lab.queue(&machine_id, &image, 1, "first", false);
    proxy.set(Mode::StallAfter(1 << 20));
    let child = agent(&config, &["--once", "--no-reboot", "--batch", "4"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let t = Instant::now();
    while proxy.mode() != Mode::Down {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "the transfer never stalled"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // Mid-transfer, the server goes away and comes back on the same data.
    lab.restart();
    proxy.set(Mode::Pass);
    let out = child.wait_with_output().expect("agent ends");
    let log = ok(out);
    assert!(log.contains("retrying"), "{log}");
    assert_eq!(std::fs::read(&disk).expect("disk"), data);
    assert_eq!(lab.job(&job)["state"], "running");
}

#[test]
fn a_mac_that_is_not_a_nic_of_this_machine_is_refused() {
    let lab = Lab::new();
    let machine_id = lab.machine("52:54:00:99:99:99");
    let token = lab.agent_token(&machine_id);
    let tree = Tree::nvme_machine();
    let text = format!(
        "server = \"{}\"\nmac = \"52:54:00:99:99:99\"\ntoken = \"{token}\"\nroot = \"{}\"\n",
        lab.base(),
        tree.root().display()
    );
    let config = lab.dir.path().join("wrong-mac.toml");
    std::fs::write(&config, text).expect("config");
    let out = agent(&config, &["--once", "--no-reboot"])
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not one of this machine's NICs"), "{err}");
    // Nothing was reported for it.
    let m = lab
        .get(&format!("/api/v1/machines/{machine_id}"), &lab.admin)
        .json(200);
    assert!(m["inventory"].is_null());
}

#[test]
fn the_kernel_command_line_configures_the_agent() {
    let lab = Lab::new();
    let machine_id = lab.machine(MAC);
    let token = lab.agent_token(&machine_id);
    let tree = Tree::nvme_machine();
    let cmdline = tree.path("cmdline");
    std::fs::write(
        &cmdline,
        format!(
            "BOOT_IMAGE=vmlinuz console=ttyS0 baas.server={} baas.mac={} baas.token={token} quiet\n",
            lab.base(),
            MAC.replace(':', "-")
        ),
    )
    .expect("cmdline");
    // No job: the agent registers and idles; kill it after the inventory
    // is in.
    let mut child = Command::new(env!("CARGO_BIN_EXE_baas-agent"))
        .arg("--cmdline")
        .arg(&cmdline)
        .arg("--root")
        .arg(tree.root())
        .args(["--no-reboot", "--poll-secs", "1"])
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let t = Instant::now();
    loop {
        let m = lab
            .get(&format!("/api/v1/machines/{machine_id}"), &lab.admin)
            .json(200);
        if !m["inventory"].is_null() {
            assert_eq!(m["inventory"]["disks"].as_array().map(Vec::len), Some(3));
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(30), "no inventory");
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().expect("kill");
    let _ = child.wait();
    // The subcommands read the same tree.
    let out = Command::new(env!("CARGO_BIN_EXE_baas-agent"))
        .args(["resolve", "first#2", "--root"])
        .arg(tree.root())
        .output()
        .expect("resolve");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("nvme0n1p2 "), "{text}");
}

#[test]
fn frames_corrupted_in_transit_are_fetched_again_and_never_written() {
    let lab = Lab::new();
    let machine_id = lab.machine(MAC);
    let size = 4 << 20;
    let image = lab.image("disk", size as u64);
    let data = disk_image(size, 31);
    lab.upload(&image, &data);
    let tree = Tree::nvme_machine();
    let disk = tree.path("disk.img");
    std::fs::write(&disk, vec![0u8; size]).expect("disk");
    let proxy = Proxy::start(lab.port);
    let config = write_config(
        lab.dir.path(),
        &proxy.base(),
        &lab.agent_token(&machine_id),
        tree.root(),
        &[("first", &disk)],
    );
    let job = lab.queue(&machine_id, &image, 1, "first", false);
    proxy.set(Mode::CorruptFrames(2));
    let log = ok(agent(&config, &["--once", "--no-reboot", "--batch", "4"])
        .output()
        .expect("run the agent"));
    assert_eq!(proxy.broken.load(std::sync::atomic::Ordering::Relaxed), 2);
    assert_eq!(std::fs::read(&disk).expect("disk"), data);
    assert_eq!(lab.job(&job)["state"], "running");
    // Every data chunk once, and the two corrupted ones again.
    let received: u64 = log
        .split_whitespace()
        .find_map(|w| w.strip_prefix("frame_bytes_received="))
        .and_then(|v| v.parse().ok())
        .expect("link totals in the log");
    let once = (size as u64 / 4 / u64::from(CHUNK_SIZE)) * (u64::from(CHUNK_SIZE) + 1);
    assert!(received > once, "{received} <= {once}: no refetch?");
}

fn link_total(log: &str, name: &str) -> u64 {
    let key = format!("{name}=");
    log.split_whitespace()
        .find_map(|w| w.strip_prefix(key.as_str()))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in the agent's link totals:\n{log}"))
}

/// A disk holding version A gets version C, A with every 50th 4 KiB block
/// rewritten: with deltas the binary moves several times fewer bytes (both
/// directions) than with `--no-deltas`, and the disk ends byte for byte C
/// both ways.
#[test]
fn scattered_changes_cross_as_deltas_several_times_smaller_than_whole_chunks() {
    let lab = Lab::new();
    let machine_id = lab.machine(MAC);
    let size = 4 << 20;
    let image = lab.image("disk", size as u64);
    let a = disk_image(size, 41);
    let mut c = a.clone();
    let noise = disk_image(64 * 1024, 42);
    for (k, block) in c.chunks_mut(4096).enumerate().filter(|(i, _)| i % 50 == 7) {
        block.copy_from_slice(&noise[(k % 16) * 4096..(k % 16 + 1) * 4096]);
    }
    lab.upload(&image, &a);
    lab.upload(&image, &c);
    let tree = Tree::nvme_machine();
    let disk = tree.path("disk.img");
    let config = write_config(
        lab.dir.path(),
        &lab.base(),
        &lab.agent_token(&machine_id),
        tree.root(),
        &[("first", &disk)],
    );
    let mut totals = Vec::new();
    for extra in [&["--no-deltas"][..], &[][..]] {
        std::fs::write(&disk, &a).expect("disk holds A");
        let job = lab.queue(&machine_id, &image, 2, "first", false);
        let args = [&["--once", "--no-reboot"][..], extra].concat();
        let log = ok(agent(&config, &args).output().expect("run the agent"));
        assert!(std::fs::read(&disk).expect("disk") == c, "{extra:?}");
        totals.push((
            link_total(&log, "frame_bytes_received") + link_total(&log, "fetch_request_bytes"),
            link_total(&log, "deltas_received"),
        ));
        lab.post(
            &format!("/api/v1/jobs/{job}/cancel"),
            &lab.admin,
            &serde_json::json!({}),
        )
        .json(200);
    }
    let (whole, delta) = (totals[0], totals[1]);
    assert_eq!(whole.1, 0, "--no-deltas asks for none");
    assert!(delta.1 > 0, "{totals:?}");
    assert!(delta.0 * 3 < whole.0, "{totals:?}");
}
