//! The clean resource API under `/api/v1/`. Each handler parses its input
//! into core types, calls one service through [`crate::auth::Caller::run`]
//! (on the blocking pool) and maps the result to a DTO.

use std::str::FromStr;

use baas_core::model::{MacAddress, MachineId, UserId};
use baas_core::{Actor, Baas, Error};
use rocket::http::Status;
use rocket::Route;

use crate::error::ApiError;

pub mod admin;
pub mod agent;
pub mod boot;
pub mod images;
pub mod jobs;
pub mod machines;
pub mod setups;
pub mod uploads;
pub mod users;

/// Every route of the clean API, to mount at `/api/v1`.
pub fn routes() -> Vec<Route> {
    rocket::routes![
        users::list_users,
        users::create_user,
        users::get_user,
        users::update_user,
        users::delete_user,
        users::list_tokens,
        users::create_token,
        users::revoke_token,
        images::list_images,
        images::create_image,
        images::get_image,
        images::update_image,
        images::delete_image,
        images::list_versions,
        images::upload_version,
        images::get_version,
        images::delete_version,
        images::download_version,
        images::get_manifest,
        uploads::begin_upload,
        uploads::upload_missing,
        uploads::upload_chunk,
        uploads::upload_chunks,
        uploads::commit_upload,
        uploads::abort_upload,
        setups::list_setups,
        setups::create_setup,
        setups::get_setup,
        setups::update_setup,
        setups::delete_setup,
        machines::list_machines,
        machines::register_machine,
        machines::get_machine,
        machines::update_machine,
        machines::machine_queue,
        machines::enqueue_job,
        machines::accept_machine,
        machines::retire_machine,
        machines::set_boot_config,
        machines::power_machine,
        machines::machine_events,
        jobs::list_jobs,
        jobs::get_job,
        jobs::job_events,
        jobs::cancel_job,
        jobs::release_job,
        jobs::place_job,
        jobs::placement,
        jobs::list_placements,
        jobs::get_placement,
        jobs::cancel_placement,
        admin::collect_garbage,
        admin::storage_usage,
        admin::get_settings,
        admin::put_settings,
        crate::openapi::openapi_json,
    ]
}

/// Parses a path or query value with the core's parser (`Invalid` names
/// the field).
pub fn parse<T: FromStr<Err = Error>>(s: &str) -> Result<T, ApiError> {
    s.parse::<T>().map_err(ApiError::from)
}

/// `me` or a user id.
pub fn user_ref(actor: &Actor, s: &str) -> Result<UserId, ApiError> {
    if s == "me" {
        return actor.user_id().ok_or_else(|| {
            ApiError::from(Error::forbidden(
                "this credential does not belong to a user",
            ))
        });
    }
    parse(s)
}

/// A machine key from a path: its id, or its MAC address.
#[derive(Debug, Clone, Copy)]
pub enum MachineKey {
    /// By id.
    Id(MachineId),
    /// By MAC.
    Mac(MacAddress),
}

impl MachineKey {
    /// Parses a machine id or a MAC address.
    pub fn parse(s: &str) -> Result<MachineKey, ApiError> {
        if let Ok(id) = s.parse::<MachineId>() {
            return Ok(MachineKey::Id(id));
        }
        s.parse::<MacAddress>().map(MachineKey::Mac).map_err(|_| {
            ApiError::from(Error::invalid(
                "machine",
                format!(
                    "{s:?} is neither a machine id (UUID) nor a MAC address like 52:54:00:12:34:56"
                ),
            ))
        })
    }

    /// The machine's id (looking a MAC up first).
    pub fn resolve(self, baas: &Baas, actor: &Actor) -> baas_core::Result<MachineId> {
        match self {
            MachineKey::Id(id) => Ok(id),
            MachineKey::Mac(mac) => Ok(baas.get_machine_by_mac(actor, mac)?.id),
        }
    }
}

/// `204 No Content`.
pub fn no_content() -> Status {
    Status::NoContent
}
