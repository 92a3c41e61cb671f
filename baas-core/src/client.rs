//! One interface for "a BAAS client": everything a user's script may ask
//! of BAAS, as one synchronous trait, [`BaasClient`], with two
//! implementations that behave the same: [`LocalClient`] (here: the
//! services in this process, as one bound [`Actor`]) and the REST client
//! in `baas-client-http` (a server over HTTP). The Python bindings are one
//! class hierarchy over this trait, so the embedded and the remote mode
//! cannot drift apart.
//!
//! The trait is pure: bytes come from and go to the caller's `Read` and
//! `Write`, progress goes to a callback, and nothing here sleeps or opens
//! anything.

use std::io::{self, Read, Seek, Write};

use crate::model::*;
use crate::ports::JobFilter;
use crate::services::{
    Actor, ImagePatch, ImportOptions, JobRequest, MachinePatch, NewImage, NewMachine, NewSetup,
    NewUser, UserPatch,
};
use crate::{Baas, Error, ErrorKind, Result};

/// What an upload or download reads from: the bytes of an image, readable
/// from the start again (a chunk-level upload hashes them first, then
/// sends the chunks the server lacks).
pub trait UploadSource: Read + Seek + Send {}

impl<T: Read + Seek + Send> UploadSource for T {}

/// How far a transfer is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transfer {
    /// `hash` (reading the source to find its chunks), `send` (sending the
    /// chunks the server lacks) or `receive` (a download).
    pub phase: &'static str,
    /// Bytes of this phase done.
    pub done: u64,
    /// Bytes of this phase in all.
    pub total: u64,
}

/// A progress callback.
pub type ProgressFn<'a> = &'a mut dyn FnMut(Transfer);

/// Everything a user may ask of BAAS, as the one caller the client is
/// bound to. Every method is one use case; errors are the core's, however
/// they travelled (the REST client maps the server's envelope back).
pub trait BaasClient: Send + Sync + std::fmt::Debug {
    /// The user this client acts as.
    fn me(&self) -> Result<User>;

    // --- users and tokens
    /// Every user (moderators and admins).
    fn list_users(&self) -> Result<Vec<User>>;
    /// Creates a user (admins).
    fn create_user(&self, new: NewUser) -> Result<User>;
    /// A user.
    fn get_user(&self, id: UserId) -> Result<User>;
    /// Changes a user.
    fn update_user(&self, id: UserId, patch: UserPatch) -> Result<User>;
    /// Deletes a user (admins).
    fn delete_user(&self, id: UserId) -> Result<()>;
    /// A user's tokens, without secrets.
    fn list_tokens(&self, user: UserId) -> Result<Vec<Token>>;
    /// Creates a token; the secret is returned only here.
    fn create_token(
        &self,
        user: UserId,
        name: &str,
        ttl_ms: Option<i64>,
    ) -> Result<(Token, String)>;
    /// Revokes a token.
    fn revoke_token(&self, id: TokenId) -> Result<()>;

    // --- images and versions
    /// Images the caller may read, optionally only `owner`'s.
    fn list_images(&self, owner: Option<UserId>) -> Result<Vec<Image>>;
    /// Creates an image and its blank version 0.
    fn create_image(&self, new: NewImage) -> Result<(Image, Version)>;
    /// An image.
    fn get_image(&self, id: ImageId) -> Result<Image>;
    /// Changes an image.
    fn update_image(&self, id: ImageId, patch: ImagePatch) -> Result<Image>;
    /// Deletes an image.
    fn delete_image(&self, id: ImageId) -> Result<()>;
    /// An image's versions, by number.
    fn list_versions(&self, image: ImageId) -> Result<Vec<Version>>;
    /// One version.
    fn get_version(&self, image: ImageId, version: VersionRef) -> Result<Version>;
    /// Deletes a version.
    fn delete_version(&self, image: ImageId, number: u32) -> Result<()>;
    /// Uploads `source` (from its start) as the next version of `image`.
    /// Chunks the store already holds are not sent again, so running an
    /// interrupted upload again resumes it.
    fn upload(
        &self,
        image: ImageId,
        source: &mut dyn UploadSource,
        opts: ImportOptions,
        progress: ProgressFn<'_>,
    ) -> Result<Version>;
    /// Writes a version's bytes to `sink`, checking them against the
    /// version's root hash; returns the version written.
    fn download(
        &self,
        image: ImageId,
        version: VersionRef,
        sink: &mut (dyn Write + Send),
        progress: ProgressFn<'_>,
    ) -> Result<Version>;

    // --- setups
    /// Setups: the caller's (admins: everyone's, or `owner`'s).
    fn list_setups(&self, owner: Option<UserId>) -> Result<Vec<Setup>>;
    /// Creates a setup owned by the caller.
    fn create_setup(&self, new: NewSetup) -> Result<Setup>;
    /// A setup.
    fn get_setup(&self, id: SetupId) -> Result<Setup>;
    /// Replaces a setup's name and entries.
    fn update_setup(&self, id: SetupId, new: NewSetup) -> Result<Setup>;
    /// Deletes a setup.
    fn delete_setup(&self, id: SetupId) -> Result<()>;

    // --- machines
    /// Every machine.
    fn list_machines(&self) -> Result<Vec<Machine>>;
    /// Registers a machine (moderators and admins).
    fn register_machine(&self, new: NewMachine) -> Result<Machine>;
    /// A machine by id.
    fn get_machine(&self, id: MachineId) -> Result<Machine>;
    /// A machine by MAC address.
    fn get_machine_by_mac(&self, mac: MacAddress) -> Result<Machine>;
    /// Changes a machine (accept, retire, rename; moderators and admins).
    fn update_machine(&self, id: MachineId, patch: MachinePatch) -> Result<Machine>;
    /// A machine's waiting and active jobs, in order.
    fn machine_queue(&self, id: MachineId) -> Result<Vec<Job>>;

    // --- jobs
    /// Queues a job.
    fn enqueue_job(&self, request: JobRequest) -> Result<Job>;
    /// Jobs, filtered.
    fn list_jobs(&self, filter: JobFilter) -> Result<Vec<Job>>;
    /// A job.
    fn get_job(&self, id: JobId) -> Result<Job>;
    /// A job's timeline, oldest first.
    fn job_events(&self, id: JobId) -> Result<Vec<JobEvent>>;
    /// Cancels a job that has not finished.
    fn cancel_job(&self, id: JobId) -> Result<Job>;
}

/// Whether a job has ended, and how: `None` while it runs, `Ok` when it
/// succeeded, an error carrying the reason when it failed or was
/// cancelled (`Conflict`: the job did not reach its goal).
pub fn job_outcome(job: &Job) -> Option<Result<()>> {
    match job.state {
        JobState::Succeeded => Some(Ok(())),
        JobState::Failed => Some(Err(Error::conflict(format!(
            "job {} failed: {}",
            job.id,
            job.error.as_deref().unwrap_or("no reason given")
        )))),
        JobState::Cancelled => Some(Err(Error::conflict(format!(
            "job {} was cancelled{}",
            job.id,
            job.error
                .as_deref()
                .map(|e| format!(": {e}"))
                .unwrap_or_default()
        )))),
        _ => None,
    }
}

/// Parses a size such as `8GiB`, `512 MiB`, `1.5G`, `4096` (bytes) or
/// `10kB`: binary units with `i`, decimal units without.
pub fn parse_size(field: &str, s: &str) -> Result<u64> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let bad = || {
        Error::invalid(
            field,
            format!("{s:?} is not a size like 8GiB, 512MiB or 4096"),
        )
    };
    let value: f64 = num.parse().map_err(|_| bad())?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "m" | "mb" => 1_000_000,
        "g" | "gb" => 1_000_000_000,
        "t" | "tb" => 1_000_000_000_000,
        "ki" | "kib" => 1 << 10,
        "mi" | "mib" => 1 << 20,
        "gi" | "gib" => 1 << 30,
        "ti" | "tib" => 1 << 40,
        _ => return Err(bad()),
    };
    let bytes = value * mult as f64;
    if !bytes.is_finite() || bytes < 0.0 || bytes > u64::MAX as f64 || bytes.fract() != 0.0 {
        return Err(bad());
    }
    Ok(bytes as u64)
}

/// A [`BaasClient`] over the services in this process, as one bound
/// actor: the embedded mode (admin scripts, tests, no server).
#[derive(Debug, Clone)]
pub struct LocalClient {
    baas: Baas,
    actor: Actor,
}

impl LocalClient {
    /// A client calling `baas` as `actor`.
    pub fn new(baas: Baas, actor: Actor) -> LocalClient {
        LocalClient { baas, actor }
    }

    /// The services.
    pub fn baas(&self) -> &Baas {
        &self.baas
    }

    /// The actor every call is made as.
    pub fn actor(&self) -> &Actor {
        &self.actor
    }

    fn user_id(&self) -> Result<UserId> {
        self.actor
            .user_id()
            .ok_or_else(|| Error::forbidden("this client does not act as a user"))
    }
}

/// Reads `source` from its start, counting bytes for `progress`.
struct Counting<'a, 'p> {
    inner: &'a mut dyn UploadSource,
    done: u64,
    total: u64,
    reported: u64,
    progress: ProgressFn<'p>,
}

impl Read for Counting<'_, '_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.done += n as u64;
        if n == 0 || self.done - self.reported >= 8 << 20 {
            self.reported = self.done;
            (self.progress)(Transfer {
                phase: "send",
                done: self.done,
                total: self.total.max(self.done),
            });
        }
        Ok(n)
    }
}

/// The length of a source, leaving it at its start.
pub fn source_len(source: &mut dyn UploadSource) -> Result<u64> {
    let io = |e: io::Error| {
        Error::invalid("source", format!("cannot seek in the upload source: {e}")).with_source(e)
    };
    let len = source.seek(io::SeekFrom::End(0)).map_err(io)?;
    source.seek(io::SeekFrom::Start(0)).map_err(io)?;
    Ok(len)
}

/// Copies `reader` to `sink`, reporting progress; a failed write is the
/// sink's fault (`Invalid`, field `sink`), a failed read is the store's.
pub fn copy_with_progress(
    reader: &mut dyn Read,
    sink: &mut (dyn Write + Send),
    total: u64,
    progress: ProgressFn<'_>,
) -> Result<u64> {
    let mut buf = vec![0u8; 1 << 20];
    let mut done = 0u64;
    let mut reported = 0u64;
    progress(Transfer {
        phase: "receive",
        done: 0,
        total,
    });
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(read_failure(e)),
        };
        sink.write_all(&buf[..n]).map_err(|e| {
            Error::invalid("sink", format!("writing the download failed: {e}")).with_source(e)
        })?;
        done += n as u64;
        if done - reported >= 8 << 20 || done == total {
            reported = done;
            progress(Transfer {
                phase: "receive",
                done,
                total,
            });
        }
    }
    sink.flush().map_err(|e| {
        Error::invalid("sink", format!("writing the download failed: {e}")).with_source(e)
    })?;
    Ok(done)
}

/// A BAAS error carried inside an `io::Error` comes back out unchanged.
fn read_failure(e: io::Error) -> Error {
    if e.get_ref().is_some_and(|inner| inner.is::<Error>()) {
        if let Some(inner) = e.into_inner() {
            if let Ok(err) = inner.downcast::<Error>() {
                return *err;
            }
        }
        return Error::internal("reading the version failed");
    }
    Error::new(
        ErrorKind::Unavailable,
        format!("reading the version failed: {e}"),
    )
    .with_source(e)
}

impl BaasClient for LocalClient {
    fn me(&self) -> Result<User> {
        let id = self.user_id()?;
        self.baas.get_user(&self.actor, id)
    }

    fn list_users(&self) -> Result<Vec<User>> {
        self.baas.list_users(&self.actor)
    }

    fn create_user(&self, new: NewUser) -> Result<User> {
        self.baas.create_user(&self.actor, new)
    }

    fn get_user(&self, id: UserId) -> Result<User> {
        self.baas.get_user(&self.actor, id)
    }

    fn update_user(&self, id: UserId, patch: UserPatch) -> Result<User> {
        self.baas.update_user(&self.actor, id, patch)
    }

    fn delete_user(&self, id: UserId) -> Result<()> {
        self.baas.delete_user(&self.actor, id)
    }

    fn list_tokens(&self, user: UserId) -> Result<Vec<Token>> {
        self.baas.list_tokens(&self.actor, user)
    }

    fn create_token(
        &self,
        user: UserId,
        name: &str,
        ttl_ms: Option<i64>,
    ) -> Result<(Token, String)> {
        self.baas.create_token(&self.actor, user, name, ttl_ms)
    }

    fn revoke_token(&self, id: TokenId) -> Result<()> {
        self.baas.revoke_token(&self.actor, id)
    }

    fn list_images(&self, owner: Option<UserId>) -> Result<Vec<Image>> {
        self.baas.list_images(&self.actor, owner)
    }

    fn create_image(&self, new: NewImage) -> Result<(Image, Version)> {
        self.baas.create_image(&self.actor, new)
    }

    fn get_image(&self, id: ImageId) -> Result<Image> {
        self.baas.get_image(&self.actor, id)
    }

    fn update_image(&self, id: ImageId, patch: ImagePatch) -> Result<Image> {
        self.baas.update_image(&self.actor, id, patch)
    }

    fn delete_image(&self, id: ImageId) -> Result<()> {
        self.baas.delete_image(&self.actor, id)
    }

    fn list_versions(&self, image: ImageId) -> Result<Vec<Version>> {
        self.baas.list_versions(&self.actor, image)
    }

    fn get_version(&self, image: ImageId, version: VersionRef) -> Result<Version> {
        self.baas.get_version(&self.actor, image, version)
    }

    fn delete_version(&self, image: ImageId, number: u32) -> Result<()> {
        self.baas.delete_version(&self.actor, image, number)
    }

    fn upload(
        &self,
        image: ImageId,
        source: &mut dyn UploadSource,
        opts: ImportOptions,
        progress: ProgressFn<'_>,
    ) -> Result<Version> {
        let total = source_len(source)?;
        progress(Transfer {
            phase: "send",
            done: 0,
            total,
        });
        let mut counting = Counting {
            inner: source,
            done: 0,
            total,
            reported: 0,
            progress,
        };
        self.baas
            .import_version(&self.actor, image, &mut counting, opts)
    }

    fn download(
        &self,
        image: ImageId,
        version: VersionRef,
        sink: &mut (dyn Write + Send),
        progress: ProgressFn<'_>,
    ) -> Result<Version> {
        let mut reader = self.baas.open_version(&self.actor, image, version)?;
        let v = reader.version().clone();
        copy_with_progress(&mut reader, sink, v.size, progress)?;
        Ok(v)
    }

    fn list_setups(&self, owner: Option<UserId>) -> Result<Vec<Setup>> {
        self.baas.list_setups(&self.actor, owner)
    }

    fn create_setup(&self, new: NewSetup) -> Result<Setup> {
        self.baas.create_setup(&self.actor, new)
    }

    fn get_setup(&self, id: SetupId) -> Result<Setup> {
        self.baas.get_setup(&self.actor, id)
    }

    fn update_setup(&self, id: SetupId, new: NewSetup) -> Result<Setup> {
        self.baas.update_setup(&self.actor, id, new)
    }

    fn delete_setup(&self, id: SetupId) -> Result<()> {
        self.baas.delete_setup(&self.actor, id)
    }

    fn list_machines(&self) -> Result<Vec<Machine>> {
        self.baas.list_machines(&self.actor)
    }

    fn register_machine(&self, new: NewMachine) -> Result<Machine> {
        self.baas.register_machine(&self.actor, new)
    }

    fn get_machine(&self, id: MachineId) -> Result<Machine> {
        self.baas.get_machine(&self.actor, id)
    }

    fn get_machine_by_mac(&self, mac: MacAddress) -> Result<Machine> {
        self.baas.get_machine_by_mac(&self.actor, mac)
    }

    fn update_machine(&self, id: MachineId, patch: MachinePatch) -> Result<Machine> {
        self.baas.update_machine(&self.actor, id, patch)
    }

    fn machine_queue(&self, id: MachineId) -> Result<Vec<Job>> {
        self.baas.machine_queue(&self.actor, id)
    }

    fn enqueue_job(&self, request: JobRequest) -> Result<Job> {
        self.baas.enqueue_job(&self.actor, request)
    }

    fn list_jobs(&self, filter: JobFilter) -> Result<Vec<Job>> {
        self.baas.list_jobs(&self.actor, filter)
    }

    fn get_job(&self, id: JobId) -> Result<Job> {
        self.baas.get_job(&self.actor, id)
    }

    fn job_events(&self, id: JobId) -> Result<Vec<JobEvent>> {
        self.baas.job_events(&self.actor, id)
    }

    fn cancel_job(&self, id: JobId) -> Result<Job> {
        self.baas.cancel_job(&self.actor, id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_in_binary_and_decimal_units() {
        for (s, n) in [
            ("8GiB", 8u64 << 30),
            ("512 MiB", 512 << 20),
            ("4096", 4096),
            ("10kB", 10_000),
            ("1.5G", 1_500_000_000),
            ("2Ti", 2 << 40),
        ] {
            assert_eq!(parse_size("size", s).ok(), Some(n), "{s}");
        }
        for s in ["", "GiB", "8 parsecs", "-1", "0.5"] {
            let e = parse_size("size", s).err().map(|e| e.kind());
            assert_eq!(e, Some(ErrorKind::Invalid), "{s:?}");
        }
    }
}
