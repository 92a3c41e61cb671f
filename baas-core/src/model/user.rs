//! Users, roles and API tokens.

use std::fmt;
use std::str::FromStr;

use super::{check_name, MachineId, Timestamp, TokenId, UserId};
use crate::{Error, Result};

/// What a user may do. Ordered: `User < Moderator < Admin`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Manages their own images and setups, queues jobs on machines.
    User,
    /// Also manages machines and the queue, publishes public images.
    Moderator,
    /// Everything, including users.
    Admin,
}

impl Role {
    /// The lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Moderator => "moderator",
            Role::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = Error;
    fn from_str(s: &str) -> Result<Role> {
        match s.trim().to_ascii_lowercase().as_str() {
            "user" => Ok(Role::User),
            "moderator" => Ok(Role::Moderator),
            "admin" => Ok(Role::Admin),
            other => Err(Error::invalid(
                "role",
                format!("{other:?} is not one of user, moderator, admin"),
            )),
        }
    }
}

/// A user account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// Stable id.
    pub id: UserId,
    /// Unique login name: `[A-Za-z0-9_.-]`, 1 to 64 characters, starting
    /// with a letter or digit (case-sensitive, as in the original BAAS,
    /// whose quickstart creates `USER`).
    pub name: String,
    /// Display name.
    pub display_name: String,
    /// Contact address (free text, may be empty).
    pub email: String,
    /// Role.
    pub role: Role,
    /// A password hash in PHC string format, for the web UI; `None` means
    /// token-only.
    pub password_hash: Option<String>,
    /// Creation time.
    pub created_at: Timestamp,
}

impl User {
    /// A short fingerprint of the user's password hash, carried by web
    /// sessions: changing or removing the password ends every session
    /// opened before (token logins included).
    pub fn session_stamp(&self) -> String {
        let hash = blake3::hash(self.password_hash.as_deref().unwrap_or("").as_bytes());
        hash.to_hex()[..16].to_string()
    }
}

/// Validates a login name.
pub fn check_user_name(name: &str) -> Result<()> {
    let ok_len = (1..=64).contains(&name.len());
    let ok_first = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric());
    let ok_chars = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok_len && ok_first && ok_chars {
        Ok(())
    } else {
        Err(Error::invalid(
            "name",
            format!("{name:?} must be 1 to 64 characters of A-Z, a-z, 0-9, '_', '.', '-', starting with a letter or digit"),
        ))
    }
}

/// Validates an e-mail field. It is contact information, never a login or
/// a key (the original made it unique and broke logins), so only its length
/// and characters are checked: the original's quickstart stores `EMAIL`.
pub fn check_email(email: &str) -> Result<()> {
    if email.is_empty() {
        return Ok(());
    }
    check_name("email", email, 254)
}

/// Validates a display name.
pub fn check_display_name(name: &str) -> Result<()> {
    check_name("display_name", name, 128)
}

/// Whom a token authenticates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TokenSubject {
    /// A user, with that user's current role.
    User(UserId),
    /// The agent of one machine: it may drive that machine's jobs and
    /// nothing else. Issued to the management OS per boot, short-lived.
    Machine(MachineId),
}

impl TokenSubject {
    /// The user, for user tokens.
    pub fn user(self) -> Option<UserId> {
        match self {
            TokenSubject::User(u) => Some(u),
            TokenSubject::Machine(_) => None,
        }
    }
}

/// An API token's stored record. The secret itself is never stored: only its
/// blake3 hash (tokens carry 256 random bits, so a fast hash is enough).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    /// Stable id, used to list and revoke.
    pub id: TokenId,
    /// Whom it authenticates.
    pub subject: TokenSubject,
    /// A label chosen by the user.
    pub name: String,
    /// blake3 of the secret.
    pub secret_hash: [u8; 32],
    /// Creation time.
    pub created_at: Timestamp,
    /// Expiry, if any.
    pub expires_at: Option<Timestamp>,
    /// Set when revoked; a revoked token never authenticates again.
    pub revoked_at: Option<Timestamp>,
}

impl Token {
    /// Whether the token authenticates at `now`.
    pub fn is_active(&self, now: Timestamp) -> bool {
        self.revoked_at.is_none() && self.expires_at.is_none_or(|e| now < e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_parse_case_insensitively_and_reject_unknown() {
        assert_eq!("Admin".parse::<Role>().ok(), Some(Role::Admin));
        assert!("administrator".parse::<Role>().is_err());
        assert!(Role::User < Role::Moderator && Role::Moderator < Role::Admin);
    }

    #[test]
    fn user_names() {
        for ok in ["user", "USER", "a", "bob.smith", "x_1-2"] {
            assert!(check_user_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", ".hidden", "-x", "a/b", "../x", &"a".repeat(65), "é"] {
            assert!(check_user_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn emails() {
        assert!(check_email("").is_ok());
        assert!(check_email("a@b").is_ok());
        assert!(check_email("EMAIL").is_ok());
        assert!(check_email("a\nb").is_err());
        assert!(check_email(&"a".repeat(255)).is_err());
    }
}
