//! Who is calling: authentication of bearer tokens into an [`Actor`], and
//! the first-start bootstrap of an admin.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use super::Baas;
use crate::model::*;
use crate::{Error, Result};

/// The authenticated caller of a service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    /// A user, with the role they had when authenticated.
    User {
        /// Id.
        id: UserId,
        /// Login name.
        name: String,
        /// Role.
        role: Role,
    },
    /// The agent of one machine (a credential scoped to that machine).
    Agent {
        /// The machine.
        machine: MachineId,
    },
    /// The process itself: admin commands run on the server's host. Never
    /// produced by authenticating a request.
    System,
}

impl Actor {
    /// The actor for `user`.
    pub fn user(user: &User) -> Actor {
        Actor::User {
            id: user.id,
            name: user.name.clone(),
            role: user.role,
        }
    }

    /// The user id, if a user.
    pub fn user_id(&self) -> Option<UserId> {
        match self {
            Actor::User { id, .. } => Some(*id),
            _ => None,
        }
    }

    /// Whether the actor has at least `role` (System has every role).
    pub fn at_least(&self, role: Role) -> bool {
        match self {
            Actor::User { role: r, .. } => *r >= role,
            Actor::System => true,
            Actor::Agent { .. } => false,
        }
    }
}

/// How long a successful authentication is reused without asking the
/// store again. Every revocation, role change, user deletion, machine
/// change and boot decision made through these services forgets them all at
/// once; one made by another server on the same database takes effect here
/// within this time.
pub const AUTH_CACHE_MS: i64 = 1_000;

/// Most credentials remembered at once (the cache starts over when full).
const AUTH_CACHE_MAX: usize = 4_096;

/// Recently authenticated credentials, by the hash of their secret: an
/// agent's polls (the hot path) then cost no store call to authenticate.
#[derive(Debug, Default)]
pub(crate) struct AuthCache {
    /// Bumped by every change that can end a credential or change what it
    /// may do; an entry from an earlier epoch is never used.
    epoch: AtomicU64,
    entries: Mutex<HashMap<[u8; 32], CachedAuth>>,
}

#[derive(Debug, Clone)]
struct CachedAuth {
    actor: Actor,
    at: Timestamp,
    expires_at: Option<Timestamp>,
    epoch: u64,
}

impl AuthCache {
    fn get(&self, hash: &[u8; 32], now: Timestamp) -> Option<Actor> {
        let entries = self.entries.lock().ok()?;
        let hit = entries.get(hash)?;
        let fresh = hit.epoch == self.epoch.load(Ordering::Acquire)
            && now.millis().saturating_sub(hit.at.millis()) < AUTH_CACHE_MS
            && hit.expires_at.is_none_or(|e| now < e);
        fresh.then(|| hit.actor.clone())
    }

    fn put(&self, hash: [u8; 32], entry: CachedAuth) {
        if let Ok(mut entries) = self.entries.lock() {
            if entries.len() >= AUTH_CACHE_MAX {
                entries.clear();
            }
            entries.insert(hash, entry);
        }
    }

    /// Forgets every remembered credential.
    pub(crate) fn invalidate(&self) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        if let Ok(mut entries) = self.entries.lock() {
            entries.clear();
        }
    }
}

/// Prefix of every token secret, so leaked tokens are easy to grep for.
pub const TOKEN_PREFIX: &str = "baas_";

/// The stored hash of a token secret.
pub fn hash_secret(secret: &str) -> [u8; 32] {
    *blake3::hash(secret.as_bytes()).as_bytes()
}

impl Baas {
    /// A fresh token secret: the prefix and 256 random bits in hex.
    pub(crate) fn new_secret(&self) -> String {
        let mut b = [0u8; 32];
        self.entropy.fill(&mut b);
        let mut s = String::from(TOKEN_PREFIX);
        s.push_str(&crate::content::ChunkHash(b).to_hex());
        s
    }

    /// Authenticates a bearer token secret.
    pub fn authenticate(&self, secret: &str) -> Result<Actor> {
        let secret = secret.trim();
        if secret.is_empty() {
            return Err(Error::unauthenticated("missing token"));
        }
        let hash = hash_secret(secret);
        let now = self.clock.now();
        if let Some(actor) = self.auth_cache.get(&hash, now) {
            return Ok(actor);
        }
        // Read before the store: a change made while we look makes this
        // answer unusable for the cache.
        let epoch = self.auth_cache.epoch.load(Ordering::Acquire);
        let bad = || Error::unauthenticated("invalid, expired or revoked token");
        let token = self.meta.token_by_hash(&hash)?.ok_or_else(bad)?;
        if !token.is_active(now) {
            return Err(bad());
        }
        let actor = match token.subject {
            TokenSubject::User(id) => {
                let user = self.meta.user(id)?.ok_or_else(bad)?;
                Actor::user(&user)
            }
            TokenSubject::Machine(machine) => match self.meta.machine(machine)? {
                Some(m) if m.state != MachineState::Retired => {
                    // Every agent call is contact (the dashboard's offline);
                    // it is recorded at most every few seconds anyway, and a
                    // cached answer lives shorter than that.
                    self.record_contact(&m)?;
                    Actor::Agent { machine }
                }
                _ => return Err(bad()),
            },
        };
        self.auth_cache.put(
            hash,
            CachedAuth {
                actor: actor.clone(),
                at: now,
                expires_at: token.expires_at,
                epoch,
            },
        );
        Ok(actor)
    }

    /// [`Baas::authenticate`] when its answer is remembered (no store call,
    /// no I/O: a shell may call it on its event loop); `None` otherwise.
    pub fn authenticate_cached(&self, secret: &str) -> Option<Actor> {
        let secret = secret.trim();
        if secret.is_empty() {
            return None;
        }
        self.auth_cache.get(&hash_secret(secret), self.clock.now())
    }

    /// Issues a credential for `machine`'s agent (moderators and admins, or
    /// the system when it boots the machine into the management OS):
    /// it authenticates as [`Actor::Agent`] for that machine only, for
    /// `ttl_ms`. Returns the record and the secret, shown only this once.
    pub fn issue_agent_token(
        &self,
        actor: &Actor,
        machine: MachineId,
        ttl_ms: i64,
    ) -> Result<(Token, String)> {
        super::policy::check_moderator(actor, "issue machine credentials")?;
        self.meta
            .machine(machine)?
            .ok_or_else(|| Error::not_found(format!("machine {machine}")))?;
        if !(1..=super::users::MAX_TOKEN_TTL_MS).contains(&ttl_ms) {
            return Err(Error::invalid(
                "ttl",
                format!("{ttl_ms} ms must be between 1 ms and one year"),
            ));
        }
        let secret = self.new_secret();
        let now = self.clock.now();
        let token = Token {
            id: TokenId(self.entropy.uuid()),
            subject: TokenSubject::Machine(machine),
            name: "agent".into(),
            secret_hash: hash_secret(&secret),
            created_at: now,
            expires_at: Some(now.plus_millis(ttl_ms)),
            revoked_at: None,
        };
        self.meta.insert_token(&token)?;
        Ok((token, secret))
    }

    /// On an empty store, creates the admin `name` and a token for it;
    /// returns the user and the secret (shown once). Does nothing when any
    /// user exists.
    pub fn bootstrap_admin(&self, name: &str) -> Result<Option<(User, String)>> {
        if !self.meta.users()?.is_empty() {
            return Ok(None);
        }
        let user = self.create_user(
            &Actor::System,
            super::NewUser {
                name: name.to_string(),
                display_name: "Administrator".into(),
                email: String::new(),
                role: Role::Admin,
            },
        )?;
        let (_, secret) = self.create_token(&Actor::System, user.id, "bootstrap", None)?;
        Ok(Some((user, secret)))
    }
}
