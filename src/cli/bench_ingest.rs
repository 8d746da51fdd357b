//! `pleura bench ingest`: the daemon's ingest throughput with a no-op worker, and its
//! end-to-end latency (acquisition timestamp -> result received by a subscriber) and
//! sustained result rate with the no-op, DAS and posterior stages. Everything runs in
//! this process on loopback: a `pleura_bridge` publisher thread, the daemon
//! ([`pleura::daemon::Daemon`]) and a SUB consumer.

use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use pleura::config::{Config, DaemonConfig, IngestMode, StageKind};
use pleura::daemon::Daemon;
use pleura::metrics::Metrics;
use pleura::protocol::{self, Auth, Message};
use pleura::recording::Recording;
use pleura::scanner::encode_payload;
use pleura::wire;
use pleura_bridge::publisher::{now_ns, Mode, Publisher};
use tokio::sync::{oneshot, watch};
use zeromq::{Socket, SocketRecv, SubSocket};

/// Arguments of `pleura bench ingest`.
#[derive(clap::Args)]
pub struct IngestArgs {
    /// The recording whose scan and first frame are streamed.
    #[arg(long, default_value = "../shared/data/pwi_disk/pwi_disk.zea.h5")]
    pub recording: PathBuf,
    /// Frames per throughput run.
    #[arg(long, default_value_t = 3000)]
    pub frames: u64,
    /// Frame rate of the latency runs with the no-op stage.
    #[arg(long, default_value_t = 200.0)]
    pub fps: f64,
    /// Frame rate of the latency run with the DAS stage.
    #[arg(long, default_value_t = 10.0)]
    pub das_fps: f64,
    /// Seconds per latency run.
    #[arg(long, default_value_t = 5.0)]
    pub seconds: f64,
    /// Recording streamed (frames in turn) to the posterior stage; it must fit the model.
    #[arg(long, default_value = "testdata/lung_sequence.zea.h5")]
    pub posterior_recording: PathBuf,
    /// Model of the posterior stage.
    #[arg(long, default_value = "testdata/model")]
    pub model: PathBuf,
    /// Configuration whose `[sampler]` section the posterior stage uses.
    #[arg(long, default_value = "config/pleura.toml")]
    pub config: PathBuf,
    /// Frame rate offered to the posterior stage (above its speed, frames are dropped).
    #[arg(long, default_value_t = 2.0)]
    pub posterior_fps: f64,
    /// Seconds of the posterior run (0: skip it).
    #[arg(long, default_value_t = 30.0)]
    pub posterior_seconds: f64,
    /// Compute device of the posterior stage.
    #[arg(long, default_value = "auto")]
    pub device: String,
}

fn config(stage: StageKind, base: &Config) -> Config {
    let daemon = DaemonConfig {
        ingest: "tcp://127.0.0.1:0".into(),
        ingest_mode: IngestMode::Bind,
        publish: "tcp://127.0.0.1:0".into(),
        admin: "127.0.0.1:0".into(),
        stage,
        das_grid_x: Some((-0.0125, 0.0125, 251)),
        das_grid_z: Some((0.010, 0.035, 251)),
        queue_capacity: 2,
        ..base.daemon.clone()
    };
    Config {
        daemon,
        ..base.clone()
    }
}

/// A running in-process daemon.
struct Running {
    ingest: String,
    publish: String,
    metrics: Arc<Metrics>,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<pleura::daemon::Summary, pleura::daemon::DaemonError>>,
}

async fn start(cfg: Config) -> Result<Running> {
    let daemon = Daemon::start(cfg.clone()).await?;
    let (stop, stop_rx) = oneshot::channel::<()>();
    let (_reload_tx, reload_rx) = watch::channel(cfg);
    let ingest = daemon.endpoints().ingest.clone();
    let publish = daemon.endpoints().publish.clone();
    let metrics = daemon.metrics();
    let task = tokio::spawn(daemon.run(
        async move {
            let _ = stop_rx.await;
        },
        reload_rx,
    ));
    Ok(Running {
        ingest,
        publish,
        metrics,
        stop,
        task,
    })
}

struct Stream {
    frames: u64,
    fps: Option<f64>,
}

/// Publishes the recording's scan and `frames` frames, the recording's frames in turn
/// (in its sample type), from a thread.
fn publish(
    endpoint: String,
    rec: &Recording,
    s: Stream,
) -> Result<std::thread::JoinHandle<Result<Duration>>> {
    let fields = wire::scan_to_fields(rec.scan());
    let shape = wire::frame_shape(rec.scan()).map(|d| d as u32);
    let payloads = (0..rec.n_frames().min(s.frames.max(1) as usize))
        .map(|i| Ok(encode_payload(&rec.read_frame(i)?.data, rec.sample_type())))
        .collect::<Result<Vec<_>>>()?;
    Ok(std::thread::spawn(move || -> Result<Duration> {
        let mut p = Publisher::open(&endpoint, Mode::Connect, None, Duration::from_secs(10))?;
        if !p.wait_for_subscriber(Duration::from_secs(10)) {
            bail!("the daemon did not subscribe");
        }
        p.publish_scan(1, fields)?;
        std::thread::sleep(Duration::from_millis(200));
        let t0 = Instant::now();
        for seq in 0..s.frames {
            if let Some(fps) = s.fps {
                let due = t0 + Duration::from_secs_f64(seq as f64 / fps);
                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
            }
            let (dtype, payload) = &payloads[seq as usize % payloads.len()];
            p.publish_frame(1, seq, now_ns(), *dtype, shape, payload)?;
        }
        p.flush(Duration::from_secs(10));
        Ok(t0.elapsed())
    }))
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[i]
}

async fn throughput(rec: &Recording, frames: u64, base: &Config) -> Result<(f64, f64, f64)> {
    let d = start(config(StageKind::None, base)).await?;
    let publisher = publish(d.ingest.clone(), rec, Stream { frames, fps: None })?;
    // Time from the first frame received to the last one.
    let mut first: Option<Instant> = None;
    let mut last_change = Instant::now();
    let mut last = 0;
    loop {
        let got = d.metrics.frames_accepted.load(Relaxed);
        if got != last {
            if first.is_none() {
                first = Some(Instant::now());
            }
            last = got;
            last_change = Instant::now();
        }
        if got >= frames
            || (publisher.is_finished() && last_change.elapsed() > Duration::from_millis(500))
        {
            break;
        }
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
    let publish_time = publisher
        .join()
        .map_err(|_| anyhow::anyhow!("publisher thread panicked"))??;
    let elapsed = last_change
        .duration_since(first.unwrap_or(last_change))
        .as_secs_f64();
    let bytes = d.metrics.bytes_received.load(Relaxed) as f64;
    let accepted = d.metrics.frames_accepted.load(Relaxed) as f64;
    let _ = d.stop.send(());
    d.task.await??;
    Ok((
        bytes / elapsed.max(1e-9) / 1e6,
        accepted / elapsed.max(1e-9),
        frames as f64 / publish_time.as_secs_f64(),
    ))
}

/// What a latency run measured.
struct LatencyRun {
    /// Results received (the first frame, which builds the stage's plan, excluded).
    results: usize,
    p50_ms: f64,
    p99_ms: f64,
    /// Fraction of the published frames the daemon dropped.
    dropped: f64,
    /// Results per second between the first and the last one received.
    rate: f64,
}

async fn latency(rec: &Recording, cfg: Config, fps: f64, seconds: f64) -> Result<LatencyRun> {
    let d = start(cfg).await?;
    let mut sub = SubSocket::new();
    sub.connect(&d.publish)
        .await
        .context("connect the consumer")?;
    sub.subscribe("").await?;
    let frames = (fps * seconds).round() as u64;
    let publisher = publish(
        d.ingest.clone(),
        rec,
        Stream {
            frames,
            fps: Some(fps),
        },
    )?;
    let mut latencies = Vec::new();
    let mut received_at = Vec::new();
    // The first frame also builds the stage's plan (and the operator): allow for it.
    let deadline = Instant::now() + Duration::from_secs_f64(seconds + 120.0);
    while Instant::now() < deadline {
        let msg = match tokio::time::timeout(Duration::from_secs(3), sub.recv()).await {
            Ok(Ok(m)) => m,
            Ok(Err(e)) => bail!("consumer: {e}"),
            Err(_) if publisher.is_finished() && d.metrics.queue_depth.load(Relaxed) == 0 => break,
            Err(_) => continue,
        };
        let received = now_ns();
        let parts = msg.into_vec();
        let refs: Vec<&[u8]> = parts.iter().map(|p| p.as_ref()).collect();
        if let Ok(Message::Result(r)) = protocol::decode(&refs, Auth::None) {
            if r.sequence == 0 {
                // The first frame of a scan also builds the stage's plan: not steady state.
                continue;
            }
            latencies.push(received.saturating_sub(r.timestamp_ns) as f64 * 1e-6);
            received_at.push(Instant::now());
            if r.sequence + 1 == frames {
                break;
            }
        }
    }
    publisher
        .join()
        .map_err(|_| anyhow::anyhow!("publisher thread panicked"))??;
    let dropped = d.metrics.frames_dropped.load(Relaxed);
    let _ = d.stop.send(());
    d.task.await??;
    latencies.sort_by(f64::total_cmp);
    let rate = match (received_at.first(), received_at.last()) {
        (Some(a), Some(b)) if received_at.len() > 1 => {
            (received_at.len() - 1) as f64 / b.duration_since(*a).as_secs_f64().max(1e-9)
        }
        _ => f64::NAN,
    };
    Ok(LatencyRun {
        results: latencies.len(),
        p50_ms: percentile(&latencies, 0.5),
        p99_ms: percentile(&latencies, 0.99),
        dropped: dropped as f64 / frames as f64,
        rate,
    })
}

fn print_run(name: &str, fps: f64, r: &LatencyRun) {
    println!(
        "| end-to-end, stage {name}, {fps} fps offered ({} results) | latency p50 {:.2} ms, p99 {:.2} ms; {:.2} results/s; {:.1} % dropped |",
        r.results,
        r.p50_ms,
        r.p99_ms,
        r.rate,
        r.dropped * 100.0
    );
}

pub fn run(args: IngestArgs) -> Result<()> {
    let rec = Recording::open(&args.recording)
        .with_context(|| format!("opening {}", args.recording.display()))?;
    let base = super::config_or_defaults(&args.config)?;
    let frame_mb = wire::frame_shape(rec.scan()).iter().product::<usize>() as f64 * 2.0 / 1e6;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        println!("daemon ingest, no-op stage, frames of {frame_mb:.3} MB (int16), loopback TCP");
        let (mbps, fps, pub_fps) = throughput(&rec, args.frames, &base).await?;
        println!("| measurement | value |");
        println!("| --- | --- |");
        println!("| ingest throughput | {mbps:.0} MB/s ({fps:.0} frames/s) |");
        println!("| publisher rate (pleura_bridge, copying) | {pub_fps:.0} frames/s |");
        for (stage, name, fps) in [
            (StageKind::None, "none", args.fps),
            (StageKind::Das, "das 251x251", args.das_fps),
        ] {
            let r = latency(&rec, config(stage, &base), fps, args.seconds).await?;
            print_run(name, fps, &r);
        }
        if args.posterior_seconds > 0.0 {
            let prec = Recording::open(&args.posterior_recording)
                .with_context(|| format!("opening {}", args.posterior_recording.display()))?;
            let mut cfg = config(StageKind::Posterior, &base);
            cfg.daemon.model = args.model.clone();
            cfg.daemon.device = args.device.clone();
            let s = &cfg.sampler;
            let name = format!(
                "posterior ({}, {} steps, K = {}, model {})",
                s.method,
                s.steps,
                s.samples,
                args.model.display()
            );
            let r = latency(&prec, cfg, args.posterior_fps, args.posterior_seconds).await?;
            print_run(&name, args.posterior_fps, &r);
        }
        Ok(())
    })
}
