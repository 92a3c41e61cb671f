//! Machines (by id or MAC address): register, list, read, change (accept,
//! retire), see the queue, queue jobs on them, and switch their power by
//! hand.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use baas_core::model::{Machine, MachineBoot, MachineId, MachineState, NeutralState, PowerConfig};
use baas_core::ports::{PowerAction, PowerControl, PowerState};
use baas_core::services::JobRequest;
use baas_core::services::Presence;
use baas_core::{Actor, Baas};
use rocket::{get, patch, post, put, State};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::MachineKey;
use crate::auth::Caller;
use crate::dto::*;
use crate::error::{ApiError, ErrorEnvelope};
use crate::json::{created, Created, Json, Out};

/// Every machine.
#[utoipa::path(get, path = "/api/v1/machines", tag = "machines",
    responses((status = 200, body = [MachineView])))]
#[get("/machines")]
pub async fn list_machines(
    caller: Caller,
    power: &State<Power>,
) -> Result<Out<Vec<MachineView>>, ApiError> {
    let machines = caller.run(|b, a| b.list_machines(a)).await?;
    let states = power.states(&machines).await;
    let views = caller
        .run(move |b, a| {
            machines
                .iter()
                .map(|m| {
                    let p = states.get(&m.id).copied().unwrap_or(PowerState::Unknown);
                    view_with_presence(b, a, m, p)
                })
                .collect()
        })
        .await?;
    Ok(Out(views))
}

/// Registers a machine, ready for jobs (moderators and admins).
#[utoipa::path(post, path = "/api/v1/machines", tag = "machines", request_body = NewMachineBody,
    responses((status = 201, body = MachineView), (status = 400, body = ErrorEnvelope),
        (status = 403, body = ErrorEnvelope), (status = 409, body = ErrorEnvelope)))]
#[post("/machines", data = "<body>")]
pub async fn register_machine(
    caller: Caller,
    body: Json<NewMachineBody>,
) -> Result<Created<MachineView>, ApiError> {
    let new = body.0.into_core()?;
    let machine = caller.run(move |b, a| b.register_machine(a, new)).await?;
    Ok(created(MachineView::from(&machine)))
}

/// A machine, by id or MAC address.
#[utoipa::path(get, path = "/api/v1/machines/{machine}", tag = "machines",
    params(("machine" = String, Path, description = "a machine id or MAC address")),
    responses((status = 200, body = MachineView), (status = 400, body = ErrorEnvelope),
        (status = 404, body = ErrorEnvelope)))]
#[get("/machines/<machine>")]
pub async fn get_machine(
    caller: Caller,
    power: &State<Power>,
    machine: &str,
) -> Result<Out<MachineView>, ApiError> {
    let key = MachineKey::parse(machine)?;
    let machine = caller
        .run(move |b, a| match key {
            MachineKey::Id(id) => b.get_machine(a, id),
            MachineKey::Mac(mac) => b.get_machine_by_mac(a, mac),
        })
        .await?;
    if let Actor::Agent { .. } = caller.actor() {
        // The agent reads its own machine; it gets no presence (and the
        // machine queue is not its to read).
        return Ok(Out(MachineView::from(&machine)));
    }
    let states = power.states(std::slice::from_ref(&machine)).await;
    let p = states
        .get(&machine.id)
        .copied()
        .unwrap_or(PowerState::Unknown);
    let view = caller
        .run(move |b, a| view_with_presence(b, a, &machine, p))
        .await?;
    Ok(Out(view))
}

/// Changes a machine: rename, pool, accept (`"state": "ready"`) or retire
/// (`"state": "retired"`) (moderators and admins).
#[utoipa::path(patch, path = "/api/v1/machines/{machine}", tag = "machines", request_body = MachinePatchBody,
    params(("machine" = String, Path, description = "a machine id or MAC address")),
    responses((status = 200, body = MachineView), (status = 403, body = ErrorEnvelope),
        (status = 404, body = ErrorEnvelope), (status = 409, body = ErrorEnvelope)))]
#[patch("/machines/<machine>", data = "<body>")]
pub async fn update_machine(
    caller: Caller,
    machine: &str,
    body: Json<MachinePatchBody>,
) -> Result<Out<MachineView>, ApiError> {
    let key = MachineKey::parse(machine)?;
    let patch = body.0.into_core()?;
    let machine = caller
        .run(move |b, a| {
            let id = key.resolve(b, a)?;
            b.update_machine(a, id, patch)
        })
        .await?;
    Ok(Out(MachineView::from(&machine)))
}

/// A machine's waiting and active jobs, in order.
#[utoipa::path(get, path = "/api/v1/machines/{machine}/queue", tag = "jobs",
    params(("machine" = String, Path, description = "a machine id or MAC address")),
    responses((status = 200, body = [JobView]), (status = 404, body = ErrorEnvelope)))]
#[get("/machines/<machine>/queue")]
pub async fn machine_queue(caller: Caller, machine: &str) -> Result<Out<Vec<JobView>>, ApiError> {
    let key = MachineKey::parse(machine)?;
    let jobs = caller
        .run(move |b, a| {
            let id = key.resolve(b, a)?;
            b.machine_queue(a, id)
        })
        .await?;
    Ok(Out(jobs.iter().map(JobView::from).collect()))
}

/// Queues a job on a machine: a setup, or one image version.
#[utoipa::path(post, path = "/api/v1/machines/{machine}/jobs", tag = "jobs", request_body = NewJobBody,
    params(("machine" = String, Path, description = "a machine id or MAC address")),
    responses((status = 201, body = JobView), (status = 400, body = ErrorEnvelope),
        (status = 404, body = ErrorEnvelope), (status = 409, body = ErrorEnvelope)))]
#[post("/machines/<machine>/jobs", data = "<body>")]
pub async fn enqueue_job(
    caller: Caller,
    machine: &str,
    body: Json<NewJobBody>,
) -> Result<Created<JobView>, ApiError> {
    let key = MachineKey::parse(machine)?;
    let hold_ms = body.0.hold_seconds.map(|s| s.saturating_mul(1000));
    let start_after = body.0.start_after_seconds;
    let target = body.0.into_target()?;
    let job = caller
        .run(move |b, a| {
            let machine = key.resolve(b, a)?;
            let not_before = start_after.map(|s| b.now().plus_millis(seconds_ms(s)));
            b.enqueue_job_at(a, JobRequest { machine, target }, hold_ms, not_before)
        })
        .await?;
    Ok(created(JobView::from(&job)))
}

/// Accepts an enrolled (`pending`) machine into service (moderators and
/// admins).
#[utoipa::path(post, path = "/api/v1/machines/{machine}/accept", tag = "machines",
    params(("machine" = String, Path, description = "a machine id or MAC address")),
    responses((status = 200, body = MachineView), (status = 403, body = ErrorEnvelope),
        (status = 404, body = ErrorEnvelope)))]
#[post("/machines/<machine>/accept")]
pub async fn accept_machine(caller: Caller, machine: &str) -> Result<Out<MachineView>, ApiError> {
    let key = MachineKey::parse(machine)?;
    let m = caller
        .run(move |b, a| {
            let id = key.resolve(b, a)?;
            b.accept_machine(a, id)
        })
        .await?;
    Ok(Out(MachineView::from(&m)))
}

/// Takes a machine out of service: it then boots its local disk and BAAS
/// never writes it (moderators and admins; not while a job is active).
#[utoipa::path(post, path = "/api/v1/machines/{machine}/retire", tag = "machines",
    params(("machine" = String, Path, description = "a machine id or MAC address")),
    responses((status = 200, body = MachineView), (status = 403, body = ErrorEnvelope),
        (status = 404, body = ErrorEnvelope), (status = 409, body = ErrorEnvelope)))]
#[post("/machines/<machine>/retire")]
pub async fn retire_machine(caller: Caller, machine: &str) -> Result<Out<MachineView>, ApiError> {
    let key = MachineKey::parse(machine)?;
    let m = caller
        .run(move |b, a| {
            let id = key.resolve(b, a)?;
            b.retire_machine(a, id)
        })
        .await?;
    Ok(Out(MachineView::from(&m)))
}

/// How the server reaches a machine's power.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum PowerBody {
    /// No remote power control: jobs wait for the machine's next boot.
    Manual,
    /// A QEMU VM's QMP socket.
    Qmp {
        /// `unix:/path` or `tcp:host:port`.
        address: String,
    },
    /// A BMC, through `ipmitool -I lanplus`.
    Ipmi {
        /// The BMC's host name or address.
        host: String,
        /// The BMC user.
        username: String,
        /// The BMC password (stored; never shown again).
        password: String,
    },
}

/// A machine's power control and neutral state.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MachineBootBody {
    /// How to power-cycle it.
    pub power: PowerBody,
    /// What it returns to after each job: `keep`, `wipe` or
    /// `setup:<id>` (default `keep`).
    pub neutral: Option<String>,
}

/// Sets how the server power-cycles a machine (to start a job and to end
/// its session) and what the machine returns to between jobs (moderators
/// and admins).
#[utoipa::path(put, path = "/api/v1/machines/{machine}/boot-config", tag = "machines",
    request_body = MachineBootBody,
    params(("machine" = String, Path, description = "a machine id or MAC address")),
    responses((status = 200, body = MachineView), (status = 400, body = ErrorEnvelope),
        (status = 403, body = ErrorEnvelope), (status = 404, body = ErrorEnvelope)))]
#[put("/machines/<machine>/boot-config", data = "<body>")]
pub async fn set_boot_config(
    caller: Caller,
    machine: &str,
    body: Json<MachineBootBody>,
) -> Result<Out<MachineView>, ApiError> {
    let key = MachineKey::parse(machine)?;
    let body = body.0;
    let boot = MachineBoot {
        power: match body.power {
            PowerBody::Manual => PowerConfig::Manual,
            PowerBody::Qmp { address } => PowerConfig::Qmp { address },
            PowerBody::Ipmi {
                host,
                username,
                password,
            } => PowerConfig::Ipmi {
                host,
                username,
                password,
            },
        },
        neutral: match body.neutral {
            Some(n) => super::parse(&n)?,
            None => NeutralState::Keep,
        },
    };
    let m = caller
        .run(move |b, a| {
            let id = key.resolve(b, a)?;
            b.set_machine_boot(a, id, boot)
        })
        .await?;
    Ok(Out(MachineView::from(&m)))
}

/// How long a machine's power state read from its adapter is reused (the
/// dashboard polls every few seconds; QEMU serves one QMP client at a time
/// and `ipmitool` is a process per call).
pub const POWER_STATE_TTL: Duration = Duration::from_secs(20);

/// Longest the pages wait for one adapter's power state.
pub const POWER_STATE_WAIT: Duration = Duration::from_secs(2);

/// The power control the server applies power actions with (shared with
/// the power loop), managed by [`crate::build`], with the power states it
/// read lately.
#[derive(Debug, Clone)]
pub struct Power {
    /// The adapter.
    pub control: Arc<dyn PowerControl>,
    states: Arc<Mutex<HashMap<MachineId, (Instant, PowerState)>>>,
}

impl Power {
    /// Power control through `control`.
    pub fn new(control: Arc<dyn PowerControl>) -> Power {
        Power {
            control,
            states: Arc::default(),
        }
    }

    /// Applies `action` to `m` (forgetting its last known state).
    pub async fn apply(&self, m: &Machine, action: PowerAction) -> baas_core::Result<()> {
        if let Ok(mut states) = self.states.lock() {
            states.remove(&m.id);
        }
        self.control.apply(m, action).await
    }

    /// The power state of each machine that has a power adapter, read
    /// from the adapters at most every [`POWER_STATE_TTL`], concurrently,
    /// each bounded by [`POWER_STATE_WAIT`] (`Unknown` when it does not
    /// answer). Machines without an adapter are absent (`Unknown`).
    pub async fn states(&self, machines: &[Machine]) -> HashMap<MachineId, PowerState> {
        let now = Instant::now();
        let mut known = HashMap::new();
        let mut asks = Vec::new();
        {
            let cached = self.states.lock().map(|s| s.clone()).unwrap_or_default();
            for m in machines {
                if m.boot.power == PowerConfig::Manual || m.state == MachineState::Retired {
                    continue;
                }
                match cached.get(&m.id) {
                    Some((at, state)) if now.duration_since(*at) < POWER_STATE_TTL => {
                        known.insert(m.id, *state);
                    }
                    _ => {
                        let control = self.control.clone();
                        let m = m.clone();
                        asks.push(rocket::tokio::spawn(async move {
                            let state =
                                rocket::tokio::time::timeout(POWER_STATE_WAIT, control.state(&m))
                                    .await
                                    .ok()
                                    .and_then(Result::ok)
                                    .unwrap_or(PowerState::Unknown);
                            (m.id, state)
                        }));
                    }
                }
            }
        }
        for ask in asks {
            if let Ok((id, state)) = ask.await {
                known.insert(id, state);
                if let Ok(mut states) = self.states.lock() {
                    states.insert(id, (Instant::now(), state));
                }
            }
        }
        known
    }
}

/// `m`'s view with what the server knows of its presence.
pub fn view_with_presence(
    baas: &Baas,
    actor: &Actor,
    m: &Machine,
    power: PowerState,
) -> baas_core::Result<MachineView> {
    let queue = baas.machine_queue(actor, m.id)?;
    let presence = baas.machine_presence(m, &queue, power);
    let mut v = MachineView::from(m);
    v.offline = Some(presence.is_offline());
    v.offline_reason = match presence {
        Presence::Online => None,
        Presence::Silent => Some("silent".into()),
        Presence::PoweredOff => Some("powered off".into()),
    };
    Ok(v)
}

/// A power action by hand.
#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum PowerActionName {
    /// Power on (QMP: resume; IPMI: `chassis power on`).
    On,
    /// Hard power off.
    Off,
    /// Hard reset.
    Cycle,
}

impl PowerActionName {
    /// The core's action.
    pub fn action(self) -> PowerAction {
        match self {
            PowerActionName::On => PowerAction::On,
            PowerActionName::Off => PowerAction::Off,
            PowerActionName::Cycle => PowerAction::Cycle,
        }
    }
}

/// What to do to a machine's power.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PowerActionBody {
    /// `on`, `off` or `cycle`.
    pub action: PowerActionName,
}

/// A power action done.
#[derive(Debug, Serialize, ToSchema)]
pub struct PowerOutcome {
    /// `on`, `off` or `cycle`.
    pub action: String,
    /// The adapter that did it: `qmp` or `ipmi`.
    pub adapter: String,
    /// The machine.
    pub machine: MachineView,
}

/// Applies a checked power action through the machine's adapter and records
/// the outcome in its history; the adapter's error is the answer when it
/// failed. Shared with the web UI.
pub async fn apply_power(
    baas: &baas_core::Baas,
    actor: &baas_core::Actor,
    power: &Power,
    key: MachineKey,
    action: PowerAction,
) -> Result<baas_core::model::Machine, ApiError> {
    let (b, a) = (baas.clone(), actor.clone());
    let m = crate::auth::blocking(move || {
        let id = key.resolve(&b, &a)?;
        b.request_power(&a, id, action)
    })
    .await?;
    let result = power.apply(&m, action).await;
    let error = result.as_ref().err().map(|e| e.to_string());
    let (b, a, recorded) = (baas.clone(), actor.clone(), m.clone());
    crate::auth::blocking(move || b.power_applied(&a, &recorded, action, error.as_deref())).await?;
    result?;
    Ok(m)
}

/// Switches a machine's power by hand through its configured adapter (QMP
/// or IPMI), recorded in the machine's history (moderators and admins). A
/// machine without a power adapter (manual) is 409.
#[utoipa::path(post, path = "/api/v1/machines/{machine}/power", tag = "machines",
    request_body = PowerActionBody,
    params(("machine" = String, Path, description = "a machine id or MAC address")),
    responses((status = 200, body = PowerOutcome), (status = 400, body = ErrorEnvelope),
        (status = 403, body = ErrorEnvelope), (status = 404, body = ErrorEnvelope),
        (status = 409, body = ErrorEnvelope), (status = 503, body = ErrorEnvelope)))]
#[post("/machines/<machine>/power", data = "<body>")]
pub async fn power_machine(
    caller: Caller,
    baas: &State<baas_core::Baas>,
    power: &State<Power>,
    machine: &str,
    body: Json<PowerActionBody>,
) -> Result<Out<PowerOutcome>, ApiError> {
    let key = MachineKey::parse(machine)?;
    let name = body.0.action;
    let m = apply_power(baas, caller.actor(), power, key, name.action()).await?;
    Ok(Out(PowerOutcome {
        action: format!("{name:?}").to_ascii_lowercase(),
        adapter: m.boot.power.kind().to_string(),
        machine: MachineView::from(&m),
    }))
}

/// A machine's own history, newest first (at most 50 lines): power actions
/// by hand and how they went. Anyone who may see the machine; not agents.
#[utoipa::path(get, path = "/api/v1/machines/{machine}/events", tag = "machines",
    params(("machine" = String, Path, description = "a machine id or MAC address")),
    responses((status = 200, body = [JobEventView]), (status = 403, body = ErrorEnvelope),
        (status = 404, body = ErrorEnvelope)))]
#[get("/machines/<machine>/events")]
pub async fn machine_events(
    caller: Caller,
    machine: &str,
) -> Result<Out<Vec<JobEventView>>, ApiError> {
    let key = MachineKey::parse(machine)?;
    let events = caller
        .run(move |b, a| {
            let id = key.resolve(b, a)?;
            b.machine_history(a, id)
        })
        .await?;
    Ok(Out(events.iter().map(JobEventView::from).collect()))
}

/// Seconds as milliseconds for a timestamp offset (saturating).
pub fn seconds_ms(s: u64) -> i64 {
    i64::try_from(s.saturating_mul(1000)).unwrap_or(i64::MAX)
}
