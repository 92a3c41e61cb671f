//! The `baas-server` binary: parses the command line and hands it to the library.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = baas_server::cli::Cli::parse();
    baas_server::cli::init_logging();
    match baas_server::cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("baas-server: {e:#}");
            ExitCode::FAILURE
        }
    }
}
