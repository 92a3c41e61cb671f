//! Web sessions: one private (encrypted and authenticated by Rocket's
//! `secrets`) cookie, http-only and `SameSite=Strict`, holding a CSRF token
//! and, once logged in, the user and their session stamp.
//!
//! Every visitor gets a CSRF token before logging in, so the login form is
//! protected too. Every POST handler checks the form's `csrf` field (or the
//! `X-CSRF-Token` header for the upload script) against the cookie's with
//! a constant-time comparison. The user's role is read afresh from the store
//! on every request ([`baas_core::Baas::session_actor`]), and changing a
//! password ends every older session.

use baas_core::model::UserId;
use baas_core::{Actor, Baas};
use rocket::http::{Cookie, CookieJar, SameSite, Status};
use rocket::request::{FromRequest, Outcome, Request};

use super::UiError;

/// The cookie's name.
pub const COOKIE: &str = "baas_session";
/// How long a login lasts (12 hours), whatever the activity.
pub const SESSION_MS: i64 = 12 * 3600 * 1000;

/// What the cookie holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionData {
    /// 256 random bits in hex.
    pub csrf: String,
    /// The logged-in user and their session stamp.
    pub user: Option<(UserId, String)>,
    /// When the login ends (Unix milliseconds); 0 for anonymous.
    pub expires_ms: i64,
}

impl SessionData {
    fn encode(&self) -> String {
        match &self.user {
            Some((id, stamp)) => format!("v1 {} {id} {stamp} {}", self.csrf, self.expires_ms),
            None => format!("v1 {} - - 0", self.csrf),
        }
    }

    fn decode(s: &str) -> Option<SessionData> {
        let mut it = s.split(' ');
        if it.next()? != "v1" {
            return None;
        }
        let csrf = it.next()?.to_string();
        let user = it.next()?;
        let stamp = it.next()?;
        let expires_ms = it.next()?.parse().ok()?;
        if csrf.len() != 64 || it.next().is_some() {
            return None;
        }
        let user = if user == "-" {
            None
        } else {
            Some((user.parse().ok()?, stamp.to_string()))
        };
        Some(SessionData {
            csrf,
            user,
            expires_ms,
        })
    }
}

/// 256 random bits in hex, from the operating system.
pub fn random_hex() -> String {
    let mut b = [0u8; 32];
    if getrandom::fill(&mut b).is_err() {
        // No randomness means no safe token: fail closed, every check
        // will refuse an empty token.
        return String::new();
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn write(jar: &CookieJar<'_>, data: &SessionData) {
    let cookie = Cookie::build((COOKIE, data.encode()))
        .path("/")
        .http_only(true)
        .same_site(SameSite::Strict);
    jar.add_private(cookie);
}

/// Starts a logged-in session for `actor` (a fresh CSRF token, so one
/// planted before login is worthless afterwards).
pub fn login(jar: &CookieJar<'_>, user: UserId, stamp: String, now_ms: i64) {
    write(
        jar,
        &SessionData {
            csrf: random_hex(),
            user: Some((user, stamp)),
            expires_ms: now_ms + SESSION_MS,
        },
    );
}

/// Ends the session (a fresh anonymous one replaces it).
pub fn logout(jar: &CookieJar<'_>) {
    write(
        jar,
        &SessionData {
            csrf: random_hex(),
            user: None,
            expires_ms: 0,
        },
    );
}

/// Constant-time comparison of two tokens.
pub fn same_token(a: &str, b: &str) -> bool {
    if a.len() != b.len() || a.is_empty() {
        return false;
    }
    a.bytes()
        .zip(b.bytes())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

/// The visitor's session, logged in or not; creates an anonymous one (with
/// a CSRF token) when there is none.
#[derive(Debug, Clone)]
pub struct Visitor {
    /// The session.
    pub data: SessionData,
}

impl Visitor {
    /// Checks a submitted CSRF token.
    pub fn check_csrf(&self, submitted: &str) -> Result<(), UiError> {
        if same_token(&self.data.csrf, submitted.trim()) {
            Ok(())
        } else {
            Err(UiError::csrf())
        }
    }
}

#[rocket::async_trait]
impl<'r> FromRequest<'r> for Visitor {
    type Error = std::convert::Infallible;

    async fn from_request(req: &'r Request<'_>) -> Outcome<Self, Self::Error> {
        let jar = req.cookies();
        let now = req.rocket().state::<Baas>().map_or(0, |b| b.now().millis());
        let data = jar
            .get_private(COOKIE)
            .and_then(|c| SessionData::decode(c.value()))
            .filter(|d| d.user.is_none() || d.expires_ms > now);
        let data = match data {
            Some(d) => d,
            None => {
                let d = SessionData {
                    csrf: random_hex(),
                    user: None,
                    expires_ms: 0,
                };
                write(jar, &d);
                d
            }
        };
        Outcome::Success(Visitor { data })
    }
}

/// A logged-in user: the actor the services are called as, and the CSRF
/// token their forms carry. Failing it answers 401, which the UI's catcher
/// turns into a redirect to the login page.
#[derive(Debug, Clone)]
pub struct Viewer {
    /// The services.
    pub baas: Baas,
    /// Who is calling.
    pub actor: Actor,
    /// The session's CSRF token.
    pub csrf: String,
    /// The server's power control (power states on the pages, power
    /// actions).
    pub power: Option<crate::api::machines::Power>,
}

impl Viewer {
    /// Checks a submitted CSRF token.
    pub fn check_csrf(&self, submitted: &str) -> Result<(), UiError> {
        if same_token(&self.csrf, submitted.trim()) {
            Ok(())
        } else {
            Err(UiError::csrf())
        }
    }

    /// The user's login name.
    pub fn name(&self) -> &str {
        match &self.actor {
            Actor::User { name, .. } => name,
            _ => "",
        }
    }

    /// Whether the user is at least a moderator.
    pub fn is_moderator(&self) -> bool {
        self.actor.at_least(baas_core::model::Role::Moderator)
    }

    /// Whether the user is an admin.
    pub fn is_admin(&self) -> bool {
        self.actor.at_least(baas_core::model::Role::Admin)
    }

    /// The power state of each listed machine that has a power adapter
    /// (see [`crate::api::machines::Power::states`]).
    pub async fn power_states(
        &self,
        machines: &[baas_core::model::Machine],
    ) -> std::collections::HashMap<baas_core::model::MachineId, baas_core::ports::PowerState> {
        match &self.power {
            Some(p) => p.states(machines).await,
            None => Default::default(),
        }
    }

    /// Rows for every machine the viewer may see, with their presence.
    pub async fn machine_rows(&self) -> Result<Vec<super::views::MachineRow>, UiError> {
        let machines = self.run(|b, a| b.list_machines(a)).await?;
        let states = self.power_states(&machines).await;
        self.run(move |b, a| super::pages::machine_rows(b, a, &machines, &states))
            .await
    }

    /// Runs one service call as this user on the blocking pool.
    pub async fn run<T, F>(&self, f: F) -> Result<T, UiError>
    where
        T: Send + 'static,
        F: FnOnce(&Baas, &Actor) -> baas_core::Result<T> + Send + 'static,
    {
        let baas = self.baas.clone();
        let actor = self.actor.clone();
        crate::auth::blocking(move || f(&baas, &actor))
            .await
            .map_err(UiError::from)
    }
}

#[rocket::async_trait]
impl<'r> FromRequest<'r> for Viewer {
    type Error = ();

    async fn from_request(req: &'r Request<'_>) -> Outcome<Self, ()> {
        let Outcome::Success(visitor) = req.guard::<Visitor>().await else {
            return Outcome::Error((Status::Unauthorized, ()));
        };
        let Some((user, stamp)) = visitor.data.user.clone() else {
            return Outcome::Error((Status::Unauthorized, ()));
        };
        let Some(baas) = req.rocket().state::<Baas>().cloned() else {
            return Outcome::Error((Status::InternalServerError, ()));
        };
        let b = baas.clone();
        match crate::auth::blocking(move || b.session_actor(user, &stamp)).await {
            Ok(actor) => Outcome::Success(Viewer {
                baas,
                actor,
                csrf: visitor.data.csrf,
                power: req.rocket().state::<crate::api::machines::Power>().cloned(),
            }),
            Err(_) => Outcome::Error((Status::Unauthorized, ())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_data_round_trips_and_rejects_garbage() {
        let anon = SessionData {
            csrf: "a".repeat(64),
            user: None,
            expires_ms: 0,
        };
        assert_eq!(SessionData::decode(&anon.encode()), Some(anon));
        let user = SessionData {
            csrf: "b".repeat(64),
            user: Some((UserId(uuid::Uuid::from_u128(5)), "0123456789abcdef".into())),
            expires_ms: 42,
        };
        assert_eq!(SessionData::decode(&user.encode()), Some(user));
        for bad in ["", "v2 x - - 0", "v1 short - - 0", "v1 x y z 0 extra"] {
            assert_eq!(SessionData::decode(bad), None, "{bad}");
        }
    }

    #[test]
    fn tokens_compare_exactly() {
        assert!(same_token("abc", "abc"));
        assert!(!same_token("abc", "abd"));
        assert!(!same_token("abc", "ab"));
        assert!(!same_token("", ""));
        assert_eq!(random_hex().len(), 64);
        assert_ne!(random_hex(), random_hex());
    }
}
