//! Rate limiting of failed authentication: a client (by socket address,
//! never by a header it could forge) that presents bad credentials faster
//! than [`AuthLimiter::BURST`] at once and [`AuthLimiter::PER_MINUTE`]
//! sustained is answered `429 rate_limited` for every credential, good or
//! bad, until its quota refills, so guessing tokens learns nothing more.
//! Each block is logged. Requests with a good token never use up quota:
//! a lab's hundreds of agents behind one address are not slowed down.
//!
//! The rate arithmetic is `governor`'s GCRA over a keyed store; the only
//! state kept here is when each blocked address may try again.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use rocket::http::Status;

use crate::error::ApiError;

/// Failed authentications per client address, and who is blocked.
#[derive(Debug)]
pub struct AuthLimiter {
    failures: DefaultKeyedRateLimiter<IpAddr>,
    clock: DefaultClock,
    blocked: Mutex<HashMap<IpAddr, Instant>>,
}

impl Default for AuthLimiter {
    fn default() -> Self {
        AuthLimiter::new(AuthLimiter::BURST, AuthLimiter::PER_MINUTE)
    }
}

impl AuthLimiter {
    /// Bad credentials one address may present at once.
    pub const BURST: u32 = 20;
    /// Bad credentials one address may present per minute after that.
    pub const PER_MINUTE: u32 = 30;

    /// A limiter allowing `burst` failures at once, `per_minute` sustained.
    pub fn new(burst: u32, per_minute: u32) -> AuthLimiter {
        let quota =
            Quota::per_minute(NonZeroU32::new(per_minute.max(1)).unwrap_or(NonZeroU32::MIN))
                .allow_burst(NonZeroU32::new(burst.max(1)).unwrap_or(NonZeroU32::MIN));
        let clock = DefaultClock::default();
        AuthLimiter {
            failures: RateLimiter::dashmap_with_clock(quota, clock.clone()),
            clock,
            blocked: Mutex::new(HashMap::new()),
        }
    }

    /// Refuses a client that is blocked, before its credential is checked.
    pub fn admit(&self, ip: IpAddr) -> Result<(), ApiError> {
        let mut blocked = self.blocked.lock().unwrap_or_else(|e| e.into_inner());
        match blocked.get(&ip) {
            Some(until) if *until > Instant::now() => Err(too_many(*until)),
            Some(_) => {
                blocked.remove(&ip);
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// Counts a failed authentication; blocks the client when it is over
    /// its quota.
    pub fn failed(&self, ip: IpAddr) {
        if let Err(not_until) = self.failures.check_key(&ip) {
            let wait = not_until.wait_time_from(self.clock.now());
            let until = Instant::now() + wait.max(Duration::from_secs(1));
            tracing::warn!(%ip, wait_ms = wait.as_millis() as u64,
                "too many failed authentications: blocking the client");
            let mut blocked = self.blocked.lock().unwrap_or_else(|e| e.into_inner());
            if blocked.len() > 100_000 {
                let now = Instant::now();
                blocked.retain(|_, t| *t > now);
            }
            blocked.insert(ip, until);
            self.failures.retain_recent();
        }
    }
}

fn too_many(until: Instant) -> ApiError {
    let secs = until.saturating_duration_since(Instant::now()).as_secs() + 1;
    ApiError::new(
        Status::TooManyRequests,
        "rate_limited",
        format!("too many failed authentications from this address; try again in {secs} s"),
    )
}
