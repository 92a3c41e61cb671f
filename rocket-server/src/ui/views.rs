//! The pages' templates (askama, compiled from `rocket-server/templates/`)
//! and the small formatting helpers they use. Template structs hold plain,
//! already formatted strings: askama escapes every one of them.

use askama::Template;
use baas_core::model::{Job, JobState, Machine, Timestamp};

/// Renders a template; a failure (a bug) becomes a plain message.
pub fn render<T: Template>(t: &T) -> String {
    t.render().unwrap_or_else(|e| {
        tracing::error!("rendering a page failed: {e}");
        "internal error: a page failed to render".to_string()
    })
}

/// What every page's header needs.
#[derive(Debug, Clone, Default)]
pub struct Nav {
    /// The logged-in user's name.
    pub user: String,
    /// Whether to show the admin link.
    pub admin: bool,
    /// The session's CSRF token (the logout form, and every other form).
    pub csrf: String,
    /// Which link is current: `dashboard`, `images`, `setups`, `account`,
    /// `admin`.
    pub active: &'static str,
}

impl Nav {
    /// Whether `name` is the current section (for `aria-current`).
    pub fn is(&self, name: &str) -> bool {
        self.active == name
    }
}

/// Bytes for people: `1.5 GiB`.
pub fn human_size(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// A timestamp for people: `2026-11-25 23:01:02 UTC`.
pub fn when(t: Timestamp) -> String {
    let s = crate::dto::rfc3339(t);
    format!("{} {} UTC", &s[..10], &s[11..19])
}

/// Percent-encodes a query value.
pub fn urlencode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A job's percentage done (0 when nothing is known).
pub fn percent(job: &Job) -> u64 {
    let p = &job.progress;
    (p.bytes_done.saturating_mul(100))
        .checked_div(p.bytes_total)
        .unwrap_or(if job.state == JobState::Succeeded {
            100
        } else {
            0
        })
        .min(100)
}

/// What a machine is doing, in words: `idle`, `flashing 43%`, `running
/// alice's setup`, `waiting for approval`, `retired`.
pub fn machine_status(m: &Machine, active: Option<&Job>, owner: &str) -> String {
    use baas_core::model::MachineState;
    match (m.state, active) {
        (MachineState::Retired, _) => "retired".into(),
        (MachineState::Pending, _) => "waiting for approval".into(),
        (_, None) => "idle".into(),
        (_, Some(j)) => match j.state {
            JobState::Queued => "idle".into(),
            JobState::Provisioning => {
                let phase = if j.progress.phase.is_empty() {
                    "provisioning".to_string()
                } else {
                    j.progress.phase.clone()
                };
                format!("{phase} {}%", percent(j))
            }
            JobState::Running => format!("running {owner}'s setup"),
            JobState::Capturing => format!("capturing {}%", percent(j)),
            other => other.as_str().to_string(),
        },
    }
}

/// The error page.
#[derive(Debug, Template)]
#[template(path = "error.html")]
pub struct ErrorPage {
    /// Status code.
    pub status: u16,
    /// Its reason phrase.
    pub reason: String,
    /// What went wrong.
    pub message: String,
}

/// The login page.
#[derive(Debug, Template)]
#[template(path = "login.html")]
pub struct LoginPage {
    /// The CSRF token.
    pub csrf: String,
    /// Where to go after logging in.
    pub next: String,
    /// Why the last attempt failed.
    pub error: String,
    /// The name typed last time.
    pub name: String,
}

/// One machine's row on the dashboard.
#[derive(Debug, Clone)]
pub struct MachineRow {
    /// Id.
    pub id: String,
    /// Name.
    pub name: String,
    /// MAC.
    pub mac: String,
    /// Lifecycle state.
    pub state: String,
    /// What it is doing, in words (`offline (...)` when it is).
    pub status: String,
    /// Whether it is offline (see `baas_core::services::Presence`).
    pub offline: bool,
    /// Its active job's id, or empty.
    pub job: String,
    /// The first 8 digits of that id.
    pub job_short: String,
    /// The active job's state, or empty.
    pub job_state: String,
    /// The active job's owner, or empty.
    pub owner: String,
    /// Percentage of the active job.
    pub percent: u64,
    /// Jobs waiting.
    pub queued: usize,
    /// Last contact.
    pub last_seen: String,
}

/// The dashboard.
#[derive(Debug, Template)]
#[template(path = "dashboard.html")]
pub struct DashboardPage {
    /// Header.
    pub nav: Nav,
    /// Machines.
    pub machines: Vec<MachineRow>,
    /// The viewer's recent jobs.
    pub jobs: Vec<JobRow>,
}

/// A job in a list.
#[derive(Debug, Clone)]
pub struct JobRow {
    /// Id.
    pub id: String,
    /// Short id.
    pub short: String,
    /// Machine id.
    pub machine: String,
    /// Machine name.
    pub machine_name: String,
    /// Owner name.
    pub owner: String,
    /// State.
    pub state: String,
    /// Percentage.
    pub percent: u64,
    /// Created.
    pub created: String,
}

/// An image in the list.
#[derive(Debug, Clone)]
pub struct ImageRow {
    /// Id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Owner name.
    pub owner: String,
    /// Visibility.
    pub visibility: String,
    /// Number of versions with content.
    pub versions: usize,
    /// Latest version number.
    pub latest: u32,
    /// Size of the latest version.
    pub size: String,
    /// Bytes all versions would take without deduplication.
    pub logical: String,
    /// Bytes they added to the store.
    pub stored: String,
    /// What deduplication and compression saved.
    pub saved: String,
}

/// The images page.
#[derive(Debug, Template)]
#[template(path = "images.html")]
pub struct ImagesPage {
    /// Header.
    pub nav: Nav,
    /// Images.
    pub images: Vec<ImageRow>,
    /// Totals.
    pub total_logical: String,
    /// Totals.
    pub total_stored: String,
    /// Totals.
    pub total_saved: String,
}

/// A version in an image's page.
#[derive(Debug, Clone)]
pub struct VersionRow {
    /// Number.
    pub number: u32,
    /// Size.
    pub size: String,
    /// Bytes it added.
    pub added: String,
    /// Where it came from.
    pub source: String,
    /// When.
    pub created: String,
    /// Its note.
    pub note: String,
    /// Root hash (short).
    pub root: String,
}

/// One image's page.
#[derive(Debug, Template)]
#[template(path = "image.html")]
pub struct ImagePage {
    /// Header.
    pub nav: Nav,
    /// Id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Owner.
    pub owner: String,
    /// Default disk.
    pub disk: String,
    /// Declared size.
    pub size: String,
    /// Visibility.
    pub visibility: String,
    /// Whether the viewer may change it.
    pub writable: bool,
    /// Versions, newest first.
    pub versions: Vec<VersionRow>,
    /// Login names of the users it is shared with (writers only).
    pub shared_with: Vec<String>,
}

/// The delete confirmation.
#[derive(Debug, Template)]
#[template(path = "confirm_delete.html")]
pub struct ConfirmDeletePage {
    /// Header.
    pub nav: Nav,
    /// Id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Versions it has.
    pub versions: usize,
}

/// An image the viewer may put in a setup.
#[derive(Debug, Clone)]
pub struct ImageChoice {
    /// Id.
    pub id: String,
    /// Label: name, owner, latest version.
    pub label: String,
}

/// A setup in the list.
#[derive(Debug, Clone)]
pub struct SetupRow {
    /// Id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Entries, in words.
    pub entries: Vec<String>,
    /// Updated.
    pub updated: String,
}

/// The setups page (list and compose form).
#[derive(Debug, Template)]
#[template(path = "setups.html")]
pub struct SetupsPage {
    /// Header.
    pub nav: Nav,
    /// The viewer's setups.
    pub setups: Vec<SetupRow>,
    /// The viewer's own images to choose from.
    pub choices: Vec<ImageChoice>,
    /// Images other users shared with the viewer.
    pub shared: Vec<ImageChoice>,
    /// Public images of other users.
    pub public: Vec<ImageChoice>,
    /// Other users' private and shared images (admins read them all).
    pub others: Vec<ImageChoice>,
    /// Rows in the compose form.
    pub rows: Vec<usize>,
}

/// A machine to launch on.
#[derive(Debug, Clone)]
pub struct MachineChoice {
    /// Id.
    pub id: String,
    /// Label.
    pub label: String,
}

/// One setup's page.
#[derive(Debug, Template)]
#[template(path = "setup.html")]
pub struct SetupPage {
    /// Header.
    pub nav: Nav,
    /// Id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Entries: (order, image id, image name, version, disk, capture).
    pub entries: Vec<(usize, String, String, String, String, bool)>,
    /// Machines accepting jobs.
    pub machines: Vec<MachineChoice>,
}

/// A machine's page.
#[derive(Debug, Template)]
#[template(path = "machine.html")]
pub struct MachinePage {
    /// Header.
    pub nav: Nav,
    /// The machine's row (status and all).
    pub m: MachineRow,
    /// Architecture.
    pub arch: String,
    /// Pool.
    pub pool: String,
    /// How the server reaches its power.
    pub power: String,
    /// What it returns to between jobs.
    pub neutral: String,
    /// Inventory: CPU.
    pub cpu: String,
    /// Inventory: memory.
    pub memory: String,
    /// Inventory: disks (path, model, serial, size).
    pub disks: Vec<(String, String, String, String)>,
    /// Inventory: NICs (name, MAC, speed).
    pub nics: Vec<(String, String, String)>,
    /// Waiting and active jobs.
    pub queue: Vec<JobRow>,
    /// Finished jobs the viewer may see.
    pub history: Vec<JobRow>,
    /// The machine's own history (when, kind, message), newest first.
    pub events: Vec<(String, String, String)>,
    /// Whether to show the power buttons: the machine has a power adapter
    /// and the viewer may use it.
    pub power_buttons: bool,
    /// The session's CSRF token, for the power forms.
    pub csrf: String,
}

/// A job's page.
#[derive(Debug, Template)]
#[template(path = "job.html")]
pub struct JobPage {
    /// Header.
    pub nav: Nav,
    /// The job.
    pub j: JobRow,
    /// Phase.
    pub phase: String,
    /// Done / total.
    pub done: String,
    /// Error, if any.
    pub error: String,
    /// Entries: (image id, image name, version, disk, capture).
    pub entries: Vec<(String, String, u32, String, bool)>,
    /// Timeline (when, kind, message) without log lines.
    pub timeline: Vec<(String, String, String)>,
    /// The agent's log (when, message).
    pub log: Vec<(String, String)>,
    /// Whether it may still be cancelled by the viewer.
    pub cancellable: bool,
    /// Whether the viewer may end its session now (it is running).
    pub releasable: bool,
}

/// A token in a list.
#[derive(Debug, Clone)]
pub struct TokenRow {
    /// Id.
    pub id: String,
    /// Label.
    pub name: String,
    /// Created.
    pub created: String,
    /// Expires.
    pub expires: String,
    /// Revoked or expired.
    pub status: String,
}

/// The account page.
#[derive(Debug, Template)]
#[template(path = "account.html")]
pub struct AccountPage {
    /// Header.
    pub nav: Nav,
    /// Role.
    pub role: String,
    /// Whether a password is set.
    pub has_password: bool,
    /// Tokens.
    pub tokens: Vec<TokenRow>,
    /// A secret just created (shown once).
    pub new_secret: String,
    /// A message after an action.
    pub notice: String,
}

/// A user in the admin page.
#[derive(Debug, Clone)]
pub struct UserRow {
    /// Id.
    pub id: String,
    /// Login name.
    pub name: String,
    /// Display name.
    pub display: String,
    /// Role.
    pub role: String,
    /// Whether a password is set.
    pub has_password: bool,
    /// Whether this is the viewer.
    pub me: bool,
}

/// The admin page.
#[derive(Debug, Template)]
#[template(path = "admin.html")]
pub struct AdminPage {
    /// Header.
    pub nav: Nav,
    /// Users (admins only; empty otherwise).
    pub users: Vec<UserRow>,
    /// Machines.
    pub machines: Vec<MachineRow>,
    /// Stored chunks.
    pub chunks: u64,
    /// Stored bytes.
    pub stored: String,
    /// The last action's outcome.
    pub notice: String,
    /// A token secret just created for a user (shown once).
    pub new_secret: String,
    /// Whether the viewer is an admin (users, garbage collection).
    pub full: bool,
}
