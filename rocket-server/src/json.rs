//! JSON request bodies: [`Json`] for the clean API (exact snake_case keys,
//! unknown keys rejected) and [`LaxJson`] for the original's routes (keys
//! matched case-insensitively and unknown keys ignored, as Go's
//! `encoding/json` did). Both answer bad input with the error envelope:
//! `malformed_json` for a body that is not JSON, `invalid_input` with the
//! path of the offending field for wrong types or missing fields, and
//! `too_large` for a body over the limit.

use std::sync::Arc;

use rocket::data::{self, Data, FromData, ToByteUnit};
use rocket::http::Status;
use rocket::request::Request;
use serde::de::DeserializeOwned;
use serde_json::error::Category;
use serde_json::Value;

use crate::error::{remember, ApiError};
use crate::telemetry::Metrics;

/// Largest JSON body accepted.
pub const JSON_LIMIT: u64 = 1 << 20;

/// A JSON body for the clean API.
#[derive(Debug)]
pub struct Json<T>(pub T);

/// A JSON body for the original's routes: keys match case-insensitively.
#[derive(Debug)]
pub struct LaxJson<T>(pub T);

/// A JSON response (`Content-Type: application/json`).
pub use rocket::serde::json::Json as Out;

/// A `201 Created` JSON response.
pub type Created<T> = (Status, Out<T>);

/// Wraps a value as a `201 Created` JSON response.
pub fn created<T>(value: T) -> Created<T> {
    (Status::Created, rocket::serde::json::Json(value))
}

/// Reads at most `limit` bytes of body; more is `413` (after reading and
/// dropping up to [`crate::upload::DRAIN`] more bytes, so that the client
/// reads the answer rather than a reset connection).
pub async fn read_body(
    metrics: Option<&Metrics>,
    data: Data<'_>,
    limit: u64,
) -> Result<Vec<u8>, ApiError> {
    use rocket::tokio::io::AsyncReadExt;
    let mut stream = data.open(limit.saturating_add(crate::upload::DRAIN).bytes());
    let mut body = Vec::new();
    let read = rocket::tokio::time::timeout(
        crate::upload::BODY_IDLE_TIMEOUT,
        (&mut stream)
            .take(limit.saturating_add(1))
            .read_to_end(&mut body),
    )
    .await
    .unwrap_or_else(|_| {
        Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "the body did not arrive in time",
        ))
    });
    let mut total = body.len() as u64;
    let result = match read {
        Err(e) => Err(ApiError::from(baas_core::Error::invalid(
            "body",
            format!("reading the body failed: {e}"),
        ))),
        Ok(_) if total > limit => {
            let mut scratch = vec![0u8; 64 * 1024];
            while let Ok(n) = stream.read(&mut scratch).await {
                if n == 0 {
                    break;
                }
                total += n as u64;
            }
            Err(ApiError::from(baas_core::Error::too_large(format!(
                "the body is larger than the limit of {limit} bytes"
            ))))
        }
        Ok(_) => Ok(body),
    };
    if let Some(m) = metrics {
        m.add_in(total);
    }
    result
}

fn classify(e: serde_path_to_error::Error<serde_json::Error>) -> ApiError {
    let path = e.path().to_string();
    let inner = e.into_inner();
    match inner.classify() {
        Category::Syntax | Category::Eof | Category::Io => {
            ApiError::malformed_json(format!("the body is not valid JSON: {inner}"))
        }
        Category::Data => {
            let err = ApiError::new(
                Status::BadRequest,
                "invalid_input",
                if path == "." {
                    format!("{inner}")
                } else {
                    format!("{path}: {inner}")
                },
            );
            if path == "." {
                err
            } else {
                err.with_field(path)
            }
        }
    }
}

/// Parses `bytes` as `T`, exactly.
pub fn parse_strict<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::malformed_json(
            "the body is empty; expected a JSON object",
        ));
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(classify)?;
    de.end()
        .map_err(|e| ApiError::malformed_json(format!("the body is not valid JSON: {e}")))?;
    Ok(value)
}

fn lower_keys(v: Value) -> Value {
    match v {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), lower_keys(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.into_iter().map(lower_keys).collect()),
        other => other,
    }
}

/// Parses `bytes` as `T` after lower-casing every object key (`T`'s fields
/// are spelled in lower case).
pub fn parse_lax<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let value: Value = parse_strict(bytes)?;
    serde_path_to_error::deserialize(lower_keys(value)).map_err(classify)
}

async fn from_data<'r, T>(
    req: &'r Request<'_>,
    data: Data<'r>,
    parse: fn(&[u8]) -> Result<T, ApiError>,
) -> data::Outcome<'r, T, ApiError> {
    let metrics = req.rocket().state::<Arc<Metrics>>().map(|m| &**m);
    let result = match read_body(metrics, data, JSON_LIMIT).await {
        Ok(bytes) => parse(&bytes),
        Err(e) => Err(e),
    };
    match result {
        Ok(v) => data::Outcome::Success(v),
        Err(e) => data::Outcome::Error((remember(req, e.clone()), e)),
    }
}

#[rocket::async_trait]
impl<'r, T: DeserializeOwned + Send + 'static> FromData<'r> for Json<T> {
    type Error = ApiError;

    async fn from_data(req: &'r Request<'_>, data: Data<'r>) -> data::Outcome<'r, Self> {
        from_data(req, data, parse_strict::<T>).await.map(Json)
    }
}

#[rocket::async_trait]
impl<'r, T: DeserializeOwned + Send + 'static> FromData<'r> for LaxJson<T> {
    type Error = ApiError;

    async fn from_data(req: &'r Request<'_>, data: Data<'r>) -> data::Outcome<'r, Self> {
        from_data(req, data, parse_lax::<T>).await.map(LaxJson)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Strict {
        #[allow(dead_code)]
        name: String,
        #[allow(dead_code)]
        size: u64,
    }

    #[derive(Debug, Deserialize)]
    struct Lax {
        name: String,
        diskuuid: Option<String>,
    }

    #[test]
    fn strict_parsing_names_the_field_and_classifies() {
        let e = parse_strict::<Strict>(br#"{"name": "x", "size": "big"}"#).expect_err("type");
        assert_eq!(e.code(), "invalid_input");
        assert_eq!(e.envelope().error.field.as_deref(), Some("size"));
        let e = parse_strict::<Strict>(br#"{"name": "x""#).expect_err("syntax");
        assert_eq!(e.code(), "malformed_json");
        let e = parse_strict::<Strict>(b"").expect_err("empty");
        assert_eq!(e.code(), "malformed_json");
        let e =
            parse_strict::<Strict>(br#"{"name": "x", "size": 1, "sise": 2}"#).expect_err("unknown");
        assert_eq!(e.code(), "invalid_input");
        let e = parse_strict::<Strict>(br#"{"name": "x", "size": 1} 7"#).expect_err("trailing");
        assert_eq!(e.code(), "malformed_json");
    }

    #[test]
    fn lax_parsing_ignores_case_and_unknown_keys() {
        let v: Lax =
            parse_lax(br#"{"Name": "a", "DiskUUID": "/dev/sda", "other": 1}"#).expect("lax");
        assert_eq!(v.name, "a");
        assert_eq!(v.diskuuid.as_deref(), Some("/dev/sda"));
    }
}
