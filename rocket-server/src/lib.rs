//! The BAAS REST API on Rocket: a thin shell over `baas-core`'s services.
//!
//! [`build`] is the one function that turns a [`Baas`] and [`Settings`] into
//! a Rocket application; `main.rs` (through [`cli`]) and every test call it.
//! Handlers parse input into core types, call one service on the blocking
//! pool (the core is synchronous), and map the result to a DTO; errors map
//! to HTTP once, in [`error::ApiError`].
//!
//! Architecture invariant: only this crate knows HTTP status codes; it
//! decides nothing about who may do what (the services do).

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use baas_core::Baas;
use rocket::config::{LogLevel, Shutdown};
use rocket::{Build, Config, Rocket};

pub mod api;
pub mod auth;
pub mod cli;
pub mod compat;
pub mod download;
pub mod dto;
pub mod error;
pub mod json;
pub mod openapi;
pub mod ops;
pub mod ratelimit;
pub mod telemetry;
pub mod ui;
pub mod units;
pub mod upload;

pub use telemetry::Metrics;

/// How the server runs (everything that is not the store).
#[derive(Debug, Clone)]
pub struct Settings {
    /// Address to listen on.
    pub address: IpAddr,
    /// Port to listen on; 0 picks a free one (tests).
    pub port: u16,
    /// Largest upload body (content bytes) one request may send.
    pub max_upload_bytes: u64,
    /// Declared size of images created through the original's
    /// `POST /user/{name}/image` when the body gives none.
    pub compat_image_size: u64,
    /// Whether Ctrl-C and SIGTERM shut the server down gracefully (off in
    /// tests, where many servers share one process).
    pub handle_signals: bool,
    /// The base URL machines reach the server at, for boot scripts;
    /// the `Host` header of each boot request when absent.
    pub public_url: Option<String>,
    /// Where the installed management OS is (`vmlinuz`, `initrd.gz`);
    /// `<data-dir>/mos` for `baas-server`.
    pub mos_dir: Option<std::path::PathBuf>,
    /// Kernel arguments of the management OS besides `baas.*`.
    pub mos_cmdline: String,
    /// How often the server applies due power cycles; never when absent.
    pub power_every: Option<std::time::Duration>,
    /// Service calls that run at once on the blocking pool (see
    /// [`auth::limit_service_calls`]); `baas-server` uses twice its
    /// database pool.
    pub service_calls: usize,
    /// The web UI's session-cookie key (`<data-dir>/session-key` for
    /// `baas-server`, see [`ui::SessionKey::load_or_create`]); a fresh
    /// key per process when absent, so sessions end at a restart.
    pub session_key: Option<ui::SessionKey>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            address: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            port: 4848,
            max_upload_bytes: 1 << 40,
            compat_image_size: 512 << 20,
            handle_signals: true,
            public_url: None,
            mos_dir: None,
            mos_cmdline: "console=tty0 console=ttyS0,115200n8 panic=10 quiet".into(),
            power_every: Some(std::time::Duration::from_secs(2)),
            service_calls: auth::DEFAULT_SERVICE_CALLS,
            session_key: None,
        }
    }
}

/// The Rocket application over `baas` with `settings`.
pub fn build(baas: Baas, settings: Settings) -> Rocket<Build> {
    auth::limit_service_calls(settings.service_calls);
    let mut shutdown = Shutdown {
        ctrlc: settings.handle_signals,
        grace: 2,
        mercy: 3,
        ..Shutdown::default()
    };
    if !settings.handle_signals {
        shutdown.signals.clear();
    }
    let config = Config {
        address: settings.address,
        port: settings.port,
        log_level: LogLevel::Off,
        cli_colors: false,
        ident: rocket::config::Ident::try_new("baas").unwrap_or_default(),
        shutdown,
        secret_key: settings
            .session_key
            .as_ref()
            .map_or_else(ui::secret_key, ui::SessionKey::secret),
        ..Config::default()
    };
    let metrics = Arc::new(Metrics::default());
    let control: Arc<dyn baas_core::ports::PowerControl> =
        Arc::new(baas_power::LabPower::default());
    let loop_control = control.clone();
    let power = settings.power_every.map(|every| {
        let baas = baas.clone();
        rocket::fairing::AdHoc::on_liftoff("power cycles", move |_| {
            Box::pin(async move {
                rocket::tokio::spawn(api::boot::power_loop(baas, loop_control, every));
            })
        })
    });
    let rocket = rocket::custom(config)
        .manage(baas)
        .manage(settings)
        .manage(metrics.clone())
        .manage(api::machines::Power::new(control))
        .manage(ratelimit::AuthLimiter::default())
        .attach(telemetry::RequestLog { metrics })
        .mount("/", rocket::routes![ops::healthz, ops::metrics])
        .mount("/api/v1", api::routes())
        .mount("/api/v1", api::agent::machine_routes())
        .mount("/api/v1/agent", api::agent::routes())
        .mount("/", compat::routes())
        .mount("/", api::boot::routes())
        .register("/", rocket::catchers![error::catch_all]);
    let rocket = match power {
        Some(p) => rocket.attach(p),
        None => rocket,
    };
    ui::mount(rocket)
}
