//! Authentication: the [`Caller`] request guard turns
//! `Authorization: Bearer <token>` into the core's [`Actor`]. Every route
//! except `/healthz` takes it. There is no other way in: no `type: system`
//! header, no cookies.
//!
//! The guard only authenticates; the services decide what the actor may do.

use baas_core::{Actor, Baas, Error};
use rocket::request::{FromRequest, Outcome, Request};

use crate::error::{remember, ApiError};
use crate::ratelimit::AuthLimiter;

/// The authenticated caller, with the services to call on its behalf.
#[derive(Debug, Clone)]
pub struct Caller {
    baas: Baas,
    actor: Actor,
    /// The bearer secret, to check again during a long poll.
    token: String,
}

impl Caller {
    /// Who is calling.
    pub fn actor(&self) -> &Actor {
        &self.actor
    }

    /// Runs one service call for this caller on the blocking pool (the core
    /// is synchronous: diesel and the filesystem) and maps its error.
    pub async fn run<T, F>(&self, f: F) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: FnOnce(&Baas, &Actor) -> baas_core::Result<T> + Send + 'static,
    {
        let baas = self.baas.clone();
        let actor = self.actor.clone();
        blocking(move || f(&baas, &actor)).await
    }

    /// [`Caller::run`], authenticating the credential again first: for
    /// the calls of a long poll, whose credential may be revoked while it
    /// waits (a machine's next boot revokes its earlier boot credentials).
    pub async fn run_current<T, F>(&self, f: F) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: FnOnce(&Baas, &Actor) -> baas_core::Result<T> + Send + 'static,
    {
        let baas = self.baas.clone();
        let token = self.token.clone();
        blocking(move || {
            let actor = baas.authenticate(&token)?;
            f(&baas, &actor)
        })
        .await
    }
}

/// Runs `f` on the blocking pool and maps its error.
pub async fn blocking<T, F>(f: F) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: FnOnce() -> baas_core::Result<T> + Send + 'static,
{
    match rocket::tokio::task::spawn_blocking(f).await {
        Ok(r) => r.map_err(ApiError::from),
        Err(e) => Err(ApiError::internal(format!("a service call panicked: {e}"))),
    }
}

/// The bearer token of a request, if it has a well-formed one.
fn bearer<'r>(req: &'r Request<'_>) -> Result<&'r str, Error> {
    let header = req
        .headers()
        .get_one("Authorization")
        .ok_or_else(|| Error::unauthenticated("missing Authorization: Bearer <token> header"))?;
    let (scheme, token) = header.trim().split_once(' ').ok_or_else(|| {
        Error::unauthenticated("the Authorization header must be \"Bearer <token>\"")
    })?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(Error::unauthenticated(
            "the Authorization header must be \"Bearer <token>\"",
        ));
    }
    Ok(token.trim())
}

#[rocket::async_trait]
impl<'r> FromRequest<'r> for Caller {
    type Error = ApiError;

    async fn from_request(req: &'r Request<'_>) -> Outcome<Self, ApiError> {
        let Some(baas) = req.rocket().state::<Baas>() else {
            let err = ApiError::internal("the BAAS services are not managed state");
            return Outcome::Error((remember(req, err.clone()), err));
        };
        let baas = baas.clone();
        let token = match bearer(req) {
            Ok(t) => t.to_string(),
            Err(e) => {
                let err = ApiError::from(e);
                return Outcome::Error((remember(req, err.clone()), err));
            }
        };
        let limiter = req.rocket().state::<AuthLimiter>();
        let ip = req.remote().map(|a| a.ip());
        if let (Some(l), Some(ip)) = (limiter, ip) {
            if let Err(err) = l.admit(ip) {
                return Outcome::Error((remember(req, err.clone()), err));
            }
        }
        // A credential authenticated a moment ago (an agent's polls) needs
        // no trip to the blocking pool.
        if let Some(actor) = baas.authenticate_cached(&token) {
            return Outcome::Success(Caller { baas, actor, token });
        }
        let (b, secret) = (baas.clone(), token.clone());
        match blocking(move || b.authenticate(&secret)).await {
            Ok(actor) => Outcome::Success(Caller { baas, actor, token }),
            Err(err) => {
                if let (Some(l), Some(ip), 401) = (limiter, ip, err.status().code) {
                    l.failed(ip);
                }
                Outcome::Error((remember(req, err.clone()), err))
            }
        }
    }
}
