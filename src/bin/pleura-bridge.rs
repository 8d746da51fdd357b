//! `pleura-bridge`: the scanner side from the command line (see `pleura::scanner`).
//!
//! `pleura-bridge play REC.zea.h5 --endpoint tcp://127.0.0.1:5555 [--connect] [--fps F]
//! [--loop] [--frames N] [--fault drop=P,corrupt=P,truncate=P,reorder=P,duplicate=P,stall=MS]
//! [--seed S] [--key-file KEY]` replays a recording as a virtual scanner. At the end it
//! prints one JSON line: `{"event":"played","report":{...}}`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use pleura::logging::LogArgs;
use pleura::scanner::{self, Faults, PlayOptions};
use pleura_bridge::publisher::Mode;

#[derive(Parser)]
#[command(
    name = "pleura-bridge",
    version,
    about = "Virtual scanner: publish recordings to pleura serve"
)]
struct Cli {
    #[command(flatten)]
    log: LogArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Play a recording at its frame rate, with optional injected faults.
    Play(PlayArgs),
}

#[derive(clap::Args)]
struct PlayArgs {
    /// The recording (zea HDF5 layout).
    recording: PathBuf,
    /// ZeroMQ endpoint of the PUB socket (bound unless --connect; port 0 picks one).
    #[arg(long)]
    endpoint: String,
    /// Connect to the endpoint (a daemon with ingest_mode = "bind") instead of binding.
    #[arg(long)]
    connect: bool,
    /// Frame rate; default: from scan/time_to_next_transmit.
    #[arg(long)]
    fps: Option<f64>,
    /// Start over at the end (sequence numbers keep increasing).
    #[arg(long = "loop")]
    looped: bool,
    /// Stop after this many frames.
    #[arg(long)]
    frames: Option<u64>,
    /// Faults: drop=P,corrupt=P,truncate=P,reorder=P,duplicate=P,stall=MS,stall_p=P.
    #[arg(long, default_value = "")]
    fault: String,
    /// Seed of the fault generator.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Pre-shared key file (hex) to sign every message with.
    #[arg(long)]
    key_file: Option<PathBuf>,
    /// Seconds to wait for a subscriber before the first frame.
    #[arg(long, default_value_t = 5.0)]
    wait_subscriber: f64,
    /// Scan id to announce.
    #[arg(long, default_value_t = 1)]
    scan_id: u64,
}

fn play(args: PlayArgs) -> anyhow::Result<()> {
    let faults = Faults::parse(&args.fault)?;
    let wait = Duration::try_from_secs_f64(args.wait_subscriber).with_context(|| {
        format!(
            "--wait-subscriber {} is not a duration",
            args.wait_subscriber
        )
    })?;
    let opts = PlayOptions {
        recording: args.recording,
        endpoint: args.endpoint,
        mode: if args.connect {
            Mode::Connect
        } else {
            Mode::Bind
        },
        key_file: args.key_file,
        fps: args.fps,
        looped: args.looped,
        max_frames: args.frames,
        faults,
        seed: args.seed,
        wait_subscriber: wait,
        scan_id: args.scan_id,
    };
    let report =
        scanner::play(&opts).with_context(|| format!("playing {}", opts.recording.display()))?;
    println!(
        "{}",
        serde_json::json!({ "event": "played", "report": report })
    );
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    cli.log.init(None);
    let result = match cli.command {
        Command::Play(args) => play(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
