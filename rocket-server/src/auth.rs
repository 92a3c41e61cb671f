//! Authentication: the [`Caller`] request guard turns
//! `Authorization: Bearer <token>` into the core's [`Actor`]. Every route
//! except `/healthz` takes it. There is no other way in: no `type: system`
//! header, no cookies.
//!
//! The guard only authenticates; the services decide what the actor may do.

use std::sync::OnceLock;

use baas_core::{Actor, Baas, Error};
use rocket::request::{FromRequest, Outcome, Request};
use rocket::tokio::sync::Semaphore;

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

    /// [`Caller::run`] for a call that lasts as long as a client keeps
    /// sending (an upload's import): outside the limit on service calls,
    /// so slow clients cannot hold every permit.
    pub async fn run_long<T, F>(&self, f: F) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: FnOnce(&Baas, &Actor) -> baas_core::Result<T> + Send + 'static,
    {
        let baas = self.baas.clone();
        let actor = self.actor.clone();
        on_blocking_pool(move || f(&baas, &actor)).await
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

/// Service calls that may run at once when nothing set the limit.
pub const DEFAULT_SERVICE_CALLS: usize = 16;

/// The limit and the permits.
static SERVICE_CALLS: OnceLock<(usize, Semaphore)> = OnceLock::new();

/// Sets how many service calls run at once on the blocking pool (about
/// the database pool's size: more would only wait there, each holding a
/// thread). The first setting in a process holds; servers built later in
/// the same process (tests) share it.
pub fn limit_service_calls(n: usize) {
    let n = n.max(1);
    let _ = SERVICE_CALLS.set((n, Semaphore::new(n)));
}

fn service_calls() -> &'static (usize, Semaphore) {
    SERVICE_CALLS.get_or_init(|| (DEFAULT_SERVICE_CALLS, Semaphore::new(DEFAULT_SERVICE_CALLS)))
}

/// Runs `f` on the blocking pool and maps its error. At most
/// [`limit_service_calls`] such calls run at once; the others wait for a
/// turn here, in arrival order and without a thread, instead of as
/// threads parked on the database pool (500 polling agents filled
/// Rocket's 512 blocking threads that way, and some calls waited past the
/// pool's timeout: 503).
pub async fn blocking<T, F>(f: F) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: FnOnce() -> baas_core::Result<T> + Send + 'static,
{
    let _turn = service_calls()
        .1
        .acquire()
        .await
        .map_err(|_| ApiError::internal("the service-call limit was closed"))?;
    on_blocking_pool(f).await
}

/// Runs `f` on the blocking pool, outside the limit, and maps its error.
async fn on_blocking_pool<T, F>(f: F) -> Result<T, ApiError>
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    #[test]
    fn service_calls_run_at_most_the_limit_at_once_and_the_rest_wait() {
        let limit = service_calls().0;
        let rt = rocket::tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .max_blocking_threads(4 * limit)
            .build()
            .expect("runtime");
        let (now, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let done = rt.block_on(async {
            let calls: Vec<_> = (0..3 * limit)
                .map(|_| {
                    let (now, most) = (now.clone(), most.clone());
                    rocket::tokio::spawn(blocking(move || {
                        let running = now.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(running, Ordering::SeqCst);
                        std::thread::sleep(std::time::Duration::from_millis(20));
                        now.fetch_sub(1, Ordering::SeqCst);
                        Ok(())
                    }))
                })
                .collect();
            let mut done = 0;
            for c in calls {
                c.await.expect("joined").expect("call");
                done += 1;
            }
            done
        });
        assert_eq!(done, 3 * limit, "every call ran");
        let most = most.load(Ordering::SeqCst);
        assert!(
            most <= limit,
            "{most} calls ran at once, the limit is {limit}"
        );
    }
}
