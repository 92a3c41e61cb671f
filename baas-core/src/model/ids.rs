//! Typed identifiers, so an image id can never be passed where a job id is
//! expected.

use std::fmt;
use std::str::FromStr;

use uuid::Uuid;

use crate::Error;

macro_rules! typed_id {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(pub Uuid);

        impl $name {
            /// The raw UUID.
            pub fn uuid(self) -> Uuid {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.hyphenated().fmt(f)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!($what, "({})"), self.0.hyphenated())
            }
        }

        impl FromStr for $name {
            type Err = Error;
            fn from_str(s: &str) -> Result<Self, Error> {
                Uuid::parse_str(s.trim())
                    .map($name)
                    .map_err(|_| Error::invalid(concat!($what, "_id"), format!("{s:?} is not a UUID")))
            }
        }
    };
}

typed_id!(
    /// A user.
    UserId, "user"
);
typed_id!(
    /// An API token (not its secret).
    TokenId, "token"
);
typed_id!(
    /// An image.
    ImageId, "image"
);
typed_id!(
    /// A setup.
    SetupId, "setup"
);
typed_id!(
    /// A machine.
    MachineId, "machine"
);
typed_id!(
    /// A job in a machine's boot queue.
    JobId, "job"
);
typed_id!(
    /// An upload session (a resumable, chunk-level import in progress).
    UploadId, "upload"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_hyphenated() {
        let s = "67e55044-10b1-426f-9247-bb680e5fe0c8";
        let id: ImageId = s.parse().expect("valid uuid");
        assert_eq!(id.to_string(), s);
        let err = "../etc/passwd".parse::<ImageId>().expect_err("not a uuid");
        assert_eq!(err.field(), Some("image_id"));
    }
}
