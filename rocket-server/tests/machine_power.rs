//! Power actions by hand over REST (`POST /api/v1/machines/{machine}/power`)
//! against a real QEMU's QMP socket (a QEMU with no machine at all, paused:
//! it starts in a fraction of a second): only moderators and admins may,
//! a machine without a power adapter is a 409 that says so, a bad action is
//! refused, and every outcome lands in the machine's history. Under
//! `CI=true` a missing `qemu-system-x86_64` fails.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use baas_core::model::MachineId;
use baas_core::Actor;
use common::TestApp;
use serde_json::json;

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
            "CI=true and qemu-system-x86_64 is missing"
        );
        eprintln!("!!!!! qemu-system-x86_64 is not installed: the power tests DID NOT RUN");
    }
    ok
}

/// Kills the QEMU when the test ends, however it ends.
struct Vm(Child);

impl Drop for Vm {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn qemu(qmp: &str) -> Vm {
    Vm(Command::new("qemu-system-x86_64")
        .args([
            "-machine", "none", "-display", "none", "-S", "-monitor", "none",
        ])
        .args(["-qmp", &format!("{qmp},server=on,wait=off")])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start qemu"))
}

/// `query-status` through the real QMP socket.
fn qmp_status(rt: &rocket::tokio::runtime::Runtime, address: &str) -> Option<String> {
    rt.block_on(baas_power::qmp::execute(address, "query-status"))
        .ok()
        .and_then(|v| v["status"].as_str().map(str::to_string))
}

fn history(app: &TestApp, machine: &str) -> Vec<String> {
    let id: MachineId = machine.parse().expect("id");
    app.baas
        .machine_history(&Actor::System, id)
        .expect("history")
        .into_iter()
        .map(|e| e.message)
        .collect()
}

#[test]
fn moderators_switch_a_qemu_through_qmp_and_it_is_recorded() {
    if !have_qemu() {
        return;
    }
    let app = TestApp::spawn();
    let sock = app.dir.path().join("qmp.sock");
    let address = format!("unix:{}", sock.display());
    let mut vm = qemu(&address);
    let rt = rocket::tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let t = Instant::now();
    while qmp_status(&rt, &address).is_none() {
        assert!(t.elapsed() < Duration::from_secs(30), "QMP never came up");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_ne!(qmp_status(&rt, &address).as_deref(), Some("running"));

    let vm_machine = app.machine("52:54:00:70:00:01");
    app.json(
        ureq::http::Method::PUT,
        &format!("/api/v1/machines/{vm_machine}/boot-config"),
        Some(&app.admin),
        &json!({"power": {"kind": "qmp", "address": address}}),
    )
    .expect(200);
    let manual = app.machine("52:54:00:70:00:02");
    let (_, user) = app.user("alice", "user");
    let (_, moderator) = app.user("mod", "moderator");
    let power = |m: &str, who: Option<&str>, action: &str| {
        app.post(
            &format!("/api/v1/machines/{m}/power"),
            who,
            &json!({ "action": action }),
        )
    };

    // Users, agents and strangers may not; nothing happens to the VM.
    power(&vm_machine, None, "on").expect_error(401, "unauthenticated");
    power(&vm_machine, Some(&user), "on").expect_error(403, "forbidden");
    let agent = app.agent_token(&vm_machine);
    power(&vm_machine, Some(&agent), "on").expect_error(403, "forbidden");
    assert_ne!(qmp_status(&rt, &address).as_deref(), Some("running"));
    // A bad action is refused before anything is done.
    let bad = power(&vm_machine, Some(&moderator), "explode");
    assert!(matches!(bad.status, 400 | 422), "{}", bad.text());
    assert!(history(&app, &vm_machine).is_empty());

    // On: QMP `cont`, the VM runs; by MAC as well as by id.
    let v = power("52:54:00:70:00:01", Some(&moderator), "on")
        .expect(200)
        .json();
    assert_eq!(v["action"], "on");
    assert_eq!(v["adapter"], "qmp");
    assert_eq!(v["machine"]["id"], vm_machine.as_str());
    assert_eq!(qmp_status(&rt, &address).as_deref(), Some("running"));
    power(&vm_machine, Some(&app.admin), "cycle").expect(200);
    assert_eq!(qmp_status(&rt, &address).as_deref(), Some("running"));

    // A machine without a power adapter: 409, saying so; recorded nowhere.
    let e = power(&manual, Some(&moderator), "cycle").expect_error(409, "conflict");
    let msg = e["error"]["message"].as_str().expect("message");
    assert!(msg.contains("no power adapter configured"), "{msg}");
    assert!(history(&app, &manual).is_empty());

    // Off: QMP `quit`, QEMU exits.
    power(&vm_machine, Some(&moderator), "off").expect(200);
    let t = Instant::now();
    while vm.0.try_wait().expect("wait").is_none() {
        assert!(t.elapsed() < Duration::from_secs(30), "QEMU did not quit");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Nothing listens any more: the adapter's failure is a 503, recorded.
    power(&vm_machine, Some(&moderator), "on").expect_error(503, "unavailable");

    // The same history over REST, for anyone who may see the machine.
    let events = app
        .get(
            &format!("/api/v1/machines/{vm_machine}/events"),
            Some(&user),
        )
        .expect(200)
        .json();
    assert_eq!(events[1]["kind"], "power", "{events}");
    assert_eq!(events[1]["message"], "power off by mod (qmp)", "{events}");
    app.get(
        &format!("/api/v1/machines/{vm_machine}/events"),
        Some(&agent),
    )
    .expect_error(403, "forbidden");

    let lines = history(&app, &vm_machine);
    assert_eq!(lines.len(), 4, "{lines:?}");
    assert!(
        lines[0].starts_with("power on by mod failed (qmp)"),
        "{lines:?}"
    );
    assert_eq!(lines[1], "power off by mod (qmp)");
    assert_eq!(lines[2], "power cycle by admin (qmp)");
    assert_eq!(lines[3], "power on by mod (qmp)");
}
