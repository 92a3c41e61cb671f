//! The BAAS chunk store on a local (or shared) filesystem directory.
//!
//! [`FsChunkStore`] keeps one file per chunk frame:
//!
//! ```text
//! <dir>/tmp/                      chunks a sweep took out (gc-<hash>-<unique>)
//! <dir>/<hh>/<64 hex digits>      a chunk frame; <hh> is the first byte of its hash
//! <dir>/<hh>/put-<unique>.tmp     a put in progress (or left by a crash) of a chunk in <hh>
//! ```
//!
//! A put's temp file lies in its chunk's own fan-out directory, so the
//! rename into place stays within one directory and concurrent puts create
//! their files in 256 directories rather than in one.
//!
//! The 256 fan-out directories are created lazily. A chunk file's mtime is
//! its timestamp (see `baas_core::ports::ChunkStore`).
//!
//! Several processes may share one directory (several servers on one
//! volume), so nothing here relies on in-process locks for correctness.
//! Every step that others can observe is one atomic filesystem operation:
//!
//! - `put` writes a uniquely named temp file (created with `O_EXCL`),
//!   fsyncs it and renames it into place, so a chunk is never visible
//!   partially written. Renaming over an existing copy is harmless: every
//!   copy decodes to the same bytes.
//! - `sweep` renames a doomed chunk out of place *before* it looks at the
//!   mtime a last time, and puts it back if it was touched meanwhile.
//! - `touch` sets the mtime through an open handle, then checks that the
//!   file it touched is still the one under the chunk's name. Together with
//!   the sweep's order this means: if `touch` returns `true`, the chunk is
//!   kept; if the sweep removes it, `touch` returns `false` and the importer
//!   writes the chunk afresh.
//!
//! Every server sharing a directory must run as the same user (setting an
//! explicit mtime requires owning the file) and, since mtimes are compared
//! with the core's clock, have a reasonably synchronised clock; the core's
//! `gc_margin_ms` absorbs small skews.
//!
//! Architecture invariant: this crate is the only one that knows chunks
//! live in files; nothing filesystem-typed crosses the port.

mod layout;
mod store;
mod sweep;
mod time;

pub use store::FsChunkStore;
