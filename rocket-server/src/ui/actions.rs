//! The UI's forms (POST): each checks the session's CSRF token first, then
//! parses its fields into core types, calls one service as the logged-in
//! user, and redirects to the page that shows the result (303, so a reload
//! does not post twice).

use baas_core::model::*;
use baas_core::services::{
    ImagePatch, JobRequest, JobTarget, NewImage, NewMachine, NewSetup, NewUser,
};
use baas_core::Actor;
use rocket::form::{Form, FromForm};
use rocket::http::{CookieJar, Status};
use rocket::post;
use rocket::response::content::RawHtml;
use rocket::response::Redirect;

use super::pages::{account_page, admin_page, safe_next, Page};
use super::session::{self, Viewer, Visitor};
use super::views::{render, LoginPage};
use super::UiError;
use crate::api::parse;

type Done = Result<Redirect, UiError>;

fn go(path: String) -> Done {
    Ok(Redirect::to(path))
}

/// A form with nothing but the CSRF token.
#[derive(Debug, FromForm)]
pub struct Plain {
    #[field(default = String::new())]
    csrf: String,
}

/// The login form.
#[derive(Debug, FromForm)]
pub struct LoginForm {
    #[field(default = String::new())]
    csrf: String,
    #[field(default = String::new())]
    name: String,
    #[field(default = String::new())]
    password: String,
    #[field(default = String::new())]
    token: String,
    #[field(default = String::new())]
    next: String,
}

/// Logs in with a name and password, or with an API token. Failed logins
/// count against the client's address in the same limiter as bad bearer
/// tokens ([`crate::ratelimit::AuthLimiter`]): past it, 429 for a while.
#[post("/login", data = "<form>")]
pub async fn login(
    visitor: Visitor,
    jar: &CookieJar<'_>,
    baas: &rocket::State<baas_core::Baas>,
    limiter: Option<&rocket::State<crate::ratelimit::AuthLimiter>>,
    remote: Option<std::net::SocketAddr>,
    form: Form<LoginForm>,
) -> Result<Result<Redirect, (Status, RawHtml<String>)>, UiError> {
    visitor.check_csrf(&form.csrf)?;
    let limit = limiter.zip(remote.map(|a| a.ip()));
    if let Some((l, ip)) = limit {
        l.admit(ip)?;
    }
    let baas = baas.inner().clone();
    let name = form.name.clone();
    let password = form.password.clone();
    let token = form.token.trim().to_string();
    let outcome = crate::auth::blocking(move || {
        let actor = if !token.is_empty() {
            baas.authenticate(&token)?
        } else {
            baas.login_password(&name, &password)?
        };
        let Actor::User { id, .. } = actor else {
            return Err(baas_core::Error::unauthenticated(
                "machine credentials cannot log in to the web UI",
            ));
        };
        let user = baas.get_user(&actor, id)?;
        Ok((id, user.session_stamp(), baas.now().millis()))
    })
    .await;
    match outcome {
        Ok((id, stamp, now)) => {
            session::login(jar, id, stamp, now);
            Ok(Ok(Redirect::to(safe_next(Some(&form.next)))))
        }
        Err(e) if e.status() == Status::Unauthorized => {
            if let Some((l, ip)) = limit {
                l.failed(ip);
            }
            let page = LoginPage {
                csrf: visitor.data.csrf,
                next: safe_next(Some(&form.next)),
                error: e.message().to_string(),
                name: form.name.clone(),
            };
            Ok(Err((Status::Unauthorized, RawHtml(render(&page)))))
        }
        Err(e) => Err(UiError::from(e)),
    }
}

/// Logs out.
#[post("/logout", data = "<form>")]
pub fn logout(visitor: Visitor, jar: &CookieJar<'_>, form: Form<Plain>) -> Done {
    visitor.check_csrf(&form.csrf)?;
    session::logout(jar);
    go("/ui/login".into())
}

/// A new image.
#[derive(Debug, FromForm)]
pub struct ImageForm {
    #[field(default = String::new())]
    csrf: String,
    #[field(default = String::new())]
    name: String,
    #[field(default = String::new())]
    size: String,
    #[field(default = String::new())]
    disk: String,
    #[field(default = String::new())]
    visibility: String,
}

/// Creates an image.
#[post("/images", data = "<form>")]
pub async fn create_image(viewer: Viewer, form: Form<ImageForm>) -> Done {
    viewer.check_csrf(&form.csrf)?;
    let size = crate::units::parse_size("size", form.size.trim())?;
    let disk = if form.disk.trim().is_empty() {
        DiskSelector::first()
    } else {
        parse(form.disk.trim())?
    };
    let visibility = if form.visibility.is_empty() {
        Visibility::Private
    } else {
        parse(&form.visibility)?
    };
    let new = NewImage {
        owner: None,
        name: form.name.trim().to_string(),
        disk,
        size,
        metadata: Default::default(),
        visibility,
    };
    let (img, _) = viewer.run(move |b, a| b.create_image(a, new)).await?;
    go(format!("/ui/images/{}", img.id))
}

/// A new name.
#[derive(Debug, FromForm)]
pub struct RenameForm {
    #[field(default = String::new())]
    csrf: String,
    #[field(default = String::new())]
    name: String,
}

/// Renames an image.
#[post("/images/<id>/rename", data = "<form>")]
pub async fn rename_image(viewer: Viewer, id: &str, form: Form<RenameForm>) -> Done {
    viewer.check_csrf(&form.csrf)?;
    let id: ImageId = parse(id)?;
    let patch = ImagePatch {
        name: Some(form.name.trim().to_string()),
        ..ImagePatch::default()
    };
    viewer.run(move |b, a| b.update_image(a, id, patch)).await?;
    go(format!("/ui/images/{id}"))
}

/// A new visibility.
#[derive(Debug, FromForm)]
pub struct VisibilityForm {
    #[field(default = String::new())]
    csrf: String,
    #[field(default = String::new())]
    visibility: String,
}

/// Changes who may read an image (public needs a moderator).
#[post("/images/<id>/visibility", data = "<form>")]
pub async fn image_visibility(viewer: Viewer, id: &str, form: Form<VisibilityForm>) -> Done {
    viewer.check_csrf(&form.csrf)?;
    let id: ImageId = parse(id)?;
    let patch = ImagePatch {
        visibility: Some(parse(&form.visibility)?),
        ..ImagePatch::default()
    };
    viewer.run(move |b, a| b.update_image(a, id, patch)).await?;
    go(format!("/ui/images/{id}"))
}

/// A user to share an image with, or to stop sharing with.
#[derive(Debug, FromForm)]
pub struct ShareForm {
    #[field(default = String::new())]
    csrf: String,
    #[field(default = String::new())]
    name: String,
}

/// Shares an image with a user by login name (owner or admin).
#[post("/images/<id>/share", data = "<form>")]
pub async fn share_image(viewer: Viewer, id: &str, form: Form<ShareForm>) -> Done {
    viewer.check_csrf(&form.csrf)?;
    let id: ImageId = parse(id)?;
    let name = form.name.clone();
    viewer
        .run(move |b, a| b.share_image_with(a, id, &name))
        .await?;
    go(format!("/ui/images/{id}"))
}

/// Stops sharing an image with a user (owner or admin).
#[post("/images/<id>/unshare", data = "<form>")]
pub async fn unshare_image(viewer: Viewer, id: &str, form: Form<ShareForm>) -> Done {
    viewer.check_csrf(&form.csrf)?;
    let id: ImageId = parse(id)?;
    let name = form.name.clone();
    viewer
        .run(move |b, a| b.unshare_image_from(a, id, &name))
        .await?;
    go(format!("/ui/images/{id}"))
}

/// Deletes an image (after the confirmation page).
#[post("/images/<id>/delete", data = "<form>")]
pub async fn delete_image(viewer: Viewer, id: &str, form: Form<Plain>) -> Done {
    viewer.check_csrf(&form.csrf)?;
    let id: ImageId = parse(id)?;
    viewer.run(move |b, a| b.delete_image(a, id)).await?;
    go("/ui/images".into())
}

/// One row of the compose form.
#[derive(Debug, FromForm)]
pub struct EntryForm {
    #[field(default = String::new())]
    image: String,
    #[field(default = String::new())]
    version: String,
    #[field(default = String::new())]
    disk: String,
    #[field(default = false)]
    capture: bool,
    #[field(default = 0)]
    order: i64,
}

/// A setup.
#[derive(Debug, FromForm)]
pub struct SetupForm {
    #[field(default = String::new())]
    csrf: String,
    #[field(default = String::new())]
    name: String,
    #[field(default = Vec::new())]
    entries: Vec<EntryForm>,
}

/// Composes a setup from the rows that name an image, in their order.
#[post("/setups", data = "<form>")]
pub async fn create_setup(viewer: Viewer, form: Form<SetupForm>) -> Done {
    viewer.check_csrf(&form.csrf)?;
    let mut rows: Vec<(i64, usize, &EntryForm)> = form
        .entries
        .iter()
        .enumerate()
        .filter(|(_, e)| !e.image.trim().is_empty())
        .map(|(i, e)| (e.order, i, e))
        .collect();
    rows.sort_by_key(|(order, i, _)| (*order, *i));
    let mut entries = Vec::new();
    for (_, _, e) in rows {
        entries.push(SetupEntry {
            image: parse(e.image.trim())?,
            version: if e.version.trim().is_empty() {
                VersionRef::Latest
            } else {
                parse(e.version.trim())?
            },
            disk: if e.disk.trim().is_empty() {
                None
            } else {
                Some(parse(e.disk.trim())?)
            },
            capture: e.capture,
        });
    }
    if entries.is_empty() {
        return Err(UiError::invalid("Choose at least one image for the setup."));
    }
    let new = NewSetup {
        name: form.name.trim().to_string(),
        entries,
    };
    let s = viewer.run(move |b, a| b.create_setup(a, new)).await?;
    go(format!("/ui/setups/{}", s.id))
}

/// Deletes a setup.
#[post("/setups/<id>/delete", data = "<form>")]
pub async fn delete_setup(viewer: Viewer, id: &str, form: Form<Plain>) -> Done {
    viewer.check_csrf(&form.csrf)?;
    let id: SetupId = parse(id)?;
    viewer.run(move |b, a| b.delete_setup(a, id)).await?;
    go("/ui/setups".into())
}

/// Where to launch.
#[derive(Debug, FromForm)]
pub struct LaunchForm {
    #[field(default = String::new())]
    csrf: String,
    #[field(default = String::new())]
    machine: String,
}

/// Queues a setup on a machine.
#[post("/setups/<id>/launch", data = "<form>")]
pub async fn launch_setup(viewer: Viewer, id: &str, form: Form<LaunchForm>) -> Done {
    viewer.check_csrf(&form.csrf)?;
    let id: SetupId = parse(id)?;
    let machine: MachineId = parse(form.machine.trim())?;
    let request = JobRequest {
        machine,
        target: JobTarget::Setup(id),
    };
    let job = viewer.run(move |b, a| b.enqueue_job(a, request)).await?;
    go(format!("/ui/jobs/{}", job.id))
}

/// Cancels a job.
#[post("/jobs/<id>/cancel", data = "<form>")]
pub async fn cancel_job(viewer: Viewer, id: &str, form: Form<Plain>) -> Done {
    viewer.check_csrf(&form.csrf)?;
    let id: JobId = parse(id)?;
    viewer.run(move |b, a| b.cancel_job(a, id)).await?;
    go(format!("/ui/jobs/{id}"))
}

/// Ends a running job's session now: the machine goes back to the
/// management OS (power-cycled where the server controls its power).
#[post("/jobs/<id>/release", data = "<form>")]
pub async fn release_job(viewer: Viewer, id: &str, form: Form<Plain>) -> Done {
    viewer.check_csrf(&form.csrf)?;
    let id: JobId = parse(id)?;
    viewer.run(move |b, a| b.release_job(a, id)).await?;
    go(format!("/ui/jobs/{id}"))
}

/// A password change.
#[derive(Debug, FromForm)]
pub struct PasswordForm {
    #[field(default = String::new())]
    csrf: String,
    #[field(default = String::new())]
    current: String,
    #[field(default = String::new())]
    password: String,
    #[field(default = String::new())]
    confirm: String,
}

/// Changes the viewer's own password (the current one first, if any).
/// Ends the viewer's other sessions; this one is renewed.
#[post("/account/password", data = "<form>")]
pub async fn change_password(
    viewer: Viewer,
    jar: &CookieJar<'_>,
    form: Form<PasswordForm>,
) -> Page {
    viewer.check_csrf(&form.csrf)?;
    if form.password != form.confirm {
        return Err(UiError::invalid("The two new passwords differ."));
    }
    let current = form.current.clone();
    let password = form.password.clone();
    let (id, stamp, now) = viewer
        .run(move |b, a| {
            let id = baas_core::services::policy::check_user(a)?;
            let user = b.get_user(a, id)?;
            if user.password_hash.is_some() {
                b.login_password(&user.name, &current)
                    .map_err(|_| baas_core::Error::forbidden("the current password is wrong"))?;
            }
            b.set_password(a, id, Some(&password))?;
            let user = b.get_user(a, id)?;
            Ok((id, user.session_stamp(), b.now().millis()))
        })
        .await?;
    session::login(jar, id, stamp.clone(), now);
    // The page below is rendered with this request's (old) token; the next
    // request reads the renewed cookie.
    let viewer = Viewer {
        csrf: jar
            .get_private(session::COOKIE)
            .and_then(|c| c.value().split(' ').nth(1).map(str::to_string))
            .unwrap_or_default(),
        ..viewer
    };
    account_page(&viewer, String::new(), "Password changed.".into()).await
}

/// A new token.
#[derive(Debug, FromForm)]
pub struct TokenForm {
    #[field(default = String::new())]
    csrf: String,
    #[field(default = String::new())]
    name: String,
    #[field(default = String::new())]
    ttl_days: String,
}

fn ttl_ms(days: &str) -> Result<Option<i64>, UiError> {
    let days = days.trim();
    if days.is_empty() {
        return Ok(None);
    }
    let d: i64 = days
        .parse()
        .map_err(|_| UiError::invalid(format!("{days:?} is not a number of days")))?;
    Ok(Some(d.saturating_mul(24 * 3600 * 1000)))
}

/// Creates an API token for the viewer; shows its secret once.
#[post("/account/tokens", data = "<form>")]
pub async fn create_token(viewer: Viewer, form: Form<TokenForm>) -> Page {
    viewer.check_csrf(&form.csrf)?;
    let ttl = ttl_ms(&form.ttl_days)?;
    let name = form.name.trim().to_string();
    let (_, secret) = viewer
        .run(move |b, a| {
            let id = baas_core::services::policy::check_user(a)?;
            b.create_token(a, id, &name, ttl)
        })
        .await?;
    account_page(&viewer, secret, "Token created.".into()).await
}

/// Revokes a token.
#[post("/tokens/<id>/revoke", data = "<form>")]
pub async fn revoke_token(viewer: Viewer, id: &str, form: Form<Plain>) -> Done {
    viewer.check_csrf(&form.csrf)?;
    let id: TokenId = parse(id)?;
    viewer.run(move |b, a| b.revoke_token(a, id)).await?;
    go("/ui/account".into())
}

/// A new user.
#[derive(Debug, FromForm)]
pub struct UserForm {
    #[field(default = String::new())]
    csrf: String,
    #[field(default = String::new())]
    name: String,
    #[field(default = String::new())]
    display_name: String,
    #[field(default = String::new())]
    email: String,
    #[field(default = String::new())]
    role: String,
    #[field(default = String::new())]
    password: String,
}

/// Creates a user (admins), with a password when one is given.
#[post("/admin/users", data = "<form>")]
pub async fn admin_create_user(viewer: Viewer, form: Form<UserForm>) -> Page {
    viewer.check_csrf(&form.csrf)?;
    let new = NewUser {
        name: form.name.trim().to_string(),
        display_name: form.display_name.trim().to_string(),
        email: form.email.trim().to_string(),
        role: if form.role.is_empty() {
            Role::User
        } else {
            parse(&form.role)?
        },
    };
    let password = form.password.clone();
    let user = viewer
        .run(move |b, a| {
            let user = b.create_user(a, new)?;
            if !password.is_empty() {
                b.set_password(a, user.id, Some(&password))?;
            }
            Ok(user)
        })
        .await?;
    admin_page(
        &viewer,
        format!("Created user {}.", user.name),
        String::new(),
    )
    .await
}

/// Changes to a user.
#[derive(Debug, FromForm)]
pub struct UserUpdateForm {
    #[field(default = String::new())]
    csrf: String,
    #[field(default = String::new())]
    role: String,
    #[field(default = String::new())]
    password: String,
    #[field(default = false)]
    new_token: bool,
}

/// Changes a user's role or password, or issues them a token (admins).
#[post("/admin/users/<id>", data = "<form>")]
pub async fn admin_update_user(viewer: Viewer, id: &str, form: Form<UserUpdateForm>) -> Page {
    viewer.check_csrf(&form.csrf)?;
    let id: UserId = parse(id)?;
    let role: Option<Role> = if form.role.is_empty() {
        None
    } else {
        Some(parse(&form.role)?)
    };
    let password = form.password.clone();
    let new_token = form.new_token;
    let (name, secret) = viewer
        .run(move |b, a| {
            let user = b.update_user(
                a,
                id,
                baas_core::services::UserPatch {
                    role,
                    ..Default::default()
                },
            )?;
            if !password.is_empty() {
                b.set_password(a, id, Some(&password))?;
            }
            let secret = if new_token {
                b.create_token(a, id, "web", None)?.1
            } else {
                String::new()
            };
            Ok((user.name, secret))
        })
        .await?;
    admin_page(&viewer, format!("Updated user {name}."), secret).await
}

/// A confirmed deletion.
#[derive(Debug, FromForm)]
pub struct ConfirmForm {
    #[field(default = String::new())]
    csrf: String,
    #[field(default = false)]
    confirm: bool,
}

/// Deletes a user with their images and setups (admins; the form's
/// "sure" box must be ticked).
#[post("/admin/users/<id>/delete", data = "<form>")]
pub async fn admin_delete_user(viewer: Viewer, id: &str, form: Form<ConfirmForm>) -> Page {
    viewer.check_csrf(&form.csrf)?;
    if !form.confirm {
        return Err(UiError::invalid(
            "Tick the box to confirm: deleting a user deletes their images and setups.",
        ));
    }
    let id: UserId = parse(id)?;
    viewer.run(move |b, a| b.delete_user(a, id)).await?;
    admin_page(&viewer, "User deleted.".into(), String::new()).await
}

/// A machine to register.
#[derive(Debug, FromForm)]
pub struct MachineForm {
    #[field(default = String::new())]
    csrf: String,
    #[field(default = String::new())]
    mac: String,
    #[field(default = String::new())]
    name: String,
    #[field(default = String::new())]
    arch: String,
}

/// Registers a machine (moderators and admins).
#[post("/admin/machines", data = "<form>")]
pub async fn admin_register_machine(viewer: Viewer, form: Form<MachineForm>) -> Page {
    viewer.check_csrf(&form.csrf)?;
    let new = NewMachine {
        mac: parse(form.mac.trim())?,
        name: Some(form.name.trim().to_string()).filter(|n| !n.is_empty()),
        arch: if form.arch.trim().is_empty() {
            Arch::X86_64
        } else {
            parse(form.arch.trim())?
        },
        pool: None,
    };
    let m = viewer.run(move |b, a| b.register_machine(a, new)).await?;
    admin_page(
        &viewer,
        format!("Registered machine {}.", m.name),
        String::new(),
    )
    .await
}

/// A machine's new state.
#[derive(Debug, FromForm)]
pub struct StateForm {
    #[field(default = String::new())]
    csrf: String,
    #[field(default = String::new())]
    state: String,
}

/// Accepts a machine into service (or returns a retired one), or retires
/// it (refused while it has an active job).
#[post("/admin/machines/<id>/state", data = "<form>")]
pub async fn admin_machine_state(viewer: Viewer, id: &str, form: Form<StateForm>) -> Page {
    viewer.check_csrf(&form.csrf)?;
    let id: MachineId = parse(id)?;
    let state: MachineState = parse(form.state.trim())?;
    let m = viewer
        .run(move |b, a| match state {
            MachineState::Retired => b.retire_machine(a, id),
            _ => b.accept_machine(a, id),
        })
        .await?;
    admin_page(
        &viewer,
        format!("Machine {} is now {}.", m.name, m.state.as_str()),
        String::new(),
    )
    .await
}

/// Runs garbage collection (admins).
#[post("/admin/gc", data = "<form>")]
pub async fn admin_gc(viewer: Viewer, form: Form<Plain>) -> Page {
    viewer.check_csrf(&form.csrf)?;
    let r = viewer.run(|b, a| b.collect_garbage(a)).await?;
    admin_page(
        &viewer,
        format!(
            "Garbage collection removed {} chunks ({}) and {} dead uploads.",
            r.sweep.removed,
            super::views::human_size(r.sweep.freed_bytes),
            r.dead_uploads
        ),
        String::new(),
    )
    .await
}

/// A power action by hand.
#[derive(Debug, FromForm)]
pub struct PowerForm {
    #[field(default = String::new())]
    csrf: String,
    #[field(default = String::new())]
    action: String,
}

/// Powers a machine on, off or cycles it through its adapter (moderators
/// and admins); the outcome is in the machine's history.
#[post("/machines/<id>/power", data = "<form>")]
pub async fn machine_power(
    viewer: Viewer,
    power: &rocket::State<crate::api::machines::Power>,
    id: &str,
    form: Form<PowerForm>,
) -> Done {
    viewer.check_csrf(&form.csrf)?;
    let id: MachineId = parse(id)?;
    let action = match form.action.as_str() {
        "on" => baas_core::ports::PowerAction::On,
        "off" => baas_core::ports::PowerAction::Off,
        "cycle" => baas_core::ports::PowerAction::Cycle,
        other => {
            return Err(UiError::invalid(format!(
                "{other:?} is not a power action: on, off or cycle"
            )))
        }
    };
    crate::api::machines::apply_power(
        &viewer.baas,
        &viewer.actor,
        power,
        crate::api::MachineKey::Id(id),
        action,
    )
    .await?;
    go(format!("/ui/machines/{id}"))
}
