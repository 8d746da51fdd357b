//! `pleura serve`: the live daemon (see `pleura::daemon`).
//!
//! Signals (through signal-hook on a dedicated thread): SIGTERM and SIGINT shut down
//! gracefully within `[daemon] shutdown_deadline_ms` (exit status 0, or 1 past the
//! deadline); SIGHUP re-reads the configuration file and applies it without dropping
//! connections. Once every socket is bound, one JSON line with the resolved endpoints is
//! printed on stdout: `{"event":"ready","ingest":...,"publish":...,"admin":...}`.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use pleura::config::Config;
use pleura::daemon::{self, Daemon};
use pleura::logging::LogArgs;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use tokio::sync::{oneshot, watch};

/// Arguments of `pleura serve`.
#[derive(clap::Args)]
pub struct Args {
    /// The configuration file (`[daemon]` section; see config/pleura.toml).
    #[arg(long, default_value = "config/pleura.toml")]
    pub config: PathBuf,
}

/// Loads the configuration, sets up logging (`log` flags over its `[log]` section) and
/// serves until a stop signal.
pub fn run(args: Args, log: &LogArgs) -> anyhow::Result<()> {
    let config = Config::load(&args.config);
    log.init(config.as_ref().ok().map(|c| &c.log));
    let config = config?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("pleura-io")
        .build()
        .context("cannot start the tokio runtime")?;
    runtime.block_on(serve(config, args.config))
}

async fn serve(config: Config, path: PathBuf) -> anyhow::Result<()> {
    let mut signals =
        Signals::new([SIGTERM, SIGINT, SIGHUP]).context("cannot install the signal handlers")?;
    let handle = signals.handle();
    let daemon = Daemon::start(config.clone()).await?;
    let ready = serde_json::json!({ "event": "ready", "endpoints": daemon.endpoints() });
    let mut stdout = std::io::stdout();
    writeln!(stdout, "{ready}").context("cannot write to stdout")?;
    stdout.flush().context("cannot write to stdout")?;

    let metrics = daemon.metrics();
    let (reload_tx, reload_rx) = watch::channel(config);
    let (stop_tx, stop_rx) = oneshot::channel::<i32>();
    let signal_thread = std::thread::Builder::new()
        .name("pleura-signals".into())
        .spawn(move || {
            let mut stop_tx = Some(stop_tx);
            for signal in signals.forever() {
                match signal {
                    SIGHUP => match daemon::reload_config(&path) {
                        Ok(new) => {
                            tracing::info!(path = %path.display(), "SIGHUP: reloading the configuration");
                            let _ = reload_tx.send(new);
                        }
                        Err(e) => {
                            metrics.reload_refused(&e.to_string());
                            tracing::error!(
                                error = %e,
                                "SIGHUP: configuration refused; the previous configuration stays in force, all of it"
                            );
                        }
                    },
                    other => {
                        if let Some(tx) = stop_tx.take() {
                            let _ = tx.send(other);
                        }
                    }
                }
            }
        })
        .context("cannot start the signal thread")?;
    let shutdown = async move {
        if let Ok(signal) = stop_rx.await {
            tracing::info!(signal, "shutdown requested");
        }
    };
    let summary = daemon.run(shutdown, reload_rx).await;
    handle.close();
    let _ = signal_thread.join();
    let summary = summary?;
    let line = serde_json::json!({ "event": "stopped", "summary": summary });
    writeln!(std::io::stdout(), "{line}").context("cannot write to stdout")?;
    Ok(())
}
