//! [`BootQueue`] on diesel: per-machine FIFO of jobs with exactly-once
//! hand-out.
//!
//! Why `take_next` hands a job out once: on SQLite every write transaction
//! holds the single write lock; on PostgreSQL `take_next` first locks the
//! machine's row, so callers for one machine run one after the other and
//! each sees what the previous one committed. The job itself moves by
//! compare-and-set (`UPDATE ... WHERE state = 'queued'`), which also loses
//! cleanly against a concurrent cancel. A partial unique index keeps at
//! most one active job per machine whatever happens above it.

use std::collections::HashMap;

use baas_core::model::*;
use baas_core::ports::{BootQueue, JobFilter};
use baas_core::{Error, Result};
use diesel::prelude::*;

use crate::db::DbConnection;
use crate::error::{duplicate, TxError};
use crate::metadata::user_exists;
use crate::rows::*;
use crate::schema::*;
use crate::DieselMetadataStore;

type Tx<T> = Result<T, TxError>;

/// States that hold the machine.
const ACTIVE_STATES: [&str; 3] = ["provisioning", "running", "capturing"];

/// The unique index behind "one active job per machine", both spellings.
const ONE_ACTIVE: [&str; 2] = ["jobs.machine_id", "jobs_one_active_per_machine"];

/// Most ids bound in one `IN (...)` list.
const IN_LIST: usize = 500;

/// The columns `transition` changes; `None` leaves a column alone.
#[derive(AsChangeset)]
#[diesel(table_name = jobs)]
struct StateChange {
    state: String,
    error: Option<String>,
    started_at: Option<i64>,
    finished_at: Option<i64>,
}

fn load_jobs(c: &mut DbConnection, rows: Vec<JobRow>) -> Tx<Vec<Job>> {
    let mut entries: HashMap<String, Vec<JobEntryRow>> = HashMap::new();
    let ids: Vec<String> = rows.iter().map(|r| r.id.clone()).collect();
    for batch in ids.chunks(IN_LIST) {
        let found = job_entries::table
            .filter(job_entries::job_id.eq_any(batch))
            .select(JobEntryRow::as_select())
            .order((job_entries::job_id, job_entries::position))
            .load(c)?;
        for e in found {
            entries.entry(e.job_id.clone()).or_default().push(e);
        }
    }
    let jobs = rows
        .into_iter()
        .map(|r| {
            let mine = entries.remove(&r.id).unwrap_or_default();
            r.into_model(mine)
        })
        .collect::<Result<_>>()?;
    Ok(jobs)
}

fn load_job(c: &mut DbConnection, id: &str) -> Tx<Option<Job>> {
    let row = jobs::table
        .filter(jobs::id.eq(id))
        .select(JobRow::as_select())
        .first(c)
        .optional()?;
    Ok(match row {
        Some(r) => load_jobs(c, vec![r])?.pop(),
        None => None,
    })
}

/// A job that must exist because this transaction just wrote it.
fn reload_job(c: &mut DbConnection, id: JobId) -> Tx<Job> {
    load_job(c, &id.to_string())?.ok_or_else(|| {
        Error::internal(format!("job {id} vanished inside its own transaction")).into()
    })
}

fn job_state(c: &mut DbConnection, id: &str) -> Tx<Option<String>> {
    Ok(jobs::table
        .filter(jobs::id.eq(id))
        .select(jobs::state)
        .first(c)
        .optional()?)
}

fn active_row(c: &mut DbConnection, machine: &str) -> Tx<Option<JobRow>> {
    Ok(jobs::table
        .filter(jobs::machine_id.eq(machine))
        .filter(jobs::state.eq_any(ACTIVE_STATES))
        .select(JobRow::as_select())
        .order(jobs::seq.asc())
        .first(c)
        .optional()?)
}

fn insert_event(c: &mut DbConnection, id: JobId, event: &JobEvent) -> Tx<()> {
    diesel::insert_into(job_events::table)
        .values(&JobEventRow::new(id, event))
        .execute(c)?;
    Ok(())
}

/// Checks that a version a new job names exists, and on PostgreSQL keeps
/// it from being deleted until the job is committed (the delete takes a
/// conflicting lock, then sees the job).
fn hold_version(c: &mut DbConnection, image: ImageId, version: u32) -> Tx<()> {
    let q = versions::table
        .filter(versions::image_id.eq(image.to_string()))
        .filter(versions::number.eq(i64::from(version)))
        .select(versions::number);
    let found = match c {
        DbConnection::Postgres(pg) => q.for_share().first::<i64>(pg).optional()?,
        DbConnection::Sqlite(_) => q.first::<i64>(c).optional()?,
    };
    match found {
        Some(_) => Ok(()),
        None => Err(Error::not_found(format!("version {version} of image {image}")).into()),
    }
}

/// Inserts a queued job with its entries and `queued` event, after
/// checking (and on PostgreSQL locking) what it refers to.
pub(crate) fn insert_job(
    c: &mut DbConnection,
    job: &Job,
    row: &NewJobRow,
    entries: &[JobEntryRow],
) -> Tx<Job> {
    if let DbConnection::Postgres(pg) = c {
        // Take the key-share locks the foreign keys would take
        // anyway, but first: `delete_user` locks the user before
        // the versions, so this order cannot deadlock with it.
        users::table
            .filter(users::id.eq(&row.owner_id))
            .select(users::id)
            .for_key_share()
            .load::<String>(pg)?;
        machines::table
            .filter(machines::id.eq(&row.machine_id))
            .select(machines::id)
            .for_key_share()
            .load::<String>(pg)?;
    }
    let machine = machines::table
        .filter(machines::id.eq(&row.machine_id))
        .select(machines::id)
        .first::<String>(c)
        .optional()?;
    if machine.is_none() {
        return Err(Error::not_found(format!("machine {}", job.machine)).into());
    }
    if !user_exists(c, &row.owner_id)? {
        return Err(Error::not_found(format!("user {}", job.owner)).into());
    }
    for e in &job.entries {
        hold_version(c, e.image, e.version)?;
    }
    diesel::insert_into(jobs::table)
        .values(row)
        .execute(c)
        .map_err(|e| {
            if duplicate(&e, &["jobs.id", "jobs_id_key"]) {
                Error::conflict(format!("a job with id {} already exists", job.id)).into()
            } else {
                TxError::from(e)
            }
        })?;
    // One row at a time: the multi-backend connection has no batch
    // insert.
    for entry in entries {
        diesel::insert_into(job_entries::table)
            .values(entry)
            .execute(c)?;
    }
    insert_event(
        c,
        job.id,
        &JobEvent {
            at: job.created_at,
            kind: JobState::Queued.as_str().to_string(),
            message: "queued".to_string(),
        },
    )?;
    reload_job(c, job.id)
}

impl BootQueue for DieselMetadataStore {
    fn enqueue(&self, job: &Job) -> Result<Job> {
        if job.state != JobState::Queued {
            return Err(Error::invalid(
                "state",
                format!("a new job must be queued, not {}", job.state),
            ));
        }
        let row = NewJobRow::new(job)?;
        let entries = JobEntryRow::all(job);
        self.write(&format!("queueing job {}", job.id), |c| {
            insert_job(c, job, &row, &entries)
        })
    }

    fn job(&self, id: JobId) -> Result<Option<Job>> {
        self.read("reading a job", |c| load_job(c, &id.to_string()))
    }

    fn jobs(&self, filter: &JobFilter) -> Result<Vec<Job>> {
        self.read("listing jobs", |c| {
            let mut q = jobs::table.select(JobRow::as_select()).into_boxed();
            if let Some(machine) = filter.machine {
                q = q.filter(jobs::machine_id.eq(machine.to_string()));
            }
            if let Some(owner) = filter.owner {
                q = q.filter(jobs::owner_id.eq(owner.to_string()));
            }
            if !filter.states.is_empty() {
                let states: Vec<&str> = filter.states.iter().map(|s| s.as_str()).collect();
                q = q.filter(jobs::state.eq_any(states));
            }
            q = match filter.limit {
                Some(limit) => q.order(jobs::seq.desc()).limit(i64::from(limit)),
                None => q.order(jobs::seq.asc()),
            };
            let rows = q.load(c)?;
            load_jobs(c, rows)
        })
    }

    fn active_job(&self, machine: MachineId) -> Result<Option<Job>> {
        self.read("reading a machine's active job", |c| {
            Ok(match active_row(c, &machine.to_string())? {
                Some(r) => load_jobs(c, vec![r])?.pop(),
                None => None,
            })
        })
    }

    fn take_next(&self, machine: MachineId, now: Timestamp) -> Result<Option<Job>> {
        let key = machine.to_string();
        self.write(&format!("taking the next job of machine {machine}"), |c| {
            if let DbConnection::Postgres(pg) = c {
                machines::table
                    .filter(machines::id.eq(&key))
                    .select(machines::id)
                    .for_update()
                    .load::<String>(pg)?;
            }
            if active_row(c, &key)?.is_some() {
                return Ok(None);
            }
            loop {
                let next: Option<String> = jobs::table
                    .filter(jobs::machine_id.eq(&key))
                    .filter(jobs::state.eq(JobState::Queued.as_str()))
                    .select(jobs::id)
                    .order(jobs::seq.asc())
                    .first(c)
                    .optional()?;
                let Some(next) = next else {
                    return Ok(None);
                };
                let moved = diesel::update(
                    jobs::table
                        .filter(jobs::id.eq(&next))
                        .filter(jobs::state.eq(JobState::Queued.as_str())),
                )
                .set((
                    jobs::state.eq(JobState::Provisioning.as_str()),
                    jobs::started_at.eq(now.millis()),
                ))
                .execute(c)?;
                if moved == 0 {
                    // Cancelled between our read and our update
                    // (PostgreSQL only); try the next one.
                    continue;
                }
                let id: JobId = parse("jobs", "id", &next)?;
                insert_event(
                    c,
                    id,
                    &JobEvent {
                        at: now,
                        kind: JobState::Provisioning.as_str().to_string(),
                        message: "handed to the machine's agent".to_string(),
                    },
                )?;
                return reload_job(c, id).map(Some);
            }
        })
    }

    fn transition(
        &self,
        id: JobId,
        from: &[JobState],
        to: JobState,
        error: Option<String>,
        event: &JobEvent,
    ) -> Result<Job> {
        let key = id.to_string();
        let from_names: Vec<&str> = from.iter().map(|s| s.as_str()).collect();
        let change = StateChange {
            state: to.as_str().to_string(),
            error,
            started_at: (to == JobState::Provisioning).then_some(event.at.millis()),
            finished_at: to.is_final().then_some(event.at.millis()),
        };
        self.write(&format!("moving job {id} to {to}"), |c| {
            let n = diesel::update(
                jobs::table
                    .filter(jobs::id.eq(&key))
                    .filter(jobs::state.eq_any(&from_names)),
            )
            .set(&change)
            .execute(c)
            .map_err(|e| {
                if duplicate(&e, &ONE_ACTIVE) {
                    Error::conflict(format!(
                        "job {id} cannot become {to}: its machine already has an active job"
                    ))
                    .into()
                } else {
                    TxError::from(e)
                }
            })?;
            if n == 0 {
                return Err(match job_state(c, &key)? {
                    None => Error::not_found(format!("job {id}")),
                    Some(state) => Error::conflict(format!(
                        "job {id} is {state}, not {}",
                        if from_names.is_empty() {
                            "in any of no states".to_string()
                        } else {
                            from_names.join(" or ")
                        }
                    )),
                }
                .into());
            }
            insert_event(c, id, event)?;
            reload_job(c, id)
        })
    }

    fn set_session(&self, id: JobId, session: &Session) -> Result<()> {
        let text = session_to_db(session)?;
        self.write(&format!("recording the session of job {id}"), |c| {
            let n = diesel::update(jobs::table.filter(jobs::id.eq(id.to_string())))
                .set(jobs::session.eq(text))
                .execute(c)?;
            if n == 0 {
                return Err(Error::not_found(format!("job {id}")).into());
            }
            Ok(())
        })
    }

    fn set_progress(&self, id: JobId, progress: &Progress) -> Result<()> {
        let done = to_db("bytes_done", progress.bytes_done)?;
        let total = to_db("bytes_total", progress.bytes_total)?;
        let rate = to_db("rate", progress.rate)?;
        self.write(&format!("recording progress of job {id}"), |c| {
            let n = diesel::update(jobs::table.filter(jobs::id.eq(id.to_string())))
                .set((
                    jobs::progress_phase.eq(&progress.phase),
                    jobs::progress_done.eq(done),
                    jobs::progress_total.eq(total),
                    jobs::progress_rate.eq(rate),
                ))
                .execute(c)?;
            if n == 0 {
                return Err(Error::not_found(format!("job {id}")).into());
            }
            Ok(())
        })
    }

    fn append_event(&self, id: JobId, event: &JobEvent) -> Result<()> {
        self.write(&format!("adding an event to job {id}"), |c| {
            if job_state(c, &id.to_string())?.is_none() {
                return Err(Error::not_found(format!("job {id}")).into());
            }
            insert_event(c, id, event)
        })
    }

    fn events(&self, id: JobId) -> Result<Vec<JobEvent>> {
        self.read("reading a job's timeline", |c| {
            let rows = job_events::table
                .filter(job_events::job_id.eq(id.to_string()))
                .select(JobEventRow::as_select())
                .order(job_events::seq.asc())
                .load(c)?;
            Ok(rows.into_iter().map(JobEventRow::into_model).collect())
        })
    }

    fn insert_placement(&self, p: &Placement) -> Result<Placement> {
        self.write(&format!("recording placement {}", p.id), |c| {
            crate::placement::insert(c, p)
        })
    }

    fn placement(&self, id: JobId) -> Result<Option<Placement>> {
        self.read("reading a placement", |c| crate::placement::get(c, id))
    }

    fn placements(&self, states: &[PlacementState]) -> Result<Vec<Placement>> {
        self.read("listing placements", |c| crate::placement::list(c, states))
    }

    fn bind_placement(&self, job: &Job) -> Result<Job> {
        self.write(
            &format!("binding placement {} to machine {}", job.id, job.machine),
            |c| crate::placement::bind(c, job),
        )
    }

    fn cancel_placement(&self, id: JobId, reason: &str, at: Timestamp) -> Result<Placement> {
        self.write(&format!("cancelling placement {id}"), |c| {
            crate::placement::cancel(c, id, reason, at)
        })
    }
}
