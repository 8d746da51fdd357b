//! The `pleura` command line: a thin layer over the library (see `src/lib.rs`).

mod cli;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use pleura::logging::LogArgs;

#[derive(Parser)]
#[command(
    name = "pleura",
    version,
    about = "Lung ultrasound reconstruction by diffusion posterior sampling"
)]
struct Cli {
    #[command(flatten)]
    log: LogArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Validate a zea recording and print a summary of it.
    Info(cli::info::Args),
    /// Run the live daemon: RF frames in over ZeroMQ, results out (docs/protocol.md).
    Serve(cli::serve::Args),
    /// Train the diffusion prior on aeration images.
    Train(cli::train::Args),
    /// Draw unconditional samples from the diffusion prior.
    Sample(cli::sample::Args),
    /// Memorisation check and aeration statistics of the diffusion prior.
    EvalPrior(cli::eval_prior::Args),
    /// Reconstruct every frame of a recording by posterior sampling (offline replay).
    Replay(cli::replay::Args),
    /// Fit the system's depth gain for the echo data term on recordings of known aeration.
    Calibrate(cli::calibrate::Args),
    /// Delay-and-sum a recording to envelope and B-mode images (HDF5, optional PNGs).
    Beamform(cli::beamform::Args),
    /// Throughput benchmarks printing a table.
    Bench(cli::bench::Args),
    /// Simulate a lung recording (zea layout + ground truth) or a set of phantom images.
    Simulate(cli::simulate::Args),
    /// Classical baseline reconstruction (DAS, Tikhonov, TV) of a recording.
    ReconstructBaseline(cli::reconstruct_baseline::Args),
    /// Metrics of a reconstruction against simulated ground truth.
    Eval(cli::eval::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Serve(_) | Command::Bench(_)) {
        restore_sigpipe();
    }
    // The daemon takes `[log]` from its configuration file, so it sets logging up itself.
    if !matches!(cli.command, Command::Serve(_)) {
        cli.log.init(None);
    }
    let result = match cli.command {
        Command::Info(args) => cli::info::run(args),
        Command::Serve(args) => cli::serve::run(args, &cli.log),
        Command::Train(args) => cli::train::run(args),
        Command::Sample(args) => cli::sample::run(args),
        Command::EvalPrior(args) => cli::eval_prior::run(args),
        Command::Replay(args) => cli::replay::run(args),
        Command::Calibrate(args) => cli::calibrate::run(args),
        Command::Beamform(args) => cli::beamform::run(args),
        Command::Bench(args) => cli::bench::run(args),
        Command::Simulate(args) => cli::simulate::run(args),
        Command::ReconstructBaseline(args) => cli::reconstruct_baseline::run(args),
        Command::Eval(args) => cli::eval::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Lets SIGPIPE end an offline command whose reader went away (`pleura info F | head`), as
/// Unix tools end, instead of a panic in `println!` at EPIPE. The daemon, and the benches
/// that run one, keep Rust's ignored SIGPIPE: a peer that disconnects is an error on its
/// socket, not an exit.
fn restore_sigpipe() {
    // SAFETY: signal(2) with SIG_DFL installs no handler; it runs before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}
