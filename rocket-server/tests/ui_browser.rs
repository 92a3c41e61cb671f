//! The web UI in a real browser: Debian's headless Chromium, driven over
//! the W3C WebDriver protocol through `chromedriver`, against the real
//! server on port 0. One walk through what a researcher does (log in,
//! create an image, upload a file with the progress bar reaching 100%,
//! resume an upload cut off midway after a refresh, compose a setup,
//! launch it on a machine, watch the job on the dashboard move live), then what must not happen: another user seeing the image,
//! a script in an image name running, a form without its CSRF token being
//! accepted; an admin's power buttons on a machine page. Screenshots of
//! every page go to `target/ui-screenshots/`.
//!
//! Under `CI=true` a missing Chromium or chromedriver fails the test;
//! elsewhere the test says so and passes without running.
//!
//! The WebDriver client is the dozen JSON calls this test needs, over the
//! `ureq` client the other server tests use.

mod common;

use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use common::TestApp;
use serde_json::{json, Value};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// `chromedriver` and one browser session.
struct Browser {
    driver: Child,
    base: String,
    session: String,
    http: ureq::Agent,
    shots: PathBuf,
    _profile: tempfile::TempDir,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn screenshot_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let dir = target.join("ui-screenshots");
    std::fs::create_dir_all(&dir).expect("screenshot directory");
    dir
}

/// Waits for `f` to return `Some`, polling; panics with `what` after a
/// generous bound (a hung page, not a slow one).
fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        if start.elapsed() > Duration::from_secs(60) {
            panic!("timed out waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

impl Browser {
    /// Starts chromedriver and a headless Chromium, or `None` (outside CI)
    /// when they are not installed.
    fn start() -> Option<Browser> {
        let chromium = std::env::var("BAAS_CHROMIUM").unwrap_or_else(|_| CHROMIUM.into());
        let chromedriver =
            std::env::var("BAAS_CHROMEDRIVER").unwrap_or_else(|_| CHROMEDRIVER.into());
        if !Path::new(&chromium).exists() || !Path::new(&chromedriver).exists() {
            let msg = format!(
                "{chromium} or {chromedriver} is missing: apt-get install chromium chromium-driver"
            );
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("{msg}");
            }
            eprintln!("skipping the browser test: {msg}");
            return None;
        }
        let port = free_port();
        let driver = Command::new(&chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let base = format!("http://127.0.0.1:{port}");
        let http = ureq::Agent::new_with_config(
            ureq::Agent::config_builder()
                .http_status_as_error(false)
                .timeout_global(Some(Duration::from_secs(120)))
                .build(),
        );
        let mut browser = Browser {
            driver,
            base,
            session: String::new(),
            http,
            shots: screenshot_dir(),
            _profile: tempfile::tempdir().expect("profile dir"),
        };
        wait_for("chromedriver to listen", || {
            let r = browser
                .http
                .get(format!("{}/status", browser.base))
                .call()
                .ok()?;
            (r.status() == 200).then_some(())
        });
        let profile = browser._profile.path().display().to_string();
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync",
                    "--disable-dev-shm-usage", "--window-size=1280,1000",
                    format!("--user-data-dir={profile}"),
                ],
            },
        }}});
        let v = browser.call("POST", "/session", Some(caps));
        browser.session = v["sessionId"].as_str().expect("a session id").to_string();
        Some(browser)
    }

    /// One WebDriver command; panics on a WebDriver error.
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let v = self.try_call(method, path, body);
        if let Some(err) = v.get("error") {
            panic!("webdriver {method} {path}: {err}: {}", v["message"]);
        }
        v
    }

    /// One WebDriver command; its `value` (which may be an error object).
    fn try_call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}{path}", self.base);
        let res = match (method, body) {
            ("GET", _) => self.http.get(&url).call(),
            ("DELETE", _) => self.http.delete(&url).call(),
            (_, b) => self
                .http
                .post(&url)
                .header("Content-Type", "application/json")
                .send(b.unwrap_or_else(|| json!({})).to_string()),
        };
        let mut res = res.unwrap_or_else(|e| panic!("webdriver {method} {path}: {e}"));
        let mut text = String::new();
        res.body_mut()
            .as_reader()
            .read_to_string(&mut text)
            .expect("webdriver answer");
        let v: Value = serde_json::from_str(&text).expect("webdriver JSON");
        v["value"].clone()
    }

    fn s(&self, rest: &str) -> String {
        format!("/session/{}{rest}", self.session)
    }

    fn goto(&self, url: &str) {
        self.call("POST", &self.s("/url"), Some(json!({ "url": url })));
    }

    fn url(&self) -> String {
        self.call("GET", &self.s("/url"), None)
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    fn try_find(&self, css: &str) -> Option<String> {
        let v = self.try_call(
            "POST",
            &self.s("/element"),
            Some(json!({"using": "css selector", "value": css})),
        );
        v[ELEMENT].as_str().map(str::to_string)
    }

    fn find(&self, css: &str) -> String {
        wait_for(&format!("element {css}"), || self.try_find(css))
    }

    fn click(&self, css: &str) {
        let el = self.find(css);
        self.call("POST", &self.s(&format!("/element/{el}/click")), None);
    }

    fn type_into(&self, css: &str, text: &str) {
        let el = self.find(css);
        self.call("POST", &self.s(&format!("/element/{el}/clear")), None);
        self.call(
            "POST",
            &self.s(&format!("/element/{el}/value")),
            Some(json!({ "text": text })),
        );
    }

    /// The element's rendered text, read in one script call (live pages
    /// replace their elements; a found element may be gone a moment later).
    fn text(&self, css: &str) -> String {
        wait_for(&format!("text of {css}"), || {
            self.run_js(
                "const e = document.querySelector(arguments[0]); return e ? e.innerText : null;",
                json!([css]),
            )
            .as_str()
            .map(str::to_string)
        })
    }

    /// A DOM property of the element, read in one script call.
    fn property(&self, css: &str, name: &str) -> Value {
        wait_for(&format!("{name} of {css}"), || {
            let v = self.run_js(
                "const e = document.querySelector(arguments[0]); return e ? [e[arguments[1]]] : null;",
                json!([css, name]),
            );
            v.as_array().and_then(|a| a.first().cloned())
        })
    }

    fn run_js(&self, script: &str, args: Value) -> Value {
        self.call(
            "POST",
            &self.s("/execute/sync"),
            Some(json!({ "script": script, "args": args })),
        )
    }

    fn source(&self) -> String {
        self.call("GET", &self.s("/source"), None)
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// Whether a JavaScript dialog (an `alert`) is open.
    fn alert_open(&self) -> bool {
        self.try_call("GET", &self.s("/alert/text"), None)
            .get("error")
            .is_none()
    }

    fn screenshot(&self, name: &str) {
        let v = self.call("GET", &self.s("/screenshot"), None);
        let png = base64::engine::general_purpose::STANDARD
            .decode(v.as_str().expect("base64 screenshot"))
            .expect("base64");
        assert!(png.starts_with(b"\x89PNG"), "a PNG");
        std::fs::write(self.shots.join(format!("{name}.png")), png).expect("save screenshot");
    }

    fn login(&self, app: &TestApp, name: &str, password: &str) {
        self.goto(&app.url("/ui/login"));
        self.type_into("#name", name);
        self.type_into("#password", password);
        self.click("#login-password");
        wait_for("the dashboard after login", || {
            self.url().ends_with("/ui").then_some(())
        });
    }

    fn logout(&self) {
        self.click("form.logout button");
        wait_for("the login page", || {
            self.url().contains("/ui/login").then_some(())
        });
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = self.try_call("DELETE", &format!("/session/{}", self.session), None);
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

fn set_password(app: &TestApp, name: &str, password: &str) {
    let user = app
        .baas
        .get_user_by_name(&baas_core::Actor::System, name)
        .expect("user");
    app.baas
        .set_password(&baas_core::Actor::System, user.id, Some(password))
        .expect("set password");
}

/// A 1 MiB disk image: data, a hole, data, and a short last chunk.
fn disk_image() -> Vec<u8> {
    let mut bytes = vec![0u8; (1 << 20) - 1000];
    let mut x: u32 = 12345;
    for (i, b) in bytes.iter_mut().enumerate() {
        if (128 << 10..256 << 10).contains(&i) {
            continue;
        }
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        *b = (x >> 16) as u8 % 16;
    }
    bytes
}

#[test]
fn a_researcher_uses_the_web_ui_in_chromium() {
    let app = TestApp::spawn();
    let Some(b) = Browser::start() else {
        return;
    };
    let (_, alice_token) = app.user("alice", "user");
    app.user("bob", "user");
    set_password(&app, "alice", "alice's password");
    set_password(&app, "bob", "bob's password");
    let machine = app.machine("52:54:00:ab:cd:ef");

    // Not logged in: the login page.
    b.goto(&app.url("/ui"));
    wait_for("the login page", || {
        b.url().contains("/ui/login").then_some(())
    });
    b.screenshot("01-login");
    b.login(&app, "alice", "alice's password");
    b.screenshot("02-dashboard-empty");

    // Create an image.
    b.goto(&app.url("/ui/images"));
    b.type_into("#image-name", "ubuntu-lab");
    b.type_into("#image-size", "1MiB");
    b.click("#create-image");
    wait_for("the image page", || {
        b.url().contains("/ui/images/").then_some(())
    });
    assert_eq!(b.text("#image-title"), "ubuntu-lab");
    let image = b.url().rsplit('/').next().expect("image id").to_string();

    // The browser's blake3 agrees with the server's.
    let sample: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
    let js = b.run_js(
        "return blake3.hex(blake3.hash(new Uint8Array(arguments[0])));",
        json!([sample]),
    );
    assert_eq!(js.as_str(), Some(blake3::hash(&sample).to_hex().as_str()));

    // Upload a file; the progress bar reaches 100%.
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("disk.img");
    let bytes = disk_image();
    std::fs::write(&file, &bytes).expect("write the image file");
    let input = b.find("#upload-file");
    b.call(
        "POST",
        &b.s(&format!("/element/{input}/value")),
        Some(json!({ "text": file.display().to_string() })),
    );
    b.click("#upload-button");
    let status = wait_for("the upload to finish", || {
        let t = b.text("#upload-status");
        (t.contains("Uploaded version") || t.contains("failed")).then_some(t)
    });
    assert!(status.contains("Uploaded version 1"), "{status}");
    assert_eq!(b.property("#upload-progress", "value"), json!(100));
    b.screenshot("03-image-uploaded");
    let got = app
        .get(
            &format!("/api/v1/images/{image}/versions/1/content"),
            Some(&alice_token),
        )
        .expect(200)
        .body;
    assert!(got == bytes, "the uploaded version has the file's bytes");
    b.goto(&app.url(&format!("/ui/images/{image}")));
    assert!(b.text("#versions").contains("upload"));

    // An upload cut off after three chunks resumes after a refresh and
    // sends only the chunks still missing.
    let file2 = dir.path().join("disk2.img");
    let bytes2: Vec<u8> = disk_image()
        .iter()
        .map(|x| x.wrapping_add(1) % 17)
        .collect();
    let data_chunks = bytes2
        .chunks(64 << 10)
        .filter(|c| c.iter().any(|x| *x != 0))
        .map(blake3::hash)
        .collect::<std::collections::HashSet<_>>()
        .len();
    std::fs::write(&file2, &bytes2).expect("write the second image file");
    b.run_js(
        "window.__puts = 0; const real = window.fetch;
         window.fetch = function (url, opts) {
           if (opts && opts.method === 'PUT' && ++window.__puts > 3) {
             return Promise.reject(new Error('the network went away'));
           }
           return real.apply(this, arguments);
         };",
        json!([]),
    );
    let input = b.find("#upload-file");
    b.call(
        "POST",
        &b.s(&format!("/element/{input}/value")),
        Some(json!({ "text": file2.display().to_string() })),
    );
    b.click("#upload-button");
    let status = wait_for("the upload to break", || {
        let t = b.text("#upload-status");
        t.contains("failed").then_some(t)
    });
    assert!(status.contains("the network went away"), "{status}");
    b.goto(&app.url(&format!("/ui/images/{image}")));
    assert!(
        b.text("#upload-status").contains("was interrupted"),
        "the page offers to resume"
    );
    b.run_js(
        "window.__puts = 0; const real = window.fetch;
         window.fetch = function (url, opts) {
           if (opts && opts.method === 'PUT') window.__puts++;
           return real.apply(this, arguments);
         };",
        json!([]),
    );
    let input = b.find("#upload-file");
    b.call(
        "POST",
        &b.s(&format!("/element/{input}/value")),
        Some(json!({ "text": file2.display().to_string() })),
    );
    b.click("#upload-button");
    let status = wait_for("the resumed upload to finish", || {
        let t = b.text("#upload-status");
        (t.contains("Uploaded version") || t.contains("failed")).then_some(t)
    });
    assert!(status.contains("Uploaded version 2"), "{status}");
    let sent = b.run_js("return window.__puts;", json!([]));
    assert_eq!(
        sent,
        json!(data_chunks - 3),
        "only the missing chunks are sent again"
    );
    let got = app
        .get(
            &format!("/api/v1/images/{image}/versions/2/content"),
            Some(&alice_token),
        )
        .expect(200)
        .body;
    assert!(got == bytes2, "the resumed version has the file's bytes");

    // An image whose name is a script: shown as text, never run.
    let xss = "<script>alert(1)</script>";
    b.goto(&app.url("/ui/images"));
    b.type_into("#image-name", xss);
    b.type_into("#image-size", "1MiB");
    b.click("#create-image");
    wait_for("the second image's page", || {
        (b.url().contains("/ui/images/") && !b.url().ends_with(&image)).then_some(())
    });
    assert_eq!(b.text("#image-title"), xss);
    assert!(!b.alert_open(), "a script in a name ran");
    b.goto(&app.url("/ui/images"));
    assert!(b.text("#images-table").contains(xss));
    assert!(!b.alert_open(), "a script in a name ran");
    b.screenshot("04-images");

    // Compose a setup from the uploaded image and launch it.
    b.goto(&app.url("/ui/setups"));
    b.type_into("#setup-name", "kernel test");
    b.click(&format!("#image-0 option[value='{image}']"));
    b.type_into("#version-0", "latest");
    b.click("#capture-0");
    b.screenshot("05-setup-compose");
    b.click("#create-setup");
    wait_for("the setup page", || {
        b.url().contains("/ui/setups/").then_some(())
    });
    b.screenshot("06-setup");
    b.click(&format!("#launch-machine option[value='{machine}']"));
    b.click("#launch");
    wait_for("the job page", || {
        b.url().contains("/ui/jobs/").then_some(())
    });
    let job = b.url().rsplit('/').next().expect("job id").to_string();
    assert_eq!(b.text("#job-state"), "queued");
    b.screenshot("07-job-queued");

    // The dashboard shows it, and follows the machine live.
    b.goto(&app.url("/ui"));
    let row = format!("#machines-body tr[data-machine='{machine}']");
    assert!(
        b.source().contains(&job[..8]),
        "the job is on the dashboard"
    );
    let machine_id: baas_core::model::MachineId = machine.parse().expect("machine id");
    let taken = app
        .baas
        .next_job(&baas_core::Actor::System, machine_id)
        .expect("take the job")
        .expect("a job");
    assert_eq!(taken.id.to_string(), job);
    app.baas
        .report_progress(
            &baas_core::Actor::System,
            taken.id,
            baas_core::model::Progress {
                phase: "flashing".into(),
                bytes_done: 43,
                bytes_total: 100,
                rate: 0,
            },
        )
        .expect("progress");
    let live = wait_for("the dashboard to show the progress", || {
        let t = b.text(&row);
        t.contains("flashing 43%").then_some(t)
    });
    assert!(live.contains("alice"), "owner shown: {live}");
    b.screenshot("08-dashboard-live");

    // The job page follows progress and the agent's log live.
    b.goto(&app.url(&format!("/ui/jobs/{job}")));
    assert_eq!(b.text("#job-state"), "provisioning");
    app.baas
        .report_progress(
            &baas_core::Actor::System,
            taken.id,
            baas_core::model::Progress {
                phase: "flashing".into(),
                bytes_done: 60,
                bytes_total: 100,
                rate: 0,
            },
        )
        .expect("progress");
    app.baas
        .log_job(
            &baas_core::Actor::System,
            taken.id,
            "disk /dev/vda: <b>60</b>%",
        )
        .expect("log");
    wait_for("the job page to follow", || {
        (b.property("#job-progress", "value") == json!(60)
            && b.text("#job-log").contains("disk /dev/vda: <b>60</b>%"))
        .then_some(())
    });
    b.screenshot("09-job-running");

    // Cancelling; the machine page.
    b.click("#cancel-form button");
    wait_for("the cancelled job", || {
        (b.text("#job-state") == "cancelled").then_some(())
    });
    assert!(b.text("#job-timeline").contains("cancelled by alice"));
    b.screenshot("10-job-cancelled");
    b.goto(&app.url(&format!("/ui/machines/{machine}")));
    assert!(b.source().contains(&job[..8]), "history lists the job");
    b.screenshot("11-machine");
    b.goto(&app.url("/ui/account"));
    b.screenshot("12-account");

    // A form posted without its CSRF token is refused.
    b.goto(&app.url("/ui/images"));
    b.run_js(
        "const f = document.createElement('form'); f.method = 'post'; f.action = '/ui/images';
         for (const [k, v] of [['name', 'forged'], ['size', '1MiB']]) {
           const i = document.createElement('input'); i.name = k; i.value = v; f.appendChild(i);
         }
         document.body.appendChild(f); f.submit();",
        json!([]),
    );
    wait_for("the refusal", || {
        b.source().contains("security token").then_some(())
    });
    assert!(b.source().contains("403"));
    b.screenshot("13-csrf-refused");
    b.goto(&app.url("/ui/images"));
    assert!(!b.source().contains("forged"));

    // Another user sees none of it.
    b.logout();
    b.login(&app, "bob", "bob's password");
    b.goto(&app.url("/ui/images"));
    let list = b.text("main");
    assert!(
        !list.contains("ubuntu-lab") && !list.contains(xss),
        "{list}"
    );
    b.goto(&app.url(&format!("/ui/images/{image}")));
    assert!(b.text("h1").contains("404"));
    b.screenshot("14-other-user-404");
    b.goto(&app.url("/ui"));
    b.logout();

    // The admin, logged in with the bootstrap token.
    b.goto(&app.url("/ui/login"));
    b.type_into("#token", &app.admin);
    b.click("#login-token");
    wait_for("the dashboard", || b.url().ends_with("/ui").then_some(()));
    b.goto(&app.url("/ui/admin"));
    assert!(b.text("main").contains("bob"));
    b.type_into("#machine-mac", "52:54:00:00:00:42");
    b.type_into("#machine-name", "node-42");
    b.click("#register-machine");
    wait_for("the registered machine", || {
        b.text("main")
            .contains("Registered machine node-42")
            .then_some(())
    });
    b.click("#run-gc");
    wait_for("garbage collection", || {
        b.text("main")
            .contains("Garbage collection removed")
            .then_some(())
    });
    b.screenshot("15-admin");

    // Power by hand on the machine page: node-42 gets a QMP adapter whose
    // socket nobody listens on, so the buttons show and the failure is
    // reported and recorded (no VM needed: the browser test stays fast).
    let node = app
        .get("/api/v1/machines/52:54:00:00:00:42", Some(&app.admin))
        .expect(200)
        .json()["id"]
        .as_str()
        .expect("node-42's id")
        .to_string();
    let sock = app.dir.path().join("node-42-qmp.sock");
    app.json(
        ureq::http::Method::PUT,
        &format!("/api/v1/machines/{node}/boot-config"),
        Some(&app.admin),
        &json!({"power": {"kind": "qmp", "address": format!("unix:{}", sock.display())}}),
    )
    .expect(200);
    b.goto(&app.url(&format!("/ui/machines/{node}")));
    b.find("#power-actions");
    assert!(b.text("main").contains("QEMU (QMP at unix:"));
    b.screenshot("16-machine-power");
    b.click("#power-cycle");
    // The machine page itself says "QMP" (the power line above): wait for
    // the error page's own words, or this may still read the old page.
    wait_for("the power error page", || {
        b.text("main").contains("cannot reach QMP").then_some(())
    });
    assert!(b.text("h1").contains("503"), "{}", b.text("main"));
    b.screenshot("17-power-failed");
    b.goto(&app.url(&format!("/ui/machines/{node}")));
    assert!(
        b.text("#machine-events")
            .contains("power cycle by admin failed (qmp)"),
        "{}",
        b.text("main")
    );
    b.screenshot("18-machine-history");
}
