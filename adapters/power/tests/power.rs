//! The power adapters against real controllers: a real QEMU's QMP on a unix
//! and a TCP socket, and `ipmitool`'s command line (a stand-in `ipmitool`
//! script records the exact argv and environment it was run with, as no
//! BMC exists here). Under `CI=true` a missing `qemu-system-x86_64` fails.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use baas_core::model::*;
use baas_core::ports::{PowerAction, PowerControl, PowerState};
use baas_core::ErrorKind;
use baas_power::LabPower;

fn machine(power: PowerConfig) -> Machine {
    Machine {
        id: MachineId(uuid::Uuid::from_u128(7)),
        mac: "52:54:00:00:00:07".parse().expect("mac"),
        name: "m7".into(),
        arch: Arch::X86_64,
        pool: None,
        state: MachineState::Ready,
        inventory: None,
        last_seen: None,
        created_at: Timestamp(0),
        boot: MachineBoot {
            power,
            neutral: NeutralState::Keep,
        },
    }
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
            "CI=true and qemu-system-x86_64 is missing"
        );
        eprintln!("!!!!! qemu-system-x86_64 is not installed: the QMP tests DID NOT RUN");
    }
    ok
}

/// A QEMU with no machine at all, paused, its QMP at `qmp`.
fn qemu(qmp: &str) -> Child {
    Command::new("qemu-system-x86_64")
        .args([
            "-machine", "none", "-display", "none", "-S", "-monitor", "none",
        ])
        .args(["-qmp", &format!("{qmp},server=on,wait=off")])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start qemu")
}

async fn until_listening(power: &LabPower, m: &Machine) {
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(30) {
        if power.state(m).await.ok() == Some(PowerState::Off) {
            // Off: either not up yet or paused; try a real command.
            if baas_power::qmp::execute(
                match &m.boot.power {
                    PowerConfig::Qmp { address } => address,
                    _ => unreachable!(),
                },
                "query-status",
            )
            .await
            .is_ok()
            {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("QMP never came up");
}

async fn qmp_round(address: String, mut vm: Child) {
    let power = LabPower::default();
    let m = machine(PowerConfig::Qmp { address });
    until_listening(&power, &m).await;
    assert_eq!(
        power.state(&m).await.expect("state"),
        PowerState::Off,
        "-S: paused"
    );
    power.apply(&m, PowerAction::On).await.expect("cont");
    assert_eq!(power.state(&m).await.expect("state"), PowerState::On);
    power
        .apply(&m, PowerAction::Cycle)
        .await
        .expect("system_reset");
    power
        .apply(&m, PowerAction::SoftOff)
        .await
        .expect("system_powerdown");
    power.apply(&m, PowerAction::Off).await.expect("quit");
    let t = Instant::now();
    let status = loop {
        if let Some(s) = vm.try_wait().expect("wait") {
            break s;
        }
        assert!(t.elapsed() < Duration::from_secs(30), "QEMU did not quit");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "quit ends QEMU cleanly: {status}");
    assert_eq!(
        power.state(&m).await.expect("state"),
        PowerState::Off,
        "nothing listening: off"
    );
    let e = power.apply(&m, PowerAction::Cycle).await.expect_err("gone");
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e:?}");
}

#[tokio::test]
async fn qmp_over_a_unix_socket_drives_a_real_qemu() {
    if !have_qemu() {
        return;
    }
    let dir = tempfile::tempdir().expect("dir");
    let sock = dir.path().join("qmp.sock");
    let address = format!("unix:{}", sock.display());
    let vm = qemu(&address);
    qmp_round(address, vm).await;
}

#[tokio::test]
async fn qmp_over_tcp_drives_a_real_qemu() {
    if !have_qemu() {
        return;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let address = format!("tcp:127.0.0.1:{port}");
    let vm = qemu(&address);
    qmp_round(address, vm).await;
}

/// A stand-in `ipmitool` that records its argv and `IPMI_PASSWORD`, then
/// answers like the real one.
fn fake_ipmitool(dir: &Path, body: &str) -> String {
    let path = dir.join("ipmitool");
    let log = dir.join("calls");
    std::fs::write(
        &path,
        format!(
            "#!/bin/sh\nprintf '%s\\n' \"$*|$IPMI_PASSWORD\" >> {}\n{body}\n",
            log.display()
        ),
    )
    .expect("write the script");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    path.display().to_string()
}

#[tokio::test]
async fn ipmi_runs_ipmitool_with_the_exact_argv_and_the_password_in_its_environment() {
    let dir = tempfile::tempdir().expect("dir");
    let program = fake_ipmitool(
        dir.path(),
        r#"case "$*" in *status) echo "Chassis Power is on";; *) echo "Chassis Power Control: ok";; esac"#,
    );
    let power = LabPower {
        ipmitool: program,
        ..LabPower::default()
    };
    let m = machine(PowerConfig::Ipmi {
        host: "bmc7.lab".into(),
        username: "admin".into(),
        password: "s3cret pw".into(),
    });
    for a in [
        PowerAction::Cycle,
        PowerAction::On,
        PowerAction::Off,
        PowerAction::SoftOff,
    ] {
        power.apply(&m, a).await.expect("apply");
    }
    assert_eq!(power.state(&m).await.expect("state"), PowerState::On);
    let calls = std::fs::read_to_string(dir.path().join("calls")).expect("calls");
    let want: Vec<String> = ["cycle", "on", "off", "soft", "status"]
        .iter()
        .map(|w| format!("-I lanplus -H bmc7.lab -U admin -E chassis power {w}|s3cret pw"))
        .collect();
    assert_eq!(calls.lines().collect::<Vec<_>>(), want);
    assert_eq!(
        baas_power::ipmi::argv("bmc7.lab", "admin", "cycle"),
        ["-I", "lanplus", "-H", "bmc7.lab", "-U", "admin", "-E", "chassis", "power", "cycle"],
        "the password is never on the command line"
    );
}

#[tokio::test]
async fn ipmi_failures_and_hangs_are_unavailable() {
    let dir = tempfile::tempdir().expect("dir");
    let failing = fake_ipmitool(
        dir.path(),
        "echo 'Unable to establish IPMI v2 session' >&2; exit 1",
    );
    let m = machine(PowerConfig::Ipmi {
        host: "bmc".into(),
        username: "u".into(),
        password: "p".into(),
    });
    let power = LabPower {
        ipmitool: failing,
        ..LabPower::default()
    };
    let e = power
        .apply(&m, PowerAction::Cycle)
        .await
        .expect_err("fails");
    assert_eq!(e.kind(), ErrorKind::Unavailable);
    assert!(
        e.message().contains("Unable to establish"),
        "{}",
        e.message()
    );

    let dir2 = tempfile::tempdir().expect("dir");
    let hanging = fake_ipmitool(dir2.path(), "exec sleep 30");
    let power = LabPower {
        ipmitool: hanging,
        timeout: Duration::from_millis(300),
    };
    let e = power
        .apply(&m, PowerAction::Cycle)
        .await
        .expect_err("times out");
    assert_eq!(e.kind(), ErrorKind::Unavailable);

    let power = LabPower {
        ipmitool: dir.path().join("missing").display().to_string(),
        ..LabPower::default()
    };
    let e = power
        .apply(&m, PowerAction::On)
        .await
        .expect_err("no program");
    assert_eq!(e.kind(), ErrorKind::Unavailable);
}

#[tokio::test]
async fn manual_machines_have_no_power_control() {
    let power = LabPower::default();
    let m = machine(PowerConfig::Manual);
    let e = power
        .apply(&m, PowerAction::Cycle)
        .await
        .expect_err("manual");
    assert_eq!(e.kind(), ErrorKind::Conflict);
    assert_eq!(power.state(&m).await.expect("state"), PowerState::Unknown);
}
