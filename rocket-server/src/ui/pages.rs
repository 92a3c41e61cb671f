//! The UI's pages (GET): each gathers what it shows through the services,
//! as the logged-in user, and renders one template.

use std::collections::HashMap;

use baas_core::model::*;
use baas_core::ports::{JobFilter, PowerState};
use baas_core::services::policy::{can_cancel_job, can_power, can_write_image};
use baas_core::services::Presence;
use baas_core::{Actor, Baas};
use rocket::get;
use rocket::response::content::RawHtml;

use super::session::{Viewer, Visitor};
use super::views::*;
use super::UiError;
use crate::api::parse;
use crate::download::{Conditions, Download};

/// A rendered page.
pub type Page = Result<RawHtml<String>, UiError>;

fn page<T: askama::Template>(t: &T) -> Page {
    Ok(RawHtml(render(t)))
}

/// The header for `viewer` with `active` highlighted.
pub fn nav(viewer: &Viewer, active: &'static str) -> Nav {
    Nav {
        user: viewer.name().to_string(),
        admin: viewer.is_moderator(),
        csrf: viewer.csrf.clone(),
        active,
    }
}

/// Login names by id, as far as the viewer may see them (moderators and
/// admins see everyone; others only themselves).
pub fn user_names(baas: &Baas, actor: &Actor) -> HashMap<UserId, String> {
    let mut names = HashMap::new();
    if let Actor::User { id, name, .. } = actor {
        names.insert(*id, name.clone());
    }
    if actor.at_least(Role::Moderator) {
        if let Ok(users) = baas.list_users(actor) {
            names.extend(users.into_iter().map(|u| (u.id, u.name)));
        }
    }
    names
}

fn name_of(names: &HashMap<UserId, String>, id: UserId) -> String {
    names
        .get(&id)
        .cloned()
        .unwrap_or_else(|| "another user".to_string())
}

/// One dashboard row per machine in `machines` (also the live JSON's
/// source), with their presence from `power` (the adapters' states).
pub fn machine_rows(
    baas: &Baas,
    actor: &Actor,
    machines: &[Machine],
    power: &HashMap<MachineId, PowerState>,
) -> baas_core::Result<Vec<MachineRow>> {
    let names = user_names(baas, actor);
    let mut rows = Vec::new();
    for m in machines {
        let queue = baas.machine_queue(actor, m.id)?;
        let state = power.get(&m.id).copied().unwrap_or(PowerState::Unknown);
        let presence = baas.machine_presence(m, &queue, state);
        rows.push(machine_row(m, &queue, &names, presence));
    }
    Ok(rows)
}

fn machine_row(
    m: &Machine,
    queue: &[Job],
    names: &HashMap<UserId, String>,
    presence: Presence,
) -> MachineRow {
    let active = queue
        .iter()
        .find(|j| j.state.is_active() && j.state != JobState::Queued);
    let owner = active.map(|j| name_of(names, j.owner)).unwrap_or_default();
    let last_seen = m.last_seen.map(when).unwrap_or_else(|| "never".into());
    MachineRow {
        id: m.id.to_string(),
        name: m.name.clone(),
        mac: m.mac.to_string(),
        state: m.state.as_str().to_string(),
        status: match presence {
            Presence::Online => machine_status(m, active, &owner),
            Presence::PoweredOff => "offline (powered off)".into(),
            Presence::Silent => format!("offline (last contact {last_seen})"),
        },
        offline: presence.is_offline(),
        job: active.map(|j| j.id.to_string()).unwrap_or_default(),
        job_short: active
            .map(|j| j.id.to_string()[..8].to_string())
            .unwrap_or_default(),
        job_state: active
            .map(|j| j.state.as_str().to_string())
            .unwrap_or_default(),
        owner,
        percent: active.map(percent).unwrap_or(0),
        queued: queue.iter().filter(|j| j.state == JobState::Queued).count(),
        last_seen,
    }
}

/// A job's row.
pub fn job_row(
    j: &Job,
    names: &HashMap<UserId, String>,
    machines: &HashMap<MachineId, String>,
) -> JobRow {
    let id = j.id.to_string();
    JobRow {
        short: id[..8].to_string(),
        id,
        machine: j.machine.to_string(),
        machine_name: machines
            .get(&j.machine)
            .cloned()
            .unwrap_or_else(|| j.machine.to_string()),
        owner: name_of(names, j.owner),
        state: j.state.as_str().to_string(),
        percent: percent(j),
        created: when(j.created_at),
    }
}

fn machine_names(baas: &Baas, actor: &Actor) -> HashMap<MachineId, String> {
    baas.list_machines(actor)
        .map(|ms| ms.into_iter().map(|m| (m.id, m.name)).collect())
        .unwrap_or_default()
}

/// The login form.
#[get("/login?<next>")]
pub fn login_page(visitor: Visitor, next: Option<&str>) -> Page {
    page(&LoginPage {
        csrf: visitor.data.csrf,
        next: safe_next(next),
        error: String::new(),
        name: String::new(),
    })
}

/// Where to go after login: only a path of this UI (no open redirect).
pub fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n) if n.starts_with("/ui") && !n.contains("//") && !n.contains('\\') => n.to_string(),
        _ => "/ui".to_string(),
    }
}

/// The dashboard: every machine, what it does, and the viewer's jobs.
#[get("/")]
pub async fn dashboard(viewer: Viewer) -> Page {
    let machines = viewer.machine_rows().await?;
    let jobs = viewer
        .run(|b, a| {
            let names = user_names(b, a);
            let mnames = machine_names(b, a);
            let jobs = b
                .list_jobs(
                    a,
                    JobFilter {
                        owner: a.user_id(),
                        limit: Some(10),
                        ..JobFilter::default()
                    },
                )?
                .iter()
                .map(|j| job_row(j, &names, &mnames))
                .collect();
            Ok(jobs)
        })
        .await?;
    page(&DashboardPage {
        nav: nav(&viewer, "dashboard"),
        machines,
        jobs,
    })
}

fn source(s: &VersionSource) -> String {
    match s {
        VersionSource::Blank => "blank".into(),
        VersionSource::Upload => "upload".into(),
        VersionSource::Capture { job } => format!("captured by job {}", &job.to_string()[..8]),
    }
}

/// The images the viewer may read, with versions and storage figures.
#[get("/images")]
pub async fn images(viewer: Viewer) -> Page {
    let rows = viewer
        .run(|b, a| {
            let names = user_names(b, a);
            let mut rows = Vec::new();
            let mut totals = (0u64, 0u64);
            for img in b.list_images(a, None)? {
                let versions = b.list_versions(a, img.id)?;
                let real: Vec<&Version> = versions.iter().filter(|v| v.number > 0).collect();
                let logical: u64 = real.iter().map(|v| v.size).sum();
                let stored: u64 = real.iter().map(|v| v.added_bytes).sum();
                totals.0 += logical;
                totals.1 += stored;
                let latest = versions.iter().map(|v| v.number).max().unwrap_or(0);
                let size = versions
                    .iter()
                    .find(|v| v.number == latest)
                    .map_or(img.size, |v| v.size);
                rows.push(ImageRow {
                    id: img.id.to_string(),
                    name: img.name.clone(),
                    owner: name_of(&names, img.owner),
                    visibility: img.visibility.as_str().to_string(),
                    versions: real.len(),
                    latest,
                    size: human_size(size),
                    logical: human_size(logical),
                    stored: human_size(stored),
                    saved: human_size(logical.saturating_sub(stored)),
                });
            }
            Ok((rows, totals))
        })
        .await?;
    let (images, (logical, stored)) = rows;
    page(&ImagesPage {
        nav: nav(&viewer, "images"),
        images,
        total_logical: human_size(logical),
        total_stored: human_size(stored),
        total_saved: human_size(logical.saturating_sub(stored)),
    })
}

/// One image: versions, upload, rename, delete, download.
#[get("/images/<id>")]
pub async fn image(viewer: Viewer, id: &str) -> Page {
    let id: ImageId = parse(id)?;
    let (img, versions, owner, writable, shared_with) = viewer
        .run(move |b, a| {
            let img = b.get_image(a, id)?;
            let versions = b.list_versions(a, id)?;
            let owner = name_of(&user_names(b, a), img.owner);
            let writable = can_write_image(a, &img);
            let shared_with = if writable {
                b.image_shared_names(a, id)?
            } else {
                Vec::new()
            };
            Ok((img, versions, owner, writable, shared_with))
        })
        .await?;
    let mut rows: Vec<VersionRow> = versions
        .iter()
        .map(|v| VersionRow {
            number: v.number,
            size: human_size(v.size),
            added: human_size(v.added_bytes),
            source: source(&v.source),
            created: when(v.created_at),
            note: v.note.clone().unwrap_or_default(),
            root: v.root.to_hex()[..12].to_string(),
        })
        .collect();
    rows.reverse();
    page(&ImagePage {
        nav: nav(&viewer, "images"),
        id: img.id.to_string(),
        name: img.name,
        owner,
        disk: img.disk.to_string(),
        size: human_size(img.size),
        visibility: img.visibility.as_str().to_string(),
        writable,
        versions: rows,
        shared_with,
    })
}

/// Asks before deleting an image.
#[get("/images/<id>/delete")]
pub async fn image_delete_confirm(viewer: Viewer, id: &str) -> Page {
    let id: ImageId = parse(id)?;
    let (img, n) = viewer
        .run(move |b, a| {
            let img = b.get_image(a, id)?;
            baas_core::services::policy::check_write_image(a, &img)?;
            let n = b.list_versions(a, id)?.len();
            Ok((img, n))
        })
        .await?;
    page(&ConfirmDeletePage {
        nav: nav(&viewer, "images"),
        id: img.id.to_string(),
        name: img.name,
        versions: n,
    })
}

/// Downloads a version (ranges and conditional requests as in the API).
#[get("/images/<id>/versions/<version>/download")]
pub async fn download(
    viewer: Viewer,
    id: &str,
    version: &str,
    conditions: Conditions,
) -> Result<Download, UiError> {
    let id: ImageId = parse(id)?;
    let v: VersionRef = parse(version)?;
    let reader = viewer.run(move |b, a| b.open_version(a, id, v)).await?;
    let name = format!("{id}-{}.img", reader.version().number);
    Ok(Download::new(reader, conditions, name))
}

fn entry_text(e: &SetupEntry, images: &HashMap<ImageId, String>) -> String {
    let name = images
        .get(&e.image)
        .cloned()
        .unwrap_or_else(|| e.image.to_string());
    let disk = e
        .disk
        .as_ref()
        .map_or("the image's disk".to_string(), |d| d.to_string());
    format!(
        "{name} @ {} → {disk}{}",
        e.version,
        if e.capture { ", captured" } else { "" }
    )
}

/// The viewer's setups and the compose form.
#[get("/setups")]
pub async fn setups(viewer: Viewer) -> Page {
    let (setups, choices) = viewer
        .run(|b, a| {
            let names = user_names(b, a);
            let images = b.list_images(a, None)?;
            let image_names: HashMap<ImageId, String> =
                images.iter().map(|i| (i.id, i.name.clone())).collect();
            let me = a.user_id();
            let mut choices: Vec<(u8, ImageChoice)> = images
                .iter()
                .map(|i| {
                    let latest = b
                        .list_versions(a, i.id)
                        .ok()
                        .and_then(|vs| vs.iter().map(|v| v.number).max())
                        .unwrap_or(0);
                    // Own images first, then those shared with the
                    // viewer by name, then the public ones.
                    let group = if Some(i.owner) == me {
                        0
                    } else if i.visibility == Visibility::Shared
                        && me.is_some_and(|u| i.shared_with.contains(&u))
                    {
                        1
                    } else if i.visibility == Visibility::Public {
                        2
                    } else {
                        // Admins read every image.
                        3
                    };
                    let choice = ImageChoice {
                        id: i.id.to_string(),
                        label: format!(
                            "{} ({}, {}, latest v{latest})",
                            i.name,
                            name_of(&names, i.owner),
                            i.visibility.as_str()
                        ),
                    };
                    (group, choice)
                })
                .collect();
            let take = |choices: &mut Vec<(u8, ImageChoice)>, g: u8| -> Vec<ImageChoice> {
                let (picked, rest) = std::mem::take(choices)
                    .into_iter()
                    .partition(|(k, _)| *k == g);
                *choices = rest;
                picked.into_iter().map(|(_, c)| c).collect()
            };
            let own = take(&mut choices, 0);
            let shared = take(&mut choices, 1);
            let public = take(&mut choices, 2);
            let others = take(&mut choices, 3);
            let setups = b
                .list_setups(a, a.user_id())?
                .iter()
                .map(|s| SetupRow {
                    id: s.id.to_string(),
                    name: s.name.clone(),
                    entries: s
                        .entries
                        .iter()
                        .map(|e| entry_text(e, &image_names))
                        .collect(),
                    updated: when(s.updated_at),
                })
                .collect();
            Ok((setups, (own, shared, public, others)))
        })
        .await?;
    let (choices, shared, public, others) = choices;
    page(&SetupsPage {
        nav: nav(&viewer, "setups"),
        setups,
        choices,
        shared,
        public,
        others,
        rows: (0..4).collect(),
    })
}

/// One setup, and the form to launch it on a machine.
#[get("/setups/<id>")]
pub async fn setup(viewer: Viewer, id: &str) -> Page {
    let id: SetupId = parse(id)?;
    let (s, names, machines) = viewer
        .run(move |b, a| {
            let s = b.get_setup(a, id)?;
            let mut names = HashMap::new();
            for e in &s.entries {
                if let Ok(img) = b.get_image(a, e.image) {
                    names.insert(e.image, img.name);
                }
            }
            let machines = b
                .list_machines(a)?
                .into_iter()
                .filter(|m| m.state == MachineState::Ready)
                .map(|m| MachineChoice {
                    id: m.id.to_string(),
                    label: format!("{} ({})", m.name, m.mac),
                })
                .collect();
            Ok((s, names, machines))
        })
        .await?;
    let entries = s
        .entries
        .iter()
        .enumerate()
        .map(|(i, e)| {
            (
                i + 1,
                e.image.to_string(),
                names
                    .get(&e.image)
                    .cloned()
                    .unwrap_or_else(|| "(an image you can no longer read)".into()),
                e.version.to_string(),
                e.disk
                    .as_ref()
                    .map_or("the image's disk".into(), |d| d.to_string()),
                e.capture,
            )
        })
        .collect();
    page(&SetupPage {
        nav: nav(&viewer, "setups"),
        id: s.id.to_string(),
        name: s.name,
        entries,
        machines,
    })
}

/// A machine: inventory, queue, history.
#[get("/machines/<id>")]
pub async fn machine(viewer: Viewer, id: &str) -> Page {
    let id: MachineId = parse(id)?;
    let m = viewer.run(move |b, a| b.get_machine(a, id)).await?;
    let state = viewer
        .power_states(std::slice::from_ref(&m))
        .await
        .get(&m.id)
        .copied()
        .unwrap_or(PowerState::Unknown);
    let (m, row, queue, history, events, may_power) = viewer
        .run(move |b, a| {
            let queue = b.machine_queue(a, id)?;
            let names = user_names(b, a);
            let row = machine_row(&m, &queue, &names, b.machine_presence(&m, &queue, state));
            let mnames = HashMap::from([(m.id, m.name.clone())]);
            let history = b
                .list_jobs(
                    a,
                    JobFilter {
                        machine: Some(id),
                        limit: Some(25),
                        ..JobFilter::default()
                    },
                )?
                .iter()
                .filter(|j| j.state.is_final())
                .map(|j| job_row(j, &names, &mnames))
                .collect();
            let queue = queue.iter().map(|j| job_row(j, &names, &mnames)).collect();
            let events = b
                .machine_history(a, id)?
                .into_iter()
                .map(|e| (when(e.at), e.kind, e.message))
                .collect();
            Ok((m, row, queue, history, events, can_power(a)))
        })
        .await?;
    let inv = m.inventory.clone();
    page(&MachinePage {
        nav: nav(&viewer, "dashboard"),
        m: row,
        arch: m.arch.as_str().to_string(),
        pool: m.pool.clone().unwrap_or_default(),
        power: match &m.boot.power {
            PowerConfig::Manual => "manual: jobs start at the machine's next boot".to_string(),
            PowerConfig::Qmp { address } => format!("QEMU (QMP at {address})"),
            PowerConfig::Ipmi { host, username, .. } => format!("IPMI ({username}@{host})"),
        },
        neutral: m.boot.neutral.to_string(),
        cpu: inv
            .as_ref()
            .map(|i| format!("{} × {}", i.cpus, i.cpu_model))
            .unwrap_or_default(),
        memory: inv
            .as_ref()
            .map(|i| human_size(i.memory_bytes))
            .unwrap_or_default(),
        disks: inv
            .as_ref()
            .map(|i| {
                i.disks
                    .iter()
                    .map(|d| {
                        (
                            d.path.clone(),
                            d.model.clone().unwrap_or_default(),
                            d.serial.clone().unwrap_or_default(),
                            human_size(d.size),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default(),
        nics: inv
            .as_ref()
            .map(|i| {
                i.nics
                    .iter()
                    .map(|n| {
                        (
                            n.name.clone(),
                            n.mac.to_string(),
                            n.speed_mbps
                                .map(|s| format!("{s} Mb/s"))
                                .unwrap_or_default(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default(),
        queue,
        history,
        events,
        power_buttons: may_power && m.boot.power != PowerConfig::Manual,
        csrf: viewer.csrf.clone(),
    })
}

/// A job: timeline, progress, the agent's log, cancel.
#[get("/jobs/<id>")]
pub async fn job(viewer: Viewer, id: &str) -> Page {
    let id: JobId = parse(id)?;
    let (j, events, names, mnames, images, cancellable) = viewer
        .run(move |b, a| {
            let j = b.get_job(a, id)?;
            let events = b.job_events(a, id)?;
            let names = user_names(b, a);
            let mnames = machine_names(b, a);
            let mut images = HashMap::new();
            for e in &j.entries {
                if let Ok(img) = b.get_image(a, e.image) {
                    images.insert(e.image, img.name);
                }
            }
            let cancellable = can_cancel_job(a, &j) && !j.state.is_final();
            Ok((j, events, names, mnames, images, cancellable))
        })
        .await?;
    let (log, timeline): (Vec<_>, Vec<_>) = events.into_iter().partition(|e| e.kind == "log");
    page(&JobPage {
        nav: nav(&viewer, "dashboard"),
        j: job_row(&j, &names, &mnames),
        phase: j.progress.phase.clone(),
        done: format!(
            "{} of {}",
            human_size(j.progress.bytes_done),
            human_size(j.progress.bytes_total)
        ),
        error: j.error.clone().unwrap_or_default(),
        entries: j
            .entries
            .iter()
            .map(|e| {
                (
                    e.image.to_string(),
                    images.get(&e.image).cloned().unwrap_or_default(),
                    e.version,
                    e.disk.to_string(),
                    e.capture,
                )
            })
            .collect(),
        timeline: timeline
            .into_iter()
            .map(|e| (when(e.at), e.kind, e.message))
            .collect(),
        log: log.into_iter().map(|e| (when(e.at), e.message)).collect(),
        releasable: cancellable && j.state == JobState::Running,
        cancellable,
    })
}

/// Token rows for a user.
pub fn token_rows(tokens: &[Token], now: Timestamp) -> Vec<TokenRow> {
    tokens
        .iter()
        .map(|t| TokenRow {
            id: t.id.to_string(),
            name: t.name.clone(),
            created: when(t.created_at),
            expires: t.expires_at.map(when).unwrap_or_else(|| "never".into()),
            status: if t.revoked_at.is_some() {
                "revoked".into()
            } else if t.is_active(now) {
                "active".into()
            } else {
                "expired".into()
            },
        })
        .collect()
}

/// Builds the account page.
pub async fn account_page(viewer: &Viewer, new_secret: String, notice: String) -> Page {
    let (user, tokens, now) = viewer
        .run(|b, a| {
            let id = baas_core::services::policy::check_user(a)?;
            let user = b.get_user(a, id)?;
            let tokens = b.list_tokens(a, id)?;
            Ok((user, tokens, b.now()))
        })
        .await?;
    page(&AccountPage {
        nav: nav(viewer, "account"),
        role: user.role.as_str().to_string(),
        has_password: user.password_hash.is_some(),
        tokens: token_rows(&tokens, now),
        new_secret,
        notice,
    })
}

/// The viewer's account: password and API tokens.
#[get("/account")]
pub async fn account(viewer: Viewer) -> Page {
    account_page(&viewer, String::new(), String::new()).await
}

/// Builds the admin page.
pub async fn admin_page(viewer: &Viewer, notice: String, new_secret: String) -> Page {
    if !viewer.is_moderator() {
        return Err(UiError::from(baas_core::Error::forbidden(
            "only moderators and admins may open the admin page",
        )));
    }
    let me = viewer.actor.user_id();
    let admin = viewer.is_admin();
    let machines = viewer.machine_rows().await?;
    let (users, usage) = viewer
        .run(move |b, a| {
            let users = if admin {
                b.list_users(a)?
                    .into_iter()
                    .map(|u| UserRow {
                        id: u.id.to_string(),
                        me: Some(u.id) == me,
                        name: u.name,
                        display: u.display_name,
                        role: u.role.as_str().to_string(),
                        has_password: u.password_hash.is_some(),
                    })
                    .collect()
            } else {
                Vec::new()
            };
            let usage = if admin {
                Some(b.storage_usage(a)?)
            } else {
                None
            };
            Ok((users, usage))
        })
        .await?;
    page(&AdminPage {
        nav: nav(viewer, "admin"),
        users,
        machines,
        chunks: usage.map_or(0, |u| u.chunks),
        stored: human_size(usage.map_or(0, |u| u.bytes)),
        notice,
        new_secret,
        full: admin,
    })
}

/// Users and roles, machines, garbage collection and storage.
#[get("/admin")]
pub async fn admin(viewer: Viewer) -> Page {
    admin_page(&viewer, String::new(), String::new()).await
}
