//! [`MetadataStore`] on diesel: users, tokens, images, versions, upload
//! sessions, setups and machines.

use std::collections::{HashMap, HashSet};

use baas_core::content::{ChunkHash, Manifest};
use baas_core::model::*;
use baas_core::ports::{ImageFilter, MetadataStore, UploadSession};
use baas_core::{Error, Result};
use diesel::dsl::{count_star, min};
use diesel::prelude::*;

use crate::db::DbConnection;
use crate::error::{duplicate, TxError};
use crate::rows::*;
use crate::schema::*;
use crate::DieselMetadataStore;

/// Job states that still need the images they name.
pub(crate) const PENDING_STATES: [&str; 4] = ["queued", "provisioning", "running", "capturing"];

/// Most ids bound in one `IN (...)` list.
const IN_LIST: usize = 500;

/// Manifests decoded per round trip by `referenced_chunks`.
const MANIFEST_PAGE: i64 = 64;

type Tx<T> = Result<T, TxError>;

// --- existence checks, shared with the queue

pub(crate) fn user_exists(c: &mut DbConnection, id: &str) -> Tx<bool> {
    Ok(users::table
        .filter(users::id.eq(id))
        .select(users::id)
        .first::<String>(c)
        .optional()?
        .is_some())
}

fn machine_exists(c: &mut DbConnection, id: &str) -> Tx<bool> {
    Ok(machines::table
        .filter(machines::id.eq(id))
        .select(machines::id)
        .first::<String>(c)
        .optional()?
        .is_some())
}

fn image_exists(c: &mut DbConnection, id: &str) -> Tx<bool> {
    Ok(images::table
        .filter(images::id.eq(id))
        .select(images::id)
        .first::<String>(c)
        .optional()?
        .is_some())
}

fn require_user(c: &mut DbConnection, id: UserId) -> Tx<()> {
    if user_exists(c, &id.to_string())? {
        Ok(())
    } else {
        Err(Error::not_found(format!("user {id}")).into())
    }
}

fn require_image(c: &mut DbConnection, id: ImageId) -> Tx<()> {
    if image_exists(c, &id.to_string())? {
        Ok(())
    } else {
        Err(Error::not_found(format!("image {id}")).into())
    }
}

/// The first queued or active job that names `image` (and `version`, when
/// given), as (id, state).
fn job_needing(
    c: &mut DbConnection,
    image: &str,
    version: Option<i64>,
) -> Tx<Option<(String, String)>> {
    let pending = jobs::table
        .filter(jobs::state.eq_any(PENDING_STATES))
        .select((jobs::id, jobs::state))
        .order(jobs::seq.asc());
    let naming_image = job_entries::table
        .filter(job_entries::image_id.eq(image.to_string()))
        .select(job_entries::job_id);
    let found = match version {
        None => pending.filter(jobs::id.eq_any(naming_image)).first(c),
        Some(v) => pending
            .filter(jobs::id.eq_any(naming_image.filter(job_entries::version.eq(v))))
            .first(c),
    };
    Ok(found.optional()?)
}

// --- PostgreSQL row locks. SQLite needs none: a write transaction there
// holds the database's single write lock from its first statement.

/// Locks an image and its versions against concurrent commits, deletes and
/// job enqueues.
fn lock_image(c: &mut DbConnection, id: &str) -> Tx<()> {
    if let DbConnection::Postgres(pg) = c {
        images::table
            .filter(images::id.eq(id))
            .select(images::id)
            .for_update()
            .load::<String>(pg)?;
        versions::table
            .filter(versions::image_id.eq(id))
            .select(versions::number)
            .for_update()
            .load::<i64>(pg)?;
    }
    Ok(())
}

/// Locks one version row against concurrent enqueues.
fn lock_version(c: &mut DbConnection, image: &str, number: i64) -> Tx<()> {
    if let DbConnection::Postgres(pg) = c {
        versions::table
            .filter(versions::image_id.eq(image))
            .filter(versions::number.eq(number))
            .select(versions::number)
            .for_update()
            .load::<i64>(pg)?;
    }
    Ok(())
}

/// Locks a user row: enqueues for them (which take a key-share lock through
/// the foreign key) wait, or make this wait.
fn lock_user(c: &mut DbConnection, id: &str) -> Tx<()> {
    if let DbConnection::Postgres(pg) = c {
        users::table
            .filter(users::id.eq(id))
            .select(users::id)
            .for_update()
            .load::<String>(pg)?;
    }
    Ok(())
}

// --- loading aggregates

fn load_images(c: &mut DbConnection, rows: Vec<ImageRow>) -> Tx<Vec<Image>> {
    let mut shares: HashMap<String, Vec<ShareRow>> = HashMap::new();
    let ids: Vec<String> = rows.iter().map(|r| r.id.clone()).collect();
    for batch in ids.chunks(IN_LIST) {
        let found = image_shares::table
            .filter(image_shares::image_id.eq_any(batch))
            .select(ShareRow::as_select())
            .order((image_shares::image_id, image_shares::position))
            .load(c)?;
        for s in found {
            shares.entry(s.image_id.clone()).or_default().push(s);
        }
    }
    let images = rows
        .into_iter()
        .map(|r| {
            let users = shares
                .remove(&r.id)
                .unwrap_or_default()
                .into_iter()
                .map(|s| parse("image_shares", "user_id", &s.user_id))
                .collect::<Result<Vec<UserId>>>()?;
            r.into_model(users)
        })
        .collect::<Result<_>>()?;
    Ok(images)
}

fn load_setups(c: &mut DbConnection, rows: Vec<SetupRow>) -> Tx<Vec<Setup>> {
    let mut entries: HashMap<String, Vec<SetupEntryRow>> = HashMap::new();
    let ids: Vec<String> = rows.iter().map(|r| r.id.clone()).collect();
    for batch in ids.chunks(IN_LIST) {
        let found = setup_entries::table
            .filter(setup_entries::setup_id.eq_any(batch))
            .select(SetupEntryRow::as_select())
            .order((setup_entries::setup_id, setup_entries::position))
            .load(c)?;
        for e in found {
            entries.entry(e.setup_id.clone()).or_default().push(e);
        }
    }
    let setups = rows
        .into_iter()
        .map(|r| {
            let mine = entries.remove(&r.id).unwrap_or_default();
            r.into_model(mine)
        })
        .collect::<Result<_>>()?;
    Ok(setups)
}

/// Checks the users an image is shared with exist.
fn require_share_users(c: &mut DbConnection, image: &Image) -> Tx<()> {
    for u in &image.shared_with {
        require_user(c, *u)?;
    }
    Ok(())
}

fn insert_shares(c: &mut DbConnection, image: &Image) -> Tx<()> {
    // One row at a time: the multi-backend connection has no batch insert.
    for row in share_rows(image) {
        diesel::insert_into(image_shares::table)
            .values(&row)
            .execute(c)?;
    }
    Ok(())
}

fn insert_setup_entries(c: &mut DbConnection, setup: &Setup) -> Tx<()> {
    for e in &setup.entries {
        require_image(c, e.image)?;
    }
    for row in SetupEntryRow::all(setup) {
        diesel::insert_into(setup_entries::table)
            .values(&row)
            .execute(c)?;
    }
    Ok(())
}

fn not_found_unless_one(rows: usize, what: impl FnOnce() -> String) -> Tx<()> {
    if rows == 0 {
        Err(Error::not_found(what()).into())
    } else {
        Ok(())
    }
}

impl MetadataStore for DieselMetadataStore {
    // --- users and tokens

    fn insert_user(&self, user: &User) -> Result<()> {
        let row = UserRow::new(user);
        self.write(&format!("adding user {:?}", user.name), |c| {
            diesel::insert_into(users::table)
                .values(&row)
                .execute(c)
                .map_err(|e| {
                    if duplicate(&e, &["users.name", "users_name_key"]) {
                        Error::conflict(format!("a user named {:?} already exists", user.name))
                            .into()
                    } else if duplicate(&e, &["users.id", "users_pkey"]) {
                        Error::conflict(format!("a user with id {} already exists", user.id)).into()
                    } else {
                        TxError::from(e)
                    }
                })?;
            Ok(())
        })
    }

    fn user(&self, id: UserId) -> Result<Option<User>> {
        self.read("reading a user", |c| {
            let row = users::table
                .filter(users::id.eq(id.to_string()))
                .select(UserRow::as_select())
                .first(c)
                .optional()?;
            Ok(row.map(UserRow::into_model).transpose()?)
        })
    }

    fn user_by_name(&self, name: &str) -> Result<Option<User>> {
        self.read("reading a user by name", |c| {
            let row = users::table
                .filter(users::name.eq(name))
                .select(UserRow::as_select())
                .first(c)
                .optional()?;
            Ok(row.map(UserRow::into_model).transpose()?)
        })
    }

    fn users(&self) -> Result<Vec<User>> {
        self.read("listing users", |c| {
            let rows = users::table
                .select(UserRow::as_select())
                .order(users::name.asc())
                .load(c)?;
            Ok(rows
                .into_iter()
                .map(UserRow::into_model)
                .collect::<Result<_>>()?)
        })
    }

    fn update_user(&self, user: &User) -> Result<()> {
        let row = UserRow::new(user);
        self.write(&format!("updating user {}", user.id), |c| {
            let n = diesel::update(users::table.filter(users::id.eq(&row.id)))
                .set(&row)
                .execute(c)
                .map_err(|e| {
                    if duplicate(&e, &["users.name", "users_name_key"]) {
                        Error::conflict(format!("a user named {:?} already exists", user.name))
                            .into()
                    } else {
                        TxError::from(e)
                    }
                })?;
            not_found_unless_one(n, || format!("user {}", user.id))
        })
    }

    fn delete_user(&self, id: UserId) -> Result<()> {
        let key = id.to_string();
        self.write(&format!("deleting user {id}"), |c| {
            lock_user(c, &key)?;
            if !user_exists(c, &key)? {
                return Err(Error::not_found(format!("user {id}")).into());
            }
            let pending: i64 = jobs::table
                .filter(jobs::owner_id.eq(&key))
                .filter(jobs::state.eq_any(PENDING_STATES))
                .select(count_star())
                .first(c)?;
            if pending > 0 {
                return Err(Error::conflict(format!(
                    "user {id} has {pending} queued or active job(s); cancel them first"
                ))
                .into());
            }
            let owned: Vec<String> = images::table
                .filter(images::owner_id.eq(&key))
                .select(images::id)
                .order(images::seq)
                .load(c)?;
            for image in &owned {
                lock_image(c, image)?;
                if let Some((job, state)) = job_needing(c, image, None)? {
                    return Err(Error::conflict(format!(
                        "image {image} of user {id} is needed by job {job}, which is {state}"
                    ))
                    .into());
                }
            }
            // Tokens, shares, setups, images with their versions, upload
            // sessions and finished jobs go by ON DELETE CASCADE.
            diesel::delete(users::table.filter(users::id.eq(&key))).execute(c)?;
            Ok(())
        })
    }

    fn insert_token(&self, token: &Token) -> Result<()> {
        let row = TokenRow::new(token);
        self.write(&format!("adding token {}", token.id), |c| {
            match token.subject {
                TokenSubject::User(u) => require_user(c, u)?,
                TokenSubject::Machine(m) => {
                    if !machine_exists(c, &m.to_string())? {
                        return Err(Error::not_found(format!("machine {m}")).into());
                    }
                }
            }
            diesel::insert_into(tokens::table)
                .values(&row)
                .execute(c)
                .map_err(|e| {
                    if duplicate(&e, &["tokens.secret_hash", "tokens_secret_hash_key"]) {
                        Error::conflict("a token with the same secret already exists").into()
                    } else if duplicate(&e, &["tokens.id", "tokens_id_key"]) {
                        Error::conflict(format!("a token with id {} already exists", token.id))
                            .into()
                    } else {
                        TxError::from(e)
                    }
                })?;
            Ok(())
        })
    }

    fn token_by_hash(&self, secret_hash: &[u8; 32]) -> Result<Option<Token>> {
        self.read("looking up a token", |c| {
            let row = tokens::table
                .filter(tokens::secret_hash.eq(secret_hash.as_slice()))
                .select(TokenRow::as_select())
                .first(c)
                .optional()?;
            Ok(row.map(TokenRow::into_model).transpose()?)
        })
    }

    fn token(&self, id: TokenId) -> Result<Option<Token>> {
        self.read("reading a token", |c| {
            let row = tokens::table
                .filter(tokens::id.eq(id.to_string()))
                .select(TokenRow::as_select())
                .first(c)
                .optional()?;
            Ok(row.map(TokenRow::into_model).transpose()?)
        })
    }

    fn tokens(&self, user: UserId) -> Result<Vec<Token>> {
        self.read("listing tokens", |c| {
            let rows = tokens::table
                .filter(tokens::user_id.eq(user.to_string()))
                .select(TokenRow::as_select())
                .order((tokens::created_at.asc(), tokens::seq.asc()))
                .load(c)?;
            Ok(rows
                .into_iter()
                .map(TokenRow::into_model)
                .collect::<Result<_>>()?)
        })
    }

    fn rotate_machine_tokens(
        &self,
        machine: MachineId,
        name: &str,
        at: Timestamp,
        new: Option<&Token>,
    ) -> Result<u64> {
        if let Some(t) = new {
            if t.subject != TokenSubject::Machine(machine) || t.name != name {
                return Err(Error::invalid(
                    "token",
                    format!("the new token must be machine {machine}'s {name:?} token"),
                ));
            }
        }
        let row = new.map(TokenRow::new);
        let key = machine.to_string();
        self.write(
            &format!("rotating the {name} tokens of machine {machine}"),
            |c| {
                // Rotations of one machine run one after the other (SQLite:
                // the write lock; PostgreSQL: the machine's row), so each
                // revokes what the previous one added.
                let exists = match c {
                    DbConnection::Postgres(pg) => machines::table
                        .filter(machines::id.eq(&key))
                        .select(machines::id)
                        .for_update()
                        .first::<String>(pg)
                        .optional()?
                        .is_some(),
                    DbConnection::Sqlite(_) => machine_exists(c, &key)?,
                };
                if !exists {
                    return Err(Error::not_found(format!("machine {machine}")).into());
                }
                let n = diesel::update(
                    tokens::table
                        .filter(tokens::machine_id.eq(&key))
                        .filter(tokens::name.eq(name))
                        .filter(tokens::revoked_at.is_null()),
                )
                .set(tokens::revoked_at.eq(at.millis()))
                .execute(c)?;
                if let Some(row) = &row {
                    diesel::insert_into(tokens::table)
                        .values(row)
                        .execute(c)
                        .map_err(|e| {
                            if duplicate(&e, &["tokens.secret_hash", "tokens_secret_hash_key"]) {
                                Error::conflict("a token with the same secret already exists")
                                    .into()
                            } else {
                                TxError::from(e)
                            }
                        })?;
                }
                Ok(n as u64)
            },
        )
    }

    fn revoke_token(&self, id: TokenId, at: Timestamp) -> Result<()> {
        let key = id.to_string();
        self.write(&format!("revoking token {id}"), |c| {
            // A second revocation keeps the first time.
            let n = diesel::update(
                tokens::table
                    .filter(tokens::id.eq(&key))
                    .filter(tokens::revoked_at.is_null()),
            )
            .set(tokens::revoked_at.eq(at.millis()))
            .execute(c)?;
            if n == 0 {
                let exists = tokens::table
                    .filter(tokens::id.eq(&key))
                    .select(tokens::id)
                    .first::<String>(c)
                    .optional()?;
                if exists.is_none() {
                    return Err(Error::not_found(format!("token {id}")).into());
                }
            }
            Ok(())
        })
    }

    // --- images and versions

    fn insert_image(&self, image: &Image, blank: &NewVersion) -> Result<Version> {
        if blank.image != image.id {
            return Err(Error::invalid(
                "image",
                format!("version 0 is for image {}, not {}", blank.image, image.id),
            ));
        }
        let row = ImageRow::new(image)?;
        let v0 = NewVersionRow::new(blank, 0)?;
        self.write(&format!("adding image {}", image.id), |c| {
            require_user(c, image.owner)?;
            require_share_users(c, image)?;
            diesel::insert_into(images::table)
                .values((&row, images::next_version.eq(1_i64)))
                .execute(c)
                .map_err(|e| {
                    if duplicate(&e, &["images.id", "images_id_key"]) {
                        Error::conflict(format!("an image with id {} already exists", image.id))
                            .into()
                    } else {
                        TxError::from(e)
                    }
                })?;
            insert_shares(c, image)?;
            diesel::insert_into(versions::table)
                .values(&v0)
                .execute(c)?;
            Ok(blank.into_version(0))
        })
    }

    fn image(&self, id: ImageId) -> Result<Option<Image>> {
        self.read("reading an image", |c| {
            let row = images::table
                .filter(images::id.eq(id.to_string()))
                .select(ImageRow::as_select())
                .first(c)
                .optional()?;
            Ok(match row {
                Some(r) => load_images(c, vec![r])?.pop(),
                None => None,
            })
        })
    }

    fn images(&self, filter: &ImageFilter) -> Result<Vec<Image>> {
        self.read("listing images", |c| {
            let mut q = images::table
                .select(ImageRow::as_select())
                .order((images::created_at.asc(), images::seq.asc()))
                .into_boxed();
            if let Some(owner) = filter.owner {
                q = q.filter(images::owner_id.eq(owner.to_string()));
            }
            if let Some(reader) = filter.readable_by {
                let reader = reader.to_string();
                let shared_with_reader = image_shares::table
                    .filter(image_shares::user_id.eq(reader.clone()))
                    .select(image_shares::image_id);
                q = q.filter(
                    images::owner_id
                        .eq(reader)
                        .or(images::visibility.eq(Visibility::Public.as_str()))
                        .or(images::visibility
                            .eq(Visibility::Shared.as_str())
                            .and(images::id.eq_any(shared_with_reader))),
                );
            }
            let rows = q.load(c)?;
            load_images(c, rows)
        })
    }

    fn update_image(&self, image: &Image) -> Result<()> {
        let row = ImageRow::new(image)?;
        self.write(&format!("updating image {}", image.id), |c| {
            let n = diesel::update(images::table.filter(images::id.eq(&row.id)))
                .set(&row)
                .execute(c)?;
            not_found_unless_one(n, || format!("image {}", image.id))?;
            require_share_users(c, image)?;
            diesel::delete(image_shares::table.filter(image_shares::image_id.eq(&row.id)))
                .execute(c)?;
            insert_shares(c, image)
        })
    }

    fn delete_image(&self, id: ImageId) -> Result<()> {
        let key = id.to_string();
        self.write(&format!("deleting image {id}"), |c| {
            lock_image(c, &key)?;
            require_image(c, id)?;
            if let Some((job, state)) = job_needing(c, &key, None)? {
                return Err(Error::conflict(format!(
                    "image {id} is needed by job {job}, which is {state}"
                ))
                .into());
            }
            // Versions, shares, setup entries and upload sessions go by
            // ON DELETE CASCADE.
            diesel::delete(images::table.filter(images::id.eq(&key))).execute(c)?;
            Ok(())
        })
    }

    fn commit_version(&self, version: &NewVersion) -> Result<Version> {
        let key = version.image.to_string();
        self.write(
            &format!("committing a version of image {}", version.image),
            |c| {
                // The update takes the image's row lock (PostgreSQL) under the
                // write lock (SQLite): concurrent commits queue up here and each
                // reads the counter the previous one left.
                let n = diesel::update(images::table.filter(images::id.eq(&key)))
                    .set(images::next_version.eq(images::next_version + 1))
                    .execute(c)?;
                not_found_unless_one(n, || format!("image {}", version.image))?;
                let next: i64 = images::table
                    .filter(images::id.eq(&key))
                    .select(images::next_version)
                    .first(c)?;
                let number = u32::try_from(next - 1).map_err(|_| {
                    Error::conflict(format!(
                        "image {} has run out of version numbers",
                        version.image
                    ))
                })?;
                let row = NewVersionRow::new(version, number)?;
                diesel::insert_into(versions::table)
                    .values(&row)
                    .execute(c)?;
                Ok(version.into_version(number))
            },
        )
    }

    fn version(&self, image: ImageId, number: u32) -> Result<Option<Version>> {
        self.read("reading a version", |c| {
            let row = versions::table
                .filter(versions::image_id.eq(image.to_string()))
                .filter(versions::number.eq(i64::from(number)))
                .select(VersionRow::as_select())
                .first(c)
                .optional()?;
            Ok(row.map(VersionRow::into_model).transpose()?)
        })
    }

    fn latest_version(&self, image: ImageId) -> Result<Option<Version>> {
        self.read("reading the latest version", |c| {
            let row = versions::table
                .filter(versions::image_id.eq(image.to_string()))
                .select(VersionRow::as_select())
                .order(versions::number.desc())
                .first(c)
                .optional()?;
            Ok(row.map(VersionRow::into_model).transpose()?)
        })
    }

    fn versions(&self, image: ImageId) -> Result<Vec<Version>> {
        self.read("listing versions", |c| {
            let rows = versions::table
                .filter(versions::image_id.eq(image.to_string()))
                .select(VersionRow::as_select())
                .order(versions::number.asc())
                .load(c)?;
            Ok(rows
                .into_iter()
                .map(VersionRow::into_model)
                .collect::<Result<_>>()?)
        })
    }

    fn manifest(&self, image: ImageId, number: u32) -> Result<Option<Manifest>> {
        self.read("reading a manifest", |c| {
            let bytes: Option<Vec<u8>> = versions::table
                .filter(versions::image_id.eq(image.to_string()))
                .filter(versions::number.eq(i64::from(number)))
                .select(versions::manifest)
                .first(c)
                .optional()?;
            Ok(bytes.as_deref().map(manifest_of).transpose()?)
        })
    }

    fn delete_version(&self, image: ImageId, number: u32) -> Result<()> {
        let key = image.to_string();
        let n = i64::from(number);
        self.write(
            &format!("deleting version {number} of image {image}"),
            |c| {
                lock_version(c, &key, n)?;
                let exists = versions::table
                    .filter(versions::image_id.eq(&key))
                    .filter(versions::number.eq(n))
                    .select(versions::number)
                    .first::<i64>(c)
                    .optional()?;
                if exists.is_none() {
                    return Err(
                        Error::not_found(format!("version {number} of image {image}")).into(),
                    );
                }
                if let Some((job, state)) = job_needing(c, &key, Some(n))? {
                    return Err(Error::conflict(format!(
                    "version {number} of image {image} is needed by job {job}, which is {state}"
                ))
                    .into());
                }
                diesel::delete(
                    versions::table
                        .filter(versions::image_id.eq(&key))
                        .filter(versions::number.eq(n)),
                )
                .execute(c)?;
                Ok(())
            },
        )
    }

    fn referenced_chunks(&self) -> Result<HashSet<ChunkHash>> {
        self.read("collecting referenced chunks", |c| {
            let mut out = HashSet::new();
            let mut after: Option<(String, i64)> = None;
            loop {
                let mut q = versions::table
                    .select((versions::image_id, versions::number, versions::manifest))
                    .order((versions::image_id.asc(), versions::number.asc()))
                    .limit(MANIFEST_PAGE)
                    .into_boxed();
                if let Some((image, number)) = after.take() {
                    q = q.filter(
                        versions::image_id.gt(image.clone()).or(versions::image_id
                            .eq(image)
                            .and(versions::number.gt(number))),
                    );
                }
                let page: Vec<(String, i64, Vec<u8>)> = q.load(c)?;
                let full = page.len() as i64 == MANIFEST_PAGE;
                for (image, number, bytes) in page {
                    out.extend(manifest_of(&bytes)?.chunks().flatten());
                    after = Some((image, number));
                }
                if !full {
                    return Ok(out);
                }
            }
        })
    }

    fn bytes_added_by_owner(&self, owner: UserId) -> Result<u64> {
        self.read("summing a user's stored bytes", |c| {
            let owned = images::table
                .filter(images::owner_id.eq(owner.to_string()))
                .select(images::id);
            let added: Vec<i64> = versions::table
                .filter(versions::image_id.eq_any(owned))
                .select(versions::added_bytes)
                .load(c)?;
            let mut sum = 0u64;
            for a in added {
                sum = sum.saturating_add(from_db("versions", "added_bytes", a)?);
            }
            Ok(sum)
        })
    }

    // --- upload sessions

    fn insert_upload(&self, upload: &UploadSession) -> Result<()> {
        let row = UploadRow::new(upload)?;
        self.write(&format!("recording upload {}", upload.id), |c| {
            require_image(c, upload.image)?;
            require_user(c, upload.created_by)?;
            diesel::insert_into(uploads::table)
                .values(&row)
                .execute(c)
                .map_err(|e| {
                    if duplicate(&e, &["uploads.id", "uploads_pkey"]) {
                        Error::conflict(format!("an upload with id {} already exists", upload.id))
                            .into()
                    } else {
                        TxError::from(e)
                    }
                })?;
            Ok(())
        })
    }

    fn upload(&self, id: UploadId) -> Result<Option<UploadSession>> {
        self.read("reading an upload session", |c| {
            let row = uploads::table
                .filter(uploads::id.eq(id.to_string()))
                .select(UploadRow::as_select())
                .first(c)
                .optional()?;
            Ok(row.map(UploadRow::into_model).transpose()?)
        })
    }

    fn touch_upload(&self, id: UploadId, at: Timestamp, added_bytes: u64) -> Result<()> {
        let added = to_db("added_bytes", added_bytes)?;
        self.write(&format!("touching upload {id}"), |c| {
            let n = diesel::update(uploads::table.filter(uploads::id.eq(id.to_string())))
                .set((
                    uploads::last_active.eq(at.millis()),
                    uploads::added_bytes.eq(uploads::added_bytes + added),
                ))
                .execute(c)?;
            not_found_unless_one(n, || format!("upload {id}"))
        })
    }

    fn delete_upload(&self, id: UploadId) -> Result<()> {
        self.write(&format!("ending upload {id}"), |c| {
            let n =
                diesel::delete(uploads::table.filter(uploads::id.eq(id.to_string()))).execute(c)?;
            not_found_unless_one(n, || format!("upload {id}"))
        })
    }

    fn oldest_live_upload(&self, alive_since: Timestamp) -> Result<Option<Timestamp>> {
        self.read("finding the oldest live upload", |c| {
            let oldest: Option<i64> = uploads::table
                .filter(uploads::last_active.ge(alive_since.millis()))
                .select(min(uploads::started_at))
                .first(c)?;
            Ok(oldest.map(Timestamp))
        })
    }

    fn delete_dead_uploads(&self, alive_since: Timestamp) -> Result<u64> {
        self.write("deleting dead uploads", |c| {
            let n = diesel::delete(
                uploads::table.filter(uploads::last_active.lt(alive_since.millis())),
            )
            .execute(c)?;
            Ok(n as u64)
        })
    }

    // --- setups

    fn insert_setup(&self, setup: &Setup) -> Result<()> {
        let row = SetupRow::new(setup);
        self.write(&format!("adding setup {}", setup.id), |c| {
            require_user(c, setup.owner)?;
            diesel::insert_into(setups::table)
                .values(&row)
                .execute(c)
                .map_err(|e| {
                    if duplicate(&e, &["setups.id", "setups_id_key"]) {
                        Error::conflict(format!("a setup with id {} already exists", setup.id))
                            .into()
                    } else {
                        TxError::from(e)
                    }
                })?;
            insert_setup_entries(c, setup)
        })
    }

    fn setup(&self, id: SetupId) -> Result<Option<Setup>> {
        self.read("reading a setup", |c| {
            let row = setups::table
                .filter(setups::id.eq(id.to_string()))
                .select(SetupRow::as_select())
                .first(c)
                .optional()?;
            Ok(match row {
                Some(r) => load_setups(c, vec![r])?.pop(),
                None => None,
            })
        })
    }

    fn setups(&self, owner: Option<UserId>) -> Result<Vec<Setup>> {
        self.read("listing setups", |c| {
            let mut q = setups::table
                .select(SetupRow::as_select())
                .order((setups::created_at.asc(), setups::seq.asc()))
                .into_boxed();
            if let Some(owner) = owner {
                q = q.filter(setups::owner_id.eq(owner.to_string()));
            }
            let rows = q.load(c)?;
            load_setups(c, rows)
        })
    }

    fn update_setup(&self, setup: &Setup) -> Result<()> {
        let key = setup.id.to_string();
        self.write(&format!("updating setup {}", setup.id), |c| {
            let n = diesel::update(setups::table.filter(setups::id.eq(&key)))
                .set((
                    setups::name.eq(&setup.name),
                    setups::updated_at.eq(setup.updated_at.millis()),
                ))
                .execute(c)?;
            not_found_unless_one(n, || format!("setup {}", setup.id))?;
            diesel::delete(setup_entries::table.filter(setup_entries::setup_id.eq(&key)))
                .execute(c)?;
            insert_setup_entries(c, setup)
        })
    }

    fn delete_setup(&self, id: SetupId) -> Result<()> {
        self.write(&format!("deleting setup {id}"), |c| {
            let n =
                diesel::delete(setups::table.filter(setups::id.eq(id.to_string()))).execute(c)?;
            not_found_unless_one(n, || format!("setup {id}"))
        })
    }

    // --- machines

    fn insert_machine(&self, machine: &Machine) -> Result<()> {
        let row = MachineRow::new(machine)?;
        self.write(&format!("adding machine {:?}", machine.name), |c| {
            diesel::insert_into(machines::table)
                .values(&row)
                .execute(c)
                .map_err(|e| machine_conflict(e, machine))?;
            Ok(())
        })
    }

    fn machine(&self, id: MachineId) -> Result<Option<Machine>> {
        self.read("reading a machine", |c| {
            let row = machines::table
                .filter(machines::id.eq(id.to_string()))
                .select(MachineRow::as_select())
                .first(c)
                .optional()?;
            Ok(row.map(MachineRow::into_model).transpose()?)
        })
    }

    fn machine_by_mac(&self, mac: MacAddress) -> Result<Option<Machine>> {
        self.read("reading a machine by MAC", |c| {
            let row = machines::table
                .filter(machines::mac.eq(mac.to_string()))
                .select(MachineRow::as_select())
                .first(c)
                .optional()?;
            Ok(row.map(MachineRow::into_model).transpose()?)
        })
    }

    fn machines(&self) -> Result<Vec<Machine>> {
        self.read("listing machines", |c| {
            let rows = machines::table
                .select(MachineRow::as_select())
                .order(machines::name.asc())
                .load(c)?;
            Ok(rows
                .into_iter()
                .map(MachineRow::into_model)
                .collect::<Result<_>>()?)
        })
    }

    fn update_machine(&self, machine: &Machine) -> Result<()> {
        let row = MachineRow::new(machine)?;
        self.write(&format!("updating machine {}", machine.id), |c| {
            let n = diesel::update(machines::table.filter(machines::id.eq(&row.id)))
                .set(&row)
                .execute(c)
                .map_err(|e| machine_conflict(e, machine))?;
            not_found_unless_one(n, || format!("machine {}", machine.id))
        })
    }

    fn touch_machine(&self, id: MachineId, at: Timestamp) -> Result<()> {
        let key = id.to_string();
        self.write(&format!("recording contact with machine {id}"), |c| {
            if !machine_exists(c, &key)? {
                return Err(Error::not_found(format!("machine {id}")).into());
            }
            diesel::update(
                machines::table.filter(machines::id.eq(&key)).filter(
                    machines::last_seen
                        .is_null()
                        .or(machines::last_seen.lt(at.millis())),
                ),
            )
            .set(machines::last_seen.eq(Some(at.millis())))
            .execute(c)?;
            Ok(())
        })
    }

    fn append_machine_event(&self, id: MachineId, event: &JobEvent) -> Result<()> {
        let key = id.to_string();
        self.write(&format!("adding an event to machine {id}"), |c| {
            if !machine_exists(c, &key)? {
                return Err(Error::not_found(format!("machine {id}")).into());
            }
            diesel::insert_into(machine_events::table)
                .values(&MachineEventRow::new(id, event))
                .execute(c)?;
            Ok(())
        })
    }

    fn machine_events(&self, id: MachineId, limit: u32) -> Result<Vec<JobEvent>> {
        self.read("reading a machine's history", |c| {
            let rows = machine_events::table
                .filter(machine_events::machine_id.eq(id.to_string()))
                .select(MachineEventRow::as_select())
                .order(machine_events::seq.desc())
                .limit(i64::from(limit))
                .load(c)?;
            Ok(rows.into_iter().map(MachineEventRow::into_model).collect())
        })
    }

    fn setting(&self, key: &str) -> Result<Option<String>> {
        self.read(&format!("reading setting {key}"), |c| {
            crate::settings::get(c, key)
        })
    }

    fn set_setting(&self, key: &str, value: &str) -> Result<()> {
        self.write(&format!("changing setting {key}"), |c| {
            crate::settings::set(c, key, value)
        })
    }

    fn init_setting(&self, key: &str, value: &str) -> Result<String> {
        self.write(&format!("initialising setting {key}"), |c| {
            crate::settings::init(c, key, value)
        })
    }
}

/// Names the clash when a machine's MAC, name or id is taken.
fn machine_conflict(e: diesel::result::Error, m: &Machine) -> TxError {
    if duplicate(&e, &["machines.mac", "machines_mac_key"]) {
        Error::conflict(format!("a machine with MAC {} already exists", m.mac)).into()
    } else if duplicate(&e, &["machines.name", "machines_name_key"]) {
        Error::conflict(format!("a machine named {:?} already exists", m.name)).into()
    } else if duplicate(&e, &["machines.id", "machines_pkey"]) {
        Error::conflict(format!("a machine with id {} already exists", m.id)).into()
    } else {
        e.into()
    }
}
