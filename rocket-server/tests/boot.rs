//! The boot path over HTTP: the iPXE chain and decision scripts (enrollment
//! on and off, accept, work to do, the local disk), the per-boot credential
//! in the kernel command line (scoped to its machine), the management OS
//! files installed by `baas-server admin install-mos`, the machines' power
//! and neutral settings, releases, and the power loop's timeline entries.

mod common;

use std::time::{Duration, Instant};

use baas_core::services::EnrollPolicy;
use clap::Parser;
use common::TestApp;
use serde_json::{json, Value};
use ureq::http::Method;

const MAC: &str = "52:54:00:b0:07:01";

/// `baas.token=...` out of a management-OS script.
fn token_of(script: &str) -> String {
    script
        .split_whitespace()
        .find_map(|w| w.strip_prefix("baas.token="))
        .unwrap_or_else(|| panic!("no baas.token in {script}"))
        .to_string()
}

fn boot(app: &TestApp, mac: &str, host: Option<&str>) -> String {
    let headers: Vec<(&str, &str)> = host.map(|h| ("Host", h)).into_iter().collect();
    let r = app
        .send(
            Method::GET,
            &format!("/boot/ipxe?mac={mac}"),
            None,
            &headers,
            None,
        )
        .expect(200);
    assert_eq!(r.header("cache-control"), Some("no-store"));
    let t = r.text();
    assert!(t.starts_with("#!ipxe\n"), "{t}");
    t
}

fn enrolling_app(mos: &std::path::Path) -> TestApp {
    let mos = mos.to_path_buf();
    TestApp::spawn_full(
        move |s| {
            s.mos_dir = Some(mos);
            s.mos_cmdline = "console=ttyS0 panic=-1".into();
            s.power_every = Some(Duration::from_millis(100));
        },
        |c| c.enroll = EnrollPolicy::Enroll,
    )
}

#[test]
fn ipxe_scripts_enroll_accept_and_boot_the_disk_or_the_management_os() {
    let mos = tempfile::tempdir().expect("dir");
    std::fs::write(mos.path().join("vmlinuz"), b"kernel bytes").expect("kernel");
    std::fs::write(mos.path().join("initrd.gz"), vec![7u8; 100_000]).expect("initrd");
    let app = enrolling_app(mos.path());

    // What DHCP hands iPXE: a chain to the decision with the NIC's MAC, at
    // the address the machine used.
    let chain = app
        .send(
            Method::GET,
            "/boot/chain.ipxe",
            None,
            &[("Host", "10.0.2.100")],
            None,
        )
        .expect(200)
        .text();
    assert!(
        chain.contains("chain --autofree http://10.0.2.100/boot/ipxe?mac=${net0/mac:hexhyp}"),
        "{chain}"
    );

    // An unknown MAC enrolls: the management OS, with the server address,
    // the MAC and a credential on the kernel command line.
    let s = boot(&app, "52-54-00-B0-07-01", Some("10.0.2.100"));
    assert!(s.contains("kernel http://10.0.2.100/boot/mos/vmlinuz initrd=initrd.gz console=ttyS0 panic=-1 baas.server=http://10.0.2.100 baas.mac=52:54:00:b0:07:01 baas.token=baas_"), "{s}");
    assert!(
        s.contains("initrd http://10.0.2.100/boot/mos/initrd.gz"),
        "{s}"
    );
    assert!(s.contains("enrolling"), "{s}");
    let m = app
        .get(&format!("/api/v1/machines/{MAC}"), Some(&app.admin))
        .expect(200)
        .json();
    assert_eq!(m["state"], "pending");
    assert_eq!(m["power"], "manual");
    assert_eq!(m["neutral"], "keep");
    let machine = m["id"].as_str().expect("id").to_string();

    // The credential is this machine's agent, and nothing more.
    let token = token_of(&s);
    let inventory = json!({"disks": [], "nics": [{"name": "eth0", "mac": MAC, "speed_mbps": null}],
        "memory_bytes": 1, "cpu_model": "qemu", "cpus": 1});
    app.post(
        &format!("/api/v1/agent/machines/{machine}/inventory"),
        Some(&token),
        &inventory,
    )
    .expect(200);
    let other = app.machine("52:54:00:b0:07:02");
    app.get(&format!("/api/v1/machines/{other}"), Some(&token))
        .expect_error(404, "not_found");
    app.get("/api/v1/images", Some(&token))
        .expect_error(403, "forbidden");

    // Pending machines take no jobs; an admin accepts; nothing to do: the disk.
    let (_, user) = app.user("alice", "user");
    let image = app.post_image(&user, "img", 1 << 20);
    app.upload(&user, &image, &[3u8; 70_000]).expect(201);
    app.boot_queue(&user, &machine, &image, 1)
        .expect_error(409, "conflict");
    app.post(
        &format!("/api/v1/machines/{MAC}/accept"),
        Some(&user),
        &json!({}),
    )
    .expect_error(403, "forbidden");
    let m = app
        .post(
            &format!("/api/v1/machines/{MAC}/accept"),
            Some(&app.admin),
            &json!({}),
        )
        .expect(200)
        .json();
    assert_eq!(m["state"], "ready");
    let s = boot(&app, "52%3A54%3A00%3Ab0%3A07%3A01", None);
    assert!(
        s.contains("sanboot --no-describe --drive 0x80 || exit"),
        "{s}"
    );
    assert!(!s.contains("kernel"), "{s}");

    // Work to do: the management OS again, with a fresh credential.
    let job = app
        .post(
            &format!("/api/v1/machines/{machine}/jobs"),
            Some(&user),
            &json!({"image_id": image, "version": 1, "hold_seconds": 600}),
        )
        .expect(201)
        .json();
    assert_eq!(job["hold_seconds"], 600);
    let job_id = job["id"].as_str().expect("job").to_string();
    let s = boot(&app, MAC, None);
    assert!(s.contains(&format!("job {job_id} is next")), "{s}");
    assert_ne!(token_of(&s), token, "one credential per boot");
    assert!(
        s.contains(&format!("baas.server={}", app.base)),
        "the Host header: {s}"
    );
    app.post(
        &format!("/api/v1/machines/{machine}/jobs"),
        Some(&user),
        &json!({"image_id": image, "version": 1, "hold_seconds": 100 * 24 * 3600}),
    )
    .expect_error(400, "invalid_input");
    app.post(
        &format!("/api/v1/jobs/{job_id}/release"),
        Some(&user),
        &json!({}),
    )
    .expect_error(409, "conflict");
    let events: Vec<Value> = app
        .get(&format!("/api/v1/jobs/{job_id}/events"), Some(&user))
        .expect(200)
        .json()
        .as_array()
        .expect("events")
        .clone();
    assert!(events.iter().any(|e| e["kind"] == "boot"), "{events:?}");

    // The management OS's files; nothing else is served from there.
    let k = app.get("/boot/mos/vmlinuz", None).expect(200);
    assert_eq!(k.body, b"kernel bytes");
    assert_eq!(
        app.get("/boot/mos/initrd.gz", None).expect(200).body.len(),
        100_000
    );
    app.get("/boot/mos/..%2Fadmin-token", None)
        .expect_error(404, "not_found");
    app.get("/boot/mos/admin-token", None)
        .expect_error(404, "not_found");

    // Bad MACs are a clear 400; retired machines boot their disk.
    app.get("/boot/ipxe?mac=nonsense", None)
        .expect_error(400, "invalid_input");
    app.get("/boot/ipxe", None)
        .expect_error(400, "invalid_input");
    app.get("/boot/ipxe?mac=01:00:5e:00:00:01", None)
        .expect_error(400, "invalid_input");
    app.post(
        &format!("/api/v1/jobs/{job_id}/cancel"),
        Some(&user),
        &json!({}),
    )
    .expect(200);
    app.post(
        &format!("/api/v1/machines/{MAC}/retire"),
        Some(&app.admin),
        &json!({}),
    )
    .expect(200);
    let s = boot(&app, MAC, None);
    assert!(s.contains("retired") && s.contains("sanboot"), "{s}");
}

#[test]
fn unknown_machines_are_ignored_by_default_and_no_mos_is_a_clear_404() {
    let app = TestApp::spawn();
    let s = boot(&app, "52:54:00:b0:07:09", None);
    assert!(
        s.contains("enrollment is off") && s.contains("sanboot"),
        "{s}"
    );
    app.get("/api/v1/machines/52:54:00:b0:07:09", Some(&app.admin))
        .expect_error(404, "not_found");
    let e = app
        .get("/boot/mos/initrd.gz", None)
        .expect_error(404, "not_found");
    assert!(
        e["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("install-mos")),
        "{e}"
    );
}

#[test]
fn power_settings_and_the_power_loop_record_every_cycle_in_the_timeline() {
    let mos = tempfile::tempdir().expect("dir");
    let app = enrolling_app(mos.path());
    let machine = app.machine(MAC);
    let url = format!("/api/v1/machines/{machine}/boot-config");
    let r = app
        .json(
            Method::PUT,
            &url,
            Some(&app.admin),
            &json!({"power": {"kind": "ipmi", "host": "bmc7", "username": "root", "password": "hunter2"},
                    "neutral": "wipe"}),
        )
        .expect(200);
    assert!(
        !r.text().contains("hunter2"),
        "the BMC password is never shown"
    );
    let m = r.json();
    assert_eq!(m["power"], "ipmi");
    assert_eq!(m["power_address"], "root@bmc7");
    assert_eq!(m["neutral"], "wipe");
    for bad in [
        json!({"power": {"kind": "qmp", "address": "/tmp/no-scheme"}}),
        json!({"power": {"kind": "ipmi", "host": "-oProxyCommand=x", "username": "u", "password": "p"}}),
        json!({"power": {"kind": "manual"}, "neutral": "setup:not-a-uuid"}),
        json!({"power": {"kind": "telnet"}}),
    ] {
        app.json(Method::PUT, &url, Some(&app.admin), &bad)
            .expect_error(400, "invalid_input");
    }

    // A QMP socket nobody listens on: the loop tries once and says the job
    // waits for the next boot.
    let sock = mos.path().join("nobody.qmp");
    app.json(
        Method::PUT,
        &url,
        Some(&app.admin),
        &json!({"power": {"kind": "qmp", "address": format!("unix:{}", sock.display())}}),
    )
    .expect(200);
    let (_, user) = app.user("bob", "user");
    let image = app.post_image(&user, "img", 1 << 20);
    app.upload(&user, &image, &[5u8; 70_000]).expect(201);
    let job = app
        .boot_queue(&user, &machine, &image, 1)
        .expect(201)
        .json()["id"]
        .as_str()
        .expect("job")
        .to_string();
    let t = Instant::now();
    let messages = loop {
        let events = app
            .get(&format!("/api/v1/jobs/{job}/events"), Some(&user))
            .expect(200)
            .json();
        let power: Vec<String> = events
            .as_array()
            .expect("events")
            .iter()
            .filter(|e| e["kind"] == "power")
            .map(|e| e["message"].as_str().unwrap_or("").to_string())
            .collect();
        if power.len() >= 2 {
            break power;
        }
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "no power events: {events}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(messages[0].contains("to start the job"), "{messages:?}");
    assert!(
        messages[1].contains("failed") && messages[1].contains("next boot"),
        "{messages:?}"
    );
    std::thread::sleep(Duration::from_millis(400));
    let n = app
        .get(&format!("/api/v1/jobs/{job}/events"), Some(&user))
        .expect(200)
        .json()
        .as_array()
        .expect("events")
        .iter()
        .filter(|e| e["kind"] == "power")
        .count();
    assert_eq!(n, 2, "one attempt per job start");
}

#[test]
fn install_mos_puts_the_kernel_and_initramfs_in_the_data_directory() {
    let dir = tempfile::tempdir().expect("dir");
    let k = dir.path().join("k");
    let i = dir.path().join("i");
    std::fs::write(&k, b"kernel").expect("k");
    std::fs::write(&i, vec![1u8; 4096]).expect("i");
    let data = dir.path().join("data");
    let run = |args: &[&str]| {
        let mut argv = vec!["baas-server", "--data-dir", data.to_str().expect("utf-8")];
        argv.extend_from_slice(args);
        baas_server::cli::run(baas_server::cli::Cli::parse_from(argv))
    };
    run(&[
        "admin",
        "install-mos",
        "--kernel",
        k.to_str().expect("k"),
        "--initrd",
        i.to_str().expect("i"),
    ])
    .expect("install-mos");
    assert_eq!(
        std::fs::read(data.join("mos/vmlinuz")).expect("vmlinuz"),
        b"kernel"
    );
    assert_eq!(
        std::fs::read(data.join("mos/initrd.gz"))
            .expect("initrd")
            .len(),
        4096
    );
    let empty = dir.path().join("empty");
    std::fs::write(&empty, b"").expect("empty");
    let e = run(&[
        "admin",
        "install-mos",
        "--kernel",
        empty.to_str().expect("e"),
        "--initrd",
        i.to_str().expect("i"),
    ])
    .expect_err("an empty kernel");
    assert!(e.to_string().contains("empty"), "{e}");
    assert_eq!(
        std::fs::read(data.join("mos/vmlinuz")).expect("vmlinuz"),
        b"kernel",
        "unchanged"
    );
    let e = run(&["--unknown-machines", "maybe", "admin", "gc"]).expect_err("bad policy");
    assert!(format!("{e:#}").contains("enroll"), "{e:#}");
}

#[test]
fn jobs_go_to_any_idle_machine_that_fits_or_say_why_none_does() {
    let app = TestApp::spawn();
    let m = app
        .post(
            "/api/v1/machines",
            Some(&app.admin),
            &json!({"mac": "52:54:00:b0:07:21", "name": "lab-1", "pool": "lab"}),
        )
        .expect(201)
        .json()["id"]
        .as_str()
        .expect("id")
        .to_string();
    let (_, user) = app.user("carol", "user");
    let image = app.post_image(&user, "img", 1 << 20);
    app.upload(&user, &image, &[3u8; 70_000]).expect(201);
    let list = app
        .get(
            "/api/v1/placement?pool=lab&min_disk_bytes=1000",
            Some(&user),
        )
        .expect(200)
        .json();
    assert_eq!(list[0]["fits"], false, "{list}");
    assert!(
        list[0]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("inventory")),
        "{list}"
    );
    app.get("/api/v1/placement?arch=x%20y", Some(&user))
        .expect_error(400, "invalid_input");
    let job = app
        .post(
            "/api/v1/jobs",
            Some(&user),
            &json!({"pool": "lab", "arch": "amd64", "image_id": image, "version": 1, "hold_seconds": 60}),
        )
        .expect(201)
        .json();
    assert_eq!(job["machine_id"], m.as_str());
    assert_eq!(job["hold_seconds"], 60);
    let waiting = app
        .post(
            "/api/v1/jobs",
            Some(&user),
            &json!({"pool": "lab", "image_id": image}),
        )
        .expect(202);
    let w = waiting.json();
    assert_eq!(
        waiting.header("location"),
        Some(format!("/api/v1/placements/{}", w["id"].as_str().expect("id")).as_str())
    );
    assert_eq!(w["state"], "waiting", "{w}");
    assert!(
        w["reason"]
            .as_str()
            .is_some_and(|m| m.contains("lab-1: busy")),
        "{w}"
    );
    app.post(
        &format!(
            "/api/v1/placements/{}/cancel",
            w["id"].as_str().expect("id")
        ),
        Some(&user),
        &json!({}),
    )
    .expect(200);
    let list = app
        .get("/api/v1/placement?pool=lab", Some(&user))
        .expect(200)
        .json();
    assert!(
        list[0]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("queued")),
        "{list}"
    );
    app.post("/api/v1/jobs", Some(&user), &json!({"pool": "lab"}))
        .expect_error(422, "invalid_input");

    // A window that opens in an hour: queued, but not booted for yet.
    app.post(
        &format!("/api/v1/jobs/{}/cancel", job["id"].as_str().expect("id")),
        Some(&user),
        &json!({}),
    )
    .expect(200);
    let later = app
        .post(
            &format!("/api/v1/machines/{m}/jobs"),
            Some(&user),
            &json!({"image_id": image, "version": 1, "start_after_seconds": 3600}),
        )
        .expect(201)
        .json();
    assert!(later["not_before"].is_string(), "{later}");
    app.post(
        &format!("/api/v1/machines/{m}/accept"),
        Some(&app.admin),
        &json!({}),
    )
    .expect(200);
    let s = boot(&app, "52:54:00:b0:07:21", None);
    assert!(s.contains("starts at") && s.contains("sanboot"), "{s}");
}

/// A placement no machine fits now waits, says why, and is bound when a
/// machine frees up or joins; it is cancelled while waiting; what can never
/// be valid is refused with 422.
#[test]
fn placements_wait_say_why_and_bind_when_a_machine_fits() {
    let app = TestApp::spawn_with(|s| s.power_every = None);
    let lab1 = app
        .post(
            "/api/v1/machines",
            Some(&app.admin),
            &json!({"mac": "52:54:00:b0:08:01", "name": "lab-1", "pool": "lab"}),
        )
        .expect(201)
        .json()["id"]
        .as_str()
        .expect("id")
        .to_string();
    let (_, alice) = app.user("alice", "user");
    let (_, bob) = app.user("bob", "user");
    let img_a = app.post_image(&alice, "a", 1 << 20);
    app.upload(&alice, &img_a, &[5u8; 50_000]).expect(201);
    let img_b = app.post_image(&bob, "b", 1 << 20);
    app.upload(&bob, &img_b, &[6u8; 50_000]).expect(201);
    let first = app
        .post(
            "/api/v1/jobs",
            Some(&alice),
            &json!({"pool": "lab", "image_id": img_a, "version": 1}),
        )
        .expect(201)
        .json();
    assert_eq!(first["machine_id"], lab1.as_str());
    // Bob waits behind alice; and for a 64 GiB disk nobody has.
    let waiting = app
        .post(
            "/api/v1/jobs",
            Some(&bob),
            &json!({"pool": "lab", "image_id": img_b, "version": 1, "hold_seconds": 600}),
        )
        .expect(202)
        .json();
    let id = waiting["id"].as_str().expect("id").to_string();
    assert_eq!(waiting["job_id"], Value::Null);
    let big = app
        .post(
            "/api/v1/jobs",
            Some(&bob),
            &json!({"image_id": img_b, "min_disk_bytes": 64u64 << 30}),
        )
        .expect(202)
        .json();
    assert!(
        big["reason"]
            .as_str()
            .is_some_and(|r| r.contains("no accepted machine has a disk of at least 64 GiB")),
        "{big}"
    );
    let list = app
        .get("/api/v1/placements", Some(&alice))
        .expect(200)
        .json();
    let ids: Vec<&str> = list
        .as_array()
        .expect("list")
        .iter()
        .map(|p| p["id"].as_str().expect("id"))
        .collect();
    assert_eq!(
        ids,
        [id.as_str(), big["id"].as_str().expect("id")],
        "oldest first"
    );
    assert!(
        list[0]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("only fitting machine is busy") && r.contains("lab-1")),
        "{list}"
    );
    app.get(&format!("/api/v1/placements/{id}"), Some(&alice))
        .expect_error(404, "not_found");
    app.get(&format!("/api/v1/jobs/{id}"), Some(&bob))
        .expect_error(404, "not_found");
    let e = app
        .post(&format!("/api/v1/jobs/{id}/cancel"), Some(&bob), &json!({}))
        .expect_error(409, "conflict");
    assert!(
        e["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("placement")),
        "{e}"
    );

    // Alice cancels: bob's placement becomes a job on lab-1, same id.
    app.post(
        &format!("/api/v1/jobs/{}/cancel", first["id"].as_str().expect("id")),
        Some(&alice),
        &json!({}),
    )
    .expect(200);
    let job = app
        .get(&format!("/api/v1/jobs/{id}"), Some(&bob))
        .expect(200)
        .json();
    assert_eq!(job["machine_id"], lab1.as_str());
    assert_eq!(job["state"], "queued");
    assert_eq!(job["hold_seconds"], 600);
    let p = app
        .get(&format!("/api/v1/placements/{id}"), Some(&bob))
        .expect(200)
        .json();
    assert_eq!(
        (p["state"].as_str(), p["job_id"].as_str()),
        (Some("bound"), Some(id.as_str()))
    );
    app.post(
        &format!("/api/v1/placements/{id}/cancel"),
        Some(&bob),
        &json!({}),
    )
    .expect_error(409, "conflict");

    // A machine that joins the pool takes the next one at its first boot.
    let late = app
        .post(
            "/api/v1/jobs",
            Some(&alice),
            &json!({"pool": "lab", "image_id": img_a, "version": 1}),
        )
        .expect(202)
        .json();
    let late_id = late["id"].as_str().expect("id");
    app.post(
        "/api/v1/machines",
        Some(&app.admin),
        &json!({"mac": "52:54:00:b0:08:02", "name": "lab-2", "pool": "lab"}),
    )
    .expect(201);
    let script = boot(&app, "52:54:00:b0:08:02", None);
    assert!(
        script.contains(&format!("job {late_id} is next")) && script.contains("baas.token="),
        "{script}"
    );

    // Cancelled while waiting: gone from the list, never bound.
    let c = app
        .post(
            &format!(
                "/api/v1/placements/{}/cancel",
                big["id"].as_str().expect("id")
            ),
            Some(&bob),
            &json!({}),
        )
        .expect(200)
        .json();
    assert_eq!(c["state"], "cancelled");
    assert!(
        c["error"].as_str().is_some_and(|e| e.contains("bob")),
        "{c}"
    );
    let list = app.get("/api/v1/placements", Some(&bob)).expect(200).json();
    assert_eq!(list, json!([]));

    // Input no machine could ever satisfy: 422, naming the field.
    for (body, field) in [
        (json!({"arch": "x y", "image_id": img_a}), "arch"),
        (json!({"pool": "a\u{7}b", "image_id": img_a}), "pool"),
        (
            json!({"image_id": img_a, "hold_seconds": 0}),
            "hold_seconds",
        ),
    ] {
        let e = app
            .post("/api/v1/jobs", Some(&alice), &body)
            .expect_error(422, "invalid_input");
        assert_eq!(e["error"]["field"], field, "{e}");
    }
    assert_eq!(
        app.get("/api/v1/placements", Some(&alice))
            .expect(200)
            .json(),
        json!([]),
        "refused requests leave nothing behind"
    );
}

/// The enrollment policy is an admin setting: `--unknown-machines` only
/// seeds it; an admin flips it over REST and the very next boot decision
/// follows, without a restart; a restart keeps what the admin chose.
#[test]
fn enrollment_policy_is_an_admin_setting_effective_at_the_next_boot() {
    let mos = tempfile::tempdir().expect("dir");
    let app = TestApp::spawn_with(|s| s.mos_dir = Some(mos.path().to_path_buf()));
    let settings = app
        .get("/api/v1/admin/settings", Some(&app.admin))
        .expect(200)
        .json();
    assert_eq!(settings, json!({"unknown_machines": "ignore"}));
    let s = boot(&app, "52:54:00:b0:09:01", None);
    assert!(
        s.contains("enrollment is off") && s.contains("sanboot"),
        "{s}"
    );
    let (_, moderator) = app.user("mo", "moderator");
    app.json(
        Method::PUT,
        "/api/v1/admin/settings",
        Some(&moderator),
        &json!({"unknown_machines": "enroll"}),
    )
    .expect_error(403, "forbidden");
    let e = app
        .json(
            Method::PUT,
            "/api/v1/admin/settings",
            Some(&app.admin),
            &json!({"unknown_machines": "sometimes"}),
        )
        .expect_error(400, "invalid_input");
    assert_eq!(e["error"]["field"], "unknown_machines", "{e}");
    app.json(
        Method::PUT,
        "/api/v1/admin/settings",
        Some(&app.admin),
        &json!({"unknown": "enroll"}),
    )
    .expect(400);
    let now = app
        .json(
            Method::PUT,
            "/api/v1/admin/settings",
            Some(&app.admin),
            &json!({"unknown_machines": "enroll"}),
        )
        .expect(200)
        .json();
    assert_eq!(now, json!({"unknown_machines": "enroll"}));
    let s = boot(&app, "52:54:00:b0:09:02", None);
    assert!(
        s.contains("is enrolling") && s.contains("baas.token="),
        "{s}"
    );
    app.get("/api/v1/machines/52:54:00:b0:09:02", Some(&app.admin))
        .expect(200);
    // The same data directory opened again, with the flag's default
    // (`ignore`): the stored setting stays.
    let reopened = common::open_store(app.dir.path());
    baas_server::cli::bootstrap(&reopened, app.dir.path()).expect("bootstrap");
    assert_eq!(
        reopened
            .init_settings(&baas_core::Actor::System)
            .expect("settings")
            .unknown_machines,
        EnrollPolicy::Enroll
    );
}

/// Each boot decision revokes the machine's earlier per-boot credentials,
/// whatever it decides: the credential of boot 1 gets 401 after boot 2's
/// decision, and a dead agent's long poll takes no job.
#[test]
fn a_boot_decision_revokes_the_credentials_of_earlier_boots() {
    let mos = tempfile::tempdir().expect("dir");
    let app = enrolling_app(mos.path());
    let mac = "52:54:00:b0:0a:01";
    let next_job = |token: &str, wait: u32| {
        app.get(
            &format!("/api/v1/agent/machines/{mac}/next-job?wait_ms={wait}"),
            Some(token),
        )
    };
    // Boot 1 enrolls: its credential works (no work while pending).
    let boot1 = token_of(&boot(&app, mac, None));
    next_job(&boot1, 0).expect(204);
    // An admin-issued agent credential is not a boot credential.
    let machine = app
        .post(
            &format!("/api/v1/machines/{mac}/accept"),
            Some(&app.admin),
            &json!({}),
        )
        .expect(200)
        .json()["id"]
        .as_str()
        .expect("id")
        .to_string();
    let issued = app.agent_token(&machine);
    let (_, user) = app.user("dora", "user");
    let image = app.post_image(&user, "img", 1 << 20);
    app.upload(&user, &image, &[9u8; 40_000]).expect(201);
    let first = app
        .boot_queue(&user, &machine, &image, 1)
        .expect(201)
        .json();

    // Boot 2 (work to do): boot 1's credential is dead.
    let boot2 = token_of(&boot(&app, mac, None));
    assert_ne!(boot1, boot2);
    next_job(&boot1, 0).expect_error(401, "unauthenticated");
    app.get(&format!("/api/v1/machines/{machine}"), Some(&boot1))
        .expect_error(401, "unauthenticated");

    // Boot 2's agent waits in a long poll for work that is not there yet;
    // then the machine boots again (nothing to do: its disk), which kills
    // boot 2's credential, and only then is a job queued. The waiting poll
    // must not take it.
    app.post(
        &format!("/api/v1/jobs/{}/cancel", first["id"].as_str().expect("id")),
        Some(&user),
        &json!({}),
    )
    .expect(200);
    let waiting = std::thread::scope(|scope| {
        let poll = scope.spawn(|| next_job(&boot2, 3000));
        let s = boot(&app, mac, None);
        assert!(
            s.contains("nothing to do") && !s.contains("baas.token="),
            "{s}"
        );
        let job = app
            .boot_queue(&user, &machine, &image, 1)
            .expect(201)
            .json();
        let got = poll.join().expect("poll thread");
        assert_eq!(got.status, 401, "the dead agent's poll: {}", got.text());
        job
    });
    let id = waiting["id"].as_str().expect("id");
    let job = app
        .get(&format!("/api/v1/jobs/{id}"), Some(&user))
        .expect(200)
        .json();
    assert_eq!(job["state"], "queued", "nobody took it");
    // The next boot's agent does; the admin-issued credential still works.
    let boot4 = token_of(&boot(&app, mac, None));
    let taken = next_job(&boot4, 0).expect(200).json();
    assert_eq!(taken["id"], id);
    next_job(&boot2, 0).expect_error(401, "unauthenticated");
    app.get(&format!("/api/v1/machines/{machine}"), Some(&issued))
        .expect(200);
}
