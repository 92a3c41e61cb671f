//! The web UI for researchers and lab admins, served by this binary under
//! `/ui`: server-rendered askama pages (`rocket-server/templates/`, compiled
//! in), a stylesheet and two small scripts (`rocket-server/static/`,
//! embedded), nothing from elsewhere.
//!
//! It is another shell over the same services as the REST API: every page
//! and form calls `baas-core` as the logged-in user ([`session::Viewer`]),
//! so the rules are the same. Sessions are private cookies (see
//! [`session`]); every POST checks a CSRF token; every response carries a
//! strict Content-Security-Policy (no inline scripts or styles), and askama
//! escapes everything a user typed.

use std::io::Cursor;

use rocket::fairing::{Fairing, Info, Kind};
use rocket::http::{ContentType, Header, Status};
use rocket::request::Request;
use rocket::response::{self, Redirect, Responder, Response};
use rocket::{catch, get, Build, Rocket, Route};

pub mod actions;
pub mod live;
pub mod pages;
pub mod session;
pub mod views;

/// The Content-Security-Policy of every UI response: only this server's
/// scripts, styles and images; no inline code, no framing, forms post only
/// here.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    img-src 'self' data:; connect-src 'self'; form-action 'self'; \
    base-uri 'none'; frame-ancestors 'none'";

/// Mounts the UI on `rocket`: its routes under `/ui`, its catchers, the
/// security headers, and `/` redirecting to it.
pub fn mount(rocket: Rocket<Build>) -> Rocket<Build> {
    rocket
        .mount("/ui", routes())
        .mount("/", rocket::routes![root])
        .register("/ui", rocket::catchers![catch_ui])
        .attach(SecurityHeaders)
}

/// A fresh secret key for the session cookies' encryption (from the
/// operating system), for servers without a key file: their sessions end
/// when they restart. Without operating-system randomness the server cannot
/// make secrets at all (tokens come from the same source, see `OsEntropy`),
/// so it stops here rather than sign cookies with a guessable key.
pub fn secret_key() -> rocket::config::SecretKey {
    SessionKey::random().secret()
}

/// The key that encrypts and authenticates the session cookies (64 bytes).
#[derive(Clone)]
pub struct SessionKey([u8; 64]);

impl std::fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionKey(..)")
    }
}

impl SessionKey {
    /// Bytes in a key (and in its file).
    pub const LEN: usize = 64;

    /// A fresh key from the operating system's randomness.
    pub fn random() -> SessionKey {
        let mut key = [0u8; Self::LEN];
        getrandom::fill(&mut key).expect(
            "the operating system's random number generator failed: no key for web sessions",
        );
        SessionKey(key)
    }

    /// Rocket's key.
    pub fn secret(&self) -> rocket::config::SecretKey {
        rocket::config::SecretKey::from(&self.0)
    }

    /// The key in `path`, made on first use: 64 bytes from the operating
    /// system's randomness, written to a temporary file of mode 0600,
    /// flushed, and linked into place only if no other server did it
    /// first (then theirs is used), so sessions survive restarts and every
    /// server sharing the data directory accepts the same cookies. A file
    /// of another length, or readable by other users, is an error that
    /// says what to do.
    pub fn load_or_create(path: &std::path::Path) -> anyhow::Result<SessionKey> {
        use anyhow::Context as _;
        use std::io::Write as _;
        use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
        if !path.exists() {
            let key = SessionKey::random();
            let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)
                .with_context(|| format!("creating the session key file {}", tmp.display()))?;
            f.write_all(&key.0)
                .and_then(|()| f.sync_all())
                .with_context(|| format!("writing the session key file {}", tmp.display()))?;
            let linked = std::fs::hard_link(&tmp, path);
            let _ = std::fs::remove_file(&tmp);
            match linked {
                Ok(()) => {
                    if let Some(dir) = path.parent() {
                        // The new name durable too (best effort: a lost
                        // name only ends sessions once more).
                        let _ = std::fs::File::open(dir).and_then(|d| d.sync_all());
                    }
                    return Ok(key);
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => {
                    return Err(e).with_context(|| {
                        format!("creating the session key file {}", path.display())
                    })
                }
            }
        }
        let meta = std::fs::metadata(path)
            .with_context(|| format!("reading the session key file {}", path.display()))?;
        let mode = meta.permissions().mode() & 0o777;
        anyhow::ensure!(
            mode & 0o077 == 0,
            "the session key file {} has mode {mode:o}: other users could forge web sessions; \
             run chmod 600 on it",
            path.display()
        );
        let bytes = std::fs::read(path)
            .with_context(|| format!("reading the session key file {}", path.display()))?;
        let key: [u8; Self::LEN] = bytes.as_slice().try_into().map_err(|_| {
            anyhow::anyhow!(
                "the session key file {} has {} bytes, not {}: delete it and a new key is \
                 made at the next start (logged-in users log in again)",
                path.display(),
                bytes.len(),
                Self::LEN
            )
        })?;
        Ok(SessionKey(key))
    }
}

/// Every route of the UI, to mount at `/ui`.
pub fn routes() -> Vec<Route> {
    rocket::routes![
        asset,
        pages::login_page,
        actions::login,
        actions::logout,
        pages::dashboard,
        pages::images,
        pages::image,
        pages::image_delete_confirm,
        pages::download,
        pages::setups,
        pages::setup,
        pages::machine,
        pages::job,
        pages::account,
        pages::admin,
        actions::create_image,
        actions::rename_image,
        actions::image_visibility,
        actions::share_image,
        actions::unshare_image,
        actions::delete_image,
        actions::create_setup,
        actions::delete_setup,
        actions::launch_setup,
        actions::cancel_job,
        actions::release_job,
        actions::change_password,
        actions::create_token,
        actions::revoke_token,
        actions::admin_create_user,
        actions::admin_update_user,
        actions::admin_delete_user,
        actions::admin_register_machine,
        actions::admin_machine_state,
        actions::admin_gc,
        actions::machine_power,
        live::dashboard_json,
        live::job_json,
        live::begin_upload,
        live::upload_missing,
        live::upload_chunk,
        live::commit_upload,
    ]
}

#[get("/")]
fn root() -> Redirect {
    Redirect::to("/ui")
}

/// The embedded static files.
const ASSETS: &[(&str, &str, &str)] = &[
    (
        "app.css",
        "text/css; charset=utf-8",
        include_str!("../../static/app.css"),
    ),
    (
        "blake3.js",
        "text/javascript; charset=utf-8",
        include_str!("../../static/blake3.js"),
    ),
    (
        "upload.js",
        "text/javascript; charset=utf-8",
        include_str!("../../static/upload.js"),
    ),
    (
        "live.js",
        "text/javascript; charset=utf-8",
        include_str!("../../static/live.js"),
    ),
];

/// An embedded static file.
#[derive(Debug)]
struct Asset {
    mime: &'static str,
    body: &'static str,
}

impl<'r> Responder<'r, 'static> for Asset {
    fn respond_to(self, _req: &'r Request<'_>) -> response::Result<'static> {
        let ct = ContentType::parse_flexible(self.mime).unwrap_or(ContentType::Plain);
        Response::build()
            .header(ct)
            .header(Header::new("Cache-Control", "public, max-age=3600"))
            .sized_body(self.body.len(), Cursor::new(self.body))
            .ok()
    }
}

/// A static file (cached for an hour).
#[get("/static/<name>")]
fn asset(name: &str) -> Option<Asset> {
    let (_, mime, body) = ASSETS.iter().find(|(n, _, _)| *n == name)?;
    Some(Asset { mime, body })
}

/// Security headers on every response (the API's JSON included: they cost
/// nothing there), and no caching of pages.
#[derive(Debug)]
struct SecurityHeaders;

#[rocket::async_trait]
impl Fairing for SecurityHeaders {
    fn info(&self) -> Info {
        Info {
            name: "UI security headers",
            kind: Kind::Response,
        }
    }

    async fn on_response<'r>(&self, req: &'r Request<'_>, res: &mut Response<'r>) {
        res.set_header(Header::new("Content-Security-Policy", CSP));
        res.set_header(Header::new("X-Content-Type-Options", "nosniff"));
        res.set_header(Header::new("X-Frame-Options", "DENY"));
        res.set_header(Header::new("Referrer-Policy", "same-origin"));
        let path = req.uri().path();
        if path.starts_with("/ui") && !path.starts_with("/ui/static/") {
            res.set_header(Header::new("Cache-Control", "no-store"));
        }
    }
}

/// A failed UI request: a status and a message for people, shown on the
/// error page (the core's message, or the server log for internal errors).
#[derive(Debug, Clone)]
pub struct UiError {
    /// The status.
    pub status: Status,
    /// What went wrong.
    pub message: String,
}

impl UiError {
    /// A form without the session's CSRF token.
    pub fn csrf() -> UiError {
        UiError {
            status: Status::Forbidden,
            message: "This form's security token is missing or out of date. Go back, reload the page and try again.".into(),
        }
    }

    /// A bad form input.
    pub fn invalid(message: impl Into<String>) -> UiError {
        UiError {
            status: Status::BadRequest,
            message: message.into(),
        }
    }
}

impl From<crate::error::ApiError> for UiError {
    fn from(e: crate::error::ApiError) -> UiError {
        if e.status().code >= 500 {
            tracing::error!(status = e.status().code, "ui: {}", e.message());
        }
        UiError {
            status: e.status(),
            message: e.message().to_string(),
        }
    }
}

impl From<baas_core::Error> for UiError {
    fn from(e: baas_core::Error) -> UiError {
        UiError::from(crate::error::ApiError::from(e))
    }
}

impl<'r> Responder<'r, 'static> for UiError {
    fn respond_to(self, _req: &'r Request<'_>) -> response::Result<'static> {
        let page = views::ErrorPage {
            status: self.status.code,
            reason: self.status.reason_lossy().to_string(),
            message: self.message,
        };
        let body = views::render(&page);
        Response::build()
            .status(self.status)
            .header(ContentType::HTML)
            .sized_body(body.len(), Cursor::new(body))
            .ok()
    }
}

/// Errors under `/ui`: not logged in goes to the login page (remembering
/// where to come back to), anything else is an HTML error page.
#[catch(default)]
fn catch_ui(status: Status, req: &Request<'_>) -> Result<Redirect, UiError> {
    if status == Status::Unauthorized {
        let back = req.uri().path().to_string();
        let next = if req.method() == rocket::http::Method::Get && back.starts_with("/ui") {
            back
        } else {
            "/ui".into()
        };
        return Ok(Redirect::to(format!(
            "/ui/login?next={}",
            views::urlencode(&next)
        )));
    }
    let message = match status.code {
        404 => "There is nothing here.".to_string(),
        422 => "The form was incomplete or malformed.".to_string(),
        _ => status.reason_lossy().to_string(),
    };
    Err(UiError { status, message })
}
