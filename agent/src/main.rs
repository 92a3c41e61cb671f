//! `baas-agent`: parses the command line and the agent's configuration,
//! sets up logging (console and server), and runs [`baas_agent::Agent`].

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use baas_agent::config::Config;
use baas_agent::console::Console;
use baas_agent::reporter::Reporting;
use baas_agent::system::System;
use baas_agent::{logship, Agent, RunOptions};
use baas_client_http::{HttpAgentLink, HttpLinkConfig};
use baas_core::flashing::FlashOptions;
use baas_core::model::DiskSelector;
use clap::{Parser, Subcommand};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

/// The BAAS agent: reports this machine to the BAAS server, then flashes
/// and captures its disks as the server's jobs say.
#[derive(Debug, Parser)]
#[command(name = "baas-agent", version)]
struct Cli {
    /// A TOML or JSON file with `server`, `mac`, `token` (and, for tests,
    /// `root` and a `disks` map from selector to file) instead of the
    /// kernel command line.
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// Where to read `baas.server=`, `baas.mac=` and `baas.token=` from.
    #[arg(long, global = true, default_value = "/proc/cmdline")]
    cmdline: PathBuf,
    /// Root of the /sys, /proc and /dev trees to read (a fake tree in
    /// tests).
    #[arg(long, global = true)]
    root: Option<PathBuf>,
    /// Log level for the console and the server (error, warn, info, debug).
    #[arg(long, global = true, default_value = "info", env = "BAAS_AGENT_LOG")]
    log: String,
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// Exit after one job.
    #[arg(long)]
    once: bool,
    /// Do not reboot after a successful flash: exit instead.
    #[arg(long)]
    no_reboot: bool,
    /// The command that reboots the machine after a successful flash.
    #[arg(long, default_value = "reboot -f")]
    reboot_command: String,
    /// How long one long poll for a job waits, in seconds.
    #[arg(long, default_value_t = 30)]
    poll_secs: u64,
    /// Threads per flashing stage (default: one per CPU).
    #[arg(long)]
    workers: Option<usize>,
    /// Chunks per fetch or upload call (1 to 256).
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// Always fetch a differing chunk whole, never as a delta against the
    /// disk's bytes at its place (for comparisons).
    #[arg(long)]
    no_deltas: bool,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Take jobs and run them (the default).
    Run,
    /// Print the machine's inventory as the agent reports it.
    Inventory,
    /// Print the device a disk selector resolves to.
    Resolve {
        /// A selector: first, index:N, serial:S, wwn:W, by-id:NAME or
        /// /dev/NAME, optionally #PART.
        selector: String,
    },
}

fn config(cli: &Cli) -> anyhow::Result<Config> {
    let mut c = match &cli.config {
        Some(path) => Config::from_file(path)?,
        None => {
            let text = std::fs::read_to_string(&cli.cmdline)
                .with_context(|| format!("reading {}", cli.cmdline.display()))?;
            Config::from_cmdline(&text)?
        }
    };
    if cli.root.is_some() {
        c.root = cli.root.clone();
    }
    Ok(c)
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let level: tracing::Level = match cli.log.to_ascii_lowercase().as_str() {
        "error" => tracing::Level::ERROR,
        "warn" => tracing::Level::WARN,
        "debug" | "trace" => tracing::Level::DEBUG,
        _ => tracing::Level::INFO,
    };
    let console = Console::new();
    let (ship_layer, shipper) = logship::channel(level.min(tracing::Level::INFO));
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(console.clone())
                .with_target(false)
                .with_ansi(false),
        )
        .with(ship_layer)
        .with(EnvFilter::new(format!(
            "{},rocket=warn,hyper=warn",
            level.as_str().to_ascii_lowercase()
        )))
        .init();

    match &cli.command {
        Some(Command::Inventory) => {
            let root = cli.root.clone().unwrap_or_else(|| PathBuf::from("/"));
            let inv = System::new(root).inventory()?;
            println!("{inv:#?}");
            return Ok(());
        }
        Some(Command::Resolve { selector }) => {
            let root = cli.root.clone().unwrap_or_else(|| PathBuf::from("/"));
            let sel: DiskSelector = selector.parse()?;
            let t = System::new(root).resolve(&sel)?;
            println!("{} {} {}", t.name, t.path.display(), t.size);
            return Ok(());
        }
        Some(Command::Run) | None => {}
    }

    let config = config(&cli)?;
    let link = HttpAgentLink::new(
        &config.server,
        config.mac,
        &config.token,
        HttpLinkConfig::default(),
    )?;
    let http = link.clone();
    let link: Arc<dyn baas_core::ports::AgentLink> = Arc::new(link);
    let shipper = Arc::new(shipper);
    shipper.start(link.clone());
    // Progress goes to the server from its own thread, at most once a
    // second; the console gets every report.
    let reporting = Reporting::new(link, Duration::from_secs(1));
    let flash = FlashOptions {
        workers: cli.run.workers.unwrap_or(FlashOptions::default().workers),
        fetch_batch: cli.run.batch,
        deltas: !cli.run.no_deltas,
        ..FlashOptions::default()
    };
    let reboot = (!cli.run.no_reboot).then(|| {
        cli.run
            .reboot_command
            .split_whitespace()
            .map(str::to_string)
            .collect::<Vec<_>>()
    });
    let root = config.root.clone().unwrap_or_else(|| PathBuf::from("/"));
    tracing::info!(server = %config.server, mac = %config.mac, "baas-agent {} starting", env!("CARGO_PKG_VERSION"));
    let agent = Agent {
        link: Arc::new(reporting.clone()),
        system: System::new(root),
        config,
        options: RunOptions {
            once: cli.run.once,
            reboot,
            poll: Duration::from_secs(cli.run.poll_secs.clamp(1, 3600)),
            flash,
        },
        console,
        logs: shipper.clone(),
    };
    let ending = agent.run();
    reporting.close();
    let s = http.stats();
    tracing::info!(
        requests = s.requests,
        retries = s.retries,
        bytes_received = s.bytes_received,
        bytes_sent = s.bytes_sent,
        frame_bytes_received = s.frame_bytes_received,
        frame_bytes_sent = s.frame_bytes_sent,
        fetch_request_bytes = s.fetch_request_bytes,
        deltas_received = s.deltas_received,
        "link totals"
    );
    shipper.flush(Duration::from_secs(5));
    let ending = ending?;
    tracing::info!(?ending, "baas-agent exits");
    Ok(())
}
