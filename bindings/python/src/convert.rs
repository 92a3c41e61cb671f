//! The core's types as plain Python dicts (the bindings' DTOs: core types
//! are not serialisable on purpose). Times are milliseconds since the
//! epoch; the Python layer turns them into `datetime`s.

use baas_core::model::*;
use pyo3::prelude::*;
use pyo3::types::PyDict;

type D<'py> = PyResult<Bound<'py, PyDict>>;

/// A user.
pub fn user_dict<'py>(py: Python<'py>, u: &User) -> D<'py> {
    let d = PyDict::new(py);
    d.set_item("id", u.id.to_string())?;
    d.set_item("name", &u.name)?;
    d.set_item("display_name", &u.display_name)?;
    d.set_item("email", &u.email)?;
    d.set_item("role", u.role.as_str())?;
    d.set_item("created_at", u.created_at.millis())?;
    Ok(d)
}

/// A token, without its secret.
pub fn token_dict<'py>(py: Python<'py>, t: &Token) -> D<'py> {
    let d = PyDict::new(py);
    d.set_item("id", t.id.to_string())?;
    d.set_item("name", &t.name)?;
    d.set_item(
        "user_id",
        match t.subject {
            TokenSubject::User(u) => Some(u.to_string()),
            TokenSubject::Machine(_) => None,
        },
    )?;
    d.set_item(
        "machine_id",
        match t.subject {
            TokenSubject::Machine(m) => Some(m.to_string()),
            TokenSubject::User(_) => None,
        },
    )?;
    d.set_item("created_at", t.created_at.millis())?;
    d.set_item("expires_at", t.expires_at.map(Timestamp::millis))?;
    d.set_item("revoked_at", t.revoked_at.map(Timestamp::millis))?;
    Ok(d)
}

/// An image.
pub fn image_dict<'py>(py: Python<'py>, i: &Image) -> D<'py> {
    let d = PyDict::new(py);
    d.set_item("id", i.id.to_string())?;
    d.set_item("owner_id", i.owner.to_string())?;
    d.set_item("name", &i.name)?;
    d.set_item("disk", i.disk.to_string())?;
    d.set_item("size", i.size)?;
    d.set_item("metadata", i.metadata.clone())?;
    d.set_item("visibility", i.visibility.as_str())?;
    d.set_item(
        "shared_with",
        i.shared_with
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
    )?;
    d.set_item("created_at", i.created_at.millis())?;
    Ok(d)
}

/// A version.
pub fn version_dict<'py>(py: Python<'py>, v: &Version) -> D<'py> {
    let d = PyDict::new(py);
    d.set_item("image_id", v.image.to_string())?;
    d.set_item("number", v.number)?;
    d.set_item("size", v.size)?;
    d.set_item("stored_size", v.added_bytes)?;
    d.set_item("root", v.root.to_hex())?;
    d.set_item("data_chunks", v.data_chunks)?;
    d.set_item("created_by", v.created_by.to_string())?;
    d.set_item("created_at", v.created_at.millis())?;
    let (source, job) = match &v.source {
        VersionSource::Blank => ("blank", None),
        VersionSource::Upload => ("upload", None),
        VersionSource::Capture { job } => ("capture", Some(job.to_string())),
    };
    d.set_item("source", source)?;
    d.set_item("source_job_id", job)?;
    d.set_item("note", v.note.clone())?;
    Ok(d)
}

/// A setup.
pub fn setup_dict<'py>(py: Python<'py>, s: &Setup) -> D<'py> {
    let d = PyDict::new(py);
    d.set_item("id", s.id.to_string())?;
    d.set_item("owner_id", s.owner.to_string())?;
    d.set_item("name", &s.name)?;
    let entries = s
        .entries
        .iter()
        .map(|e| {
            let x = PyDict::new(py);
            x.set_item("image_id", e.image.to_string())?;
            match e.version {
                VersionRef::Number(n) => x.set_item("version", n)?,
                VersionRef::Latest => x.set_item("version", "latest")?,
            }
            x.set_item("disk", e.disk.as_ref().map(ToString::to_string))?;
            x.set_item("capture", e.capture)?;
            Ok(x)
        })
        .collect::<PyResult<Vec<_>>>()?;
    d.set_item("entries", entries)?;
    d.set_item("created_at", s.created_at.millis())?;
    d.set_item("updated_at", s.updated_at.millis())?;
    Ok(d)
}

/// A machine, with its last inventory.
pub fn machine_dict<'py>(py: Python<'py>, m: &Machine) -> D<'py> {
    let d = PyDict::new(py);
    d.set_item("id", m.id.to_string())?;
    d.set_item("mac", m.mac.to_string())?;
    d.set_item("name", &m.name)?;
    d.set_item("arch", m.arch.as_str())?;
    d.set_item("pool", m.pool.clone())?;
    d.set_item("state", m.state.as_str())?;
    d.set_item("last_seen", m.last_seen.map(Timestamp::millis))?;
    d.set_item("created_at", m.created_at.millis())?;
    let inventory = match &m.inventory {
        None => None,
        Some(inv) => {
            let x = PyDict::new(py);
            let disks = inv
                .disks
                .iter()
                .map(|k| {
                    let y = PyDict::new(py);
                    y.set_item("path", &k.path)?;
                    y.set_item("by_id", k.by_id.clone())?;
                    y.set_item("serial", k.serial.clone())?;
                    y.set_item("wwn", k.wwn.clone())?;
                    y.set_item("model", k.model.clone())?;
                    y.set_item("size", k.size)?;
                    Ok(y)
                })
                .collect::<PyResult<Vec<_>>>()?;
            let nics = inv
                .nics
                .iter()
                .map(|n| {
                    let y = PyDict::new(py);
                    y.set_item("name", &n.name)?;
                    y.set_item("mac", n.mac.to_string())?;
                    y.set_item("speed_mbps", n.speed_mbps)?;
                    Ok(y)
                })
                .collect::<PyResult<Vec<_>>>()?;
            x.set_item("disks", disks)?;
            x.set_item("nics", nics)?;
            x.set_item("memory_bytes", inv.memory_bytes)?;
            x.set_item("cpu_model", &inv.cpu_model)?;
            x.set_item("cpus", inv.cpus)?;
            Some(x)
        }
    };
    d.set_item("inventory", inventory)?;
    Ok(d)
}

/// A job.
pub fn job_dict<'py>(py: Python<'py>, j: &Job) -> D<'py> {
    let d = PyDict::new(py);
    d.set_item("id", j.id.to_string())?;
    d.set_item("seq", j.seq)?;
    d.set_item("machine_id", j.machine.to_string())?;
    d.set_item("owner_id", j.owner.to_string())?;
    d.set_item("setup_id", j.setup.map(|s| s.to_string()))?;
    let entries = j
        .entries
        .iter()
        .map(|e| {
            let x = PyDict::new(py);
            x.set_item("image_id", e.image.to_string())?;
            x.set_item("version", e.version)?;
            x.set_item("disk", e.disk.to_string())?;
            x.set_item("capture", e.capture)?;
            Ok(x)
        })
        .collect::<PyResult<Vec<_>>>()?;
    d.set_item("entries", entries)?;
    d.set_item("state", j.state.as_str())?;
    let p = PyDict::new(py);
    p.set_item("phase", &j.progress.phase)?;
    p.set_item("bytes_done", j.progress.bytes_done)?;
    p.set_item("bytes_total", j.progress.bytes_total)?;
    p.set_item("rate", j.progress.rate)?;
    d.set_item("progress", p)?;
    d.set_item("error", j.error.clone())?;
    d.set_item("created_at", j.created_at.millis())?;
    d.set_item("started_at", j.started_at.map(Timestamp::millis))?;
    d.set_item("finished_at", j.finished_at.map(Timestamp::millis))?;
    Ok(d)
}

/// One line of a job's timeline.
pub fn event_dict<'py>(py: Python<'py>, e: &JobEvent) -> D<'py> {
    let d = PyDict::new(py);
    d.set_item("at", e.at.millis())?;
    d.set_item("kind", &e.kind)?;
    d.set_item("message", &e.message)?;
    Ok(d)
}
