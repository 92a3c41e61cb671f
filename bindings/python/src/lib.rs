//! `baas._baas`, the native half of `import baas`: one class, [`Client`],
//! over the core's [`BaasClient`] trait, opened either remotely
//! (`connect`, the REST client of `baas-client-http`) or embedded (`open`,
//! the services of this process through `baas-embedded`). The typed,
//! documented classes researchers use (`baas.Image`, `baas.Job`...) are
//! in `python/baas/__init__.py` and wrap this module; it stays a thin
//! shell: parse arguments into core types, call one trait method with the
//! GIL released, convert the result into plain Python values.
//!
//! Errors are mapped once, in `errors.rs`.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use baas_client_http::{RestClient, RestConfig};
use baas_core::client::{job_outcome, parse_size, BaasClient, LocalClient, Transfer};
use baas_core::content::is_zero;
use baas_core::model::*;
use baas_core::ports::JobFilter;
use baas_core::services::{
    Actor, ImagePatch, ImportOptions, JobRequest, JobTarget, MachinePatch, NewImage, NewMachine,
    NewSetup, NewUser, UserPatch,
};
use baas_core::{Error, Result};
use pyo3::exceptions::PyTimeoutError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyString};

mod convert;
mod errors;

use convert::*;
use errors::{job_failed, PyBaasError};

/// A parsed core value, or `InvalidInput`.
fn parse<T: std::str::FromStr<Err = Error>>(s: &str) -> PyResult<T> {
    s.parse::<T>().map_err(|e| PyBaasError(e).into())
}

/// Runs `f` with the GIL released and maps its error once.
fn detached<T: Send>(py: Python<'_>, f: impl FnOnce() -> Result<T> + Send) -> PyResult<T> {
    py.allow_threads(f).map_err(|e| PyBaasError(e).into())
}

/// How far a transfer is: handed to the `progress` callable of uploads and
/// downloads.
#[pyclass(frozen, module = "baas._baas")]
#[derive(Debug, Clone)]
pub struct TransferProgress {
    /// `hash`, `send` or `receive`.
    #[pyo3(get)]
    phase: &'static str,
    /// Bytes of this phase done.
    #[pyo3(get)]
    done: u64,
    /// Bytes of this phase in all.
    #[pyo3(get)]
    total: u64,
}

#[pymethods]
impl TransferProgress {
    fn __repr__(&self) -> String {
        format!(
            "Transfer(phase={:?}, done={}, total={})",
            self.phase, self.done, self.total
        )
    }
}

/// Progress reporting and cancellation shared by a transfer: the callback
/// runs with the GIL, Ctrl-C or an exception in the callback stops the
/// transfer at its next read or write, and the exception is raised.
struct Watch {
    callback: Option<Py<PyAny>>,
    stop: AtomicBool,
    error: Mutex<Option<PyErr>>,
}

impl Watch {
    fn new(callback: Option<Py<PyAny>>) -> Arc<Watch> {
        Arc::new(Watch {
            callback,
            stop: AtomicBool::new(false),
            error: Mutex::new(None),
        })
    }

    fn report(&self, t: Transfer) {
        Python::with_gil(|py| {
            let r = py.check_signals().and_then(|()| match &self.callback {
                Some(cb) => cb
                    .call1(
                        py,
                        (TransferProgress {
                            phase: t.phase,
                            done: t.done,
                            total: t.total,
                        },),
                    )
                    .map(drop),
                None => Ok(()),
            });
            if let Err(e) = r {
                self.fail(e);
            }
        });
    }

    fn fail(&self, e: PyErr) {
        if let Ok(mut slot) = self.error.lock() {
            slot.get_or_insert(e);
        }
        self.stop.store(true, Ordering::Relaxed);
    }

    fn check(&self) -> io::Result<()> {
        if self.stop.load(Ordering::Relaxed) {
            return Err(io::Error::other(Error::invalid(
                "transfer",
                "stopped by the progress callback or an interrupt",
            )));
        }
        Ok(())
    }

    /// The exception to raise instead of the transfer's own error, if any.
    fn take_error(&self) -> Option<PyErr> {
        self.error.lock().ok().and_then(|mut e| e.take())
    }
}

/// The bytes of an upload: a file opened here, or a Python binary file
/// object (read with the GIL, a piece at a time).
enum Source {
    File(File),
    Object(Py<PyAny>),
}

struct WatchedSource {
    source: Source,
    watch: Arc<Watch>,
}

fn py_io(e: PyErr) -> io::Error {
    io::Error::other(Error::invalid("file", e.to_string()))
}

impl Read for WatchedSource {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.watch.check()?;
        match &mut self.source {
            Source::File(f) => f.read(buf),
            Source::Object(obj) => Python::with_gil(|py| {
                let data = obj.call_method1(py, "read", (buf.len(),)).map_err(py_io)?;
                let data = data.bind(py);
                let bytes = data.downcast::<PyBytes>().map_err(|_| {
                    io::Error::other(Error::invalid(
                        "file",
                        "read() must return bytes: open the file in binary mode ('rb')",
                    ))
                })?;
                let b = bytes.as_bytes();
                let n = b.len().min(buf.len());
                buf[..n].copy_from_slice(&b[..n]);
                Ok(n)
            }),
        }
    }
}

impl Seek for WatchedSource {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        match &mut self.source {
            Source::File(f) => f.seek(pos),
            Source::Object(obj) => Python::with_gil(|py| {
                let (offset, whence) = match pos {
                    SeekFrom::Start(n) => (n as i64, 0),
                    SeekFrom::Current(n) => (n, 1),
                    SeekFrom::End(n) => (n, 2),
                };
                obj.call_method1(py, "seek", (offset, whence))
                    .and_then(|r| r.extract::<u64>(py))
                    .map_err(py_io)
            }),
        }
    }
}

/// Where a download goes: a file created here, or a Python binary file
/// object (written with the GIL).
enum Sink {
    File(io::BufWriter<SparseFile>),
    Object(Py<PyAny>),
}

/// Zero runs shorter than this are written; longer ones are skipped.
const HOLE: usize = 64 << 10;

/// A download's file. When it is a regular file created empty here, runs of
/// zeros (whole [`HOLE`]-sized pieces of a write) are skipped instead of
/// written: they read back as zeros, so the bytes are the same, and a
/// mostly empty disk image costs neither the writes nor the disk space.
/// [`SparseFile::finish`] sets the length a trailing run of zeros left
/// short. Anything else (a device, a pipe) gets every byte written.
struct SparseFile {
    file: File,
    sparse: bool,
    /// Bytes of the download so far.
    pos: u64,
    /// Where the file's cursor is (behind `pos` after a skipped run).
    cursor: u64,
}

impl SparseFile {
    fn new(file: File) -> io::Result<SparseFile> {
        let meta = file.metadata()?;
        Ok(SparseFile {
            sparse: meta.is_file() && meta.len() == 0,
            file,
            pos: 0,
            cursor: 0,
        })
    }

    fn write_data(&mut self, data: &[u8]) -> io::Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        if self.cursor != self.pos {
            self.file.seek(SeekFrom::Start(self.pos))?;
        }
        self.file.write_all(data)?;
        self.pos += data.len() as u64;
        self.cursor = self.pos;
        Ok(())
    }

    /// The file's final length, when it ends in skipped zeros.
    fn finish(&mut self) -> io::Result<()> {
        if self.cursor != self.pos {
            self.file.set_len(self.pos)?;
            self.cursor = self.pos;
        }
        Ok(())
    }
}

impl Write for SparseFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if !self.sparse {
            let n = self.file.write(buf)?;
            self.pos += n as u64;
            self.cursor = self.pos;
            return Ok(n);
        }
        // Data is written in runs as long as the zeros between them allow.
        let mut start = 0;
        for (i, piece) in buf.chunks(HOLE).enumerate() {
            if piece.len() == HOLE && is_zero(piece) {
                let at = i * HOLE;
                self.write_data(&buf[start..at])?;
                self.pos += HOLE as u64;
                start = at + HOLE;
            }
        }
        self.write_data(&buf[start..])?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

struct WatchedSink {
    sink: Sink,
    watch: Arc<Watch>,
}

impl Write for WatchedSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.watch.check()?;
        match &mut self.sink {
            Sink::File(f) => f.write(buf),
            Sink::Object(obj) => Python::with_gil(|py| {
                obj.call_method1(py, "write", (PyBytes::new(py, buf),))
                    .map_err(py_io)?;
                Ok(buf.len())
            }),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.sink {
            Sink::File(f) => f.flush(),
            Sink::Object(_) => Ok(()),
        }
    }
}

impl WatchedSink {
    /// Writes out what is buffered and gives a file its final length.
    fn finish(&mut self) -> io::Result<()> {
        match &mut self.sink {
            Sink::File(f) => {
                f.flush()?;
                f.get_mut().finish()
            }
            Sink::Object(_) => Ok(()),
        }
    }
}

/// A path (str or os.PathLike), or None for a file object.
fn as_path(obj: &Bound<'_, PyAny>) -> PyResult<Option<PathBuf>> {
    if obj.is_instance_of::<PyString>() || obj.hasattr("__fspath__")? {
        return Ok(Some(obj.extract::<PathBuf>()?));
    }
    Ok(None)
}

fn version_ref(v: &Bound<'_, PyAny>) -> PyResult<VersionRef> {
    if let Ok(n) = v.extract::<u32>() {
        return Ok(VersionRef::Number(n));
    }
    if let Ok(s) = v.extract::<String>() {
        return parse(&s);
    }
    Err(PyBaasError(Error::invalid("version", "a version number or \"latest\"")).into())
}

fn size_arg(v: &Bound<'_, PyAny>) -> PyResult<u64> {
    if let Ok(n) = v.extract::<u64>() {
        return Ok(n);
    }
    if let Ok(s) = v.extract::<String>() {
        return parse_size("size", &s).map_err(|e| PyBaasError(e).into());
    }
    Err(PyBaasError(Error::invalid(
        "size",
        "a number of bytes or a string like \"8GiB\"",
    ))
    .into())
}

fn setup_entries(entries: &Bound<'_, PyList>) -> PyResult<Vec<SetupEntry>> {
    let mut out = Vec::with_capacity(entries.len());
    for e in entries.iter() {
        let d = e.downcast::<PyDict>()?;
        let image: String = d
            .get_item("image_id")?
            .ok_or_else(|| PyBaasError(Error::invalid("entries", "each entry needs an image_id")))?
            .extract()?;
        let version = match d.get_item("version")? {
            Some(v) if !v.is_none() => version_ref(&v)?,
            _ => VersionRef::Latest,
        };
        let disk = match d.get_item("disk")? {
            Some(v) if !v.is_none() => Some(parse::<DiskSelector>(&v.extract::<String>()?)?),
            _ => None,
        };
        let capture = match d.get_item("capture")? {
            Some(v) => v.is_truthy()?,
            None => false,
        };
        out.push(SetupEntry {
            image: parse(&image)?,
            version,
            disk,
            capture,
        });
    }
    Ok(out)
}

/// A connection to BAAS: a server over HTTP (`connect`) or the services
/// of this process on a data directory or database (`open`). Every method
/// releases the GIL while it waits.
#[pyclass(frozen, module = "baas._baas")]
#[derive(Debug)]
pub struct Client {
    inner: Arc<dyn BaasClient>,
    kind: &'static str,
    target: String,
}

/// Connects to the server at `url` (`http://host:port`) as the user whose
/// API token is `token`.
#[pyfunction]
#[pyo3(signature = (url, token))]
fn connect(py: Python<'_>, url: &str, token: &str) -> PyResult<Client> {
    let client = RestClient::new(url, token, RestConfig::default()).map_err(PyBaasError)?;
    let client = Arc::new(client);
    // Check the address and the credential now, not at the first call.
    let probe = client.clone();
    detached(py, move || probe.me())?;
    Ok(Client {
        inner: client,
        kind: "remote",
        target: url.trim_end_matches('/').to_string(),
    })
}

/// Opens BAAS embedded: `target` is a data directory (SQLite and chunks
/// inside, created on first use) or a `postgres://` URL with `chunks`, the
/// chunk directory. The client acts as `user` (a login name), as the user
/// of `token`, or else as the first admin (one named `admin` is created
/// in an empty store).
#[pyfunction]
#[pyo3(signature = (target, chunks=None, user=None, token=None))]
fn open(
    py: Python<'_>,
    target: &Bound<'_, PyAny>,
    chunks: Option<PathBuf>,
    user: Option<String>,
    token: Option<String>,
) -> PyResult<Client> {
    let target: String = match as_path(target)? {
        Some(p) => p.to_string_lossy().into_owned(),
        None => target.extract()?,
    };
    let is_db = target.starts_with("postgres://")
        || target.starts_with("postgresql://")
        || target.starts_with("sqlite://");
    let options = if is_db {
        let chunks = chunks.ok_or_else(|| {
            PyBaasError(Error::invalid(
                "chunks",
                "a database URL needs a chunk directory: baas.open(url, chunks=DIR)",
            ))
        })?;
        let mut o = baas_embedded::Options::data_dir(&chunks);
        o.database_url = Some(target.clone());
        o.chunk_dir = Some(chunks);
        o
    } else {
        let mut o = baas_embedded::Options::data_dir(&target);
        o.chunk_dir = chunks;
        o
    };
    let client = detached(py, move || -> Result<LocalClient> {
        let baas = baas_embedded::open(&options)?;
        let actor = match (user, token) {
            (_, Some(t)) => baas.authenticate(&t)?,
            (Some(name), None) => Actor::user(&baas.get_user_by_name(&Actor::System, &name)?),
            (None, None) => {
                baas.bootstrap_admin("admin")?;
                let mut users = baas.list_users(&Actor::System)?;
                users.sort_by_key(|u| u.created_at);
                let admin = users
                    .iter()
                    .find(|u| u.role == Role::Admin)
                    .ok_or_else(|| {
                        Error::not_found("an admin to act as (name one: baas.open(dir, user=NAME))")
                    })?;
                Actor::user(admin)
            }
        };
        Ok(LocalClient::new(baas, actor))
    })?;
    Ok(Client {
        inner: Arc::new(client),
        kind: "embedded",
        target,
    })
}

#[pymethods]
impl Client {
    fn __repr__(&self) -> String {
        format!("<baas {} client of {}>", self.kind, self.target)
    }

    /// `remote` or `embedded`.
    #[getter]
    fn kind(&self) -> &'static str {
        self.kind
    }

    /// The user this client acts as.
    fn me<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let c = self.inner.clone();
        let u = detached(py, move || c.me())?;
        user_dict(py, &u)
    }

    // --- users and tokens

    fn list_users<'py>(&self, py: Python<'py>) -> PyResult<Vec<Bound<'py, PyDict>>> {
        let c = self.inner.clone();
        let v = detached(py, move || c.list_users())?;
        v.iter().map(|u| user_dict(py, u)).collect()
    }

    #[pyo3(signature = (name, role="user", display_name="", email=""))]
    fn create_user<'py>(
        &self,
        py: Python<'py>,
        name: String,
        role: &str,
        display_name: &str,
        email: &str,
    ) -> PyResult<Bound<'py, PyDict>> {
        let new = NewUser {
            name,
            display_name: display_name.into(),
            email: email.into(),
            role: parse(role)?,
        };
        let c = self.inner.clone();
        let u = detached(py, move || c.create_user(new))?;
        user_dict(py, &u)
    }

    fn get_user<'py>(&self, py: Python<'py>, id: &str) -> PyResult<Bound<'py, PyDict>> {
        let id: UserId = parse(id)?;
        let c = self.inner.clone();
        let u = detached(py, move || c.get_user(id))?;
        user_dict(py, &u)
    }

    #[pyo3(signature = (id, display_name=None, email=None, role=None))]
    fn update_user<'py>(
        &self,
        py: Python<'py>,
        id: &str,
        display_name: Option<String>,
        email: Option<String>,
        role: Option<&str>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let id: UserId = parse(id)?;
        let patch = UserPatch {
            display_name,
            email,
            role: role.map(parse).transpose()?,
            password_hash: None,
        };
        let c = self.inner.clone();
        let u = detached(py, move || c.update_user(id, patch))?;
        user_dict(py, &u)
    }

    fn delete_user(&self, py: Python<'_>, id: &str) -> PyResult<()> {
        let id: UserId = parse(id)?;
        let c = self.inner.clone();
        detached(py, move || c.delete_user(id))
    }

    fn list_tokens<'py>(&self, py: Python<'py>, user: &str) -> PyResult<Vec<Bound<'py, PyDict>>> {
        let id: UserId = parse(user)?;
        let c = self.inner.clone();
        let v = detached(py, move || c.list_tokens(id))?;
        v.iter().map(|t| token_dict(py, t)).collect()
    }

    #[pyo3(signature = (user, name, ttl_seconds=None))]
    fn create_token<'py>(
        &self,
        py: Python<'py>,
        user: &str,
        name: String,
        ttl_seconds: Option<u64>,
    ) -> PyResult<(Bound<'py, PyDict>, String)> {
        let id: UserId = parse(user)?;
        let ttl_ms = ttl_seconds
            .map(|s| {
                s.checked_mul(1000)
                    .and_then(|ms| i64::try_from(ms).ok())
                    .ok_or_else(|| PyBaasError(Error::invalid("ttl", "too large")))
            })
            .transpose()?;
        let c = self.inner.clone();
        let (t, secret) = detached(py, move || c.create_token(id, &name, ttl_ms))?;
        Ok((token_dict(py, &t)?, secret))
    }

    fn revoke_token(&self, py: Python<'_>, id: &str) -> PyResult<()> {
        let id: TokenId = parse(id)?;
        let c = self.inner.clone();
        detached(py, move || c.revoke_token(id))
    }

    // --- images and versions

    #[pyo3(signature = (owner=None))]
    fn list_images<'py>(
        &self,
        py: Python<'py>,
        owner: Option<&str>,
    ) -> PyResult<Vec<Bound<'py, PyDict>>> {
        let owner: Option<UserId> = owner.map(parse).transpose()?;
        let c = self.inner.clone();
        let v = detached(py, move || c.list_images(owner))?;
        v.iter().map(|i| image_dict(py, i)).collect()
    }

    #[pyo3(signature = (name, size, disk="first", metadata=None, visibility="private", owner=None))]
    #[allow(clippy::too_many_arguments)]
    fn create_image<'py>(
        &self,
        py: Python<'py>,
        name: String,
        size: &Bound<'py, PyAny>,
        disk: &str,
        metadata: Option<std::collections::BTreeMap<String, String>>,
        visibility: &str,
        owner: Option<&str>,
    ) -> PyResult<(Bound<'py, PyDict>, Bound<'py, PyDict>)> {
        let new = NewImage {
            owner: owner.map(parse).transpose()?,
            name,
            disk: parse(disk)?,
            size: size_arg(size)?,
            metadata: metadata.unwrap_or_default(),
            visibility: parse(visibility)?,
        };
        let c = self.inner.clone();
        let (i, v) = detached(py, move || c.create_image(new))?;
        Ok((image_dict(py, &i)?, version_dict(py, &v)?))
    }

    fn get_image<'py>(&self, py: Python<'py>, id: &str) -> PyResult<Bound<'py, PyDict>> {
        let id: ImageId = parse(id)?;
        let c = self.inner.clone();
        let i = detached(py, move || c.get_image(id))?;
        image_dict(py, &i)
    }

    #[pyo3(signature = (id, name=None, disk=None, metadata=None, visibility=None, shared_with=None))]
    #[allow(clippy::too_many_arguments)]
    fn update_image<'py>(
        &self,
        py: Python<'py>,
        id: &str,
        name: Option<String>,
        disk: Option<&str>,
        metadata: Option<std::collections::BTreeMap<String, String>>,
        visibility: Option<&str>,
        shared_with: Option<Vec<String>>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let id: ImageId = parse(id)?;
        let patch = ImagePatch {
            name,
            disk: disk.map(parse).transpose()?,
            metadata,
            visibility: visibility.map(parse).transpose()?,
            shared_with: shared_with
                .map(|v| {
                    v.iter()
                        .map(|u| parse::<UserId>(u))
                        .collect::<PyResult<_>>()
                })
                .transpose()?,
        };
        let c = self.inner.clone();
        let i = detached(py, move || c.update_image(id, patch))?;
        image_dict(py, &i)
    }

    fn delete_image(&self, py: Python<'_>, id: &str) -> PyResult<()> {
        let id: ImageId = parse(id)?;
        let c = self.inner.clone();
        detached(py, move || c.delete_image(id))
    }

    fn list_versions<'py>(
        &self,
        py: Python<'py>,
        image: &str,
    ) -> PyResult<Vec<Bound<'py, PyDict>>> {
        let id: ImageId = parse(image)?;
        let c = self.inner.clone();
        let v = detached(py, move || c.list_versions(id))?;
        v.iter().map(|x| version_dict(py, x)).collect()
    }

    fn get_version<'py>(
        &self,
        py: Python<'py>,
        image: &str,
        version: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let id: ImageId = parse(image)?;
        let v = version_ref(version)?;
        let c = self.inner.clone();
        let x = detached(py, move || c.get_version(id, v))?;
        version_dict(py, &x)
    }

    fn delete_version(&self, py: Python<'_>, image: &str, number: u32) -> PyResult<()> {
        let id: ImageId = parse(image)?;
        let c = self.inner.clone();
        detached(py, move || c.delete_version(id, number))
    }

    #[pyo3(signature = (image, source, note=None, progress=None))]
    fn upload<'py>(
        &self,
        py: Python<'py>,
        image: &str,
        source: &Bound<'py, PyAny>,
        note: Option<String>,
        progress: Option<Py<PyAny>>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let id: ImageId = parse(image)?;
        let source = match as_path(source)? {
            Some(path) => Source::File(File::open(&path).map_err(|e| {
                PyBaasError(Error::invalid(
                    "source",
                    format!("cannot open {}: {e}", path.display()),
                ))
            })?),
            None => {
                if !source.hasattr("read")? || !source.hasattr("seek")? {
                    return Err(PyBaasError(Error::invalid(
                        "source",
                        "a path or a binary file object with read() and seek()",
                    ))
                    .into());
                }
                Source::Object(source.clone().unbind())
            }
        };
        let watch = Watch::new(progress);
        let mut src = WatchedSource {
            source,
            watch: watch.clone(),
        };
        let c = self.inner.clone();
        let w = watch.clone();
        let r = py.allow_threads(move || {
            c.upload(id, &mut src, ImportOptions { note }, &mut |t| w.report(t))
        });
        if let Some(e) = watch.take_error() {
            return Err(e);
        }
        version_dict(py, &r.map_err(PyBaasError)?)
    }

    #[pyo3(signature = (image, version, dest, progress=None))]
    fn download<'py>(
        &self,
        py: Python<'py>,
        image: &str,
        version: &Bound<'py, PyAny>,
        dest: &Bound<'py, PyAny>,
        progress: Option<Py<PyAny>>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let id: ImageId = parse(image)?;
        let v = version_ref(version)?;
        let path = as_path(dest)?;
        let sink = match &path {
            Some(path) => Sink::File(io::BufWriter::with_capacity(
                1 << 20,
                File::create(path).and_then(SparseFile::new).map_err(|e| {
                    PyBaasError(Error::invalid(
                        "dest",
                        format!("cannot create {}: {e}", path.display()),
                    ))
                })?,
            )),
            None => {
                if !dest.hasattr("write")? {
                    return Err(PyBaasError(Error::invalid(
                        "dest",
                        "a path or a binary file object with write()",
                    ))
                    .into());
                }
                Sink::Object(dest.clone().unbind())
            }
        };
        let watch = Watch::new(progress);
        let mut sink = WatchedSink {
            sink,
            watch: watch.clone(),
        };
        let c = self.inner.clone();
        let w = watch.clone();
        let r = py.allow_threads(move || {
            let v = c.download(id, v, &mut sink, &mut |t| w.report(t))?;
            sink.finish().map_err(|e| {
                Error::invalid("dest", format!("writing the download failed: {e}")).with_source(e)
            })?;
            Ok(v)
        });
        if let Some(e) = watch.take_error() {
            return Err(e);
        }
        version_dict(py, &r.map_err(PyBaasError)?)
    }

    // --- setups

    #[pyo3(signature = (owner=None))]
    fn list_setups<'py>(
        &self,
        py: Python<'py>,
        owner: Option<&str>,
    ) -> PyResult<Vec<Bound<'py, PyDict>>> {
        let owner: Option<UserId> = owner.map(parse).transpose()?;
        let c = self.inner.clone();
        let v = detached(py, move || c.list_setups(owner))?;
        v.iter().map(|s| setup_dict(py, s)).collect()
    }

    fn create_setup<'py>(
        &self,
        py: Python<'py>,
        name: String,
        entries: &Bound<'py, PyList>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let new = NewSetup {
            name,
            entries: setup_entries(entries)?,
        };
        let c = self.inner.clone();
        let s = detached(py, move || c.create_setup(new))?;
        setup_dict(py, &s)
    }

    fn get_setup<'py>(&self, py: Python<'py>, id: &str) -> PyResult<Bound<'py, PyDict>> {
        let id: SetupId = parse(id)?;
        let c = self.inner.clone();
        let s = detached(py, move || c.get_setup(id))?;
        setup_dict(py, &s)
    }

    fn update_setup<'py>(
        &self,
        py: Python<'py>,
        id: &str,
        name: String,
        entries: &Bound<'py, PyList>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let id: SetupId = parse(id)?;
        let new = NewSetup {
            name,
            entries: setup_entries(entries)?,
        };
        let c = self.inner.clone();
        let s = detached(py, move || c.update_setup(id, new))?;
        setup_dict(py, &s)
    }

    fn delete_setup(&self, py: Python<'_>, id: &str) -> PyResult<()> {
        let id: SetupId = parse(id)?;
        let c = self.inner.clone();
        detached(py, move || c.delete_setup(id))
    }

    // --- machines

    fn list_machines<'py>(&self, py: Python<'py>) -> PyResult<Vec<Bound<'py, PyDict>>> {
        let c = self.inner.clone();
        let v = detached(py, move || c.list_machines())?;
        v.iter().map(|m| machine_dict(py, m)).collect()
    }

    #[pyo3(signature = (mac, name=None, arch="x86_64", pool=None))]
    fn register_machine<'py>(
        &self,
        py: Python<'py>,
        mac: &str,
        name: Option<String>,
        arch: &str,
        pool: Option<String>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let new = NewMachine {
            mac: parse(mac)?,
            name,
            arch: parse(arch)?,
            pool,
        };
        let c = self.inner.clone();
        let m = detached(py, move || c.register_machine(new))?;
        machine_dict(py, &m)
    }

    /// A machine by id or MAC address.
    fn get_machine<'py>(&self, py: Python<'py>, key: &str) -> PyResult<Bound<'py, PyDict>> {
        let c = self.inner.clone();
        let m = if let Ok(id) = key.parse::<MachineId>() {
            detached(py, move || c.get_machine(id))?
        } else {
            let mac: MacAddress = key.parse().map_err(|_| {
                PyBaasError(Error::invalid(
                    "machine",
                    format!("{key:?} is neither a machine id nor a MAC address"),
                ))
            })?;
            detached(py, move || c.get_machine_by_mac(mac))?
        };
        machine_dict(py, &m)
    }

    #[pyo3(signature = (id, name=None, arch=None, pool=None, clear_pool=false, state=None))]
    #[allow(clippy::too_many_arguments)]
    fn update_machine<'py>(
        &self,
        py: Python<'py>,
        id: &str,
        name: Option<String>,
        arch: Option<&str>,
        pool: Option<String>,
        clear_pool: bool,
        state: Option<&str>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let id: MachineId = parse(id)?;
        #[allow(
            clippy::needless_update,
            reason = "MachinePatch may grow fields the bindings leave alone"
        )]
        let patch = MachinePatch {
            name,
            arch: arch.map(parse).transpose()?,
            pool: if clear_pool {
                Some(None)
            } else {
                pool.map(Some)
            },
            state: state.map(parse).transpose()?,
            // Settings of other shells (boot and power) stay as they are.
            ..MachinePatch::default()
        };
        let c = self.inner.clone();
        let m = detached(py, move || c.update_machine(id, patch))?;
        machine_dict(py, &m)
    }

    fn machine_queue<'py>(&self, py: Python<'py>, id: &str) -> PyResult<Vec<Bound<'py, PyDict>>> {
        let id: MachineId = parse(id)?;
        let c = self.inner.clone();
        let v = detached(py, move || c.machine_queue(id))?;
        v.iter().map(|j| job_dict(py, j)).collect()
    }

    // --- jobs

    #[pyo3(signature = (machine, setup=None, image=None, version=None, disk=None, capture=false))]
    #[allow(clippy::too_many_arguments)]
    fn enqueue_job<'py>(
        &self,
        py: Python<'py>,
        machine: &str,
        setup: Option<&str>,
        image: Option<&str>,
        version: Option<&Bound<'py, PyAny>>,
        disk: Option<&str>,
        capture: bool,
    ) -> PyResult<Bound<'py, PyDict>> {
        let machine: MachineId = parse(machine)?;
        let target = match (setup, image) {
            (Some(s), None) => JobTarget::Setup(parse(s)?),
            (None, Some(i)) => JobTarget::Image {
                image: parse(i)?,
                version: version
                    .map(version_ref)
                    .transpose()?
                    .unwrap_or(VersionRef::Latest),
                disk: disk.map(parse).transpose()?,
                capture,
            },
            _ => {
                return Err(PyBaasError(Error::invalid(
                    "target",
                    "boot a setup or an image (one of them)",
                ))
                .into())
            }
        };
        let c = self.inner.clone();
        let j = detached(py, move || c.enqueue_job(JobRequest { machine, target }))?;
        job_dict(py, &j)
    }

    #[pyo3(signature = (machine=None, owner=None, states=None, limit=None))]
    fn list_jobs<'py>(
        &self,
        py: Python<'py>,
        machine: Option<&str>,
        owner: Option<&str>,
        states: Option<Vec<String>>,
        limit: Option<u32>,
    ) -> PyResult<Vec<Bound<'py, PyDict>>> {
        let filter = JobFilter {
            machine: machine.map(parse).transpose()?,
            owner: owner.map(parse).transpose()?,
            states: states
                .unwrap_or_default()
                .iter()
                .map(|s| parse::<JobState>(s))
                .collect::<PyResult<_>>()?,
            limit,
        };
        let c = self.inner.clone();
        let v = detached(py, move || c.list_jobs(filter))?;
        v.iter().map(|j| job_dict(py, j)).collect()
    }

    fn get_job<'py>(&self, py: Python<'py>, id: &str) -> PyResult<Bound<'py, PyDict>> {
        let id: JobId = parse(id)?;
        let c = self.inner.clone();
        let j = detached(py, move || c.get_job(id))?;
        job_dict(py, &j)
    }

    fn job_events<'py>(&self, py: Python<'py>, id: &str) -> PyResult<Vec<Bound<'py, PyDict>>> {
        let id: JobId = parse(id)?;
        let c = self.inner.clone();
        let v = detached(py, move || c.job_events(id))?;
        v.iter().map(|e| event_dict(py, e)).collect()
    }

    fn cancel_job<'py>(&self, py: Python<'py>, id: &str) -> PyResult<Bound<'py, PyDict>> {
        let id: JobId = parse(id)?;
        let c = self.inner.clone();
        let j = detached(py, move || c.cancel_job(id))?;
        job_dict(py, &j)
    }

    /// Waits until the job ends: returns it when it succeeded, raises
    /// `JobFailed` (with the reason) when it failed or was cancelled, and
    /// `TimeoutError` after `timeout` seconds.
    #[pyo3(signature = (id, timeout=None, poll=1.0))]
    fn wait_job<'py>(
        &self,
        py: Python<'py>,
        id: &str,
        timeout: Option<f64>,
        poll: f64,
    ) -> PyResult<Bound<'py, PyDict>> {
        let id: JobId = parse(id)?;
        let deadline = timeout.map(|t| Instant::now() + Duration::from_secs_f64(t.max(0.0)));
        let poll = Duration::from_secs_f64(poll.clamp(0.01, 60.0));
        loop {
            let c = self.inner.clone();
            let job = detached(py, move || c.get_job(id))?;
            match job_outcome(&job) {
                Some(Ok(())) => return job_dict(py, &job),
                Some(Err(e)) => return Err(job_failed(py, e.message(), job_dict(py, &job)?)),
                None => {}
            }
            let now = Instant::now();
            if let Some(d) = deadline {
                if now >= d {
                    return Err(PyTimeoutError::new_err(format!(
                        "job {id} is still {} after {:.1} s",
                        job.state.as_str(),
                        timeout.unwrap_or_default()
                    )));
                }
            }
            let pause = deadline.map_or(poll, |d| poll.min(d - now));
            py.allow_threads(|| std::thread::sleep(pause));
            py.check_signals()?;
        }
    }
}

/// Parses a size such as `8GiB` or `512MiB` into bytes.
#[pyfunction]
#[pyo3(name = "parse_size")]
fn parse_size_py(size: &Bound<'_, PyAny>) -> PyResult<u64> {
    size_arg(size)
}

/// The native module.
#[pymodule]
fn _baas(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Client>()?;
    m.add_class::<TransferProgress>()?;
    m.add_function(wrap_pyfunction!(connect, m)?)?;
    m.add_function(wrap_pyfunction!(open, m)?)?;
    m.add_function(wrap_pyfunction!(parse_size_py, m)?)?;
    errors::register(m)?;
    Ok(())
}
