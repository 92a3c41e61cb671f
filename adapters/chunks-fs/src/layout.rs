//! Names and paths of the on-disk layout: fan-out directories, chunk files,
//! the temp files of `put`s (in the fan-out directory they are renamed
//! within) and the chunks a sweep took out (in `tmp/`).

use std::hash::{BuildHasher, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use baas_core::content::ChunkHash;

/// The directory of chunks taken out by a sweep (and, before the temp
/// files moved into the fan-out directories, of `put`s' temp files).
pub(crate) const TMP_DIR: &str = "tmp";
/// Prefix of a temp file being written by `put`.
pub(crate) const PUT_PREFIX: &str = "put-";
/// Suffix of a temp file being written by `put`.
pub(crate) const PUT_SUFFIX: &str = ".tmp";
/// Prefix of a chunk a sweep has taken out of place: `gc-<hash>-<unique>`.
pub(crate) const GC_PREFIX: &str = "gc-";

const HEX: &[u8; 16] = b"0123456789abcdef";

fn nibble(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

/// The fan-out directory name of a hash's first byte: two lower-case hex
/// digits.
pub(crate) fn fanout_name(byte: u8) -> String {
    let mut s = String::with_capacity(2);
    s.push(char::from(HEX[usize::from(byte >> 4)]));
    s.push(char::from(HEX[usize::from(byte & 15)]));
    s
}

/// Parses a fan-out directory name; anything but two lower-case hex digits
/// is not one of ours.
pub(crate) fn parse_fanout_name(name: &str) -> Option<u8> {
    match name.as_bytes() {
        [hi, lo] => Some(nibble(*hi)? << 4 | nibble(*lo)?),
        _ => None,
    }
}

/// Parses a chunk file name: exactly 64 lower-case hex digits. Stricter
/// than `ChunkHash::from_str` on purpose, so that one chunk has exactly one
/// file name.
pub(crate) fn parse_chunk_name(name: &str) -> Option<ChunkHash> {
    let b = name.as_bytes();
    if b.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (o, pair) in out.iter_mut().zip(b.chunks_exact(2)) {
        *o = nibble(pair[0])? << 4 | nibble(pair[1])?;
    }
    Some(ChunkHash(out))
}

/// Whether `name` is that of a `put`'s temp file: `put-<unique>.tmp`.
/// Never a chunk name (those are 64 hex digits).
pub(crate) fn is_put_temp_name(name: &str) -> bool {
    name.starts_with(PUT_PREFIX) && name.ends_with(PUT_SUFFIX)
}

/// The hash named by a `gc-<hash>-<unique>` file in `tmp/`.
pub(crate) fn parse_gc_name(name: &str) -> Option<ChunkHash> {
    let rest = name.strip_prefix(GC_PREFIX)?;
    let (hex, tail) = (rest.get(..64)?, rest.get(64..)?);
    if !tail.starts_with('-') {
        return None;
    }
    parse_chunk_name(hex)
}

/// Paths of one store directory.
#[derive(Debug)]
pub(crate) struct Layout {
    root: PathBuf,
    tmp: PathBuf,
    /// `<pid>-<random>`: distinguishes this instance's temp names from
    /// those of other processes (and of other containers with the same pid).
    tag: String,
    seq: AtomicU64,
}

impl Layout {
    pub(crate) fn new(root: PathBuf) -> Layout {
        // RandomState is keyed from the OS's randomness; hashing the time
        // as well keeps two instances in one process apart.
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
        );
        let tag = format!("{}-{:016x}", std::process::id(), h.finish());
        Layout {
            tmp: root.join(TMP_DIR),
            root,
            tag,
            seq: AtomicU64::new(0),
        }
    }

    pub(crate) fn root(&self) -> &Path {
        &self.root
    }

    pub(crate) fn tmp(&self) -> &Path {
        &self.tmp
    }

    pub(crate) fn fanout_dir(&self, byte: u8) -> PathBuf {
        self.root.join(fanout_name(byte))
    }

    pub(crate) fn chunk_path(&self, hash: &ChunkHash) -> PathBuf {
        let hex = hash.to_hex();
        let mut p = self.root.join(&hex[..2]);
        p.push(hex);
        p
    }

    fn next_unique(&self) -> String {
        format!("{}-{}", self.tag, self.seq.fetch_add(1, Ordering::Relaxed))
    }

    /// A fresh temp path for a `put` of a chunk whose hash starts with
    /// `byte` (created with `create_new`, so a clash is an error, never an
    /// overwrite). It lies in the chunk's own fan-out directory: the rename
    /// into place then stays within one directory (no filesystem-wide
    /// rename lock), and concurrent `put`s create their files in 256
    /// directories instead of contending for one.
    pub(crate) fn put_temp_path(&self, byte: u8) -> PathBuf {
        self.fanout_dir(byte)
            .join(format!("{PUT_PREFIX}{}{PUT_SUFFIX}", self.next_unique()))
    }

    /// A fresh path for a chunk a sweep takes out of place.
    pub(crate) fn gc_path(&self, hash: &ChunkHash) -> PathBuf {
        self.tmp.join(format!(
            "{GC_PREFIX}{}-{}",
            hash.to_hex(),
            self.next_unique()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_reject_strangers() {
        let h = ChunkHash::of(b"hello");
        assert_eq!(parse_chunk_name(&h.to_hex()), Some(h));
        assert_eq!(parse_chunk_name(&h.to_hex().to_uppercase()), None);
        assert_eq!(parse_chunk_name(&h.to_hex()[1..]), None);
        assert_eq!(parse_chunk_name(&format!("{}.tmp", h.to_hex())), None);
        assert_eq!(parse_chunk_name(""), None);
        for b in [0u8, 9, 10, 0xab, 0xff] {
            assert_eq!(parse_fanout_name(&fanout_name(b)), Some(b));
        }
        assert_eq!(parse_fanout_name("tmp"), None);
        assert_eq!(parse_fanout_name("AB"), None);
        assert_eq!(parse_fanout_name("g0"), None);
    }

    #[test]
    fn temp_names_are_unique_and_gc_names_parse() {
        let layout = Layout::new(PathBuf::from("/nowhere"));
        let other = Layout::new(PathBuf::from("/nowhere"));
        assert_ne!(layout.put_temp_path(7), layout.put_temp_path(7));
        assert_ne!(layout.put_temp_path(7), other.put_temp_path(7));
        let temp = layout.put_temp_path(0xab);
        assert_eq!(temp.parent(), Some(layout.fanout_dir(0xab).as_path()));
        let name = temp.file_name().and_then(|n| n.to_str()).expect("name");
        assert!(is_put_temp_name(name), "{name}");
        assert_eq!(parse_chunk_name(name), None);
        let h = ChunkHash::of(b"x");
        let gc = layout.gc_path(&h);
        let name = gc.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        assert_eq!(parse_gc_name(name), Some(h));
        assert_eq!(parse_gc_name("gc-1234"), None);
        assert_eq!(parse_gc_name(&format!("gc-{}", h.to_hex())), None);
        assert!(layout.chunk_path(&h).starts_with(layout.fanout_dir(h.0[0])));
    }
}
