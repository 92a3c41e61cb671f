//! The `baas-server` command line: `serve` (the default) and the `admin`
//! commands that run on the server's host as the system actor. Every flag
//! also reads a `BAAS_*` environment variable.

use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use baas_core::{Actor, Baas, Config};
use clap::{Args, Parser, Subcommand};

use crate::units::size_arg;
use crate::Settings;

/// BAAS, Bare Metal as a Service: the REST API server.
#[derive(Debug, Parser)]
#[command(name = "baas-server", version, about)]
pub struct Cli {
    /// Where the data lives.
    #[command(flatten)]
    pub store: StoreArgs,
    /// How the server listens.
    #[command(flatten)]
    pub server: ServeArgs,
    /// What to do; `serve` when absent.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// The store: a data directory with SQLite and chunks, or a database URL.
#[derive(Debug, Args)]
pub struct StoreArgs {
    /// Data directory (SQLite database, chunks, the bootstrap admin token).
    #[arg(
        long,
        env = "BAAS_DATA_DIR",
        default_value = "./baas-data",
        global = true
    )]
    pub data_dir: PathBuf,
    /// `postgres://...` or `sqlite://...`; SQLite in the data directory when absent.
    #[arg(long, env = "BAAS_DATABASE_URL", global = true)]
    pub database_url: Option<String>,
    /// Chunk directory; `<data-dir>/chunks` when absent.
    #[arg(long, env = "BAAS_CHUNK_DIR", global = true)]
    pub chunk_dir: Option<PathBuf>,
    /// Database connections to keep.
    #[arg(long, env = "BAAS_DB_POOL_SIZE", default_value_t = 8, global = true)]
    pub db_pool_size: u32,
    /// Largest upload: per request, and per version (e.g. `64GiB`).
    #[arg(long, env = "BAAS_MAX_UPLOAD_BYTES", value_parser = size_arg, default_value = "1TiB", global = true)]
    pub max_upload_bytes: u64,
    /// Stored bytes each (non-admin) user may add, e.g. `500GiB`; unlimited when absent.
    #[arg(long, env = "BAAS_USER_QUOTA_BYTES", value_parser = size_arg, global = true)]
    pub user_quota_bytes: Option<u64>,
    /// Machines with an unknown MAC that PXE-boot: `enroll` (they boot the
    /// management OS, report their inventory and wait as `pending` for an
    /// admin) or `ignore` (they boot their local disk). The first value of
    /// an admin setting stored in the database: once set, later starts keep
    /// the stored value, which an admin changes at runtime with
    /// `PUT /api/v1/admin/settings`.
    #[arg(
        long,
        env = "BAAS_UNKNOWN_MACHINES",
        default_value = "ignore",
        global = true
    )]
    pub unknown_machines: String,
    /// The longest session a job may hold its machine, in minutes (also
    /// the session of a job that asks for none).
    #[arg(long, env = "BAAS_MAX_SESSION_MINUTES", default_value_t = 24 * 60, global = true)]
    pub max_session_minutes: u64,
    /// Lifetime of the credential each management-OS boot gets, in minutes.
    #[arg(
        long,
        env = "BAAS_BOOT_TOKEN_MINUTES",
        default_value_t = 240,
        global = true
    )]
    pub boot_token_minutes: u32,
    /// A machine that should be talking to the server (its agent works on
    /// a job, it enrolls, or the server power-cycled it to boot) and has
    /// been silent this long is shown offline, in seconds.
    #[arg(
        long,
        env = "BAAS_OFFLINE_AFTER_SECONDS",
        default_value_t = 180,
        global = true
    )]
    pub offline_after_seconds: u32,
}

/// The listener.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "BAAS_BIND", default_value = "0.0.0.0", global = true)]
    pub bind: IpAddr,
    /// Port to listen on (0 picks a free one).
    #[arg(long, env = "BAAS_PORT", default_value_t = 4848, global = true)]
    pub port: u16,
    /// Declared size of images created by the original `POST /user/{name}/image`
    /// when the body gives none.
    #[arg(long, env = "BAAS_COMPAT_IMAGE_SIZE", value_parser = size_arg, default_value = "512MiB", global = true)]
    pub compat_image_size: u64,
    /// The URL machines reach this server at, written into boot scripts;
    /// by default the address each booting machine used.
    #[arg(long, env = "BAAS_PUBLIC_URL", global = true)]
    pub public_url: Option<String>,
    /// Kernel arguments of the management OS besides the `baas.*` ones.
    #[arg(
        long,
        env = "BAAS_MOS_CMDLINE",
        default_value = "console=tty0 console=ttyS0,115200n8 panic=10 quiet",
        global = true
    )]
    pub mos_cmdline: String,
}

/// Commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Runs the server (the default). Migrates the database first; on an
    /// empty store, creates the admin `admin` and writes its token to
    /// `<data-dir>/admin-token` (mode 0600).
    Serve,
    /// Administration on the server's host.
    #[command(subcommand)]
    Admin(AdminCommand),
}

/// Administration commands, run as the system actor.
#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Creates a user; prints its id.
    CreateUser {
        /// Login name.
        name: String,
        /// `user`, `moderator` or `admin`.
        #[arg(long, default_value = "user")]
        role: String,
        /// Contact address.
        #[arg(long, default_value = "")]
        email: String,
        /// Display name.
        #[arg(long, default_value = "")]
        display_name: String,
    },
    /// Creates an API token for a user; prints the secret (shown only once).
    CreateToken {
        /// The user's login name.
        user: String,
        /// A label for the token.
        #[arg(long, default_value = "cli")]
        name: String,
        /// Lifetime in days; no expiry when absent.
        #[arg(long)]
        ttl_days: Option<u32>,
    },
    /// Sets a user's web-UI password, read from the first line of standard
    /// input (`--clear` removes it: token logins only).
    SetPassword {
        /// The user's login name.
        user: String,
        /// Remove the password instead.
        #[arg(long)]
        clear: bool,
    },
    /// Installs the management OS that machines boot (from
    /// `agent/mos/build.sh`) into `<data-dir>/mos`, replacing any other.
    InstallMos {
        /// The kernel (`vmlinuz`).
        #[arg(long)]
        kernel: PathBuf,
        /// The initramfs (`initrd.gz`).
        #[arg(long)]
        initrd: PathBuf,
    },
    /// Runs garbage collection; prints what it removed.
    Gc,
    /// Recompresses stored chunks at a high zstd level (a background job
    /// that trades CPU for space; safe while the server runs).
    Compact {
        /// zstd level, 1 to 22. The default, 15, stores about 0.3% more
        /// than 19 in about 70% of its time (benches/compact-levels.sh).
        #[arg(long, default_value_t = 15)]
        level: i32,
        /// Worker threads.
        #[arg(long, default_value_t = 2)]
        threads: usize,
    },
}

impl StoreArgs {
    /// The services' configuration.
    pub fn config(&self) -> Config {
        Config {
            max_version_size: self.max_upload_bytes.min(baas_core::model::MAX_IMAGE_SIZE),
            user_quota_bytes: self.user_quota_bytes,
            // Checked in `open`, before the store opens.
            enroll: self.unknown_machines.parse().unwrap_or_default(),
            max_hold_ms: self.max_session_minutes.saturating_mul(60_000),
            boot_token_ttl_ms: i64::from(self.boot_token_minutes) * 60_000,
            offline_after_ms: i64::from(self.offline_after_seconds) * 1000,
            ..Config::default()
        }
    }

    /// Opens (creating and migrating on first use) the store.
    pub fn open(&self) -> anyhow::Result<Baas> {
        self.unknown_machines
            .parse::<baas_core::services::EnrollPolicy>()
            .map_err(core)?;
        anyhow::ensure!(
            self.max_session_minutes > 0 && self.boot_token_minutes > 0,
            "--max-session-minutes and --boot-token-minutes must be at least 1"
        );
        let options = baas_embedded::Options {
            data_dir: self.data_dir.clone(),
            database_url: self.database_url.clone(),
            chunk_dir: self.chunk_dir.clone(),
            pool_size: self.db_pool_size,
            config: self.config(),
        };
        baas_embedded::open(&options).map_err(|e| {
            anyhow::anyhow!(
                "opening the store in {} failed: {}",
                self.data_dir.display(),
                e.detailed()
            )
        })
    }
}

/// Copies `from` to `dir/name` atomically (a machine booting meanwhile
/// gets the old file or the new one, never half of one); returns its size.
pub fn install_file(from: &Path, dir: &Path, name: &str) -> anyhow::Result<u64> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let tmp = dir.join(format!(".{name}.new"));
    let bytes = std::fs::copy(from, &tmp)
        .with_context(|| format!("copying {} to {}", from.display(), tmp.display()))?;
    anyhow::ensure!(bytes > 0, "{} is empty", from.display());
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, dir.join(name))
        .with_context(|| format!("installing {}", dir.join(name).display()))?;
    std::fs::File::open(dir)?.sync_all()?;
    Ok(bytes)
}

/// Writes `secret` to `path`, readable by the owner only.
pub fn write_secret(path: &Path, secret: &str) -> anyhow::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    writeln!(f, "{secret}")?;
    f.sync_all()?;
    Ok(())
}

/// At every start: stores the settings given on the command line as the
/// initial ones unless an admin set them already. First start on an empty
/// store: creates the admin `admin` and writes its token to
/// `<data-dir>/admin-token`.
pub fn bootstrap(baas: &Baas, data_dir: &Path) -> anyhow::Result<()> {
    let settings = baas
        .init_settings(&Actor::System)
        .map_err(|e| anyhow::anyhow!("initialising the server settings: {}", e.detailed()))?;
    tracing::info!(
        unknown_machines = settings.unknown_machines.as_str(),
        "settings in force (an admin changes them with PUT /api/v1/admin/settings)"
    );
    let Some((user, secret)) = baas
        .bootstrap_admin("admin")
        .map_err(|e| anyhow::anyhow!("creating the first admin: {}", e.detailed()))?
    else {
        return Ok(());
    };
    let path = data_dir.join("admin-token");
    write_secret(&path, &secret)?;
    tracing::info!(
        user = %user.name,
        "empty store: created admin {:?}; its token is in {} (mode 0600)",
        user.name,
        path.display()
    );
    Ok(())
}

fn core(e: baas_core::Error) -> anyhow::Error {
    anyhow::anyhow!("{}", e.detailed())
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    let baas = cli.store.open()?;
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            bootstrap(&baas, &cli.store.data_dir)?;
            let settings = Settings {
                address: cli.server.bind,
                port: cli.server.port,
                max_upload_bytes: cli.store.max_upload_bytes,
                compat_image_size: cli.server.compat_image_size,
                handle_signals: true,
                public_url: cli.server.public_url,
                mos_dir: Some(cli.store.data_dir.join("mos")),
                mos_cmdline: cli.server.mos_cmdline,
                service_calls: 2 * cli.store.db_pool_size as usize,
                session_key: Some(crate::ui::SessionKey::load_or_create(
                    &cli.store.data_dir.join("session-key"),
                )?),
                ..Settings::default()
            };
            let rocket = crate::build(baas, settings);
            rocket::execute(rocket.launch()).context("the server failed")?;
            Ok(())
        }
        Command::Admin(AdminCommand::CreateUser {
            name,
            role,
            email,
            display_name,
        }) => {
            let user = baas
                .create_user(
                    &Actor::System,
                    baas_core::services::NewUser {
                        name,
                        display_name,
                        email,
                        role: role.parse().map_err(core)?,
                    },
                )
                .map_err(core)?;
            println!("{}", user.id);
            Ok(())
        }
        Command::Admin(AdminCommand::CreateToken {
            user,
            name,
            ttl_days,
        }) => {
            let user = baas.get_user_by_name(&Actor::System, &user).map_err(core)?;
            let ttl = ttl_days.map(|d| i64::from(d) * 24 * 3600 * 1000);
            let (_, secret) = baas
                .create_token(&Actor::System, user.id, &name, ttl)
                .map_err(core)?;
            println!("{secret}");
            Ok(())
        }
        Command::Admin(AdminCommand::SetPassword { user, clear }) => {
            let user = baas.get_user_by_name(&Actor::System, &user).map_err(core)?;
            let password = if clear {
                None
            } else {
                let mut line = String::new();
                std::io::stdin()
                    .read_line(&mut line)
                    .context("reading the password from standard input")?;
                Some(line.trim_end_matches(['\r', '\n']).to_string())
            };
            baas.set_password(&Actor::System, user.id, password.as_deref())
                .map_err(core)?;
            println!(
                "{} for {}",
                if clear {
                    "password removed"
                } else {
                    "password set"
                },
                user.name
            );
            Ok(())
        }
        Command::Admin(AdminCommand::Compact { level, threads }) => {
            let r = baas
                .compact_chunks(&Actor::System, level, threads)
                .map_err(core)?;
            println!(
                "scanned: {}\nrecompressed: {}\nalready compact: {}\nsaved bytes: {}",
                r.scanned, r.rewritten, r.already, r.saved_bytes
            );
            Ok(())
        }
        Command::Admin(AdminCommand::InstallMos { kernel, initrd }) => {
            let dir = cli.store.data_dir.join("mos");
            for (from, name) in [(&kernel, "vmlinuz"), (&initrd, "initrd.gz")] {
                let bytes = install_file(from, &dir, name)?;
                println!("{name}: {bytes} bytes from {}", from.display());
            }
            println!("installed in {}", dir.display());
            Ok(())
        }
        Command::Admin(AdminCommand::Gc) => {
            let r = baas.collect_garbage(&Actor::System).map_err(core)?;
            println!(
                "referenced chunks: {}\nscanned: {}\nremoved: {}\nfreed bytes: {}\nkept (recent): {}\ndead uploads removed: {}\nstored chunks: {}\nstored bytes: {}",
                r.referenced,
                r.sweep.scanned,
                r.sweep.removed,
                r.sweep.freed_bytes,
                r.sweep.kept_recent,
                r.dead_uploads,
                r.usage.chunks,
                r.usage.bytes
            );
            Ok(())
        }
    }
}

/// The default log filter: our request lines and warnings; Rocket's own
/// per-request chatter (it logs through `log`) only when something is wrong.
pub const DEFAULT_LOG_FILTER: &str = "info,rocket=warn,rocket::server=off,\
    baas_server::api=error,baas_server::compat=error,baas_server::ops=error,\
    baas_server::openapi=error";

/// Logs to stderr with `tracing`; `RUST_LOG` filters (default
/// [`DEFAULT_LOG_FILTER`]).
pub fn init_logging() {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_LOG_FILTER));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .try_init();
}
