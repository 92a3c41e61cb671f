//! The pure core of BAAS (Bare Metal as a Service): domain types, the ports
//! the outside world plugs into, and the services (use cases) every shell
//! calls.
//!
//! Rules of this crate:
//! - It does no I/O and depends on no database, web, Python, mmap or HTTP
//!   crate. Storage, chunks, time, randomness, disks and power come in
//!   through the traits in [`ports`]; a tidy test checks the dependency tree.
//! - Every authorization decision is made here, in [`services`], for every
//!   call: shells authenticate a caller into an [`services::Actor`] and pass
//!   it along; they never decide who may do what.
//! - One error type, [`Error`], grouped by remedy; shells map it once.
//! - Domain types are not serialisable; shells own their DTOs.

pub mod client;
pub mod content;
pub mod delta;
pub mod error;
pub mod flashing;
pub mod model;
pub mod ports;
pub mod services;

#[cfg(feature = "conformance")]
pub mod conformance;

pub use error::{Error, ErrorKind, Result};
pub use services::{Actor, Baas, Config};
