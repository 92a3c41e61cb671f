//! A `multipart/form-data` upload body, parsed as `rocket-server`'s
//! `upload::open` does (multer; the first part that is not a `note` text
//! field is the image, a `note` field before it becomes the version's note,
//! at most 4096 bytes of UTF-8) and then imported. Invariants: parsing never
//! panics; whatever part is taken imports and reads back byte for byte; a
//! body parsed twice gives the same part.
#![no_main]

use baas_fuzz::{check_import, Lab};
use libfuzzer_sys::fuzz_target;

const MAX_TEXT_FIELD: usize = 4096;

/// What `upload::open` takes from a multipart body: the note and the file.
async fn parse(boundary: &str, body: &[u8]) -> Result<(Option<String>, Vec<u8>), String> {
    let mut multipart = multer::Multipart::with_reader(body, boundary.to_string());
    let mut note = None;
    loop {
        let Some(mut field) = multipart.next_field().await.map_err(|e| e.to_string())? else {
            return Err("no file part".into());
        };
        let is_note = field.name() == Some("note") && field.file_name().is_none();
        let mut bytes = Vec::new();
        while let Some(chunk) = field.chunk().await.map_err(|e| e.to_string())? {
            if is_note && bytes.len() + chunk.len() > MAX_TEXT_FIELD {
                return Err("note too long".into());
            }
            bytes.extend_from_slice(&chunk);
        }
        if !is_note {
            return Ok((note, bytes));
        }
        note = Some(String::from_utf8(bytes).map_err(|_| "note is not UTF-8".to_string())?);
    }
}

// Input: one byte n, n bytes of boundary, then the body.
fuzz_target!(|data: &[u8]| {
    let Some((&n, rest)) = data.split_first() else {
        return;
    };
    let n = usize::from(n);
    if n == 0 || n > 70 || rest.len() < n {
        return;
    }
    let Ok(boundary) = std::str::from_utf8(&rest[..n]) else {
        return;
    };
    let body = &rest[n..];
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let first = rt.block_on(parse(boundary, body));
    let second = rt.block_on(parse(boundary, body));
    assert_eq!(first, second, "multipart parsing is not deterministic");
    if let Ok((note, file)) = first {
        if let Some(n) = &note {
            assert!(n.len() <= MAX_TEXT_FIELD);
        }
        let lab = Lab::new();
        check_import(&lab, &file, note);
    }
});
