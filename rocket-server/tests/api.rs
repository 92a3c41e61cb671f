//! The clean API over real HTTP: the resources end to end, the error
//! envelope for every kind of bad input, metrics, and the OpenAPI document
//! covering every mounted route (the original's included).

mod common;

use common::TestApp;
use serde_json::json;
use ureq::http::Method;

#[test]
fn healthz_needs_no_token_and_everything_else_does() {
    let app = TestApp::spawn();
    let h = app.get("/healthz", None).expect(200);
    assert_eq!(h.header("content-type"), Some("application/json"));
    assert_eq!(h.json()["status"], "ok");
    assert!(h.header("x-request-id").is_some());

    for path in [
        "/metrics",
        "/api/v1/images",
        "/api/v1/users/me",
        "/machines",
    ] {
        let r = app.get(path, None);
        assert!(
            r.header("www-authenticate")
                .is_some_and(|v| v.starts_with("Bearer")),
            "{path}"
        );
        r.expect_error(401, "unauthenticated");
        app.get(path, Some("baas_0000"))
            .expect_error(401, "unauthenticated");
    }
    // The original's bypass header does nothing.
    app.send(Method::GET, "/machines", None, &[("type", "system")], None)
        .expect_error(401, "unauthenticated");
    app.send(
        Method::GET,
        "/machines",
        None,
        &[("Authorization", &format!("Basic {}", app.admin))],
        None,
    )
    .expect_error(401, "unauthenticated");
    app.get("/metrics", Some(&app.admin)).expect(200);
}

#[test]
fn users_tokens_and_roles() {
    let app = TestApp::spawn();
    let (alice, tok) = app.user("alice", "user");
    let me = app.get("/api/v1/users/me", Some(&tok)).expect(200).json();
    assert_eq!(me["id"], alice.as_str());
    assert_eq!(me["role"], "user");
    // A user cannot raise their own role, nor list users.
    app.json(
        Method::PATCH,
        "/api/v1/users/me",
        Some(&tok),
        &json!({"role": "admin"}),
    )
    .expect_error(403, "forbidden");
    app.get("/api/v1/users", Some(&tok))
        .expect_error(403, "forbidden");
    let patched = app
        .json(
            Method::PATCH,
            "/api/v1/users/me",
            Some(&tok),
            &json!({"display_name": "Alice A."}),
        )
        .expect(200)
        .json();
    assert_eq!(patched["display_name"], "Alice A.");
    // Duplicate names conflict (no silent upsert).
    app.post("/api/v1/users", Some(&app.admin), &json!({"name": "alice"}))
        .expect_error(409, "conflict");
    // A second token, listed without its secret, then revoked.
    let t2 = app
        .post(
            "/api/v1/users/me/tokens",
            Some(&tok),
            &json!({"name": "laptop", "ttl_seconds": 3600}),
        )
        .expect(201)
        .json();
    let secret = t2["secret"].as_str().expect("secret");
    assert!(secret.starts_with("baas_"));
    let list = app.get("/api/v1/users/me/tokens", Some(secret)).expect(200);
    assert!(!list.text().contains(secret));
    assert_eq!(list.json().as_array().map(Vec::len), Some(2));
    let tid = t2["token"]["id"].as_str().expect("token id");
    app.delete(&format!("/api/v1/tokens/{tid}"), Some(&tok))
        .expect(204);
    app.get("/api/v1/users/me", Some(secret))
        .expect_error(401, "unauthenticated");
    // Admins delete users; the user's token stops working.
    app.delete(&format!("/api/v1/users/{alice}"), Some(&app.admin))
        .expect(204);
    app.get("/api/v1/users/me", Some(&tok))
        .expect_error(401, "unauthenticated");
}

#[test]
fn images_versions_setups_machines_and_jobs() {
    let app = TestApp::spawn();
    let (uid, tok) = app.user("bob", "user");
    let created = app
        .post(
            "/api/v1/images",
            Some(&tok),
            &json!({"name": "debian", "size": 1 << 20, "disk": "/dev/nvme0n1#2",
                    "metadata": {"os": "debian"}}),
        )
        .expect(201)
        .json();
    let img = created["image"]["id"].as_str().expect("id").to_string();
    assert_eq!(created["image"]["owner_id"], uid.as_str());
    assert_eq!(created["image"]["disk"], "/dev/nvme0n1#2");
    assert_eq!(created["version"]["number"], 0);
    assert_eq!(created["version"]["source"], "blank");
    assert_eq!(created["version"]["size"], 1 << 20);

    let listed = app
        .get(&format!("/api/v1/images?owner={uid}"), Some(&tok))
        .expect(200)
        .json();
    assert_eq!(listed.as_array().map(Vec::len), Some(1));
    let renamed = app
        .json(
            Method::PATCH,
            &format!("/api/v1/images/{img}"),
            Some(&tok),
            &json!({"name": "debian-13"}),
        )
        .expect(200)
        .json();
    assert_eq!(renamed["name"], "debian-13");

    let data = common::SparseImage::bytes(300_000, 7);
    let v1 = app
        .send(
            Method::POST,
            &format!("/api/v1/images/{img}/versions?note=first"),
            Some(&tok),
            &[("Content-Type", "application/octet-stream")],
            Some(data.clone()),
        )
        .expect(201)
        .json();
    assert_eq!(v1["number"], 1);
    assert_eq!(v1["size"], 300_000);
    assert_eq!(v1["source"], "upload");
    assert_eq!(v1["note"], "first");
    assert!(v1["added_bytes"].as_u64().is_some_and(|n| n > 0));
    assert_eq!(v1["root"].as_str().map(str::len), Some(64));

    let latest = app
        .get(&format!("/api/v1/images/{img}/versions/latest"), Some(&tok))
        .expect(200)
        .json();
    assert_eq!(latest["number"], 1);
    assert_eq!(latest["root"], v1["root"]);
    let versions = app
        .get(&format!("/api/v1/images/{img}/versions"), Some(&tok))
        .expect(200)
        .json();
    assert_eq!(versions.as_array().map(Vec::len), Some(2));
    let content = app
        .get(
            &format!("/api/v1/images/{img}/versions/1/content"),
            Some(&tok),
        )
        .expect(200);
    assert_eq!(content.body, data);
    assert_eq!(
        content.header("etag"),
        Some(format!("\"{}\"", v1["root"].as_str().unwrap_or_default()).as_str())
    );
    let manifest = app
        .get(
            &format!("/api/v1/images/{img}/versions/1/manifest"),
            Some(&tok),
        )
        .expect(200);
    let m = baas_core::content::Manifest::decode(&manifest.body).expect("manifest");
    assert_eq!(m.size(), 300_000);
    assert_eq!(m.root().to_hex(), v1["root"].as_str().unwrap_or_default());

    // Setups.
    let setup = app
        .post(
            "/api/v1/setups",
            Some(&tok),
            &json!({"name": "exp-42", "entries": [
                {"image_id": img, "version": 1, "capture": true},
                {"image_id": img, "disk": "first"}
            ]}),
        )
        .expect(201)
        .json();
    let sid = setup["id"].as_str().expect("setup id").to_string();
    assert_eq!(setup["entries"][1]["version"], "latest");
    let replaced = app
        .json(
            Method::PUT,
            &format!("/api/v1/setups/{sid}"),
            Some(&tok),
            &json!({"name": "exp-43", "entries": [{"image_id": img, "version": "latest"}]}),
        )
        .expect(200)
        .json();
    assert_eq!(replaced["name"], "exp-43");
    assert_eq!(
        app.get("/api/v1/setups", Some(&tok))
            .expect(200)
            .json()
            .as_array()
            .map(Vec::len),
        Some(1)
    );
    app.post(
        "/api/v1/setups",
        Some(&tok),
        &json!({"name": "bad", "entries": [{"image_id": img, "version": 9}]}),
    )
    .expect_error(400, "invalid_input");

    // Machines.
    app.post(
        "/api/v1/machines",
        Some(&tok),
        &json!({"mac": "52:54:00:aa:bb:cc"}),
    )
    .expect_error(403, "forbidden");
    let mid = app.machine("52-54-00-AA-BB-CC");
    let by_mac = app
        .get("/api/v1/machines/52:54:00:aa:bb:cc", Some(&tok))
        .expect(200)
        .json();
    assert_eq!(by_mac["id"], mid.as_str());
    assert_eq!(by_mac["state"], "ready");
    assert_eq!(
        app.get(&format!("/api/v1/machines/{mid}"), Some(&tok))
            .expect(200)
            .json()["mac"],
        "52:54:00:aa:bb:cc"
    );
    app.post(
        "/api/v1/machines",
        Some(&app.admin),
        &json!({"mac": "52:54:00:aa:bb:cc"}),
    )
    .expect_error(409, "conflict");

    // Jobs: a setup, and a single image version, then the queue.
    let j1 = app
        .post(
            &format!("/api/v1/machines/{mid}/jobs"),
            Some(&tok),
            &json!({"setup_id": sid}),
        )
        .expect(201)
        .json();
    assert_eq!(j1["state"], "queued");
    assert_eq!(j1["entries"][0]["version"], 1);
    let j2 = app
        .boot_queue(&tok, "52:54:00:aa:bb:cc", &img, 0)
        .expect(201)
        .json();
    let queue = app
        .get(&format!("/api/v1/machines/{mid}/queue"), Some(&tok))
        .expect(200)
        .json();
    assert_eq!(queue.as_array().map(Vec::len), Some(2));
    let jid = j2["id"].as_str().expect("job id");
    app.get(&format!("/api/v1/jobs/{jid}"), Some(&tok))
        .expect(200);
    let cancelled = app
        .post(
            &format!("/api/v1/jobs/{jid}/cancel"),
            Some(&tok),
            &json!({}),
        )
        .expect(200)
        .json();
    assert_eq!(cancelled["state"], "cancelled");
    app.post(
        &format!("/api/v1/jobs/{jid}/cancel"),
        Some(&tok),
        &json!({}),
    )
    .expect_error(409, "conflict");
    let events = app
        .get(&format!("/api/v1/jobs/{jid}/events"), Some(&tok))
        .expect(200)
        .json();
    let kinds: Vec<_> = events
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["kind"].as_str())
        .collect();
    assert_eq!(kinds, ["queued", "cancelled"]);
    let mine = app
        .get("/api/v1/jobs?state=queued,cancelled&limit=10", Some(&tok))
        .expect(200)
        .json();
    assert_eq!(mine.as_array().map(Vec::len), Some(2));
    app.get("/api/v1/jobs?state=flying", Some(&tok))
        .expect_error(400, "invalid_input");

    // A version a queued job needs cannot go; the image neither.
    app.delete(&format!("/api/v1/images/{img}/versions/1"), Some(&tok))
        .expect_error(409, "conflict");
    // Retire the machine once its queue is empty.
    let j1id = j1["id"].as_str().expect("job id");
    app.post(
        &format!("/api/v1/jobs/{j1id}/cancel"),
        Some(&tok),
        &json!({}),
    )
    .expect(200);
    let retired = app
        .json(
            Method::PATCH,
            &format!("/api/v1/machines/{mid}"),
            Some(&app.admin),
            &json!({"state": "retired", "pool": "lab-a"}),
        )
        .expect(200)
        .json();
    assert_eq!(retired["state"], "retired");
    assert_eq!(retired["pool"], "lab-a");
    app.boot_queue(&tok, &mid, &img, 1)
        .expect_error(409, "conflict");

    app.delete(&format!("/api/v1/setups/{sid}"), Some(&tok))
        .expect(204);
    app.delete(&format!("/api/v1/images/{img}/versions/1"), Some(&tok))
        .expect(204);
    app.get(&format!("/api/v1/images/{img}/versions/1"), Some(&tok))
        .expect_error(404, "not_found");
    app.delete(&format!("/api/v1/images/{img}"), Some(&tok))
        .expect(204);
    app.get(&format!("/api/v1/images/{img}"), Some(&tok))
        .expect_error(404, "not_found");

    // Garbage collection and storage figures (admins).
    app.post("/api/v1/admin/gc", Some(&tok), &json!({}))
        .expect_error(403, "forbidden");
    let gc = app
        .post("/api/v1/admin/gc", Some(&app.admin), &json!({}))
        .expect(200)
        .json();
    assert!(gc["usage"]["bytes"].is_u64());
    app.get("/api/v1/admin/storage", Some(&app.admin))
        .expect(200);
}

#[test]
fn bad_input_gets_the_envelope_and_the_right_status() {
    let app = TestApp::spawn_with(|s| s.max_upload_bytes = 100_000);
    let (_, tok) = app.user("carol", "user");
    let img = app.post_image(&tok, "x", 1 << 20);

    // Malformed JSON, empty body, wrong types, unknown and missing fields.
    let raw = |body: &str| {
        app.send(
            Method::POST,
            "/api/v1/images",
            Some(&tok),
            &[("Content-Type", "application/json")],
            Some(body.as_bytes().to_vec()),
        )
    };
    raw("{\"name\": ").expect_error(400, "malformed_json");
    raw("").expect_error(400, "malformed_json");
    raw("not json").expect_error(400, "malformed_json");
    let v = raw("{\"name\": \"x\", \"size\": \"big\"}").expect_error(400, "invalid_input");
    assert_eq!(v["error"]["field"], "size");
    let v = raw("{\"name\": \"x\", \"size\": 1, \"colour\": 1}").expect_error(400, "invalid_input");
    assert!(v["error"]["message"]
        .as_str()
        .is_some_and(|m| m.contains("colour")));
    raw("{\"size\": 1}").expect_error(400, "invalid_input");
    raw("[1, 2]").expect_error(400, "invalid_input");
    let v = raw("{\"name\": \"x\", \"size\": 0}").expect_error(400, "invalid_input");
    assert_eq!(v["error"]["field"], "size");
    let v = raw("{\"name\": \"x\", \"size\": 1, \"disk\": \"/dev/../etc\"}")
        .expect_error(400, "invalid_input");
    assert_eq!(v["error"]["field"], "disk");

    // Bad UUIDs, MACs, versions and hashes in paths.
    let v = app
        .get("/api/v1/images/not-a-uuid", Some(&tok))
        .expect_error(400, "invalid_input");
    assert_eq!(v["error"]["field"], "image_id");
    app.get("/api/v1/machines/52:54:00:zz:00:01", Some(&tok))
        .expect_error(400, "invalid_input");
    app.get("/machine/%5Byour%20MAC%20address%5D", Some(&tok))
        .expect_error(400, "invalid_input");
    app.get(&format!("/api/v1/images/{img}/versions/-1"), Some(&tok))
        .expect_error(400, "invalid_input");
    app.get(&format!("/api/v1/images/{img}/versions/7"), Some(&tok))
        .expect_error(404, "not_found");
    app.send(
        Method::PUT,
        &format!("/api/v1/uploads/{img}/chunks/abc"),
        Some(&tok),
        &[],
        Some(vec![0]),
    )
    .expect_error(400, "invalid_input");
    app.get("/api/v1/jobs?limit=lots", Some(&tok))
        .expect_error(400, "invalid_input");
    // Unknown machines and images are 404.
    app.get("/api/v1/machines/52:54:00:00:00:09", Some(&tok))
        .expect_error(404, "not_found");
    app.get(
        "/api/v1/images/67e55044-10b1-426f-9247-bb680e5fe0c8",
        Some(&tok),
    )
    .expect_error(404, "not_found");

    // Unknown routes and methods.
    app.get("/api/v1/nothing", Some(&tok))
        .expect_error(404, "not_found");
    app.send(Method::PUT, "/api/v1/images", Some(&tok), &[], Some(vec![]))
        .expect_error(404, "not_found");
    // No redirect for a trailing slash.
    let r = app.get("/api/v1/images/", Some(&tok));
    assert!(r.status == 404 || r.status == 200, "{}", r.status);

    // Oversized bodies: JSON over 1 MiB, uploads over the limit.
    let big = format!("{{\"name\": \"{}\", \"size\": 1}}", "a".repeat(2 << 20));
    raw(&big).expect_error(413, "too_large");
    let v = app
        .upload(&tok, &img, &vec![1u8; 100_001])
        .expect_error(413, "too_large");
    assert!(v["error"]["message"]
        .as_str()
        .is_some_and(|m| m.contains("100000")));
    app.upload(&tok, &img, &vec![1u8; 100_000]).expect(201);
    app.upload(&tok, &img, &[])
        .expect_error(400, "invalid_input");
    let mut r = common::SparseImage::new(300_000, 1);
    app.send_reader(
        Method::POST,
        &format!("/api/v1/images/{img}/versions"),
        Some(&tok),
        &[],
        &mut r,
    )
    .expect_error(413, "too_large");
    // Nothing but the two good versions exists.
    let versions = app
        .get(&format!("/api/v1/images/{img}/versions"), Some(&tok))
        .expect(200)
        .json();
    assert_eq!(versions.as_array().map(Vec::len), Some(2));
}

#[test]
fn metrics_count_requests_bytes_and_jobs() {
    let app = TestApp::spawn();
    let (_, tok) = app.user("dave", "user");
    let img = app.post_image(&tok, "m", 1 << 20);
    app.upload(&tok, &img, &[7u8; 5000]).expect(201);
    app.get(
        &format!("/api/v1/images/{img}/versions/1/content"),
        Some(&tok),
    )
    .expect(200);
    let mid = app.machine("52:54:00:00:00:42");
    app.boot_queue(&tok, &mid, &img, 1).expect(201);
    app.get("/nope", Some(&tok)).expect(404);
    assert!(app.metric("baas_http_requests_total{class=\"2xx\"}") >= 5);
    assert!(app.metric("baas_http_requests_total{class=\"4xx\"}") >= 1);
    assert!(app.metric("baas_http_request_bytes_total") >= 5000);
    assert!(app.metric("baas_http_response_bytes_total") >= 5000);
    assert_eq!(app.metric("baas_uploads_in_progress"), 0);
    assert_eq!(app.metric("baas_uploads_total"), 1);
    assert_eq!(app.metric("baas_jobs{state=\"queued\"}"), 1);
    let text = app.get("/metrics", Some(&app.admin)).expect(200);
    assert!(text
        .header("content-type")
        .is_some_and(|c| c.starts_with("text/plain")));
}

#[test]
fn openapi_document_covers_every_mounted_route() {
    let doc = baas_server::openapi::document();
    let dir = tempfile::tempdir().expect("temp dir");
    let rocket = baas_server::build(
        common::open_store(dir.path()),
        baas_server::Settings::default(),
    );
    let mut checked = 0;
    // The web UI (`/ui`, and `/` redirecting there) is pages, not API.
    let is_ui = |path: &str| path == "/" || path == "/ui" || path.starts_with("/ui/");
    for route in rocket.routes() {
        let path = route.uri.path().to_string();
        if is_ui(&path) {
            continue;
        }
        let templated: String = path
            .split('/')
            .map(
                |seg| match seg.strip_prefix('<').and_then(|s| s.strip_suffix('>')) {
                    Some(name) => format!("{{{name}}}"),
                    None => seg.to_string(),
                },
            )
            .collect::<Vec<_>>()
            .join("/");
        let item =
            doc.paths.paths.get(&templated).unwrap_or_else(|| {
                panic!("{templated} is mounted but not in the OpenAPI document")
            });
        let op = match route.method.as_str() {
            "GET" => &item.get,
            "POST" => &item.post,
            "PUT" => &item.put,
            "PATCH" => &item.patch,
            "DELETE" => &item.delete,
            other => panic!("unexpected method {other}"),
        };
        assert!(
            op.is_some(),
            "{} {templated} is mounted but not documented",
            route.method
        );
        checked += 1;
    }
    assert!(checked >= 55, "only {checked} routes");
    // And nothing documented is missing from the app.
    let mounted: Vec<String> = rocket.routes().map(|r| r.uri.path().to_string()).collect();
    let documented: usize = doc
        .paths
        .paths
        .values()
        .map(|i| {
            [&i.get, &i.post, &i.put, &i.patch, &i.delete]
                .iter()
                .filter(|o| o.is_some())
                .count()
        })
        .sum();
    assert_eq!(
        documented, checked,
        "operations documented vs routes mounted"
    );
    for p in doc.paths.paths.keys() {
        let rocketish = p.replace('{', "<").replace('}', ">");
        assert!(
            mounted.contains(&rocketish),
            "{p} is documented but not mounted"
        );
    }

    let app = TestApp::spawn();
    app.get("/api/v1/openapi.json", None)
        .expect_error(401, "unauthenticated");
    let served = app
        .get("/api/v1/openapi.json", Some(&app.admin))
        .expect(200)
        .json();
    assert!(served["openapi"]
        .as_str()
        .is_some_and(|v| v.starts_with("3.")));
    assert!(served["paths"]["/api/v1/images/{id}/versions/{version}/content"]["get"].is_object());
    assert!(served["components"]["securitySchemes"]["bearer"].is_object());
}
