//! `pleura bench ingest`: the daemon's ingest throughput with a no-op worker, and its
//! end-to-end latency (acquisition timestamp -> result received by a subscriber) with the
//! no-op and the DAS stages. Everything runs in this process on loopback: a
//! `pleura_bridge` publisher thread, the daemon ([`pleura::daemon::Daemon`]) and a SUB
//! consumer.

use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use pleura::config::{Config, DaemonConfig, IngestMode, StageKind};
use pleura::daemon::Daemon;
use pleura::metrics::Metrics;
use pleura::protocol::{self, Auth, Dtype, Message};
use pleura::recording::Recording;
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
}

fn config(stage: StageKind) -> Config {
    let daemon = DaemonConfig {
        ingest: "tcp://127.0.0.1:0".into(),
        ingest_mode: IngestMode::Bind,
        publish: "tcp://127.0.0.1:0".into(),
        admin: "127.0.0.1:0".into(),
        stage,
        das_grid_x: Some((-0.0125, 0.0125, 251)),
        das_grid_z: Some((0.010, 0.035, 251)),
        queue_capacity: 2,
        ..DaemonConfig::default()
    };
    Config {
        daemon,
        ..Config::default()
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

async fn start(stage: StageKind) -> Result<Running> {
    let cfg = config(stage);
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

/// Publishes the recording's scan and `frames` copies of its first frame from a thread.
fn publish(
    endpoint: String,
    rec: &Recording,
    s: Stream,
) -> Result<std::thread::JoinHandle<Result<Duration>>> {
    let fields = wire::scan_to_fields(rec.scan());
    let shape = wire::frame_shape(rec.scan()).map(|d| d as u32);
    let frame = rec.read_frame(0)?;
    let payload: Vec<u8> = frame
        .data
        .iter()
        .flat_map(|v| (*v as i16).to_le_bytes())
        .collect();
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
            p.publish_frame(1, seq, now_ns(), Dtype::I16, shape, &payload)?;
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

async fn throughput(rec: &Recording, frames: u64) -> Result<(f64, f64, f64)> {
    let d = start(StageKind::None).await?;
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

async fn latency(
    rec: &Recording,
    stage: StageKind,
    fps: f64,
    seconds: f64,
) -> Result<(usize, f64, f64, f64)> {
    let d = start(stage).await?;
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
    let deadline = Instant::now() + Duration::from_secs_f64(seconds + 20.0);
    while Instant::now() < deadline {
        let msg = match tokio::time::timeout(Duration::from_secs(3), sub.recv()).await {
            Ok(Ok(m)) => m,
            Ok(Err(e)) => bail!("consumer: {e}"),
            Err(_) if publisher.is_finished() => break,
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
    Ok((
        latencies.len(),
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        dropped as f64 / frames as f64,
    ))
}

pub fn run(args: IngestArgs) -> Result<()> {
    let rec = Recording::open(&args.recording)
        .with_context(|| format!("opening {}", args.recording.display()))?;
    let frame_mb = wire::frame_shape(rec.scan()).iter().product::<usize>() as f64 * 2.0 / 1e6;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        println!("daemon ingest, no-op stage, frames of {frame_mb:.3} MB (int16), loopback TCP");
        let (mbps, fps, pub_fps) = throughput(&rec, args.frames).await?;
        println!("| measurement | value |");
        println!("| --- | --- |");
        println!("| ingest throughput | {mbps:.0} MB/s ({fps:.0} frames/s) |");
        println!("| publisher rate (pleura_bridge, copying) | {pub_fps:.0} frames/s |");
        for (stage, name, fps) in [
            (StageKind::None, "none", args.fps),
            (StageKind::Das, "das 251x251", args.das_fps),
        ] {
            let (n, p50, p99, drop) = latency(&rec, stage, fps, args.seconds).await?;
            println!(
                "| end-to-end latency, stage {name}, {fps} fps ({n} results) | p50 {p50:.2} ms, p99 {p99:.2} ms, {:.1} % dropped |",
                drop * 100.0
            );
        }
        Ok(())
    })
}
