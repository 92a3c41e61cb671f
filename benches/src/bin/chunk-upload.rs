//! `chunk-upload URL TOKEN IMAGE_ID FILE`: uploads FILE as the next version
//! of an image the way `baas upload` does (the client crate's
//! `RestClient::upload`: hash the file here, send only the chunks the
//! server lacks, commit), and prints how many bytes of chunks it sent
//! (before compression; the manifest is not counted). `benches/server-compare.sh` uses it to show that
//! re-uploading an unchanged image sends almost nothing; `compare.py`
//! uploads the storage row's versions with it.

use baas_client_http::{RestClient, RestConfig};
use baas_core::client::{BaasClient, Transfer};
use baas_core::model::ImageId;
use baas_core::services::ImportOptions;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, base, token, image, file] = args.as_slice() else {
        return Err("usage: chunk-upload URL TOKEN IMAGE_ID FILE".into());
    };
    let image: ImageId = image.parse()?;
    let client = RestClient::new(base, token, RestConfig::default())?;
    let mut source = std::fs::File::open(file)?;
    let size = source.metadata()?.len();
    let (mut sent, mut missing) = (0u64, 0u64);
    let version = client.upload(
        image,
        &mut source,
        ImportOptions::default(),
        &mut |t: Transfer| {
            if t.phase == "send" {
                sent = t.done;
                missing = t.total;
            }
        },
    )?;
    println!(
        "chunk-level upload: {sent} of {size} bytes sent as chunks ({:.3}%; the server lacked {missing}), version {}",
        sent as f64 * 100.0 / size.max(1) as f64,
        version.number
    );
    Ok(())
}
