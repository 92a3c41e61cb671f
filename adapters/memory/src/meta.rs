//! An in-memory metadata store and boot queue: one mutex over plain maps,
//! so every method is trivially one transaction.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Mutex, MutexGuard};

use baas_core::content::{ChunkHash, Manifest};
use baas_core::model::*;
use baas_core::ports::{BootQueue, ImageFilter, JobFilter, MetadataStore, UploadSession};
use baas_core::{Error, Result};

#[derive(Debug, Default)]
struct State {
    users: HashMap<UserId, User>,
    tokens: HashMap<TokenId, Token>,
    images: HashMap<ImageId, (Image, u32)>,
    versions: BTreeMap<(ImageId, u32), (Version, Manifest)>,
    uploads: HashMap<UploadId, UploadSession>,
    setups: HashMap<SetupId, Setup>,
    machines: HashMap<MachineId, Machine>,
    jobs: BTreeMap<i64, Job>,
    placements: BTreeMap<i64, Placement>,
    settings: HashMap<String, String>,
    events: HashMap<JobId, Vec<JobEvent>>,
    machine_events: HashMap<MachineId, Vec<JobEvent>>,
    next_seq: i64,
}

impl State {
    fn job_mut(&mut self, id: JobId) -> Result<&mut Job> {
        self.jobs
            .values_mut()
            .find(|j| j.id == id)
            .ok_or_else(|| Error::not_found(format!("job {id}")))
    }

    fn pending_jobs(&self) -> impl Iterator<Item = &Job> {
        self.jobs
            .values()
            .filter(|j| j.state == JobState::Queued || j.state.is_active())
    }
}

/// The in-memory store. Implements both [`MetadataStore`] and
/// [`BootQueue`].
#[derive(Debug, Default)]
pub struct MemoryMetadataStore {
    state: Mutex<State>,
}

impl MemoryMetadataStore {
    fn lock(&self) -> Result<MutexGuard<'_, State>> {
        self.state
            .lock()
            .map_err(|_| Error::internal("metadata store lock poisoned"))
    }
}

fn sorted<T: Clone, K: Ord>(items: impl Iterator<Item = T>, key: impl Fn(&T) -> K) -> Vec<T> {
    let mut v: Vec<T> = items.collect();
    v.sort_by_key(key);
    v
}

impl MetadataStore for MemoryMetadataStore {
    fn insert_user(&self, user: &User) -> Result<()> {
        let mut s = self.lock()?;
        if s.users.values().any(|u| u.name == user.name) {
            return Err(Error::conflict(format!(
                "a user named {:?} already exists",
                user.name
            )));
        }
        s.users.insert(user.id, user.clone());
        Ok(())
    }

    fn user(&self, id: UserId) -> Result<Option<User>> {
        Ok(self.lock()?.users.get(&id).cloned())
    }

    fn user_by_name(&self, name: &str) -> Result<Option<User>> {
        Ok(self
            .lock()?
            .users
            .values()
            .find(|u| u.name == name)
            .cloned())
    }

    fn users(&self) -> Result<Vec<User>> {
        Ok(sorted(self.lock()?.users.values().cloned(), |u| {
            u.name.clone()
        }))
    }

    fn update_user(&self, user: &User) -> Result<()> {
        let mut s = self.lock()?;
        if s.users
            .values()
            .any(|u| u.name == user.name && u.id != user.id)
        {
            return Err(Error::conflict(format!(
                "a user named {:?} already exists",
                user.name
            )));
        }
        match s.users.get_mut(&user.id) {
            Some(u) => {
                *u = user.clone();
                Ok(())
            }
            None => Err(Error::not_found(format!("user {}", user.id))),
        }
    }

    fn delete_user(&self, id: UserId) -> Result<()> {
        let mut s = self.lock()?;
        if !s.users.contains_key(&id) {
            return Err(Error::not_found(format!("user {id}")));
        }
        if s.pending_jobs().any(|j| j.owner == id) {
            return Err(Error::conflict(format!(
                "user {id} has queued or running jobs"
            )));
        }
        let images: HashSet<ImageId> = s
            .images
            .values()
            .filter(|(i, _)| i.owner == id)
            .map(|(i, _)| i.id)
            .collect();
        if s.pending_jobs()
            .any(|j| j.entries.iter().any(|e| images.contains(&e.image)))
        {
            return Err(Error::conflict(format!(
                "images of user {id} are used by queued or running jobs"
            )));
        }
        s.users.remove(&id);
        s.tokens.retain(|_, t| t.subject != TokenSubject::User(id));
        s.images.retain(|k, _| !images.contains(k));
        s.versions.retain(|(i, _), _| !images.contains(i));
        s.uploads
            .retain(|_, u| u.created_by != id && !images.contains(&u.image));
        s.setups.retain(|_, st| st.owner != id);
        for st in s.setups.values_mut() {
            st.entries.retain(|e| !images.contains(&e.image));
        }
        for (img, _) in s.images.values_mut() {
            img.shared_with.retain(|u| *u != id);
        }
        let gone: Vec<JobId> = s
            .jobs
            .values()
            .filter(|j| j.owner == id)
            .map(|j| j.id)
            .collect();
        s.jobs.retain(|_, j| j.owner != id);
        s.placements.retain(|_, p| p.owner != id);
        for j in gone {
            s.events.remove(&j);
        }
        Ok(())
    }

    fn insert_token(&self, token: &Token) -> Result<()> {
        let mut s = self.lock()?;
        match token.subject {
            TokenSubject::User(u) if !s.users.contains_key(&u) => {
                return Err(Error::not_found(format!("user {u}")))
            }
            TokenSubject::Machine(m) if !s.machines.contains_key(&m) => {
                return Err(Error::not_found(format!("machine {m}")))
            }
            _ => {}
        }
        if s.tokens
            .values()
            .any(|t| t.secret_hash == token.secret_hash)
        {
            return Err(Error::conflict("a token with that secret already exists"));
        }
        s.tokens.insert(token.id, token.clone());
        Ok(())
    }

    fn token_by_hash(&self, secret_hash: &[u8; 32]) -> Result<Option<Token>> {
        Ok(self
            .lock()?
            .tokens
            .values()
            .find(|t| &t.secret_hash == secret_hash)
            .cloned())
    }

    fn token(&self, id: TokenId) -> Result<Option<Token>> {
        Ok(self.lock()?.tokens.get(&id).cloned())
    }

    fn tokens(&self, user: UserId) -> Result<Vec<Token>> {
        let s = self.lock()?;
        Ok(sorted(
            s.tokens
                .values()
                .filter(|t| t.subject == TokenSubject::User(user))
                .cloned(),
            |t| (t.created_at, t.id),
        ))
    }

    fn rotate_machine_tokens(
        &self,
        machine: MachineId,
        name: &str,
        at: Timestamp,
        new: Option<&Token>,
    ) -> Result<u64> {
        let mut s = self.lock()?;
        if !s.machines.contains_key(&machine) {
            return Err(Error::not_found(format!("machine {machine}")));
        }
        if let Some(t) = new {
            if t.subject != TokenSubject::Machine(machine) || t.name != name {
                return Err(Error::invalid(
                    "token",
                    format!("the new token must be machine {machine}'s {name:?} token"),
                ));
            }
            if s.tokens.values().any(|o| o.secret_hash == t.secret_hash) {
                return Err(Error::conflict("a token with that secret already exists"));
            }
        }
        let mut n = 0;
        for t in s.tokens.values_mut() {
            if t.subject == TokenSubject::Machine(machine)
                && t.name == name
                && t.revoked_at.is_none()
            {
                t.revoked_at = Some(at);
                n += 1;
            }
        }
        if let Some(t) = new {
            s.tokens.insert(t.id, t.clone());
        }
        Ok(n)
    }

    fn revoke_token(&self, id: TokenId, at: Timestamp) -> Result<()> {
        let mut s = self.lock()?;
        let t = s
            .tokens
            .get_mut(&id)
            .ok_or_else(|| Error::not_found(format!("token {id}")))?;
        t.revoked_at = Some(at);
        Ok(())
    }

    fn insert_image(&self, image: &Image, blank: &NewVersion) -> Result<Version> {
        let mut s = self.lock()?;
        if !s.users.contains_key(&image.owner) {
            return Err(Error::not_found(format!("user {}", image.owner)));
        }
        if s.images.contains_key(&image.id) {
            return Err(Error::conflict(format!(
                "image {} already exists",
                image.id
            )));
        }
        let v = blank.into_version(0);
        s.images.insert(image.id, (image.clone(), 1));
        s.versions
            .insert((image.id, 0), (v.clone(), blank.manifest.clone()));
        Ok(v)
    }

    fn image(&self, id: ImageId) -> Result<Option<Image>> {
        Ok(self.lock()?.images.get(&id).map(|(i, _)| i.clone()))
    }

    fn images(&self, filter: &ImageFilter) -> Result<Vec<Image>> {
        let s = self.lock()?;
        let it = s.images.values().map(|(i, _)| i).filter(|i| {
            filter.owner.is_none_or(|o| i.owner == o)
                && filter.readable_by.is_none_or(|u| {
                    i.owner == u
                        || i.visibility == Visibility::Public
                        || (i.visibility == Visibility::Shared && i.shared_with.contains(&u))
                })
        });
        Ok(sorted(it.cloned(), |i| (i.created_at, i.id)))
    }

    fn update_image(&self, image: &Image) -> Result<()> {
        let mut s = self.lock()?;
        match s.images.get_mut(&image.id) {
            Some((i, _)) => {
                *i = image.clone();
                Ok(())
            }
            None => Err(Error::not_found(format!("image {}", image.id))),
        }
    }

    fn delete_image(&self, id: ImageId) -> Result<()> {
        let mut s = self.lock()?;
        if !s.images.contains_key(&id) {
            return Err(Error::not_found(format!("image {id}")));
        }
        if s.pending_jobs()
            .any(|j| j.entries.iter().any(|e| e.image == id))
        {
            return Err(Error::conflict(format!(
                "image {id} is used by a queued or running job"
            )));
        }
        s.images.remove(&id);
        s.versions.retain(|(i, _), _| *i != id);
        s.uploads.retain(|_, u| u.image != id);
        for st in s.setups.values_mut() {
            st.entries.retain(|e| e.image != id);
        }
        Ok(())
    }

    fn commit_version(&self, version: &NewVersion) -> Result<Version> {
        let mut s = self.lock()?;
        let (_, next) = s
            .images
            .get_mut(&version.image)
            .ok_or_else(|| Error::not_found(format!("image {}", version.image)))?;
        let number = *next;
        *next += 1;
        let v = version.into_version(number);
        s.versions.insert(
            (version.image, number),
            (v.clone(), version.manifest.clone()),
        );
        Ok(v)
    }

    fn version(&self, image: ImageId, number: u32) -> Result<Option<Version>> {
        Ok(self
            .lock()?
            .versions
            .get(&(image, number))
            .map(|(v, _)| v.clone()))
    }

    fn latest_version(&self, image: ImageId) -> Result<Option<Version>> {
        let s = self.lock()?;
        Ok(s.versions
            .range((image, 0)..=(image, u32::MAX))
            .next_back()
            .map(|(_, (v, _))| v.clone()))
    }

    fn versions(&self, image: ImageId) -> Result<Vec<Version>> {
        let s = self.lock()?;
        Ok(s.versions
            .range((image, 0)..=(image, u32::MAX))
            .map(|(_, (v, _))| v.clone())
            .collect())
    }

    fn manifest(&self, image: ImageId, number: u32) -> Result<Option<Manifest>> {
        Ok(self
            .lock()?
            .versions
            .get(&(image, number))
            .map(|(_, m)| m.clone()))
    }

    fn delete_version(&self, image: ImageId, number: u32) -> Result<()> {
        let mut s = self.lock()?;
        if !s.versions.contains_key(&(image, number)) {
            return Err(Error::not_found(format!(
                "version {number} of image {image}"
            )));
        }
        if s.pending_jobs().any(|j| {
            j.entries
                .iter()
                .any(|e| e.image == image && e.version == number)
        }) {
            return Err(Error::conflict(format!(
                "version {number} of image {image} is needed by a queued or running job"
            )));
        }
        s.versions.remove(&(image, number));
        Ok(())
    }

    fn referenced_chunks(&self) -> Result<HashSet<ChunkHash>> {
        let s = self.lock()?;
        Ok(s.versions
            .values()
            .flat_map(|(_, m)| m.chunks().flatten())
            .collect())
    }

    fn bytes_added_by_owner(&self, owner: UserId) -> Result<u64> {
        let s = self.lock()?;
        Ok(s.versions
            .values()
            .filter(|(v, _)| {
                s.images
                    .get(&v.image)
                    .is_some_and(|(i, _)| i.owner == owner)
            })
            .map(|(v, _)| v.added_bytes)
            .sum())
    }

    fn insert_upload(&self, upload: &UploadSession) -> Result<()> {
        let mut s = self.lock()?;
        if !s.images.contains_key(&upload.image) {
            return Err(Error::not_found(format!("image {}", upload.image)));
        }
        s.uploads.insert(upload.id, upload.clone());
        Ok(())
    }

    fn upload(&self, id: UploadId) -> Result<Option<UploadSession>> {
        Ok(self.lock()?.uploads.get(&id).cloned())
    }

    fn touch_upload(&self, id: UploadId, at: Timestamp, added_bytes: u64) -> Result<()> {
        let mut s = self.lock()?;
        let u = s
            .uploads
            .get_mut(&id)
            .ok_or_else(|| Error::not_found(format!("upload {id}")))?;
        u.last_active = u.last_active.max(at);
        u.added_bytes += added_bytes;
        Ok(())
    }

    fn delete_upload(&self, id: UploadId) -> Result<()> {
        self.lock()?.uploads.remove(&id);
        Ok(())
    }

    fn oldest_live_upload(&self, alive_since: Timestamp) -> Result<Option<Timestamp>> {
        let s = self.lock()?;
        Ok(s.uploads
            .values()
            .filter(|u| u.last_active >= alive_since)
            .map(|u| u.started_at)
            .min())
    }

    fn delete_dead_uploads(&self, alive_since: Timestamp) -> Result<u64> {
        let mut s = self.lock()?;
        let before = s.uploads.len();
        s.uploads.retain(|_, u| u.last_active >= alive_since);
        Ok((before - s.uploads.len()) as u64)
    }

    fn insert_setup(&self, setup: &Setup) -> Result<()> {
        let mut s = self.lock()?;
        if !s.users.contains_key(&setup.owner) {
            return Err(Error::not_found(format!("user {}", setup.owner)));
        }
        if let Some(e) = setup
            .entries
            .iter()
            .find(|e| !s.images.contains_key(&e.image))
        {
            return Err(Error::not_found(format!("image {}", e.image)));
        }
        s.setups.insert(setup.id, setup.clone());
        Ok(())
    }

    fn setup(&self, id: SetupId) -> Result<Option<Setup>> {
        Ok(self.lock()?.setups.get(&id).cloned())
    }

    fn setups(&self, owner: Option<UserId>) -> Result<Vec<Setup>> {
        let s = self.lock()?;
        Ok(sorted(
            s.setups
                .values()
                .filter(|st| owner.is_none_or(|o| st.owner == o))
                .cloned(),
            |st| (st.created_at, st.id),
        ))
    }

    fn update_setup(&self, setup: &Setup) -> Result<()> {
        let mut s = self.lock()?;
        if let Some(e) = setup
            .entries
            .iter()
            .find(|e| !s.images.contains_key(&e.image))
        {
            return Err(Error::not_found(format!("image {}", e.image)));
        }
        match s.setups.get_mut(&setup.id) {
            Some(st) => {
                *st = setup.clone();
                Ok(())
            }
            None => Err(Error::not_found(format!("setup {}", setup.id))),
        }
    }

    fn delete_setup(&self, id: SetupId) -> Result<()> {
        let mut s = self.lock()?;
        s.setups
            .remove(&id)
            .map(|_| ())
            .ok_or_else(|| Error::not_found(format!("setup {id}")))
    }

    fn insert_machine(&self, machine: &Machine) -> Result<()> {
        let mut s = self.lock()?;
        if s.machines.values().any(|m| m.mac == machine.mac) {
            return Err(Error::conflict(format!(
                "a machine with MAC {} already exists",
                machine.mac
            )));
        }
        if s.machines.values().any(|m| m.name == machine.name) {
            return Err(Error::conflict(format!(
                "a machine named {:?} already exists",
                machine.name
            )));
        }
        s.machines.insert(machine.id, machine.clone());
        Ok(())
    }

    fn machine(&self, id: MachineId) -> Result<Option<Machine>> {
        Ok(self.lock()?.machines.get(&id).cloned())
    }

    fn machine_by_mac(&self, mac: MacAddress) -> Result<Option<Machine>> {
        Ok(self
            .lock()?
            .machines
            .values()
            .find(|m| m.mac == mac)
            .cloned())
    }

    fn machines(&self) -> Result<Vec<Machine>> {
        Ok(sorted(self.lock()?.machines.values().cloned(), |m| {
            m.name.clone()
        }))
    }

    fn update_machine(&self, machine: &Machine) -> Result<()> {
        let mut s = self.lock()?;
        if s.machines
            .values()
            .any(|m| m.id != machine.id && m.mac == machine.mac)
        {
            return Err(Error::conflict(format!(
                "a machine with MAC {} already exists",
                machine.mac
            )));
        }
        if s.machines
            .values()
            .any(|m| m.id != machine.id && m.name == machine.name)
        {
            return Err(Error::conflict(format!(
                "a machine named {:?} already exists",
                machine.name
            )));
        }
        match s.machines.get_mut(&machine.id) {
            Some(m) => {
                *m = machine.clone();
                Ok(())
            }
            None => Err(Error::not_found(format!("machine {}", machine.id))),
        }
    }

    fn touch_machine(&self, id: MachineId, at: Timestamp) -> Result<()> {
        let mut s = self.lock()?;
        let m = s
            .machines
            .get_mut(&id)
            .ok_or_else(|| Error::not_found(format!("machine {id}")))?;
        m.last_seen = Some(m.last_seen.map_or(at, |t| t.max(at)));
        Ok(())
    }

    fn append_machine_event(&self, id: MachineId, event: &JobEvent) -> Result<()> {
        let mut s = self.lock()?;
        if !s.machines.contains_key(&id) {
            return Err(Error::not_found(format!("machine {id}")));
        }
        s.machine_events.entry(id).or_default().push(event.clone());
        Ok(())
    }

    fn machine_events(&self, id: MachineId, limit: u32) -> Result<Vec<JobEvent>> {
        let s = self.lock()?;
        Ok(s.machine_events
            .get(&id)
            .map(|v| v.iter().rev().take(limit as usize).cloned().collect())
            .unwrap_or_default())
    }

    fn setting(&self, key: &str) -> Result<Option<String>> {
        Ok(self.lock()?.settings.get(key).cloned())
    }

    fn set_setting(&self, key: &str, value: &str) -> Result<()> {
        self.lock()?
            .settings
            .insert(key.to_string(), value.to_string());
        Ok(())
    }

    fn init_setting(&self, key: &str, value: &str) -> Result<String> {
        Ok(self
            .lock()?
            .settings
            .entry(key.to_string())
            .or_insert_with(|| value.to_string())
            .clone())
    }
}

impl BootQueue for MemoryMetadataStore {
    fn enqueue(&self, job: &Job) -> Result<Job> {
        let mut s = self.lock()?;
        if !s.machines.contains_key(&job.machine) {
            return Err(Error::not_found(format!("machine {}", job.machine)));
        }
        if !s.users.contains_key(&job.owner) {
            return Err(Error::not_found(format!("user {}", job.owner)));
        }
        s.next_seq += 1;
        let mut job = job.clone();
        job.seq = s.next_seq;
        s.jobs.insert(job.seq, job.clone());
        s.events.entry(job.id).or_default().push(JobEvent {
            at: job.created_at,
            kind: "queued".into(),
            message: "queued".into(),
        });
        Ok(job)
    }

    fn job(&self, id: JobId) -> Result<Option<Job>> {
        Ok(self.lock()?.jobs.values().find(|j| j.id == id).cloned())
    }

    fn jobs(&self, filter: &JobFilter) -> Result<Vec<Job>> {
        let s = self.lock()?;
        let matching = s.jobs.values().filter(|j| {
            filter.machine.is_none_or(|m| j.machine == m)
                && filter.owner.is_none_or(|o| j.owner == o)
                && (filter.states.is_empty() || filter.states.contains(&j.state))
        });
        Ok(match filter.limit {
            Some(n) => {
                let mut v: Vec<Job> = matching.rev().take(n as usize).cloned().collect();
                v.reverse();
                v
            }
            None => matching.cloned().collect(),
        })
    }

    fn active_job(&self, machine: MachineId) -> Result<Option<Job>> {
        let s = self.lock()?;
        Ok(s.jobs
            .values()
            .find(|j| j.machine == machine && j.state.is_active())
            .cloned())
    }

    fn take_next(&self, machine: MachineId, now: Timestamp) -> Result<Option<Job>> {
        let mut s = self.lock()?;
        if s.jobs
            .values()
            .any(|j| j.machine == machine && j.state.is_active())
        {
            return Ok(None);
        }
        let Some(job) = s
            .jobs
            .values_mut()
            .find(|j| j.machine == machine && j.state == JobState::Queued)
        else {
            return Ok(None);
        };
        job.state = JobState::Provisioning;
        job.started_at = Some(now);
        let job = job.clone();
        s.events.entry(job.id).or_default().push(JobEvent {
            at: now,
            kind: "provisioning".into(),
            message: "handed to the machine's agent".into(),
        });
        Ok(Some(job))
    }

    fn transition(
        &self,
        id: JobId,
        from: &[JobState],
        to: JobState,
        error: Option<String>,
        event: &JobEvent,
    ) -> Result<Job> {
        let mut s = self.lock()?;
        let job = s.job_mut(id)?;
        if !from.contains(&job.state) {
            return Err(Error::conflict(format!(
                "job {id} is {}, not {}",
                job.state,
                join(from)
            )));
        }
        job.state = to;
        if error.is_some() {
            job.error = error;
        }
        if to == JobState::Provisioning {
            job.started_at = Some(event.at);
        }
        if to.is_final() {
            job.finished_at = Some(event.at);
        }
        let job = job.clone();
        s.events.entry(id).or_default().push(event.clone());
        Ok(job)
    }

    fn set_session(&self, id: JobId, session: &Session) -> Result<()> {
        let mut s = self.lock()?;
        s.job_mut(id)?.session = *session;
        Ok(())
    }

    fn set_progress(&self, id: JobId, progress: &Progress) -> Result<()> {
        let mut s = self.lock()?;
        s.job_mut(id)?.progress = progress.clone();
        Ok(())
    }

    fn append_event(&self, id: JobId, event: &JobEvent) -> Result<()> {
        let mut s = self.lock()?;
        s.job_mut(id)?;
        s.events.entry(id).or_default().push(event.clone());
        Ok(())
    }

    fn events(&self, id: JobId) -> Result<Vec<JobEvent>> {
        Ok(self.lock()?.events.get(&id).cloned().unwrap_or_default())
    }

    fn insert_placement(&self, placement: &Placement) -> Result<Placement> {
        let mut s = self.lock()?;
        if placement.state != PlacementState::Waiting {
            return Err(Error::invalid(
                "state",
                format!("a new placement must be waiting, not {}", placement.state),
            ));
        }
        if !s.users.contains_key(&placement.owner) {
            return Err(Error::not_found(format!("user {}", placement.owner)));
        }
        if s.placements.values().any(|p| p.id == placement.id)
            || s.jobs.values().any(|j| j.id == placement.id)
        {
            return Err(Error::conflict(format!(
                "a placement or job with id {} already exists",
                placement.id
            )));
        }
        s.next_seq += 1;
        let mut p = placement.clone();
        p.seq = s.next_seq;
        s.placements.insert(p.seq, p.clone());
        Ok(p)
    }

    fn placement(&self, id: JobId) -> Result<Option<Placement>> {
        Ok(self
            .lock()?
            .placements
            .values()
            .find(|p| p.id == id)
            .cloned())
    }

    fn placements(&self, states: &[PlacementState]) -> Result<Vec<Placement>> {
        Ok(self
            .lock()?
            .placements
            .values()
            .filter(|p| states.is_empty() || states.contains(&p.state))
            .cloned()
            .collect())
    }

    fn bind_placement(&self, job: &Job) -> Result<Job> {
        let mut s = self.lock()?;
        let p = s
            .placements
            .values()
            .find(|p| p.id == job.id)
            .ok_or_else(|| Error::not_found(format!("placement {}", job.id)))?;
        if p.state != PlacementState::Waiting {
            return Err(Error::conflict(format!(
                "placement {} is {}, not waiting",
                job.id, p.state
            )));
        }
        let seq = p.seq;
        match s.machines.get(&job.machine) {
            None => return Err(Error::not_found(format!("machine {}", job.machine))),
            Some(m) if m.state != MachineState::Ready => {
                return Err(Error::conflict(format!(
                    "machine {} is {}",
                    m.name,
                    m.state.as_str()
                )))
            }
            Some(_) => {}
        }
        if s.pending_jobs().any(|j| j.machine == job.machine) {
            return Err(Error::conflict(format!("machine {} is busy", job.machine)));
        }
        if !s.users.contains_key(&job.owner) {
            return Err(Error::not_found(format!("user {}", job.owner)));
        }
        if let Some(p) = s.placements.get_mut(&seq) {
            p.state = PlacementState::Bound;
            p.machine = Some(job.machine);
            p.finished_at = Some(job.created_at);
        }
        s.next_seq += 1;
        let mut job = job.clone();
        job.seq = s.next_seq;
        s.jobs.insert(job.seq, job.clone());
        s.events.entry(job.id).or_default().push(JobEvent {
            at: job.created_at,
            kind: "queued".into(),
            message: "queued".into(),
        });
        Ok(job)
    }

    fn cancel_placement(&self, id: JobId, reason: &str, at: Timestamp) -> Result<Placement> {
        let mut s = self.lock()?;
        let p = s
            .placements
            .values_mut()
            .find(|p| p.id == id)
            .ok_or_else(|| Error::not_found(format!("placement {id}")))?;
        if p.state != PlacementState::Waiting {
            return Err(Error::conflict(format!(
                "placement {id} is {}, not waiting",
                p.state
            )));
        }
        p.state = PlacementState::Cancelled;
        p.error = Some(reason.to_string());
        p.finished_at = Some(at);
        Ok(p.clone())
    }
}

fn join(states: &[JobState]) -> String {
    states
        .iter()
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join(" or ")
}
