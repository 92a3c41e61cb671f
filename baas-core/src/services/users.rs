//! Users, their passwords (for the web UI) and their API tokens.

use super::policy::{can_read_user, check_admin};
use super::{auth::hash_secret, Actor, Baas};
use crate::model::*;
use crate::{Error, Result};

/// A user to create.
#[derive(Debug, Clone)]
pub struct NewUser {
    /// Login name.
    pub name: String,
    /// Display name (defaults to the login name when empty).
    pub display_name: String,
    /// E-mail (may be empty).
    pub email: String,
    /// Role.
    pub role: Role,
}

/// Changes to a user; `None` keeps a field.
#[derive(Debug, Clone, Default)]
pub struct UserPatch {
    /// New display name.
    pub display_name: Option<String>,
    /// New e-mail.
    pub email: Option<String>,
    /// New role (admins only; never your own).
    pub role: Option<Role>,
    /// New password hash (PHC string); `Some(None)` removes the password.
    pub password_hash: Option<Option<String>>,
}

/// Longest token lifetime a user may ask for: one year.
pub const MAX_TOKEN_TTL_MS: i64 = 366 * 24 * 3600 * 1000;

/// Shortest password accepted.
pub const MIN_PASSWORD_LEN: usize = 8;
/// Longest password accepted (bytes): hashing is deliberately slow, so an
/// unbounded input would be a cheap way to burn the server's CPU.
pub const MAX_PASSWORD_LEN: usize = 1024;

/// The argon2id hash of `password` with `salt`, as a PHC string
/// (`$argon2id$v=19$m=19456,t=2,p=1$...`: OWASP's recommended parameters).
fn hash_password(password: &str, salt: &[u8; 16]) -> Result<String> {
    use argon2::password_hash::{PasswordHasher, SaltString};
    let salt = SaltString::encode_b64(salt)
        .map_err(|e| Error::internal(format!("encoding a password salt: {e}")))?;
    argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| Error::internal(format!("hashing a password: {e}")))
}

/// Whether `password` matches the PHC string `hash` (false for a hash that
/// does not parse).
fn verify_password(password: &str, hash: &str) -> bool {
    use argon2::password_hash::{PasswordHash, PasswordVerifier};
    match PasswordHash::new(hash) {
        Ok(parsed) => argon2::Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok(),
        Err(_) => false,
    }
}

/// A hash no password matches, verified against when the user does not
/// exist or has no password, so a wrong name costs as much as a wrong
/// password and does not tell which accounts exist.
const DUMMY_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$AAAAAAAAAAAAAAAAAAAAAA$ygm7jG4ZLMyNmnRdGDJzyNusJh1XmYcOYLaBXg4xaMY";

fn check_password(password: &str) -> Result<()> {
    let chars = password.chars().count();
    if chars < MIN_PASSWORD_LEN || password.len() > MAX_PASSWORD_LEN {
        return Err(Error::invalid(
            "password",
            format!(
                "a password must be at least {MIN_PASSWORD_LEN} characters and at most {MAX_PASSWORD_LEN} bytes"
            ),
        ));
    }
    Ok(())
}

impl Baas {
    /// Creates a user (admins).
    pub fn create_user(&self, actor: &Actor, new: NewUser) -> Result<User> {
        check_admin(actor, "create users")?;
        check_user_name(&new.name)?;
        let display_name = if new.display_name.trim().is_empty() {
            new.name.clone()
        } else {
            new.display_name
        };
        check_display_name(&display_name)?;
        check_email(&new.email)?;
        let user = User {
            id: UserId(self.entropy.uuid()),
            name: new.name,
            display_name,
            email: new.email,
            role: new.role,
            password_hash: None,
            created_at: self.clock.now(),
        };
        self.meta.insert_user(&user)?;
        Ok(user)
    }

    /// Every user (moderators and admins).
    pub fn list_users(&self, actor: &Actor) -> Result<Vec<User>> {
        super::policy::check_moderator(actor, "list users")?;
        self.meta.users()
    }

    /// A user by id: yourself, or anyone for moderators and admins.
    pub fn get_user(&self, actor: &Actor, id: UserId) -> Result<User> {
        if !can_read_user(actor, id) {
            return Err(Error::not_found(format!("user {id}")));
        }
        self.meta
            .user(id)?
            .ok_or_else(|| Error::not_found(format!("user {id}")))
    }

    /// A user by login name, with the same rule as [`Baas::get_user`].
    pub fn get_user_by_name(&self, actor: &Actor, name: &str) -> Result<User> {
        let user = self.meta.user_by_name(name)?;
        match user {
            Some(u) if can_read_user(actor, u.id) => Ok(u),
            _ => Err(Error::not_found(format!("user {name:?}"))),
        }
    }

    /// Changes a user. Everyone may change their own display name, e-mail
    /// and password; only admins change roles, and never their own (so the
    /// last admin cannot lock everyone out by accident).
    pub fn update_user(&self, actor: &Actor, id: UserId, patch: UserPatch) -> Result<User> {
        let mut user = self.get_user(actor, id)?;
        let is_self = actor.user_id() == Some(id);
        if !is_self {
            check_admin(actor, "change other users")?;
        }
        if let Some(role) = patch.role {
            if role != user.role {
                check_admin(actor, "change roles")?;
                if is_self {
                    return Err(Error::forbidden("nobody may change their own role"));
                }
            }
            user.role = role;
        }
        if let Some(d) = patch.display_name {
            check_display_name(&d)?;
            user.display_name = d;
        }
        if let Some(e) = patch.email {
            check_email(&e)?;
            user.email = e;
        }
        if let Some(p) = patch.password_hash {
            user.password_hash = p;
        }
        self.meta.update_user(&user)?;
        self.auth_cache.invalidate();
        Ok(user)
    }

    /// Sets (or, with `None`, removes) a user's web password: yourself, or
    /// anyone for admins. Stored as an argon2id hash with a fresh salt.
    pub fn set_password(&self, actor: &Actor, id: UserId, password: Option<&str>) -> Result<()> {
        if actor.user_id() != Some(id) {
            check_admin(actor, "set other users' passwords")?;
        }
        let hash = match password {
            Some(p) => {
                check_password(p)?;
                let mut salt = [0u8; 16];
                self.entropy.fill(&mut salt);
                Some(hash_password(p, &salt)?)
            }
            None => None,
        };
        self.update_user(
            actor,
            id,
            UserPatch {
                password_hash: Some(hash),
                ..UserPatch::default()
            },
        )?;
        Ok(())
    }

    /// Logs in with a name and password; the actor on success. Every
    /// failure says the same thing, and costs the same.
    pub fn login_password(&self, name: &str, password: &str) -> Result<Actor> {
        let bad = || Error::unauthenticated("wrong user name or password");
        if password.len() > MAX_PASSWORD_LEN {
            return Err(bad());
        }
        let user = self.meta.user_by_name(name.trim())?;
        let hash = user
            .as_ref()
            .and_then(|u| u.password_hash.as_deref())
            .unwrap_or(DUMMY_HASH);
        let ok = verify_password(password, hash);
        match user {
            Some(u) if ok && u.password_hash.is_some() => Ok(super::Actor::user(&u)),
            _ => Err(bad()),
        }
    }

    /// The actor of a web session that authenticated as `id` earlier: the
    /// user with their current role, as long as the account exists and its
    /// password has not changed since (`stamp` is [`User::session_stamp`]
    /// at login).
    pub fn session_actor(&self, id: UserId, stamp: &str) -> Result<Actor> {
        match self.meta.user(id)? {
            Some(u) if u.session_stamp() == stamp => Ok(super::Actor::user(&u)),
            _ => Err(Error::unauthenticated(
                "your session has ended: log in again",
            )),
        }
    }

    /// Deletes a user with their tokens, images and setups (admins; not
    /// yourself). Refused while the user has queued or running jobs.
    pub fn delete_user(&self, actor: &Actor, id: UserId) -> Result<()> {
        check_admin(actor, "delete users")?;
        if actor.user_id() == Some(id) {
            return Err(Error::conflict("you cannot delete your own account"));
        }
        self.meta.delete_user(id)?;
        self.auth_cache.invalidate();
        Ok(())
    }

    /// Creates a token for `user` (yourself, or anyone for admins); returns
    /// it and its secret, which is shown only this once.
    pub fn create_token(
        &self,
        actor: &Actor,
        user: UserId,
        name: &str,
        ttl_ms: Option<i64>,
    ) -> Result<(Token, String)> {
        if actor.user_id() != Some(user) {
            check_admin(actor, "create tokens for other users")?;
        }
        if self.meta.user(user)?.is_none() {
            return Err(Error::not_found(format!("user {user}")));
        }
        check_name_field("name", name, 64)?;
        let now = self.clock.now();
        let expires_at = match ttl_ms {
            None => None,
            Some(ms) if (1..=MAX_TOKEN_TTL_MS).contains(&ms) => Some(now.plus_millis(ms)),
            Some(ms) => {
                return Err(Error::invalid(
                    "ttl",
                    format!("{ms} ms must be between 1 ms and one year"),
                ))
            }
        };
        let secret = self.new_secret();
        let token = Token {
            id: TokenId(self.entropy.uuid()),
            subject: TokenSubject::User(user),
            name: name.to_string(),
            secret_hash: hash_secret(&secret),
            created_at: now,
            expires_at,
            revoked_at: None,
        };
        self.meta.insert_token(&token)?;
        Ok((token, secret))
    }

    /// A user's tokens (yourself, or anyone for admins). Secrets are never
    /// returned.
    pub fn list_tokens(&self, actor: &Actor, user: UserId) -> Result<Vec<Token>> {
        if actor.user_id() != Some(user) {
            check_admin(actor, "list other users' tokens")?;
        }
        self.meta.tokens(user)
    }

    /// Revokes a token (its owner or an admin).
    pub fn revoke_token(&self, actor: &Actor, id: TokenId) -> Result<()> {
        let token = self
            .meta
            .token(id)?
            .ok_or_else(|| Error::not_found(format!("token {id}")))?;
        let mine = token
            .subject
            .user()
            .is_some_and(|u| actor.user_id() == Some(u));
        if !mine && !actor.at_least(Role::Moderator) {
            return Err(Error::not_found(format!("token {id}")));
        }
        if !mine && token.subject.user().is_some() && !actor.at_least(Role::Admin) {
            return Err(Error::not_found(format!("token {id}")));
        }
        if token.revoked_at.is_some() {
            return Ok(());
        }
        self.meta.revoke_token(id, self.clock.now())?;
        self.auth_cache.invalidate();
        Ok(())
    }
}

fn check_name_field(field: &str, value: &str, max: usize) -> Result<()> {
    crate::model::check_name(field, value, max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_hashes_verify_only_their_password() {
        let h = hash_password("correct horse", &[7; 16]).expect("hash");
        assert!(h.starts_with("$argon2id$"), "{h}");
        assert!(verify_password("correct horse", &h));
        assert!(!verify_password("correct horsE", &h));
        assert!(!verify_password("", "not a phc string"));
        // The dummy parses (so a missing user costs a full verification)
        // and matches nothing.
        assert!(argon2::password_hash::PasswordHash::new(DUMMY_HASH).is_ok());
        assert!(!verify_password("", DUMMY_HASH));
    }

    #[test]
    fn password_lengths() {
        assert!(check_password("1234567").is_err());
        assert!(check_password("12345678").is_ok());
        assert!(check_password(&"x".repeat(MAX_PASSWORD_LEN + 1)).is_err());
    }
}
