//! Users and their API tokens.

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
        Ok(user)
    }

    /// Deletes a user with their tokens, images and setups (admins; not
    /// yourself). Refused while the user has queued or running jobs.
    pub fn delete_user(&self, actor: &Actor, id: UserId) -> Result<()> {
        check_admin(actor, "delete users")?;
        if actor.user_id() == Some(id) {
            return Err(Error::conflict("you cannot delete your own account"));
        }
        self.meta.delete_user(id)
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
        self.meta.revoke_token(id, self.clock.now())
    }
}

fn check_name_field(field: &str, value: &str, max: usize) -> Result<()> {
    crate::model::check_name(field, value, max)
}
