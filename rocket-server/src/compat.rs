//! The original BAAS routes that users scripted against, kept working on
//! the same services and the same authentication as `/api/v1`:
//! the quickstart's five calls (`POST /user`, `POST /user/{name}/image`,
//! `GET /image/{uuid}/latest`, `POST /image/{uuid}`,
//! `POST /machine/{mac}/boot`), plus `GET /machines`, `GET /machine/{mac}`,
//! `GET /user/me`, `GET /user/{name}/images`, `GET /user/{name}/image_setups`
//! and `POST /user/{name}/image_setup`.
//!
//! JSON keys are matched case-insensitively and unknown keys are ignored,
//! as Go's `encoding/json` did; responses use the original's Go field names
//! and say `Content-Type: application/json`. The original's bugs do not
//! come along: the owner comes from the path and the caller, never from the
//! body; no redirects; 401 for a missing token; versions are never
//! overwritten (`X-BAAS-NewVersion` is not needed).

use baas_core::model::*;
use baas_core::services::{JobRequest, JobTarget, NewImage, NewSetup, NewUser};
use baas_core::{Actor, Baas, Error};
use rocket::data::Data;
use rocket::http::{ContentType, Status};
use rocket::{get, post, Route, State};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use crate::api::parse;
use crate::auth::Caller;
use crate::download::{Conditions, Download};
use crate::error::ApiError;
use crate::json::{LaxJson, Out};
use crate::units::parse_size;
use crate::upload::{self, BodyInfo};
use crate::Settings;

/// The original's routes, to mount at `/`.
pub fn routes() -> Vec<Route> {
    rocket::routes![
        create_user,
        me,
        create_image,
        user_images,
        user_setups,
        create_setup,
        download,
        upload_image,
        list_machines,
        get_machine,
        boot,
    ]
}

/// A user, as the original spelled it.
#[derive(Debug, Serialize, ToSchema)]
pub struct GoUser {
    #[serde(rename = "UUID")]
    id: String,
    #[serde(rename = "Username")]
    username: String,
    #[serde(rename = "Name")]
    name: String,
    #[serde(rename = "Email")]
    email: String,
    #[serde(rename = "Role")]
    role: String,
}

impl From<&User> for GoUser {
    fn from(u: &User) -> Self {
        GoUser {
            id: u.id.to_string(),
            username: u.name.clone(),
            name: u.display_name.clone(),
            email: u.email.clone(),
            role: u.role.to_string(),
        }
    }
}

/// `POST /user`: `{"name", "email", "role"}` (the quickstart's form; the
/// later `{"Username", "Name", ...}` form works too).
#[derive(Debug, Deserialize)]
pub struct UserBody {
    name: Option<String>,
    username: Option<String>,
    #[serde(default)]
    email: String,
    role: Option<String>,
}

/// Creates a user (admins). With `username`, `name` is the display name;
/// without, `name` is the login name.
#[utoipa::path(post, path = "/user", tag = "original",
    request_body(content = Object, description = "`{\"name\", \"email\", \"role\"}` (or `{\"Username\", \"Name\", ...}`); keys in any case"),
    responses((status = 201, body = GoUser), (status = 400, body = crate::error::ErrorEnvelope), (status = 403, body = crate::error::ErrorEnvelope), (status = 409, body = crate::error::ErrorEnvelope)))]
#[post("/user", data = "<body>")]
pub async fn create_user(
    caller: Caller,
    body: LaxJson<UserBody>,
) -> Result<(Status, Out<GoUser>), ApiError> {
    let b = body.0;
    let (login, display) = match (b.username, b.name) {
        (Some(u), n) => (u, n.unwrap_or_default()),
        (None, Some(n)) => (n, String::new()),
        (None, None) => return Err(Error::invalid("name", "missing").into()),
    };
    let new = NewUser {
        name: login,
        display_name: display,
        email: b.email,
        role: match b.role {
            Some(r) => parse(&r)?,
            None => Role::User,
        },
    };
    let user = caller.run(move |b, a| b.create_user(a, new)).await?;
    Ok((Status::Created, Out(GoUser::from(&user))))
}

/// `GET /user/me`: the caller.
#[utoipa::path(get, path = "/user/me", tag = "original",
    responses((status = 200, body = GoUser), (status = 403, body = crate::error::ErrorEnvelope)))]
#[get("/user/me")]
pub async fn me(caller: Caller) -> Result<Out<GoUser>, ApiError> {
    let id = crate::api::user_ref(caller.actor(), "me")?;
    let user = caller.run(move |b, a| b.get_user(a, id)).await?;
    Ok(Out(GoUser::from(&user)))
}

/// A version, as the original spelled it.
#[derive(Debug, Serialize, ToSchema)]
pub struct GoVersion {
    #[serde(rename = "Version")]
    version: u32,
    #[serde(rename = "ImageModelUUID")]
    image: String,
    #[serde(rename = "Size")]
    size: u64,
    #[serde(rename = "Root")]
    root: String,
}

impl From<&Version> for GoVersion {
    fn from(v: &Version) -> Self {
        GoVersion {
            version: v.number,
            image: v.image.to_string(),
            size: v.size,
            root: v.root.to_hex(),
        }
    }
}

/// An image, as the original spelled it.
#[derive(Debug, Serialize, ToSchema)]
pub struct GoImage {
    #[serde(rename = "UUID")]
    id: String,
    #[serde(rename = "Name")]
    name: String,
    #[serde(rename = "Username")]
    username: String,
    #[serde(rename = "DiskUUID")]
    disk: String,
    #[serde(rename = "Size")]
    size: u64,
    #[serde(rename = "Type")]
    kind: String,
    #[serde(rename = "Versions")]
    versions: Vec<GoVersion>,
}

fn go_image(image: &Image, owner: &str, versions: &[Version]) -> GoImage {
    GoImage {
        id: image.id.to_string(),
        name: image.name.clone(),
        username: owner.to_string(),
        disk: image.disk.to_string(),
        size: image.size,
        kind: if image.visibility == Visibility::Public {
            "system".into()
        } else {
            "base".into()
        },
        versions: versions.iter().map(GoVersion::from).collect(),
    }
}

/// `POST /user/{name}/image`: `{"name", "DiskUUID", "size"?}`.
#[derive(Debug, Deserialize)]
pub struct ImageBody {
    name: Option<String>,
    diskuuid: Option<String>,
    size: Option<Value>,
}

fn size_of(v: Option<Value>, default: u64) -> Result<u64, Error> {
    match v {
        None | Some(Value::Null) => Ok(default),
        Some(Value::Number(n)) => n
            .as_u64()
            .ok_or_else(|| Error::invalid("size", format!("{n} is not a whole number of bytes"))),
        Some(Value::String(s)) => parse_size("size", &s),
        Some(other) => Err(Error::invalid(
            "size",
            format!("{other} is not a size; give bytes or a string like \"8GiB\""),
        )),
    }
}

/// The owner named in a path: the caller, or (for admins) someone else.
fn owner_named(baas: &Baas, actor: &Actor, name: &str) -> baas_core::Result<UserId> {
    match actor {
        Actor::User { id, name: mine, .. } if mine == name => Ok(*id),
        _ => Ok(baas.get_user_by_name(actor, name)?.id),
    }
}

/// Creates an image owned by `{name}` (yourself; admins for anyone) with
/// its blank version 0 of the declared size (`size`, else the server's
/// default).
#[utoipa::path(post, path = "/user/{name}/image", tag = "original",
    params(("name" = String, Path, description = "the owner's login name")),
    request_body(content = Object, description = "`{\"name\", \"DiskUUID\", \"size\"?}`; keys in any case; size in bytes or like \"8GiB\""),
    responses((status = 201, body = GoImage), (status = 400, body = crate::error::ErrorEnvelope), (status = 403, body = crate::error::ErrorEnvelope), (status = 404, body = crate::error::ErrorEnvelope)))]
#[post("/user/<name>/image", data = "<body>")]
pub async fn create_image(
    caller: Caller,
    settings: &State<Settings>,
    name: &str,
    body: LaxJson<ImageBody>,
) -> Result<(Status, Out<GoImage>), ApiError> {
    let b = body.0;
    let new = NewImage {
        owner: None,
        name: b.name.ok_or_else(|| Error::invalid("name", "missing"))?,
        disk: match b.diskuuid {
            Some(d) => d
                .parse()
                .map_err(|e: Error| Error::invalid("DiskUUID", e.message().to_string()))?,
            None => DiskSelector::first(),
        },
        size: size_of(b.size, settings.compat_image_size)?,
        metadata: Default::default(),
        visibility: Visibility::Private,
    };
    let owner_name = name.to_string();
    let (image, v0) = caller
        .run(move |b, a| {
            let owner = owner_named(b, a, &owner_name)?;
            b.create_image(
                a,
                NewImage {
                    owner: Some(owner),
                    ..new
                },
            )
        })
        .await?;
    Ok((Status::Created, Out(go_image(&image, name, &[v0]))))
}

/// `{name}`'s images that you may read, with their versions.
#[utoipa::path(get, path = "/user/{name}/images", tag = "original",
    params(("name" = String, Path, description = "the owner's login name")),
    responses((status = 200, body = [GoImage]), (status = 404, body = crate::error::ErrorEnvelope)))]
#[get("/user/<name>/images")]
pub async fn user_images(caller: Caller, name: &str) -> Result<Out<Vec<GoImage>>, ApiError> {
    let owner_name = name.to_string();
    let images = caller
        .run(move |b, a| {
            let owner = owner_named(b, a, &owner_name)?;
            b.list_images(a, Some(owner))?
                .into_iter()
                .map(|img| {
                    let versions = b.list_versions(a, img.id)?;
                    Ok(go_image(&img, &owner_name, &versions))
                })
                .collect::<baas_core::Result<Vec<_>>>()
        })
        .await?;
    Ok(Out(images))
}

/// A setup entry, as the original spelled it.
#[derive(Debug, Serialize, ToSchema)]
pub struct GoSetupImage {
    #[serde(rename = "UUIDImage")]
    image: String,
    #[serde(rename = "Version")]
    version: String,
    #[serde(rename = "Update")]
    update: bool,
}

/// A setup, as the original spelled it.
#[derive(Debug, Serialize, ToSchema)]
pub struct GoSetup {
    #[serde(rename = "UUID")]
    id: String,
    #[serde(rename = "Name")]
    name: String,
    #[serde(rename = "Username")]
    username: String,
    #[serde(rename = "Images")]
    images: Vec<GoSetupImage>,
}

fn go_setup(s: &Setup, owner: &str) -> GoSetup {
    GoSetup {
        id: s.id.to_string(),
        name: s.name.clone(),
        username: owner.to_string(),
        images: s
            .entries
            .iter()
            .map(|e| GoSetupImage {
                image: e.image.to_string(),
                version: e.version.to_string(),
                update: e.capture,
            })
            .collect(),
    }
}

/// `{name}`'s setups (yourself; admins for anyone).
#[utoipa::path(get, path = "/user/{name}/image_setups", tag = "original",
    params(("name" = String, Path, description = "the owner's login name")),
    responses((status = 200, body = [GoSetup]), (status = 403, body = crate::error::ErrorEnvelope), (status = 404, body = crate::error::ErrorEnvelope)))]
#[get("/user/<name>/image_setups")]
pub async fn user_setups(caller: Caller, name: &str) -> Result<Out<Vec<GoSetup>>, ApiError> {
    let owner_name = name.to_string();
    let setups = caller
        .run(move |b, a| {
            let owner = owner_named(b, a, &owner_name)?;
            b.list_setups(a, Some(owner))
        })
        .await?;
    Ok(Out(setups.iter().map(|s| go_setup(s, name)).collect()))
}

/// `POST /user/{name}/image_setup`: `{"Name"}`.
#[derive(Debug, Deserialize)]
pub struct SetupBody {
    name: Option<String>,
}

/// Creates an empty setup for yourself (`{name}` must be you).
#[utoipa::path(post, path = "/user/{name}/image_setup", tag = "original",
    params(("name" = String, Path, description = "your login name")),
    request_body(content = Object, description = "`{\"Name\"}`; keys in any case"),
    responses((status = 201, body = GoSetup), (status = 400, body = crate::error::ErrorEnvelope), (status = 403, body = crate::error::ErrorEnvelope)))]
#[post("/user/<name>/image_setup", data = "<body>")]
pub async fn create_setup(
    caller: Caller,
    name: &str,
    body: LaxJson<SetupBody>,
) -> Result<(Status, Out<GoSetup>), ApiError> {
    if !matches!(caller.actor(), Actor::User { name: mine, .. } if mine == name) {
        return Err(Error::forbidden(format!(
            "setups are created for yourself: POST /user/<your name>/image_setup, not {name:?}"
        ))
        .into());
    }
    let setup_name = body
        .0
        .name
        .ok_or_else(|| Error::invalid("Name", "missing"))?;
    let new = NewSetup {
        name: setup_name,
        entries: Vec::new(),
    };
    let setup = caller.run(move |b, a| b.create_setup(a, new)).await?;
    Ok((Status::Created, Out(go_setup(&setup, name))))
}

/// `GET /image/{uuid}/{version}` and `GET /image/{uuid}/latest`: the
/// version's bytes, with the same ranges and ETag as `/api/v1`.
#[utoipa::path(get, path = "/image/{id}/{version}", tag = "original",
    params(("id" = uuid::Uuid, Path, description = "image id"),
        ("version" = String, Path, description = "a version number, or `latest`"),
        ("Range" = Option<String>, Header, description = "one byte range")),
    responses((status = 200, content_type = "application/octet-stream", body = crate::dto::Binary),
        (status = 206, content_type = "application/octet-stream", body = crate::dto::Binary),
        (status = 304), (status = 404, body = crate::error::ErrorEnvelope), (status = 416, body = crate::error::ErrorEnvelope)))]
#[get("/image/<id>/<version>")]
pub async fn download(
    caller: Caller,
    id: &str,
    version: &str,
    conditions: Conditions,
) -> Result<Download, ApiError> {
    let id: ImageId = parse(id)?;
    let v: VersionRef = parse(version)?;
    let reader = caller.run(move |b, a| b.open_version(a, id, v)).await?;
    let name = format!("{id}-{}.img", reader.version().number);
    Ok(Download::new(reader, conditions, name))
}

/// `POST /image/{uuid}`: a new version from a multipart (or raw) body.
/// Answers `Successfully uploaded image: N` so `awk '{print $4}'` reads N.
#[utoipa::path(post, path = "/image/{id}", tag = "original",
    params(("id" = uuid::Uuid, Path, description = "image id")),
    request_body(description = "the image, as a multipart form (first part) or raw",
        content((crate::dto::UploadForm = "multipart/form-data"), (crate::dto::Binary = "application/octet-stream"))),
    responses((status = 200, content_type = "text/plain", body = String,
            description = "`Successfully uploaded image: N`"),
        (status = 400, body = crate::error::ErrorEnvelope), (status = 404, body = crate::error::ErrorEnvelope), (status = 413, body = crate::error::ErrorEnvelope)))]
#[post("/image/<id>", data = "<data>")]
pub async fn upload_image(
    caller: Caller,
    id: &str,
    info: BodyInfo,
    data: Data<'_>,
) -> Result<(ContentType, String), ApiError> {
    let id: ImageId = parse(id)?;
    let version = upload::import(&caller, id, info, data, None).await?;
    Ok((
        ContentType::Plain,
        format!("Successfully uploaded image: {}\n", version.number),
    ))
}

/// A machine, as the original spelled it.
#[derive(Debug, Serialize, ToSchema)]
pub struct GoMachine {
    #[serde(rename = "UUID")]
    id: String,
    #[serde(rename = "Name")]
    name: String,
    #[serde(rename = "Architecture")]
    arch: String,
    #[serde(rename = "Managed")]
    managed: bool,
    #[serde(rename = "State")]
    state: String,
    #[serde(rename = "MacAddress")]
    mac: GoMac,
}

/// `{"Address": "52:54:00:..."}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct GoMac {
    #[serde(rename = "Address")]
    address: String,
}

impl From<&Machine> for GoMachine {
    fn from(m: &Machine) -> Self {
        GoMachine {
            id: m.id.to_string(),
            name: m.name.clone(),
            arch: m.arch.as_str().to_string(),
            managed: m.state == MachineState::Ready,
            state: m.state.as_str().to_string(),
            mac: GoMac {
                address: m.mac.to_string(),
            },
        }
    }
}

/// Every machine.
#[utoipa::path(get, path = "/machines", tag = "original",
    responses((status = 200, body = [GoMachine]), (status = 403, body = crate::error::ErrorEnvelope)))]
#[get("/machines")]
pub async fn list_machines(caller: Caller) -> Result<Out<Vec<GoMachine>>, ApiError> {
    let machines = caller.run(|b, a| b.list_machines(a)).await?;
    Ok(Out(machines.iter().map(GoMachine::from).collect()))
}

/// A machine by MAC.
#[utoipa::path(get, path = "/machine/{mac}", tag = "original",
    params(("mac" = String, Path, description = "MAC address")),
    responses((status = 200, body = GoMachine), (status = 400, body = crate::error::ErrorEnvelope), (status = 404, body = crate::error::ErrorEnvelope)))]
#[get("/machine/<mac>")]
pub async fn get_machine(caller: Caller, mac: &str) -> Result<Out<GoMachine>, ApiError> {
    let mac: MacAddress = parse(mac)?;
    let machine = caller.run(move |b, a| b.get_machine_by_mac(a, mac)).await?;
    Ok(Out(GoMachine::from(&machine)))
}

/// `POST /machine/{mac}/boot`: `{"Version", "ImageUUID", "update"}` (one
/// image version, `update` = capture it when the session ends) or
/// `{"SetupUUID"}`.
#[derive(Debug, Deserialize)]
pub struct BootBody {
    version: Option<Value>,
    imageuuid: Option<String>,
    setupuuid: Option<String>,
    #[serde(default)]
    update: bool,
}

/// What was queued, as the original's `BootSetup` roughly spelled it.
#[derive(Debug, Serialize, ToSchema)]
pub struct GoBoot {
    #[serde(rename = "JobUUID")]
    job: String,
    #[serde(rename = "MachineMAC")]
    mac: String,
    #[serde(rename = "SetupUUID")]
    setup: Option<String>,
    #[serde(rename = "ImageUUID")]
    image: Option<String>,
    #[serde(rename = "Version")]
    version: Option<u32>,
    #[serde(rename = "Update")]
    update: bool,
    #[serde(rename = "State")]
    state: String,
}

fn version_of(v: Option<Value>) -> Result<VersionRef, Error> {
    match v {
        None | Some(Value::Null) => Ok(VersionRef::Latest),
        Some(Value::Number(n)) => n
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .map(VersionRef::Number)
            .ok_or_else(|| Error::invalid("Version", format!("{n} is not a version number"))),
        Some(Value::String(s)) => s
            .parse()
            .map_err(|e: Error| Error::invalid("Version", e.message().to_string())),
        Some(other) => Err(Error::invalid(
            "Version",
            format!("{other} is not a version number"),
        )),
    }
}

/// Queues a job on the machine `{mac}`.
#[utoipa::path(post, path = "/machine/{mac}/boot", tag = "original",
    params(("mac" = String, Path, description = "MAC address")),
    request_body(content = Object, description = "`{\"Version\", \"ImageUUID\", \"update\"}` or `{\"SetupUUID\"}`; keys in any case"),
    responses((status = 200, body = GoBoot), (status = 400, body = crate::error::ErrorEnvelope), (status = 404, body = crate::error::ErrorEnvelope), (status = 409, body = crate::error::ErrorEnvelope)))]
#[post("/machine/<mac>/boot", data = "<body>")]
pub async fn boot(
    caller: Caller,
    mac: &str,
    body: LaxJson<BootBody>,
) -> Result<Out<GoBoot>, ApiError> {
    let mac: MacAddress = parse(mac)?;
    let b = body.0;
    let target = match (b.setupuuid, b.imageuuid) {
        (Some(s), None) => {
            if b.update {
                return Err(Error::invalid(
                    "Update",
                    "a setup's entries carry their own capture flags; set capture on the entries instead",
                )
                .into());
            }
            JobTarget::Setup(
                s.parse()
                    .map_err(|e: Error| Error::invalid("SetupUUID", e.message().to_string()))?,
            )
        }
        (None, Some(i)) => JobTarget::Image {
            image: i
                .parse()
                .map_err(|e: Error| Error::invalid("ImageUUID", e.message().to_string()))?,
            version: version_of(b.version)?,
            disk: None,
            capture: b.update,
        },
        _ => {
            return Err(Error::invalid(
                "ImageUUID",
                "give either ImageUUID (with Version) or SetupUUID",
            )
            .into())
        }
    };
    let job = caller
        .run(move |b, a| {
            let machine = b.get_machine_by_mac(a, mac)?.id;
            b.enqueue_job(a, JobRequest { machine, target })
        })
        .await?;
    let first = job.entries.first();
    Ok(Out(GoBoot {
        job: job.id.to_string(),
        mac: mac.to_string(),
        setup: job.setup.map(|s| s.to_string()),
        image: first
            .filter(|_| job.setup.is_none())
            .map(|e| e.image.to_string()),
        version: first.filter(|_| job.setup.is_none()).map(|e| e.version),
        update: first.is_some_and(|e| e.capture) && job.setup.is_none(),
        state: job.state.as_str().to_string(),
    }))
}
