//! Server settings on diesel: one text value per key. `init` inserts unless
//! the key exists; two servers starting at once on PostgreSQL may both try,
//! and the loser of the primary-key race reads the winner's value.

use baas_core::Result;
use diesel::prelude::*;

use crate::db::DbConnection;
use crate::error::{duplicate, TxError};
use crate::schema::settings;

type Tx<T> = Result<T, TxError>;

/// The primary key, both spellings.
const KEY: [&str; 2] = ["settings.key", "settings_pkey"];

pub(crate) fn get(c: &mut DbConnection, key: &str) -> Tx<Option<String>> {
    Ok(settings::table
        .filter(settings::key.eq(key))
        .select(settings::value)
        .first(c)
        .optional()?)
}

pub(crate) fn set(c: &mut DbConnection, key: &str, value: &str) -> Tx<()> {
    let n = diesel::update(settings::table.filter(settings::key.eq(key)))
        .set(settings::value.eq(value))
        .execute(c)?;
    if n == 0 {
        diesel::insert_into(settings::table)
            .values((settings::key.eq(key), settings::value.eq(value)))
            .execute(c)
            .map_err(|e| {
                if duplicate(&e, &KEY) {
                    baas_core::Error::conflict(format!(
                        "setting {key} was changed concurrently: try again"
                    ))
                    .into()
                } else {
                    TxError::from(e)
                }
            })?;
    }
    Ok(())
}

pub(crate) fn init(c: &mut DbConnection, key: &str, value: &str) -> Tx<String> {
    if let Some(v) = get(c, key)? {
        return Ok(v);
    }
    match diesel::insert_into(settings::table)
        .values((settings::key.eq(key), settings::value.eq(value)))
        .execute(c)
    {
        Ok(_) => Ok(value.to_string()),
        Err(e) if duplicate(&e, &KEY) => Err(baas_core::Error::conflict(format!(
            "setting {key} was initialised concurrently"
        ))
        .into()),
        Err(e) => Err(e.into()),
    }
}
