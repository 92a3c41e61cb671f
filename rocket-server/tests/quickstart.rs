//! The `baas-server` binary itself: first start on an empty data directory
//! (admin token file, mode 0600), the `admin` commands, and the original
//! quickstart (`tests/quickstart.sh`, bash + curl + jq) run against it.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_baas-server");

/// A running `baas-server`, killed when dropped.
struct Server {
    child: Child,
    base: String,
    log: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// `baas-server` with `args`, no `BAAS_*` variables from the environment.
fn command(data_dir: &Path) -> Command {
    let mut c = Command::new(BIN);
    for (k, _) in std::env::vars() {
        if k.starts_with("BAAS_") {
            c.env_remove(k);
        }
    }
    c.arg("--data-dir").arg(data_dir);
    c
}

fn run(data_dir: &Path, args: &[&str]) -> Output {
    let out = command(data_dir)
        .args(args)
        .output()
        .expect("baas-server runs");
    assert!(
        out.status.success(),
        "baas-server {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Starts `baas-server serve`; the listener is set by flags, or (with
/// `by_env`) by `BAAS_BIND` and `BAAS_PORT`.
fn start(data_dir: &Path, extra: &[&str], by_env: bool) -> Server {
    let port = free_port();
    let log = data_dir.with_extension("log");
    let log_file = std::fs::File::create(&log).expect("log file");
    let mut cmd = command(data_dir);
    cmd.arg("serve");
    if by_env {
        cmd.env("BAAS_BIND", "127.0.0.1")
            .env("BAAS_PORT", port.to_string());
    } else {
        cmd.args(["--bind", "127.0.0.1", "--port", &port.to_string()]);
    }
    let child = cmd
        .args(extra)
        .stdout(Stdio::null())
        .stderr(log_file)
        .spawn()
        .expect("baas-server starts");
    let server = Server {
        child,
        base: format!("http://127.0.0.1:{port}"),
        log,
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let up = ureq::get(format!("{}/healthz", server.base))
            .call()
            .is_ok_and(|r| r.status() == 200);
        if up {
            return server;
        }
        assert!(
            Instant::now() < deadline,
            "the server did not come up: {}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn have(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn first_start_writes_the_admin_token_and_admin_commands_work() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().expect("temp dir");
    let data = tmp.path().join("data");

    // Admin commands on a fresh store: no bootstrap admin (only `serve`
    // bootstraps, and only an empty store).
    let id = run(
        &data,
        &["admin", "create-user", "mod", "--role", "moderator"],
    );
    let id = String::from_utf8_lossy(&id.stdout).trim().to_string();
    assert_eq!(id.len(), 36, "prints the user id: {id}");
    let secret = run(&data, &["admin", "create-token", "mod", "--name", "ci"]);
    let secret = String::from_utf8_lossy(&secret.stdout).trim().to_string();
    assert!(secret.starts_with("baas_"));
    let bad = command(&data)
        .args(["admin", "create-user", "x", "--role", "administrator"])
        .output()
        .expect("runs");
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("administrator"));

    let server = start(&data, &[], false);
    // The store was not empty: no admin was bootstrapped.
    assert!(!data.join("admin-token").exists());
    let me: serde_json::Value = ureq::get(format!("{}/api/v1/users/me", server.base))
        .header("Authorization", format!("Bearer {secret}"))
        .call()
        .expect("me")
        .body_mut()
        .read_to_string()
        .ok()
        .and_then(|s| serde_json::from_str(&s).ok())
        .expect("json");
    assert_eq!(me["role"], "moderator");
    drop(server);

    // A really empty store bootstraps the admin and says where the token is.
    let fresh = tmp.path().join("fresh");
    let server = start(&fresh, &[], true);
    let token_file = fresh.join("admin-token");
    let mode = std::fs::metadata(&token_file)
        .expect("admin-token written")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let token = std::fs::read_to_string(&token_file).expect("token");
    let me: serde_json::Value = ureq::get(format!("{}/api/v1/users/me", server.base))
        .header("Authorization", format!("Bearer {}", token.trim()))
        .call()
        .expect("me")
        .body_mut()
        .read_to_string()
        .ok()
        .and_then(|s| serde_json::from_str(&s).ok())
        .expect("json");
    assert_eq!(me["name"], "admin");
    assert_eq!(me["role"], "admin");
    let log = server.log();
    assert!(log.contains("admin-token"), "the log says where: {log}");
    // One log line per request, with its id, status and duration.
    assert!(
        log.lines().any(|l| l.contains("GET /api/v1/users/me 200")
            && l.contains("request_id")
            && l.contains("duration_ms")),
        "{log}"
    );
    let gc = run(&fresh, &["admin", "gc"]);
    assert!(String::from_utf8_lossy(&gc.stdout).contains("removed:"));
}

/// Runs `tests/quickstart.sh` against a server started with `extra`.
fn run_quickstart(extra: &[&str]) {
    let tools = ["bash", "curl", "jq"];
    let missing: Vec<_> = tools.iter().filter(|t| !have(t)).collect();
    if !missing.is_empty() {
        assert!(
            std::env::var("CI").is_err(),
            "{missing:?} missing: CI installs curl and jq with apt"
        );
        eprintln!("skipping the quickstart: {missing:?} not installed");
        return;
    }
    let tmp = tempfile::tempdir().expect("temp dir");
    let data = tmp.path().join("data");
    let mut args = vec!["--compat-image-size", "32MiB"];
    args.extend_from_slice(extra);
    let server = start(&data, &args, false);
    let token = std::fs::read_to_string(data.join("admin-token")).expect("admin token");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/quickstart.sh");
    let out = Command::new("bash")
        .arg(&script)
        .env("BAAS", &server.base)
        .env("TOKEN", token.trim())
        .env("IMG", tmp.path().join("image.img"))
        .env("MAC", "52:54:00:d9:71:93")
        .output()
        .expect("bash runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "quickstart failed\nstdout:\n{stdout}\nstderr:\n{stderr}\nserver log:\n{}",
        server.log()
    );
    assert!(stdout.contains("quickstart: ok"), "{stdout}");
    assert!(stdout.contains("version 1"), "{stdout}");
}

#[test]
fn the_original_quickstart_runs_against_the_binary() {
    run_quickstart(&[]);
}

/// A database of its own on the test PostgreSQL server, dropped afterwards.
struct Database {
    admin_url: String,
    name: String,
    url: String,
}

impl Database {
    fn create(admin_url: &str) -> Database {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let name = format!("baas_server_test_{}_{nanos}", std::process::id());
        let (base, _) = admin_url
            .rsplit_once('/')
            .expect("BAAS_TEST_POSTGRES_URL ends in /DATABASE");
        psql(admin_url, &format!("CREATE DATABASE {name}"));
        Database {
            admin_url: admin_url.to_string(),
            url: format!("{base}/{name}"),
            name,
        }
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        let _ = Command::new("psql")
            .arg(&self.admin_url)
            .args([
                "-q",
                "-c",
                &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
            ])
            .output();
    }
}

fn psql(url: &str, sql: &str) {
    let out = Command::new("psql")
        .arg(url)
        .args(["-q", "-v", "ON_ERROR_STOP=1", "-c", sql])
        .output()
        .expect("psql runs");
    assert!(
        out.status.success(),
        "psql {sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_original_quickstart_runs_on_postgresql() {
    let Ok(url) = std::env::var("BAAS_TEST_POSTGRES_URL") else {
        assert!(
            std::env::var("CI").is_err(),
            "BAAS_TEST_POSTGRES_URL is not set (CI starts PostgreSQL)"
        );
        eprintln!("skipping: BAAS_TEST_POSTGRES_URL is not set");
        return;
    };
    if !have("psql") {
        assert!(std::env::var("CI").is_err(), "psql is missing");
        return;
    }
    let db = Database::create(&url);
    run_quickstart(&["--database-url", &db.url]);
}
