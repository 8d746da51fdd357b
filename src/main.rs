//! The `pleura` command line: a thin layer over the library (see `src/lib.rs`).

mod cli;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use pleura::logging::{self, LogFormat};

#[derive(Parser)]
#[command(
    name = "pleura",
    version,
    about = "Lung ultrasound reconstruction by diffusion posterior sampling"
)]
struct Cli {
    /// Log filter (RUST_LOG syntax, e.g. "debug" or "info,pleura::beamform=debug").
    #[arg(long, global = true)]
    log: Option<String>,
    /// Log line format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Validate a zea recording and print a summary of it.
    Info(cli::info::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init(cli.log.as_deref(), cli.log_format);
    let result = match cli.command {
        Command::Info(args) => cli::info::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
