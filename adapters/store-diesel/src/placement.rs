//! Placements on diesel: jobs for any machine that fits, waiting unbound.
//!
//! Why `bind_placement` never gives one machine to two placements: on
//! SQLite every write transaction holds the single write lock; on
//! PostgreSQL it first locks the machine's row `FOR UPDATE` (as
//! `take_next` does, and which conflicts with the key-share lock every
//! `enqueue` on that machine takes), so binders of one machine run one
//! after the other, and each checks "no queued or active job" after the
//! previous one committed its job. The placement moves by compare-and-set
//! (`UPDATE ... WHERE state = 'waiting'`), which loses cleanly against a
//! concurrent cancel or a concurrent bind to another machine.

use baas_core::model::*;
use baas_core::{Error, Result};
use diesel::prelude::*;
use serde::{Deserialize, Serialize};

use crate::db::DbConnection;
use crate::error::{duplicate, TxError};
use crate::rows::{corrupt, parse, JobEntryRow, NewJobRow};
use crate::schema::*;

type Tx<T> = Result<T, TxError>;

/// States that hold a machine: queued or active.
const BUSY_STATES: [&str; 4] = ["queued", "provisioning", "running", "capturing"];

#[derive(Queryable, Selectable)]
#[diesel(table_name = placements)]
pub(crate) struct PlacementRow {
    seq: i64,
    id: String,
    owner_id: String,
    state: String,
    request: String,
    machine_id: Option<String>,
    error: Option<String>,
    created_at: i64,
    finished_at: Option<i64>,
}

#[derive(Insertable)]
#[diesel(table_name = placements)]
struct NewPlacementRow {
    id: String,
    owner_id: String,
    state: String,
    request: String,
    machine_id: Option<String>,
    error: Option<String>,
    created_at: i64,
    finished_at: Option<i64>,
}

/// The stored form of what a placement asks for.
#[derive(Serialize, Deserialize)]
struct RequestJson {
    arch: Option<String>,
    min_disk_bytes: u64,
    pool: Option<String>,
    setup: Option<String>,
    entries: Vec<EntryJson>,
    hold_ms: Option<u64>,
    not_before: Option<i64>,
}

#[derive(Serialize, Deserialize)]
struct EntryJson {
    image: String,
    version: u32,
    disk: String,
    capture: bool,
}

const T: &str = "placements";

impl PlacementRow {
    fn into_model(self) -> Result<Placement> {
        let r: RequestJson = serde_json::from_str(&self.request).map_err(|e| {
            corrupt(T, "request", "text that is not a placement request").with_source(e)
        })?;
        Ok(Placement {
            id: parse(T, "id", &self.id)?,
            seq: self.seq,
            owner: parse(T, "owner_id", &self.owner_id)?,
            fit: Fit {
                arch: r
                    .arch
                    .as_deref()
                    .map(|a| parse(T, "request", a))
                    .transpose()?,
                min_disk_bytes: r.min_disk_bytes,
                pool: r.pool,
            },
            setup: r
                .setup
                .as_deref()
                .map(|s| parse(T, "request", s))
                .transpose()?,
            entries: r
                .entries
                .into_iter()
                .map(|e| {
                    Ok(JobEntry {
                        image: parse(T, "request", &e.image)?,
                        version: e.version,
                        disk: parse(T, "request", &e.disk)?,
                        capture: e.capture,
                    })
                })
                .collect::<Result<_>>()?,
            session: Session {
                hold_ms: r.hold_ms,
                not_before: r.not_before.map(Timestamp),
                ..Session::default()
            },
            state: parse(T, "state", &self.state)?,
            machine: self
                .machine_id
                .as_deref()
                .map(|m| parse(T, "machine_id", m))
                .transpose()?,
            error: self.error,
            created_at: Timestamp(self.created_at),
            finished_at: self.finished_at.map(Timestamp),
        })
    }
}

impl NewPlacementRow {
    fn new(p: &Placement) -> Result<Self> {
        let request = RequestJson {
            arch: p.fit.arch.as_ref().map(|a| a.as_str().to_string()),
            min_disk_bytes: p.fit.min_disk_bytes,
            pool: p.fit.pool.clone(),
            setup: p.setup.map(|s| s.to_string()),
            entries: p
                .entries
                .iter()
                .map(|e| EntryJson {
                    image: e.image.to_string(),
                    version: e.version,
                    disk: e.disk.to_string(),
                    capture: e.capture,
                })
                .collect(),
            hold_ms: p.session.hold_ms,
            not_before: p.session.not_before.map(Timestamp::millis),
        };
        Ok(NewPlacementRow {
            id: p.id.to_string(),
            owner_id: p.owner.to_string(),
            state: p.state.as_str().to_string(),
            request: serde_json::to_string(&request).map_err(|e| {
                Error::internal("encoding a placement request failed").with_source(e)
            })?,
            machine_id: p.machine.map(|m| m.to_string()),
            error: p.error.clone(),
            created_at: p.created_at.millis(),
            finished_at: p.finished_at.map(Timestamp::millis),
        })
    }
}

fn load(c: &mut DbConnection, id: &str) -> Tx<Option<Placement>> {
    let row = placements::table
        .filter(placements::id.eq(id))
        .select(PlacementRow::as_select())
        .first(c)
        .optional()?;
    Ok(row.map(PlacementRow::into_model).transpose()?)
}

fn reload(c: &mut DbConnection, id: JobId) -> Tx<Placement> {
    load(c, &id.to_string())?.ok_or_else(|| {
        Error::internal(format!(
            "placement {id} vanished inside its own transaction"
        ))
        .into()
    })
}

/// Why a compare-and-set on placement `id` moved nothing.
fn not_waiting(c: &mut DbConnection, id: JobId) -> TxError {
    match load(c, &id.to_string()) {
        Ok(None) => Error::not_found(format!("placement {id}")).into(),
        Ok(Some(p)) => {
            Error::conflict(format!("placement {id} is {}, not waiting", p.state)).into()
        }
        Err(e) => e,
    }
}

pub(crate) fn insert(c: &mut DbConnection, p: &Placement) -> Tx<Placement> {
    if p.state != PlacementState::Waiting {
        return Err(Error::invalid(
            "state",
            format!("a new placement must be waiting, not {}", p.state),
        )
        .into());
    }
    let row = NewPlacementRow::new(p)?;
    if !crate::metadata::user_exists(c, &row.owner_id)? {
        return Err(Error::not_found(format!("user {}", p.owner)).into());
    }
    let job_exists = jobs::table
        .filter(jobs::id.eq(&row.id))
        .select(jobs::id)
        .first::<String>(c)
        .optional()?
        .is_some();
    if job_exists {
        return Err(Error::conflict(format!("a job with id {} already exists", p.id)).into());
    }
    diesel::insert_into(placements::table)
        .values(&row)
        .execute(c)
        .map_err(|e| {
            if duplicate(&e, &["placements.id", "placements_id_key"]) {
                Error::conflict(format!("a placement with id {} already exists", p.id)).into()
            } else {
                TxError::from(e)
            }
        })?;
    reload(c, p.id)
}

pub(crate) fn get(c: &mut DbConnection, id: JobId) -> Tx<Option<Placement>> {
    load(c, &id.to_string())
}

pub(crate) fn list(c: &mut DbConnection, states: &[PlacementState]) -> Tx<Vec<Placement>> {
    let mut q = placements::table
        .select(PlacementRow::as_select())
        .order(placements::seq.asc())
        .into_boxed();
    if !states.is_empty() {
        let names: Vec<&str> = states.iter().map(|s| s.as_str()).collect();
        q = q.filter(placements::state.eq_any(names));
    }
    Ok(q.load(c)?
        .into_iter()
        .map(PlacementRow::into_model)
        .collect::<Result<_>>()?)
}

pub(crate) fn bind(c: &mut DbConnection, job: &Job) -> Tx<Job> {
    if job.state != JobState::Queued {
        return Err(Error::invalid(
            "state",
            format!("a bound placement becomes a queued job, not {}", job.state),
        )
        .into());
    }
    let row = NewJobRow::new(job)?;
    let entries = JobEntryRow::all(job);
    let key = job.machine.to_string();
    if let DbConnection::Postgres(pg) = c {
        // The owner first, as every enqueue does (see `insert_job`), then
        // the machine, exclusively: binders of one machine queue up here.
        users::table
            .filter(users::id.eq(&row.owner_id))
            .select(users::id)
            .for_key_share()
            .load::<String>(pg)?;
        machines::table
            .filter(machines::id.eq(&key))
            .select(machines::id)
            .for_update()
            .load::<String>(pg)?;
    }
    let moved = diesel::update(
        placements::table
            .filter(placements::id.eq(job.id.to_string()))
            .filter(placements::state.eq(PlacementState::Waiting.as_str())),
    )
    .set((
        placements::state.eq(PlacementState::Bound.as_str()),
        placements::machine_id.eq(Some(&key)),
        placements::finished_at.eq(Some(job.created_at.millis())),
    ))
    .execute(c)?;
    if moved == 0 {
        return Err(not_waiting(c, job.id));
    }
    let state: Option<String> = machines::table
        .filter(machines::id.eq(&key))
        .select(machines::state)
        .first(c)
        .optional()?;
    match state.as_deref() {
        None => return Err(Error::not_found(format!("machine {}", job.machine)).into()),
        Some("ready") => {}
        Some(other) => {
            return Err(Error::conflict(format!("machine {} is {other}", job.machine)).into())
        }
    }
    let busy: Option<String> = jobs::table
        .filter(jobs::machine_id.eq(&key))
        .filter(jobs::state.eq_any(BUSY_STATES))
        .select(jobs::id)
        .first(c)
        .optional()?;
    if let Some(other) = busy {
        return Err(
            Error::conflict(format!("machine {} is busy with job {other}", job.machine)).into(),
        );
    }
    crate::queue::insert_job(c, job, &row, &entries)
}

pub(crate) fn cancel(
    c: &mut DbConnection,
    id: JobId,
    reason: &str,
    at: Timestamp,
) -> Tx<Placement> {
    let moved = diesel::update(
        placements::table
            .filter(placements::id.eq(id.to_string()))
            .filter(placements::state.eq(PlacementState::Waiting.as_str())),
    )
    .set((
        placements::state.eq(PlacementState::Cancelled.as_str()),
        placements::error.eq(Some(reason)),
        placements::finished_at.eq(Some(at.millis())),
    ))
    .execute(c)?;
    if moved == 0 {
        return Err(not_waiting(c, id));
    }
    reload(c, id)
}
