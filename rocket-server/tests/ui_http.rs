//! The web UI over plain HTTP (no browser): the security properties a
//! browser test cannot see directly. Session cookies are private (a
//! tampered one is refused), http-only and SameSite=Strict; every POST
//! without the session's CSRF token is refused and changes nothing; every
//! response carries the strict Content-Security-Policy and pages have no
//! inline script; user input is escaped; another user's image is not
//! found; changing a password ends older sessions.

mod common;

use common::{Resp, TestApp};
use ureq::http::Method;

/// A cookie-keeping client of the UI.
struct Session<'a> {
    app: &'a TestApp,
    cookie: String,
}

fn form_encode(fields: &[(&str, &str)]) -> String {
    fields
        .iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect::<Vec<_>>()
        .join("&")
}

fn enc(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The CSRF token in a page's first form.
fn csrf_of(html: &str) -> String {
    let at = html
        .find("name=\"csrf\" value=\"")
        .unwrap_or_else(|| panic!("no csrf field in {html}"));
    let rest = &html[at + "name=\"csrf\" value=\"".len()..];
    rest[..rest.find('"').expect("closing quote")].to_string()
}

impl<'a> Session<'a> {
    fn new(app: &'a TestApp) -> Session<'a> {
        Session {
            app,
            cookie: String::new(),
        }
    }

    fn keep(&mut self, r: &Resp) {
        for v in r.headers.get_all("set-cookie") {
            let v = v.to_str().expect("ascii cookie");
            if let Some(pair) = v.split(';').next() {
                if pair.starts_with("baas_session=") {
                    self.cookie = pair.to_string();
                }
            }
        }
    }

    fn get(&mut self, path: &str) -> Resp {
        let r = self
            .app
            .send(Method::GET, path, None, &[("Cookie", &self.cookie)], None);
        self.keep(&r);
        r
    }

    fn post(&mut self, path: &str, fields: &[(&str, &str)]) -> Resp {
        let body = form_encode(fields).into_bytes();
        let r = self.app.send(
            Method::POST,
            path,
            None,
            &[
                ("Cookie", &self.cookie),
                ("Content-Type", "application/x-www-form-urlencoded"),
            ],
            Some(body),
        );
        self.keep(&r);
        r
    }

    fn csrf(&mut self, path: &str) -> String {
        csrf_of(&self.get(path).expect(200).text())
    }

    fn login(&mut self, name: &str, password: &str) -> Resp {
        let csrf = self.csrf("/ui/login");
        self.post(
            "/ui/login",
            &[("csrf", &csrf), ("name", name), ("password", password)],
        )
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

fn location(r: &Resp) -> &str {
    r.header("location").unwrap_or("")
}

#[test]
fn pages_carry_a_strict_csp_and_no_inline_script_and_a_safe_cookie() {
    let app = TestApp::spawn();
    let r = app
        .send(Method::GET, "/ui/login", None, &[], None)
        .expect(200);
    let csp = r.header("content-security-policy").expect("CSP header");
    assert_eq!(csp, baas_server::ui::CSP);
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe"),
        "{csp}"
    );
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
    let html = r.text();
    for tag in html.split("<script").skip(1) {
        assert!(tag.trim_start().starts_with("src="), "inline script: {tag}");
    }
    assert!(
        !html.contains(" style=") && !html.contains("onclick"),
        "{html}"
    );
    let cookie = r.header("set-cookie").expect("a session cookie");
    assert!(cookie.starts_with("baas_session="), "{cookie}");
    assert!(cookie.contains("HttpOnly"), "{cookie}");
    assert!(cookie.contains("SameSite=Strict"), "{cookie}");
    // The value is encrypted: no CSRF token or user id in clear.
    assert!(!cookie.contains(&csrf_of(&html)), "{cookie}");
    // Static files are served from the binary.
    let css = app.get("/ui/static/app.css", None).expect(200);
    assert_eq!(css.header("content-type"), Some("text/css; charset=utf-8"));
    for js in ["blake3.js", "upload.js", "live.js"] {
        let r = app.get(&format!("/ui/static/{js}"), None).expect(200);
        assert!(r
            .header("content-type")
            .unwrap_or("")
            .contains("javascript"));
    }
    app.get("/ui/static/nope.js", None).expect(404);
    // The API's JSON carries the policy too.
    let api = app.get("/healthz", None).expect(200);
    assert!(api.header("content-security-policy").is_some());
}

#[test]
fn login_needs_the_csrf_token_and_the_right_password() {
    let app = TestApp::spawn();
    app.user("alice", "user");
    set_password(&app, "alice", "correct horse battery");
    let mut s = Session::new(&app);
    let csrf = s.csrf("/ui/login");
    // No token, a wrong token: refused before the password is looked at.
    let r = s.post(
        "/ui/login",
        &[("name", "alice"), ("password", "correct horse battery")],
    );
    assert_eq!(r.status, 403, "{}", r.text());
    let r = s.post(
        "/ui/login",
        &[
            ("csrf", &"0".repeat(64)),
            ("name", "alice"),
            ("password", "correct horse battery"),
        ],
    );
    assert_eq!(r.status, 403);
    // Wrong password, unknown user: the same answer.
    let wrong = s.post(
        "/ui/login",
        &[
            ("csrf", &csrf),
            ("name", "alice"),
            ("password", "wrong password"),
        ],
    );
    assert_eq!(wrong.status, 401);
    let unknown = s.post(
        "/ui/login",
        &[
            ("csrf", &csrf),
            ("name", "nobody"),
            ("password", "wrong password"),
        ],
    );
    assert_eq!(unknown.status, 401);
    assert!(wrong.text().contains("wrong user name or password"));
    assert!(unknown.text().contains("wrong user name or password"));
    // Not logged in: pages send you to the login page.
    let r = s.get("/ui/images");
    assert_eq!(r.status, 303);
    assert_eq!(location(&r), "/ui/login?next=/ui/images");
    // The right password logs in and renews the CSRF token.
    let r = s.login("alice", "correct horse battery");
    assert_eq!(r.status, 303, "{}", r.text());
    assert_eq!(location(&r), "/ui");
    let dash = s.get("/ui").expect(200).text();
    assert!(dash.contains("alice"), "{dash}");
    assert_ne!(csrf_of(&dash), csrf);
    // An open redirect is not possible through `next`.
    let mut t = Session::new(&app);
    let c = t.csrf("/ui/login");
    let r = t.post(
        "/ui/login",
        &[
            ("csrf", &c),
            ("name", "alice"),
            ("password", "correct horse battery"),
            ("next", "//evil.example/"),
        ],
    );
    assert_eq!(location(&r), "/ui");
    // Logging out ends the session.
    let c = csrf_of(&dash);
    let r = s.post("/ui/logout", &[("csrf", &c)]);
    assert_eq!(r.status, 303);
    assert_eq!(s.get("/ui").status, 303);
}

#[test]
fn token_login_works_for_users_and_not_for_machines() {
    let app = TestApp::spawn();
    let (_, token) = app.user("bob", "user");
    let mut s = Session::new(&app);
    let csrf = s.csrf("/ui/login");
    let r = s.post("/ui/login", &[("csrf", &csrf), ("token", &token)]);
    assert_eq!(r.status, 303, "{}", r.text());
    assert!(s.get("/ui").expect(200).text().contains("bob"));

    let machine = app.machine("52:54:00:00:00:07");
    let agent = app.agent_token(&machine);
    let mut m = Session::new(&app);
    let csrf = m.csrf("/ui/login");
    let r = m.post("/ui/login", &[("csrf", &csrf), ("token", &agent)]);
    assert_eq!(r.status, 401, "{}", r.text());
    assert_eq!(m.get("/ui").status, 303);
}

#[test]
fn every_post_without_the_csrf_token_is_refused_and_changes_nothing() {
    let app = TestApp::spawn();
    let (_, token) = app.user("carol", "admin");
    set_password(&app, "carol", "carol's password");
    let mut s = Session::new(&app);
    s.login("carol", "carol's password").expect(303);
    let image = app.post_image(&token, "kept", 1 << 20);
    let machine = app.machine("52:54:00:00:00:08");
    let posts: Vec<(String, Vec<(&str, &str)>)> = vec![
        (
            "/ui/images".into(),
            vec![("name", "sneaky"), ("size", "1MiB")],
        ),
        (
            format!("/ui/images/{image}/rename"),
            vec![("name", "renamed")],
        ),
        (format!("/ui/images/{image}/delete"), vec![]),
        (
            format!("/ui/images/{image}/visibility"),
            vec![("visibility", "public")],
        ),
        (format!("/ui/images/{image}/share"), vec![("name", "carol")]),
        (
            format!("/ui/images/{image}/unshare"),
            vec![("name", "carol")],
        ),
        (
            "/ui/setups".into(),
            vec![("name", "s"), ("entries[0].image", &image)],
        ),
        ("/ui/account/tokens".into(), vec![("name", "t")]),
        (
            "/ui/account/password".into(),
            vec![
                ("password", "x".repeat(12).leak()),
                ("confirm", "x".repeat(12).leak()),
            ],
        ),
        (
            "/ui/admin/users".into(),
            vec![("name", "mallory"), ("role", "admin")],
        ),
        (
            "/ui/admin/machines".into(),
            vec![("mac", "52:54:00:00:00:09")],
        ),
        (
            format!("/ui/admin/machines/{machine}/state"),
            vec![("state", "retired")],
        ),
        ("/ui/admin/gc".into(), vec![]),
        (
            format!("/ui/machines/{machine}/power"),
            vec![("action", "cycle")],
        ),
        ("/ui/logout".into(), vec![]),
    ];
    for (path, fields) in &posts {
        let r = s.post(path, fields);
        assert_eq!(r.status, 403, "POST {path} without a token: {}", r.text());
        assert!(r.text().contains("security token"), "{}", r.text());
        let mut with_bad = fields.clone();
        let bad = "f".repeat(64);
        with_bad.push(("csrf", &bad));
        assert_eq!(
            s.post(path, &with_bad).status,
            403,
            "POST {path} with a wrong token"
        );
    }
    // The upload script's calls need the header.
    let r = app.send(
        Method::POST,
        &format!("/ui/live/images/{image}/uploads"),
        None,
        &[("Cookie", &s.cookie)],
        Some(Vec::new()),
    );
    assert_eq!(r.status, 403, "{}", r.text());
    // Nothing changed.
    let images = app.get("/api/v1/images", Some(&token)).expect(200).json();
    let names: Vec<&str> = images["images"]
        .as_array()
        .or(images.as_array())
        .expect("a list")
        .iter()
        .filter_map(|i| i["name"].as_str())
        .collect();
    assert_eq!(names, ["kept"]);
    let users = app.get("/api/v1/users", Some(&token)).expect(200).text();
    assert!(!users.contains("mallory"));
    let m = app
        .get(&format!("/api/v1/machines/{machine}"), Some(&token))
        .expect(200)
        .json();
    assert_eq!(m["state"], "ready");
    // Still logged in (logout was refused too), and with the token it works.
    let csrf = s.csrf("/ui/images");
    let r = s.post(
        "/ui/images",
        &[("csrf", &csrf), ("name", "made"), ("size", "1MiB")],
    );
    assert_eq!(r.status, 303, "{}", r.text());
    assert!(location(&r).starts_with("/ui/images/"));
}

#[test]
fn user_input_is_escaped_and_other_users_images_are_not_found() {
    let app = TestApp::spawn();
    let (_, alice) = app.user("alice", "user");
    let (_, _bob) = app.user("bob", "user");
    set_password(&app, "alice", "alice's password");
    set_password(&app, "bob", "bob's password");
    let xss = "<script>alert(1)</script>";
    let id = app.post_image(&alice, xss, 1 << 20);
    let mut a = Session::new(&app);
    a.login("alice", "alice's password").expect(303);
    for page in [
        "/ui/images".to_string(),
        format!("/ui/images/{id}"),
        "/ui/setups".into(),
    ] {
        let html = a.get(&page).expect(200).text();
        assert!(!html.contains(xss), "{page} has the raw name");
        assert!(
            html.contains("&lt;script&gt;alert(1)&lt;/script&gt;")
                || html.contains("&#60;script&#62;alert(1)&#60;/script&#62;"),
            "{page} shows the name escaped: {html}"
        );
    }
    let mut b = Session::new(&app);
    b.login("bob", "bob's password").expect(303);
    let list = b.get("/ui/images").expect(200).text();
    assert!(!list.contains("alert(1)"), "bob sees alice's image: {list}");
    let r = b.get(&format!("/ui/images/{id}"));
    assert_eq!(r.status, 404);
    assert!(r
        .header("content-type")
        .unwrap_or("")
        .starts_with("text/html"));
    let r = b.get(&format!("/ui/images/{id}/versions/0/download"));
    assert_eq!(r.status, 404);
    // Bob cannot delete it either, even with a valid token of his own.
    let csrf = b.csrf("/ui/images");
    assert_eq!(
        b.post(&format!("/ui/images/{id}/delete"), &[("csrf", &csrf)])
            .status,
        404
    );
    app.get(&format!("/api/v1/images/{id}"), Some(&alice))
        .expect(200);
    // Regular users do not get the admin page.
    assert_eq!(b.get("/ui/admin").status, 403);
    // Only moderators publish; a moderator's public image is everyone's.
    let csrf = a.csrf(&format!("/ui/images/{id}"));
    let r = a.post(
        &format!("/ui/images/{id}/visibility"),
        &[("csrf", &csrf), ("visibility", "public")],
    );
    assert_eq!(r.status, 403, "{}", r.text());
    let (_, moderator) = app.user("mod", "moderator");
    let public = app.post_image(&moderator, "debian-base", 1 << 20);
    let list = b.get("/ui/images").expect(200).text();
    assert!(!list.contains("debian-base"));
    app.json(
        ureq::http::Method::PATCH,
        &format!("/api/v1/images/{public}"),
        Some(&moderator),
        &serde_json::json!({"visibility": "public"}),
    )
    .expect(200);
    let list = b.get("/ui/images").expect(200).text();
    assert!(list.contains("debian-base"), "{list}");
    let setups = b.get("/ui/setups").expect(200).text();
    assert!(
        setups.contains("debian-base"),
        "a shared image to compose with"
    );
}

#[test]
fn deleting_a_user_needs_the_box_ticked() {
    let app = TestApp::spawn();
    app.user("root2", "admin");
    set_password(&app, "root2", "root2's password");
    let (frank, _) = app.user("frank", "user");
    let mut s = Session::new(&app);
    s.login("root2", "root2's password").expect(303);
    let csrf = s.csrf("/ui/admin");
    let path = format!("/ui/admin/users/{frank}/delete");
    let r = s.post(&path, &[("csrf", &csrf)]);
    assert_eq!(r.status, 400, "{}", r.text());
    app.get(&format!("/api/v1/users/{frank}"), Some(&app.admin))
        .expect(200);
    let r = s.post(&path, &[("csrf", &csrf), ("confirm", "true")]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().contains("User deleted."));
    app.get(&format!("/api/v1/users/{frank}"), Some(&app.admin))
        .expect(404);
}

#[test]
fn a_tampered_cookie_or_a_changed_password_ends_the_session() {
    let app = TestApp::spawn();
    app.user("dave", "user");
    set_password(&app, "dave", "dave's password");
    let mut s = Session::new(&app);
    s.login("dave", "dave's password").expect(303);
    s.get("/ui").expect(200);
    let good = s.cookie.clone();
    // Flip one character of the encrypted value.
    let mut bytes = good.clone().into_bytes();
    let i = bytes.len() - 5;
    bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
    s.cookie = String::from_utf8(bytes).expect("ascii");
    assert_eq!(s.get("/ui").status, 303);
    s.cookie = good;
    s.get("/ui").expect(200);
    set_password(&app, "dave", "a new password");
    assert_eq!(s.get("/ui").status, 303);
    s.login("dave", "dave's password").expect(401);
    s.login("dave", "a new password").expect(303);
}

#[test]
fn admin_set_password_reads_the_password_from_stdin() {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let dir = tempfile::tempdir().expect("temp dir");
    let bin = env!("CARGO_BIN_EXE_baas-server");
    let data = dir.path().to_str().expect("utf-8 path");
    let out = Command::new(bin)
        .args(["--data-dir", data, "admin", "create-user", "eve"])
        .output()
        .expect("run create-user");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let set = |input: &str| {
        let mut child = Command::new(bin)
            .args(["--data-dir", data, "admin", "set-password", "eve"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run set-password");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes())
            .expect("write the password");
        child.wait_with_output().expect("set-password output")
    };
    let short = set("short\n");
    assert!(!short.status.success());
    assert!(String::from_utf8_lossy(&short.stderr).contains("at least 8 characters"));
    let ok = set("eve's long password\n");
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&ok.stdout).trim(),
        "password set for eve"
    );
    let baas = common::open_store(dir.path());
    let actor = baas
        .login_password("eve", "eve's long password")
        .expect("the password logs in");
    assert!(matches!(actor, baas_core::Actor::User { ref name, .. } if name == "eve"));
    assert!(baas.login_password("eve", "eve's long password\n").is_err());
}

#[test]
fn every_ui_route_refuses_anonymous_callers() {
    let app = TestApp::spawn();
    let dir = tempfile::tempdir().expect("temp dir");
    let rocket = baas_server::build(
        common::open_store(dir.path()),
        baas_server::Settings::default(),
    );
    let id = "0b8e4c4e-5a8f-4c39-9d52-3c1f2f6f0a11";
    let mut checked = 0;
    for route in rocket.routes() {
        let path = route.uri.path().to_string();
        if !path.starts_with("/ui") {
            continue;
        }
        let concrete: String = path
            .split('/')
            .map(|seg| match seg {
                "<name>" => "app.css",
                "<hash>" => "ab",
                "<version>" => "1",
                s if s.starts_with('<') => id,
                s => s,
            })
            .collect::<Vec<_>>()
            .join("/");
        let method = route.method.as_str();
        let r = app.send(
            method.parse().expect("method"),
            &concrete,
            None,
            &[("Content-Type", "application/x-www-form-urlencoded")],
            (method != "GET").then(Vec::new),
        );
        let public = concrete == "/ui/login" || concrete.starts_with("/ui/static/");
        match (method, public) {
            ("GET", true) => assert_eq!(r.status, 200, "GET {concrete}"),
            // Login and logout check the CSRF token first.
            ("POST", true) | ("POST", false)
                if concrete == "/ui/login" || concrete == "/ui/logout" =>
            {
                assert_eq!(r.status, 403, "POST {concrete}")
            }
            _ => {
                assert_eq!(r.status, 303, "{method} {concrete}: {}", r.text());
                assert!(
                    r.header("location")
                        .unwrap_or("")
                        .starts_with("/ui/login?next="),
                    "{method} {concrete}"
                );
            }
        }
        checked += 1;
    }
    assert!(checked >= 35, "only {checked} UI routes");
}

#[test]
fn failed_logins_are_rate_limited_like_bad_tokens() {
    let app = TestApp::spawn();
    app.user("erin", "user");
    set_password(&app, "erin", "erin's password");
    let mut s = Session::new(&app);
    let csrf = s.csrf("/ui/login");
    let mut statuses = Vec::new();
    for _ in 0..(baas_server::ratelimit::AuthLimiter::BURST + 5) {
        let r = s.post(
            "/ui/login",
            &[
                ("csrf", &csrf),
                ("name", "erin"),
                ("password", "guessing wrong"),
            ],
        );
        statuses.push(r.status);
    }
    assert_eq!(statuses[0], 401);
    assert_eq!(statuses.last(), Some(&429), "{statuses:?}");
    // Blocked: even the right password is refused for now.
    let r = s.post(
        "/ui/login",
        &[
            ("csrf", &csrf),
            ("name", "erin"),
            ("password", "erin's password"),
        ],
    );
    assert_eq!(r.status, 429);
}

#[test]
fn power_buttons_only_where_an_adapter_exists_and_for_moderators() {
    let app = TestApp::spawn();
    app.user("mo", "moderator");
    set_password(&app, "mo", "mo's password");
    app.user("uma", "user");
    set_password(&app, "uma", "uma's password");
    let vm = app.machine("52:54:00:00:00:31");
    let manual = app.machine("52:54:00:00:00:32");
    // A QMP socket nobody listens on: the adapter is configured, the
    // controller does not answer.
    let sock = app.dir.path().join("nobody.sock");
    app.json(
        Method::PUT,
        &format!("/api/v1/machines/{vm}/boot-config"),
        Some(&app.admin),
        &serde_json::json!({"power": {"kind": "qmp", "address": format!("unix:{}", sock.display())}}),
    )
    .expect(200);

    let mut user = Session::new(&app);
    user.login("uma", "uma's password").expect(303);
    let page = user.get(&format!("/ui/machines/{vm}")).expect(200).text();
    assert!(
        !page.contains("power-actions"),
        "a user sees no power buttons"
    );
    let csrf = csrf_of(&page);
    let r = user.post(
        &format!("/ui/machines/{vm}/power"),
        &[("csrf", &csrf), ("action", "on")],
    );
    assert_eq!(r.status, 403, "{}", r.text());

    let mut mo = Session::new(&app);
    mo.login("mo", "mo's password").expect(303);
    let page = mo.get(&format!("/ui/machines/{manual}")).expect(200).text();
    assert!(!page.contains("power-actions"), "manual: no buttons");
    let csrf = csrf_of(&page);
    let r = mo.post(
        &format!("/ui/machines/{manual}/power"),
        &[("csrf", &csrf), ("action", "cycle")],
    );
    assert_eq!(r.status, 409, "{}", r.text());
    assert!(
        r.text().contains("no power adapter configured"),
        "{}",
        r.text()
    );

    let page = mo.get(&format!("/ui/machines/{vm}")).expect(200).text();
    for action in ["on", "off", "cycle"] {
        assert!(page.contains(&format!("id=\"power-{action}\"")), "{page}");
    }
    let r = mo.post(
        &format!("/ui/machines/{vm}/power"),
        &[("csrf", &csrf), ("action", "reboot-ish")],
    );
    assert_eq!(r.status, 400, "{}", r.text());
    let r = mo.post(
        &format!("/ui/machines/{vm}/power"),
        &[("csrf", &csrf), ("action", "cycle")],
    );
    assert_eq!(r.status, 503, "nothing listens: {}", r.text());
    assert!(r.text().contains("QMP"), "{}", r.text());
    let page = mo.get(&format!("/ui/machines/{vm}")).expect(200).text();
    assert!(
        page.contains("power cycle by mo failed (qmp)"),
        "the failure is in the machine's history: {page}"
    );
}

#[test]
fn the_dashboard_and_the_api_say_offline_only_when_a_machine_should_talk() {
    // Offline as soon as an expected contact is late at all.
    let app = TestApp::spawn_full(|_| {}, |c| c.offline_after_ms = 0);
    let (_, alice) = app.user("olive", "user");
    set_password(&app, "olive", "olive's password");
    let idle = app.machine("52:54:00:00:00:41");
    let busy = app.machine("52:54:00:00:00:42");
    let image = app.post_image(&alice, "os", 1 << 20);
    app.boot_queue(&alice, &busy, &image, 0).expect(201);
    // The machine's agent takes the job: that call is contact.
    let secret = app.agent_token(&busy);
    let agent = app.baas.authenticate(&secret).expect("agent");
    let id: baas_core::model::MachineId = busy.parse().expect("id");
    let job = app
        .baas
        .next_job(&agent, id)
        .expect("next job")
        .expect("the queued job");
    std::thread::sleep(std::time::Duration::from_millis(5));

    let view = |m: &str| {
        app.get(&format!("/api/v1/machines/{m}"), Some(&alice))
            .expect(200)
            .json()
    };
    let v = view(&busy);
    assert_eq!(v["offline"], true, "{v}");
    assert_eq!(v["offline_reason"], "silent", "{v}");
    assert!(v["last_seen"].is_string(), "{v}");
    let v = view(&idle);
    assert_eq!(
        v["offline"], false,
        "an idle machine boots its own disk: {v}"
    );
    let list = app.get("/api/v1/machines", Some(&alice)).expect(200).json();
    let offline: Vec<&str> = list
        .as_array()
        .expect("list")
        .iter()
        .filter(|m| m["offline"] == true)
        .filter_map(|m| m["id"].as_str())
        .collect();
    assert_eq!(offline, [busy.as_str()]);

    let mut s = Session::new(&app);
    s.login("olive", "olive's password").expect(303);
    let html = s.get("/ui").expect(200).text();
    assert!(html.contains("offline (last contact "), "{html}");
    assert!(html.contains("status-offline"), "{html}");
    let csrf = csrf_of(&html);
    let live = app
        .send(
            Method::GET,
            "/ui/live/dashboard",
            None,
            &[("Cookie", &s.cookie), ("X-CSRF-Token", &csrf)],
            None,
        )
        .expect(200)
        .json();
    let rows = live["machines"].as_array().expect("machines");
    let row = rows.iter().find(|m| m["id"] == busy.as_str()).expect("row");
    assert_eq!(row["offline"], true, "{row}");

    // The user's OS runs: no agent talks, and that is not offline.
    app.baas
        .advance_job(
            &agent,
            job.id,
            baas_core::model::JobState::Running,
            "flashed",
        )
        .expect("running");
    std::thread::sleep(std::time::Duration::from_millis(5));
    assert_eq!(view(&busy)["offline"], false);
    let html = s.get(&format!("/ui/machines/{busy}")).expect(200).text();
    assert!(
        html.contains("running olive&#x27;s setup") || html.contains("running olive&#39;s setup"),
        "{html}"
    );
    assert!(html.contains("Last contact"), "{html}");
}

#[test]
fn a_user_sees_and_uses_anothers_image_only_while_it_is_shared_with_them() {
    let app = TestApp::spawn();
    let (_, ann_token) = app.user("ann", "user");
    set_password(&app, "ann", "ann's password");
    app.user("ben", "user");
    set_password(&app, "ben", "ben's password");
    let image = app.post_image(&ann_token, "ann-os", 1 << 20);
    app.upload(&ann_token, &image, &[7u8; 4096]).expect(201);
    let mut ann = Session::new(&app);
    ann.login("ann", "ann's password").expect(303);
    let mut ben = Session::new(&app);
    ben.login("ben", "ben's password").expect(303);

    let compose = |s: &mut Session<'_>| {
        let csrf = s.csrf("/ui/setups");
        s.post(
            "/ui/setups",
            &[
                ("csrf", &csrf),
                ("name", "with ann's"),
                ("entries[0].image", &image),
                ("entries[0].version", "latest"),
            ],
        )
    };
    // Not shared: Ben neither sees nor uses it.
    let page = ben.get("/ui/setups").expect(200).text();
    assert!(!page.contains(&image), "{page}");
    assert_eq!(ben.get(&format!("/ui/images/{image}")).status, 404);
    let r = compose(&mut ben);
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("not visible to you"), "{}", r.text());

    // Ann shares it with Ben by name; an unknown name is refused.
    let csrf = ann.csrf(&format!("/ui/images/{image}"));
    let r = ann.post(
        &format!("/ui/images/{image}/share"),
        &[("csrf", &csrf), ("name", "nobody")],
    );
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("no user is called"), "{}", r.text());
    let r = ann.post(
        &format!("/ui/images/{image}/share"),
        &[("csrf", &csrf), ("name", "ben")],
    );
    assert_eq!(r.status, 303, "{}", r.text());
    let page = ann.get(&format!("/ui/images/{image}")).expect(200).text();
    assert!(page.contains("id=\"shared-with\""), "{page}");
    assert!(page.contains("<td>ben</td>"), "{page}");
    assert!(
        page.contains("<dd>shared</dd>"),
        "private became shared: {page}"
    );

    // Ben sees it among the images shared with him and composes with it.
    let page = ben.get("/ui/setups").expect(200).text();
    let shared = page
        .split("<optgroup label=\"Shared with you\">")
        .nth(1)
        .expect("a shared group")
        .split("</optgroup>")
        .next()
        .expect("its end");
    assert!(
        shared.contains(&image) && shared.contains("ann-os"),
        "{shared}"
    );
    let r = compose(&mut ben);
    assert_eq!(r.status, 303, "{}", r.text());
    let page = ben.get(&format!("/ui/images/{image}")).expect(200).text();
    assert!(
        !page.contains("id=\"sharing\""),
        "readers do not manage sharing"
    );
    // Only Ann manages the list.
    let csrf = ben.csrf("/ui/setups");
    let r = ben.post(
        &format!("/ui/images/{image}/unshare"),
        &[("csrf", &csrf), ("name", "ben")],
    );
    assert_eq!(r.status, 403, "{}", r.text());

    // Unshared: gone again.
    let csrf = ann.csrf(&format!("/ui/images/{image}"));
    let r = ann.post(
        &format!("/ui/images/{image}/unshare"),
        &[("csrf", &csrf), ("name", "ben")],
    );
    assert_eq!(r.status, 303, "{}", r.text());
    let page = ben.get("/ui/setups").expect(200).text();
    assert!(
        !page.contains(&format!("<option value=\"{image}\"")),
        "{page}"
    );
    assert_eq!(compose(&mut ben).status, 400);

    // An admin reads every image: Ann's is among other users' images, not
    // called public.
    let mut admin = Session::new(&app);
    let csrf = admin.csrf("/ui/login");
    admin
        .post("/ui/login", &[("csrf", &csrf), ("token", &app.admin)])
        .expect(303);
    let page = admin.get("/ui/setups").expect(200).text();
    let others = page
        .split("images (admin)\">")
        .nth(1)
        .unwrap_or_else(|| panic!("an admin's group of other users' images: {page}"));
    assert!(others
        .split("</optgroup>")
        .next()
        .expect("group")
        .contains(&image));
    assert!(!page.contains("<optgroup label=\"Public\">"), "{page}");
}

#[test]
fn sessions_survive_a_restart_with_the_key_file_of_the_data_directory() {
    use std::os::unix::fs::PermissionsExt;
    let with_key = |s: &mut baas_server::Settings, path: &std::path::Path| {
        s.session_key = Some(baas_server::ui::SessionKey::load_or_create(path).expect("key"));
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let key_path = dir.path().join("session-key");
    let app = TestApp::spawn_in(dir, |s| with_key(s, &key_path), |_| {});
    let meta = std::fs::metadata(&key_path).expect("the key file is made on first start");
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert_eq!(meta.len(), 64);
    let first = std::fs::read(&key_path).expect("key");
    app.user("rita", "user");
    set_password(&app, "rita", "rita's password");
    let mut s = Session::new(&app);
    s.login("rita", "rita's password").expect(303);
    s.get("/ui/images").expect(200);
    let cookie = s.cookie.clone();

    // The same data directory: the same key, the cookie still works.
    let dir = app.stop();
    let app = TestApp::spawn_in(dir, |s| with_key(s, &key_path), |_| {});
    assert_eq!(std::fs::read(&key_path).expect("key"), first, "reused");
    let mut s = Session::new(&app);
    s.cookie = cookie.clone();
    let page = s.get("/ui/images").expect(200).text();
    assert!(page.contains("rita"), "still logged in: {page}");

    // Without the key file (a key per process) the cookie is refused.
    let dir = app.stop();
    let app = TestApp::spawn_in(dir, |_| {}, |_| {});
    let mut s = Session::new(&app);
    s.cookie = cookie;
    let r = s.get("/ui/images");
    assert_eq!(r.status, 303, "{}", r.text());
    assert!(location(&r).starts_with("/ui/login"), "{}", location(&r));

    // A damaged or exposed key file stops the server with what to do.
    std::fs::write(&key_path, b"short").expect("damage");
    let e = baas_server::ui::SessionKey::load_or_create(&key_path).expect_err("short");
    assert!(e.to_string().contains("has 5 bytes, not 64"), "{e}");
    std::fs::write(&key_path, first).expect("restore");
    std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let e = baas_server::ui::SessionKey::load_or_create(&key_path).expect_err("0644");
    assert!(e.to_string().contains("chmod 600"), "{e}");
    drop(app);
}

#[test]
fn the_offline_limit_comes_from_the_command_line() {
    use clap::Parser;
    let cli =
        baas_server::cli::Cli::try_parse_from(["baas-server", "--offline-after-seconds", "30"])
            .expect("parses");
    assert_eq!(cli.store.config().offline_after_ms, 30_000);
    let cli = baas_server::cli::Cli::try_parse_from(["baas-server"]).expect("parses");
    assert_eq!(
        cli.store.config().offline_after_ms,
        baas_core::Config::default().offline_after_ms,
        "three minutes unless told"
    );
    assert!(baas_server::cli::Cli::try_parse_from([
        "baas-server",
        "--offline-after-seconds",
        "-1"
    ])
    .is_err());
}
