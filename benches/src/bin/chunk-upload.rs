//! `chunk-upload URL TOKEN IMAGE_ID FILE`: uploads FILE as the next version
//! of an image through the chunk-level protocol (manifest first, then only
//! the chunks the server lacks, then commit) and prints how many bytes went
//! over the wire. Used by `benches/server-compare.sh` to show that
//! re-uploading an unchanged image sends almost nothing.

use std::io::Read;

use baas_core::content::{is_zero, ChunkHash, FrameEncoder, Manifest, CHUNK_SIZE};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, base, token, image, file] = args.as_slice() else {
        return Err("usage: chunk-upload URL TOKEN IMAGE_ID FILE".into());
    };
    let auth = format!("Bearer {token}");
    let mut data = Vec::new();
    std::fs::File::open(file)?.read_to_end(&mut data)?;
    let chunks: Vec<&[u8]> = data.chunks(CHUNK_SIZE as usize).collect();
    let entries: Vec<Option<ChunkHash>> = chunks
        .iter()
        .map(|c| {
            if is_zero(c) {
                None
            } else {
                Some(ChunkHash::of(c))
            }
        })
        .collect();
    let by_hash: std::collections::HashMap<ChunkHash, usize> = entries
        .iter()
        .enumerate()
        .filter_map(|(i, h)| h.map(|h| (h, i)))
        .collect();
    let manifest = Manifest::new(data.len() as u64, CHUNK_SIZE, entries.clone())?;
    let encoded = manifest.encode();
    let mut sent = encoded.len() as u64;
    let mut resp = ureq::post(format!("{base}/api/v1/images/{image}/uploads"))
        .header("Authorization", &auth)
        .header("Content-Type", "application/octet-stream")
        .send(&encoded[..])?;
    let view: serde_json::Value = serde_json::from_str(&resp.body_mut().read_to_string()?)?;
    let upload = view["upload_id"]
        .as_str()
        .ok_or("no upload_id")?
        .to_string();
    let missing: Vec<ChunkHash> = view["missing"]
        .as_array()
        .ok_or("no missing list")?
        .iter()
        .filter_map(|h| h.as_str().and_then(|h| h.parse().ok()))
        .collect();
    let mut enc = FrameEncoder::new(3)?;
    for h in &missing {
        let chunk = chunks[*by_hash.get(h).ok_or("server asked for an unknown chunk")?];
        let frame = enc.encode(chunk)?;
        sent += frame.len() as u64;
        ureq::put(format!("{base}/api/v1/uploads/{upload}/chunks/{h}"))
            .header("Authorization", &auth)
            .header("Content-Type", "application/octet-stream")
            .send(&frame[..])?;
    }
    let mut resp = ureq::post(format!("{base}/api/v1/uploads/{upload}/commit"))
        .header("Authorization", &auth)
        .header("Content-Type", "application/json")
        .send("{}")?;
    let version: serde_json::Value = serde_json::from_str(&resp.body_mut().read_to_string()?)?;
    println!(
        "chunk-level upload: {} of {} bytes sent ({:.3}%), {} chunks missing, version {}",
        sent,
        data.len(),
        sent as f64 * 100.0 / data.len().max(1) as f64,
        missing.len(),
        version["number"]
            .as_u64()
            .or(version["version"]["number"].as_u64())
            .unwrap_or(0)
    );
    Ok(())
}
