//! The original BAAS routes: Go-style JSON (keys matched case-insensitively,
//! unknown keys ignored, Go field names in answers), with the original's
//! bugs gone: JSON answers say `application/json`, the owner comes from the
//! path, never the body, no redirects, 401 without a token.

mod common;

use common::TestApp;
use serde_json::json;
use ureq::http::Method;

#[test]
fn users_are_created_with_go_style_json() {
    let app = TestApp::spawn();
    let r = app
        .post(
            "/user",
            Some(&app.admin),
            &json!({"NAME": "bob", "Email": "bob@lab", "ROLE": "Moderator", "colour": "blue"}),
        )
        .expect(201);
    assert_eq!(r.header("content-type"), Some("application/json"));
    let u = r.json();
    assert_eq!(u["Username"], "bob");
    assert_eq!(u["Role"], "moderator");
    assert_eq!(u["Email"], "bob@lab");
    // The later form: Username is the login, Name the display name.
    let u = app
        .post(
            "/user",
            Some(&app.admin),
            &json!({"Username": "carol", "Name": "Carol C.", "Email": "c", "Role": "user"}),
        )
        .expect(201)
        .json();
    assert_eq!(u["Username"], "carol");
    assert_eq!(u["Name"], "Carol C.");
    // No silent upsert, no unknown roles, no wrong types.
    app.post("/user", Some(&app.admin), &json!({"name": "bob"}))
        .expect_error(409, "conflict");
    let v = app
        .post(
            "/user",
            Some(&app.admin),
            &json!({"name": "dan", "role": "administrator"}),
        )
        .expect_error(400, "invalid_input");
    assert_eq!(v["error"]["field"], "role");
    let v = app
        .post("/user", Some(&app.admin), &json!({"name": 5}))
        .expect_error(400, "invalid_input");
    assert_eq!(v["error"]["field"], "name");
    app.send(
        Method::POST,
        "/user",
        Some(&app.admin),
        &[("Content-Type", "application/json")],
        Some(b"{\"name\": \"x\",".to_vec()),
    )
    .expect_error(400, "malformed_json");
    // A trailing slash is not redirected (the original's StrictSlash).
    let r = app.post("/user/", Some(&app.admin), &json!({"name": "eve"}));
    assert!(!(300..400).contains(&r.status), "{}", r.status);
    // Not logged in is 401, not the original's 404.
    app.post("/user", None, &json!({"name": "eve"}))
        .expect_error(401, "unauthenticated");
    let me = app.get("/user/me", Some(&app.admin)).expect(200).json();
    assert_eq!(me["Username"], "admin");
}

#[test]
fn images_uploads_downloads_and_boots_the_original_way() {
    let app = TestApp::spawn();
    let (_, user) = app.user("USER", "user");
    let (_, other) = app.user("other", "user");
    let mac = "52:54:00:d9:71:93";
    app.machine(mac);

    // The owner is the path's user; a body's Username is ignored.
    let created = app
        .post(
            "/user/USER/image",
            Some(&user),
            &json!({"name": "Test image", "diskuuid": "/dev/sda", "Username": "other", "size": "2MiB"}),
        )
        .expect(201);
    assert_eq!(created.header("content-type"), Some("application/json"));
    let created = created.json();
    let uuid = created["UUID"].as_str().expect("UUID").to_string();
    assert_eq!(created["Username"], "USER");
    assert_eq!(created["DiskUUID"], "/dev/sda");
    assert_eq!(created["Size"], 2 << 20);
    assert_eq!(created["Versions"][0]["Version"], 0);
    // Someone else cannot create images in USER's name.
    app.post(
        "/user/USER/image",
        Some(&other),
        &json!({"name": "mine now", "DiskUUID": "/dev/sda"}),
    )
    .expect_error(404, "not_found");
    let v = app
        .post(
            "/user/USER/image",
            Some(&user),
            &json!({"name": "x", "DiskUUID": "sda"}),
        )
        .expect_error(400, "invalid_input");
    assert_eq!(v["error"]["field"], "DiskUUID");
    // Without a size, the server's default (512 MiB) is declared.
    let default = app
        .post(
            "/user/USER/image",
            Some(&user),
            &json!({"name": "default size", "DiskUUID": "/dev/vda"}),
        )
        .expect(201)
        .json();
    assert_eq!(default["Size"], 512 << 20);

    // Version 0 downloads as zeros of the declared size.
    let blank = app
        .get(&format!("/image/{uuid}/latest"), Some(&user))
        .expect(200);
    assert_eq!(blank.body.len(), 2 << 20);
    assert!(blank.body.iter().all(|b| *b == 0));

    // Uploads answer "Successfully uploaded image: N".
    let data = common::SparseImage::bytes(700_000, 11);
    let r = app
        .send(
            Method::POST,
            &format!("/image/{uuid}"),
            Some(&user),
            &[("Content-Type", "application/octet-stream")],
            Some(data.clone()),
        )
        .expect(200);
    assert_eq!(r.text(), "Successfully uploaded image: 1\n");
    assert_eq!(r.text().split_whitespace().nth(3), Some("1"));
    assert_eq!(
        app.get(&format!("/image/{uuid}/1"), Some(&user))
            .expect(200)
            .body,
        data
    );
    app.get(&format!("/image/{uuid}/2"), Some(&user))
        .expect_error(404, "not_found");
    app.get(&format!("/image/{uuid}/1"), Some(&other))
        .expect_error(404, "not_found");
    let listed = app.get("/user/USER/images", Some(&user)).expect(200).json();
    let mine = listed
        .as_array()
        .and_then(|a| a.iter().find(|i| i["UUID"] == uuid.as_str()))
        .expect("listed");
    assert_eq!(mine["Versions"].as_array().map(Vec::len), Some(2));

    // Boot one image version (update = capture), or a setup.
    let job = app
        .post(
            &format!("/machine/{mac}/boot"),
            Some(&user),
            &json!({"version": 1, "imageuuid": uuid, "Update": true}),
        )
        .expect(200)
        .json();
    assert_eq!(job["Version"], 1);
    assert_eq!(job["Update"], true);
    assert_eq!(job["State"], "queued");
    let setup = app
        .post(
            "/api/v1/setups",
            Some(&user),
            &json!({"name": "s", "entries": [{"image_id": uuid}]}),
        )
        .expect(201)
        .json();
    let sid = setup["id"].as_str().expect("setup id");
    let job = app
        .post(
            "/machine/52-54-00-D9-71-93/boot",
            Some(&user),
            &json!({"SetupUUID": sid, "Update": false}),
        )
        .expect(200)
        .json();
    assert_eq!(job["SetupUUID"], sid);
    app.post(
        &format!("/machine/{mac}/boot"),
        Some(&user),
        &json!({"SetupUUID": sid, "Update": true}),
    )
    .expect_error(400, "invalid_input");
    app.post(&format!("/machine/{mac}/boot"), Some(&user), &json!({}))
        .expect_error(400, "invalid_input");
    app.post(
        &format!("/machine/{mac}/boot"),
        Some(&user),
        &json!({"Version": 9, "ImageUUID": uuid}),
    )
    .expect_error(404, "not_found");
    app.post(
        "/machine/52:54:00:00:00:01/boot",
        Some(&user),
        &json!({"Version": 1, "ImageUUID": uuid}),
    )
    .expect_error(404, "not_found");
    app.post(
        "/machine/not-a-mac/boot",
        Some(&user),
        &json!({"Version": 1, "ImageUUID": uuid}),
    )
    .expect_error(400, "invalid_input");
    let v = app
        .post(
            &format!("/machine/{mac}/boot"),
            Some(&user),
            &json!({"Version": "one", "ImageUUID": uuid}),
        )
        .expect_error(400, "invalid_input");
    assert_eq!(v["error"]["field"], "Version");
    let queue = app
        .get(&format!("/api/v1/machines/{mac}/queue"), Some(&user))
        .expect(200)
        .json();
    assert_eq!(queue.as_array().map(Vec::len), Some(2));
    assert_eq!(queue[0]["entries"][0]["capture"], true);

    // Machines, Go-shaped.
    let machines = app.get("/machines", Some(&user)).expect(200).json();
    assert_eq!(machines[0]["MacAddress"]["Address"], mac);
    assert_eq!(machines[0]["Managed"], true);
    assert_eq!(
        app.get("/machine/525400D97193", Some(&user))
            .expect(200)
            .json()["MacAddress"]["Address"],
        mac
    );

    // Setups under the user.
    let s = app
        .post(
            "/user/USER/image_setup",
            Some(&user),
            &json!({"name": "old style"}),
        )
        .expect(201)
        .json();
    assert_eq!(s["Images"].as_array().map(Vec::len), Some(0));
    let setups = app
        .get("/user/USER/image_setups", Some(&user))
        .expect(200)
        .json();
    assert_eq!(setups.as_array().map(Vec::len), Some(2));
}

#[test]
fn quotas_are_answered_with_413() {
    let app = TestApp::spawn_full(|_| {}, |c| c.user_quota_bytes = Some(200_000));
    let (_, tok) = app.user("quota", "user");
    let img = app.post_image(&tok, "q", 4 << 20);
    // Incompressible data: stored bytes are about the data's size.
    let noise = |seed: u64, len: usize| -> Vec<u8> {
        let mut x = seed;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect()
    };
    let data = noise(0x2545_f491_4f6c_dd1d, 150_000);
    app.upload(&tok, &img, &data).expect(201);
    let more = noise(0x9e37_79b9_7f4a_7c15, 150_000);
    let v = app.upload(&tok, &img, &more).expect_error(413, "too_large");
    assert!(v["error"]["message"]
        .as_str()
        .is_some_and(|m| m.contains("quota")));
    let versions = app
        .get(&format!("/api/v1/images/{img}/versions"), Some(&tok))
        .expect(200)
        .json();
    assert_eq!(versions.as_array().map(Vec::len), Some(2));
}
