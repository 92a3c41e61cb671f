//! Domain types. They are not serialisable on purpose: every shell owns its
//! DTOs and converts explicitly, so the wire formats can change without
//! touching the core.

pub mod ids;
pub mod image;
pub mod job;
pub mod machine;
pub mod placement;
pub mod setup;
pub mod user;

pub use ids::*;
pub use image::*;
pub use job::*;
pub use machine::*;
pub use placement::*;
pub use setup::*;
pub use user::*;

/// Milliseconds since the Unix epoch, UTC. Provided by the `Clock` port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(pub i64);

impl Timestamp {
    /// Milliseconds since the epoch.
    pub fn millis(self) -> i64 {
        self.0
    }

    /// `self + ms`.
    pub fn plus_millis(self, ms: i64) -> Timestamp {
        Timestamp(self.0.saturating_add(ms))
    }
}

/// Checks a human-facing name: 1..=`max` characters, no control characters,
/// not only whitespace.
pub(crate) fn check_name(field: &str, value: &str, max: usize) -> crate::Result<()> {
    if value.trim().is_empty() {
        return Err(crate::Error::invalid(field, "must not be empty"));
    }
    if value.chars().count() > max {
        return Err(crate::Error::invalid(
            field,
            format!("must be at most {max} characters"),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(crate::Error::invalid(
            field,
            "must not contain control characters",
        ));
    }
    Ok(())
}
