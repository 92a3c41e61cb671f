//! Who is calling: authentication of bearer tokens into an [`Actor`], and
//! the first-start bootstrap of an admin.

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
        let bad = || Error::unauthenticated("invalid, expired or revoked token");
        let token = self
            .meta
            .token_by_hash(&hash_secret(secret))?
            .ok_or_else(bad)?;
        if !token.is_active(self.clock.now()) {
            return Err(bad());
        }
        let user = self.meta.user(token.user)?.ok_or_else(bad)?;
        Ok(Actor::user(&user))
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
