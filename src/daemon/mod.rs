//! The live daemon (`pleura serve`): ZeroMQ in, per-frame pipeline, ZeroMQ out.
//!
//! Tokio tasks form a source -> transform -> sink pipeline:
//!
//! - **ingest** (task): a SUB socket (connect or bind per `[daemon] ingest_mode`) that
//!   always drains the socket: it validates every message ([`validate`]), counts every
//!   rejection by reason and pushes accepted frames onto a bounded latest-frame queue
//!   ([`queue`]) that drops its oldest frame when full. It never waits on the worker.
//! - **worker** (dedicated thread): pops frames, decodes their payload and runs the
//!   [`crate::pipeline::Stage`] built by [`crate::pipeline::build`] on them, one at a
//!   time; [`crate::wire`] turns each output, or the reason a frame failed, into the
//!   result's fields.
//! - **sink** (task): a PUB socket publishing each frame's result (sequence number,
//!   timestamps, latency acquisition -> publish, the stage's fields or the failure's
//!   reason) and a periodic status message.
//! - **admin** (task): HTTP `/metrics`, `/healthz`, `/status` and the live view at `/`
//!   ([`crate::metrics::http`]); the sink records each published result, failed frames
//!   included, in the live view's bounded store ([`live`]), whose figures are rendered
//!   only when the page asks for them, off the frame path.
//!
//! [`Daemon::start`] binds everything and reports the resolved endpoints (port 0 picks a
//! free port); [`Daemon::run`] runs until the `shutdown` future completes, then stops
//! ingest, lets the worker finish the frame in flight, publishes a final status and
//! returns, all within `shutdown_deadline_ms`. Configuration reloads arrive on a watch
//! channel and are all or nothing: the reload task validates the new configuration, loads
//! its key and rebuilds the stage (reloading the model from disk) off the worker thread,
//! and only when every part succeeded hands the stage to the worker (it takes over
//! between two frames) and the rest to ingest and sink, without touching the sockets. A
//! reload that fails anywhere changes nothing, is counted and logged, and `/status` says
//! what stays in force. The CLI (`src/cli/serve.rs`) wires signals to both.
//!
//! Every size a peer controls is bounded before it is allocated: ZMTP frames and
//! messages (`max_message_bytes`, while the frame header is read) and the handshake's
//! duration, in the transport; what a scan would make the stage build, by the validator
//! (`max_grid_pixels`, `max_das_taps`, `max_operator_bytes`); and every per-stream and
//! per-scan table (`max_streams`, `max_scans_per_stream`, `max_operators`), least
//! recently used first, counted in `pleura_state_evictions_total`. [`memory_budget`] adds
//! them up.

pub mod live;
pub mod queue;
pub mod record;
pub mod validate;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use tokio::sync::{mpsc, watch};
use zeromq::{PubSocket, Socket, SocketRecv, SocketSend, SubSocket, ZmqMessage};

use crate::config::{Config, ConfigError, DaemonConfig, IngestMode};
use crate::logging::Chain;
use crate::metrics::{http, Metrics, StateTable};
use crate::pipeline::{self, FrameInput, PipelineError, ScanCheck, ScanLimits, StageSpec};
use crate::posterior::echo::Calibration;
use crate::protocol::{self, Key, ResultMessage, StatusMessage};
use crate::wire;
use live::LiveView;
use queue::LatestQueue;
use record::RecordSink;
use validate::{Accepted, AcceptedFrame, Bounds, RejectLog, Validator};

/// Pause after the final status so the PUB socket's writer can flush it to subscribers.
const FINAL_LINGER: Duration = Duration::from_millis(100);
/// Results waiting between the worker and the sink.
const RESULT_QUEUE: usize = 64;

/// Errors starting or running the daemon.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("[daemon] key_file: {0}")]
    Key(#[from] protocol::KeyError),
    #[error("cannot bind the admin server to {addr}: {source}")]
    Admin {
        addr: String,
        source: std::io::Error,
    },
    #[error("cannot {action} {endpoint}: {source}")]
    Zmq {
        action: &'static str,
        endpoint: String,
        source: zeromq::ZmqError,
    },
    #[error(transparent)]
    Stage(#[from] pipeline::PipelineError),
    #[error("cannot start the worker thread: {0}")]
    Thread(std::io::Error),
    #[error("the {0} task failed")]
    Task(&'static str),
    #[error("shutdown did not finish within {0:?}")]
    Deadline(Duration),
}

/// Where the daemon listens, with ports resolved.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Endpoints {
    /// The ingest endpoint (bound or connected to).
    pub ingest: String,
    /// The bound PUB endpoint of results and status.
    pub publish: String,
    /// The admin HTTP address.
    pub admin: SocketAddr,
}

/// Counters at exit.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Summary {
    pub frames_accepted: u64,
    pub frames_processed: u64,
    pub frames_dropped: u64,
    pub messages_rejected: u64,
    pub results_published: u64,
    pub frames_recorded: u64,
    pub frames_not_recorded: u64,
}

/// A started daemon: sockets bound, nothing running yet.
pub struct Daemon {
    config: Config,
    key: Option<Key>,
    endpoints: Endpoints,
    metrics: Arc<Metrics>,
    sub: SubSocket,
    publisher: PubSocket,
    admin: tokio::net::TcpListener,
    stage: Box<dyn pipeline::Stage>,
    /// The sockets' event streams, taken before they bind so that no connection goes
    /// unreported.
    ingest_events: SocketEvents,
    publish_events: SocketEvents,
}

type SocketEvents = futures::channel::mpsc::Receiver<zeromq::SocketEvent>;

/// Subscriptions one consumer of the publish socket may hold at once; a SUBSCRIBE beyond
/// them disconnects it (a consumer subscribes to everything or to a few prefixes).
const PUBLISH_MAX_SUBSCRIPTIONS: usize = 1024;
/// Largest message (a subscription) or ZMTP command (READY) a consumer may send the
/// publish socket, bytes, when `max_message_bytes` is not smaller.
const PUBLISH_MAX_MESSAGE: usize = 4096;

/// The memory, bytes, that the configured bounds let the daemon hold beyond its base
/// (code, runtime, model weights), whatever its peers send: the frames in the queue, in
/// the worker (the payload, its float32 copy and the DAS channel buffer) and in the
/// recorder's queue, one message
/// being received per ingest connection (`max_connections` of them in bind mode, one in
/// connect mode), the subscriptions of up to `max_connections` consumers of the publish
/// socket (`PUBLISH_MAX_SUBSCRIPTIONS` each, and one more being received), every
/// connection's read buffer, the results waiting for the sink, the scans of every tracked
/// stream, the DAS plan and grid, the measurement operators, and the results queued for
/// consumers that do not keep up (`publish_queue` each, the rest dropped), and the live
/// view's store ([`live_view_budget`]). Published as
/// `pleura_memory_budget_bytes`; an upper bound, not an estimate.
pub fn memory_budget(c: &DaemonConfig) -> u64 {
    // Saturating: a configuration large enough to overflow has no bound worth printing.
    let mul = |a: u64, b: u64| a.saturating_mul(b);
    let message = c.max_message_bytes as u64;
    let recorded = if c.record.is_some() {
        c.record_queue as u64
    } else {
        0
    };
    let ingest_connections = match c.ingest_mode {
        IngestMode::Bind => c.max_connections as u64,
        IngestMode::Connect => 1,
    };
    let connections = c.max_connections as u64;
    // Frames queued, in the recorder's queue and being received; in the worker the
    // payload, its float32 copy (2x an int16 payload) and the DAS plan's complex channel
    // buffer (4x).
    let frames = mul(
        (c.queue_capacity as u64)
            .saturating_add(recorded)
            .saturating_add(ingest_connections),
        message,
    )
    .saturating_add(mul(7, message));
    // A subscription is a Vec (24 bytes) of at most the publish socket's message size.
    let subscription = PUBLISH_MAX_MESSAGE.min(c.max_message_bytes) as u64 + 24;
    let consumers = mul(
        mul(connections, PUBLISH_MAX_SUBSCRIPTIONS as u64 + 1),
        subscription,
    );
    // Each connection's read chunk: the transport's 64 KiB maximum and as much headroom.
    let read_buffers = mul(ingest_connections.saturating_add(connections), 128 << 10);
    // A result holds at most three float32 images per pixel (its axes are in the grid term).
    let result = mul(c.max_grid_pixels as u64, 12);
    let queued = (RESULT_QUEUE as u64).saturating_add(mul(c.publish_queue as u64, connections));
    let results = mul(queued, result);
    // A scan's decoded arrays take about its body's size, and the body is decoded first.
    let scans = mul(
        mul(c.max_streams as u64, c.max_scans_per_stream as u64).saturating_add(1),
        mul(c.max_scan_bytes as u64, 2),
    );
    let das = mul(c.max_das_taps, crate::beamform::DasPlan::TAP_BYTES as u64)
        .saturating_add(mul(c.max_grid_pixels as u64, 32));
    let operators = mul(c.max_operators as u64, c.max_operator_bytes);
    let live = live_view_budget(c);
    [
        consumers,
        read_buffers,
        results,
        scans,
        das,
        operators,
        live,
    ]
    .into_iter()
    .fold(frames, u64::saturating_add)
}

/// The live view's share of [`memory_budget`], bytes: per stream (`max_streams`) its
/// latest result, its trend and its two cached figures at their largest (and a failure's
/// reason), and the figure being rendered (its RGB canvas and its PNG).
pub fn live_view_budget(c: &DaemonConfig) -> u64 {
    let mul = |a: u64, b: u64| a.saturating_mul(b);
    let (pw, ph) = crate::render::panel::max_size();
    let panel = crate::render::max_png_bytes(pw, ph);
    let trend =
        crate::render::max_png_bytes(crate::render::trend::WIDTH, crate::render::trend::HEIGHT);
    let points = mul(
        live::TREND_POINTS as u64,
        std::mem::size_of::<crate::render::TrendPoint>() as u64,
    );
    let per_stream = [
        mul(c.max_grid_pixels as u64, 12),
        points,
        panel,
        trend,
        4096,
    ]
    .into_iter()
    .fold(0, u64::saturating_add);
    mul(c.max_streams as u64, per_stream).saturating_add(mul(2, panel))
}

/// Whether an endpoint (`tcp://host:port`, `host:port`, `ipc://...`) is reachable only
/// from this machine.
fn is_local(endpoint: &str) -> bool {
    let rest = endpoint.strip_prefix("tcp://").unwrap_or(endpoint);
    if endpoint.starts_with("ipc://") || endpoint.starts_with("inproc://") {
        return true;
    }
    let host = match rest.rsplit_once(':') {
        Some((h, _)) => h.trim_start_matches('[').trim_end_matches(']'),
        None => rest,
    };
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Warns about every endpoint that is reachable from other machines while no key
/// authenticates the messages.
fn warn_exposed(config: &DaemonConfig, key: Option<&Key>) {
    if key.is_some() {
        return;
    }
    let mut exposed = vec![("publish", config.publish.as_str())];
    if config.ingest_mode == IngestMode::Bind {
        exposed.push(("ingest", config.ingest.as_str()));
    }
    for (name, endpoint) in exposed {
        if !is_local(endpoint) {
            tracing::warn!(
                endpoint,
                "[daemon] {name} binds beyond loopback without key_file: anyone who reaches it can \
                 inject or read frames and results unauthenticated (docs/protocol.md, Authentication)"
            );
        }
    }
    if !is_local(&config.admin) {
        tracing::warn!(
            endpoint = %config.admin,
            "[daemon] admin binds beyond loopback: /metrics, /status and the live view (images of \
             the results) have no authentication"
        );
    }
}

/// The ingest SUB socket, with the transport's bounds (`max_connections` applies in bind
/// mode: a socket that connects is not limited by it).
fn ingest_socket(config: &DaemonConfig) -> SubSocket {
    let mut options = zeromq::SocketOptions::default();
    options
        .max_message_size(config.max_message_bytes)
        .handshake_timeout(Duration::from_millis(config.handshake_timeout_ms))
        .max_peers(config.max_connections);
    SubSocket::with_options(options)
}

fn load_key(config: &DaemonConfig) -> Result<Option<Key>, protocol::KeyError> {
    config.key_file.as_deref().map(Key::from_file).transpose()
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos().min(u64::MAX as u128) as u64)
}

impl Daemon {
    /// Loads the key and binds the admin server, the PUB socket and (in bind mode) the
    /// ingest socket. Must be called inside a tokio runtime.
    pub async fn start(full: Config) -> Result<Self, DaemonError> {
        let config = full.daemon.clone();
        config.validate()?;
        let key = load_key(&config)?;
        warn_exposed(&config, key.as_ref());
        let stage = {
            let full = full.clone();
            tokio::task::spawn_blocking(move || pipeline::build(&StageSpec::serve(&full)?))
                .await
                .map_err(|_| DaemonError::Task("stage build"))??
        };
        let admin = tokio::net::TcpListener::bind(&config.admin)
            .await
            .map_err(|source| DaemonError::Admin {
                addr: config.admin.clone(),
                source,
            })?;
        let admin_addr = admin.local_addr().map_err(|source| DaemonError::Admin {
            addr: config.admin.clone(),
            source,
        })?;
        // Subscribers reach the publish socket before any authentication too: the same
        // transport bounds, and as they only ever send subscriptions, small ones of those,
        // and not many.
        let mut publish_options = zeromq::SocketOptions::default();
        publish_options
            .max_message_size(PUBLISH_MAX_MESSAGE.min(config.max_message_bytes))
            .handshake_timeout(Duration::from_millis(config.handshake_timeout_ms))
            .max_peers(config.max_connections)
            .max_subscriptions(PUBLISH_MAX_SUBSCRIPTIONS)
            .send_queue(config.publish_queue);
        let mut publisher = PubSocket::with_options(publish_options);
        let publish_events = publisher.monitor();
        let publish = publisher
            .bind(&config.publish)
            .await
            .map_err(|source| DaemonError::Zmq {
                action: "bind the publish socket to",
                endpoint: config.publish.clone(),
                source,
            })?
            .to_string();
        let mut sub = ingest_socket(&config);
        let ingest_events = sub.monitor();
        let ingest = match config.ingest_mode {
            IngestMode::Bind => sub
                .bind(&config.ingest)
                .await
                .map_err(|source| DaemonError::Zmq {
                    action: "bind the ingest socket to",
                    endpoint: config.ingest.clone(),
                    source,
                })?
                .to_string(),
            IngestMode::Connect => config.ingest.clone(),
        };
        sub.subscribe("").await.map_err(|source| DaemonError::Zmq {
            action: "subscribe on",
            endpoint: ingest.clone(),
            source,
        })?;
        let metrics = Arc::new(Metrics::new());
        metrics
            .queue_capacity
            .store(config.queue_capacity as u64, Relaxed);
        metrics.memory_budget.store(memory_budget(&config), Relaxed);
        Ok(Daemon {
            endpoints: Endpoints {
                ingest,
                publish,
                admin: admin_addr,
            },
            config: full,
            key,
            metrics,
            sub,
            publisher,
            admin,
            stage,
            ingest_events,
            publish_events,
        })
    }

    /// The resolved endpoints.
    pub fn endpoints(&self) -> &Endpoints {
        &self.endpoints
    }

    /// The live metrics.
    pub fn metrics(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }

    /// Runs until `shutdown` completes, then shuts down within the configured deadline.
    /// New configurations sent on `reload` are applied whole or not at all, without
    /// dropping connections (key, queue capacity, status and log intervals, the bounds and
    /// caps, and the stage with its model and sampler settings; endpoint, recording and
    /// transport changes need a restart and are reported as such).
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()>,
        reload: watch::Receiver<Config>,
    ) -> Result<Summary, DaemonError> {
        let Daemon {
            config: full,
            key,
            endpoints,
            metrics,
            sub,
            publisher,
            admin,
            stage,
            ingest_events,
            publish_events,
        } = self;
        let config = full.daemon.clone();
        let in_force = Arc::new(InForce::new(config.clone(), key, stage.as_ref()));
        tracing::info!(
            ingest = %endpoints.ingest,
            publish = %endpoints.publish,
            admin = %endpoints.admin,
            stage = in_force.stage,
            device = %in_force.device,
            authenticated = in_force.key.is_some(),
            memory_budget = memory_budget(&config),
            "daemon running"
        );
        metrics.set_device(&in_force.device);
        metrics.set_calibration(in_force.calibration());
        metrics.set_in_force(in_force.describe());
        let live = Arc::new(LiveView::new(config.max_streams, metrics.clone()));
        let admin_task = tokio::spawn(http::serve(admin, metrics.clone(), live.clone()));
        let queue = Arc::new(LatestQueue::<AcceptedFrame>::new(config.queue_capacity));
        let (stop_tx, stop_rx) = watch::channel(false);
        let (result_tx, result_rx) = mpsc::channel::<ResultMessage>(RESULT_QUEUE);
        let (applied_tx, applied_rx) = watch::channel(in_force.clone());

        let (stage_tx, stage_rx) = std::sync::mpsc::channel::<Takeover>();
        let worker = {
            let queue = queue.clone();
            let metrics = metrics.clone();
            let failures = Throttle::new(Duration::from_millis(config.reject_log_interval_ms));
            std::thread::Builder::new()
                .name("pleura-worker".into())
                .spawn(move || worker_loop(stage, stage_rx, &queue, &metrics, failures, result_tx))
                .map_err(DaemonError::Thread)?
        };
        let reloader = tokio::spawn(reload_task(
            reload,
            in_force.clone(),
            stage_tx,
            applied_tx,
            metrics.clone(),
        ));
        let consumer_monitor = tokio::spawn(watch_consumers(
            publish_events,
            metrics.clone(),
            Throttle::new(Duration::from_millis(config.reject_log_interval_ms)),
            applied_rx.clone(),
        ));
        let sink = tokio::spawn(sink_task(
            publisher,
            result_rx,
            metrics.clone(),
            live,
            applied_rx.clone(),
        ));
        let (record, recorder) = match &config.record {
            Some(path) => {
                let (sink, handle) = RecordSink::start(
                    path.clone(),
                    config.record_layout,
                    config.record_queue,
                    Duration::from_millis(config.reject_log_interval_ms),
                    metrics.clone(),
                )
                .map_err(DaemonError::Thread)?;
                (Some(sink), Some(handle))
            }
            None => (None, None),
        };
        let mut ingest = tokio::spawn(ingest_task(IngestTask {
            record,
            logs: IngestLogs::new(Duration::from_millis(config.reject_log_interval_ms)),
            sub,
            events: ingest_events,
            mode: config.ingest_mode,
            endpoint: endpoints.ingest.clone(),
            validator: Validator::new(
                in_force.key.clone(),
                Bounds::from_config(&config),
                in_force.check.clone(),
            ),
            log: RejectLog::new(Duration::from_millis(config.reject_log_interval_ms)),
            queue: queue.clone(),
            metrics: metrics.clone(),
            stop: stop_rx,
            applied: applied_rx,
        }));

        let ingest_early_exit = tokio::select! {
            _ = shutdown => false,
            _ = &mut ingest => true,
        };
        tracing::info!("shutting down: stopping ingest, finishing the frame in flight");
        metrics.healthy.store(false, Relaxed);
        let deadline = Duration::from_millis(config.shutdown_deadline_ms);
        let drain = async {
            let _ = stop_tx.send(true);
            if !ingest_early_exit {
                ingest.await.map_err(|_| DaemonError::Task("ingest"))?;
            }
            let left = queue.close();
            metrics.frames_dropped.fetch_add(left.len() as u64, Relaxed);
            metrics.queue_depth.store(0, Relaxed);
            tokio::task::spawn_blocking(move || worker.join())
                .await
                .map_err(|_| DaemonError::Task("worker"))?
                .map_err(|_| DaemonError::Task("worker"))?;
            // The ingest task has ended and dropped its side of the recorder queue: the
            // recorder writes what is queued, flushes and closes the file.
            if let Some(recorder) = recorder {
                tokio::task::spawn_blocking(move || recorder.join())
                    .await
                    .map_err(|_| DaemonError::Task("recorder"))?
                    .map_err(|_| DaemonError::Task("recorder"))?;
            }
            sink.await.map_err(|_| DaemonError::Task("sink"))?;
            Ok::<(), DaemonError>(())
        };
        let outcome = tokio::time::timeout(deadline, drain).await;
        admin_task.abort();
        reloader.abort();
        consumer_monitor.abort();
        match outcome {
            Err(_) => return Err(DaemonError::Deadline(deadline)),
            Ok(Err(e)) => return Err(e),
            Ok(Ok(())) => {}
        }
        if ingest_early_exit {
            return Err(DaemonError::Task("ingest"));
        }
        let summary = Summary {
            frames_accepted: metrics.frames_accepted.load(Relaxed),
            frames_processed: metrics.frames_processed.load(Relaxed),
            frames_dropped: metrics.frames_dropped.load(Relaxed),
            messages_rejected: metrics.rejected_total(),
            results_published: metrics.results_published.load(Relaxed),
            frames_recorded: metrics.frames_recorded.load(Relaxed),
            frames_not_recorded: metrics.frames_not_recorded.load(Relaxed),
        };
        tracing::info!(?summary, "daemon stopped");
        Ok(summary)
    }
}

/// Everything a configuration puts in force, prepared whole before any of it applies:
/// the settings, the loaded key, and the caps of the stage built from them.
struct InForce {
    daemon: DaemonConfig,
    key: Option<Key>,
    check: ScanCheck,
    stage: &'static str,
    device: String,
    /// The stage's echo-power calibration and its file.
    calibration: Option<(PathBuf, Calibration)>,
}

impl InForce {
    fn new(daemon: DaemonConfig, key: Option<Key>, stage: &dyn pipeline::Stage) -> Self {
        InForce {
            check: stage.scan_check(ScanLimits::from_config(&daemon)),
            stage: stage.name(),
            device: stage.device(),
            calibration: stage
                .calibration()
                .map(|(path, c)| (path.to_path_buf(), c.clone())),
            daemon,
            key,
        }
    }

    /// The calibration in force, as the metrics take it.
    fn calibration(&self) -> Option<&Calibration> {
        self.calibration.as_ref().map(|(_, c)| c)
    }

    /// What `/status` reports as in force.
    fn describe(&self) -> serde_json::Value {
        let d = &self.daemon;
        serde_json::json!({
            "authenticated": self.key.is_some(),
            "key_file": d.key_file,
            "stage": self.stage,
            "device": self.device,
            "model": d.model,
            "calibration": self.calibration.as_ref().map(|(file, c)| {
                let mut v = serde_json::to_value(c).unwrap_or_default();
                v["file"] = file.display().to_string().into();
                v
            }),
            "queue_capacity": d.queue_capacity,
            "status_interval_ms": d.status_interval_ms,
            "max_message_bytes": d.max_message_bytes,
            "handshake_timeout_ms": d.handshake_timeout_ms,
            "max_connections": d.max_connections,
            "publish_queue": d.publish_queue,
            "max_streams": d.max_streams,
            "max_scans_per_stream": d.max_scans_per_stream,
            "max_scan_bytes": d.max_scan_bytes,
            "max_sequence_jump": d.max_sequence_jump,
            "max_grid_pixels": d.max_grid_pixels,
            "max_das_taps": d.max_das_taps,
            "max_operator_bytes": d.max_operator_bytes,
            "max_operators": d.max_operators,
            "memory_budget_bytes": memory_budget(d),
        })
    }
}

/// Why a reload was refused.
#[derive(Debug, thiserror::Error)]
enum ReloadError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("[daemon] key_file: {0}")]
    Key(#[from] protocol::KeyError),
    #[error(transparent)]
    Stage(#[from] pipeline::PipelineError),
    #[error("the stage build panicked")]
    Panicked,
}

/// Prepares a reload whole: settings (those only a restart changes kept as `started`,
/// so that the caps are computed from what is in force), key, stage.
async fn prepare(
    mut config: Config,
    started: &DaemonConfig,
) -> Result<(InForce, Box<dyn pipeline::Stage>), ReloadError> {
    if keep_start_only_settings(&mut config.daemon, started) {
        tracing::warn!(
            "configuration reload: endpoint, recording and transport changes \
             (ingest, ingest_mode, publish, admin, record, record_queue, max_message_bytes, \
             handshake_timeout_ms, max_connections, publish_queue) take effect at the next \
             start; the running values stay in force"
        );
    }
    config.daemon.validate()?;
    let key = load_key(&config.daemon)?;
    let build = config.clone();
    let stage = tokio::task::spawn_blocking(move || pipeline::build(&StageSpec::serve(&build)?))
        .await
        .map_err(|_| ReloadError::Panicked)??;
    Ok((InForce::new(config.daemon, key, stage.as_ref()), stage))
}

/// Sets in `next` the settings a running daemon cannot change (its sockets and recorder
/// were made with them) to those it `started` with; true when any differed.
fn keep_start_only_settings(next: &mut DaemonConfig, started: &DaemonConfig) -> bool {
    let before = next.clone();
    next.ingest.clone_from(&started.ingest);
    next.ingest_mode = started.ingest_mode;
    next.publish.clone_from(&started.publish);
    next.admin.clone_from(&started.admin);
    next.record.clone_from(&started.record);
    next.record_queue = started.record_queue;
    next.max_message_bytes = started.max_message_bytes;
    next.handshake_timeout_ms = started.handshake_timeout_ms;
    next.max_connections = started.max_connections;
    next.publish_queue = started.publish_queue;
    *next != before
}

/// What a reload hands the worker: the stage that takes over at the next frame, and how
/// often it may log failed frames.
struct Takeover {
    stage: Box<dyn pipeline::Stage>,
    failure_log_interval: Duration,
}

/// Applies every reload all or nothing: the stage goes to the worker (it takes over at
/// the next frame) and the rest to ingest and sink only once all of it was prepared.
async fn reload_task(
    mut reload: watch::Receiver<Config>,
    started: Arc<InForce>,
    stages: std::sync::mpsc::Sender<Takeover>,
    applied: watch::Sender<Arc<InForce>>,
    metrics: Arc<Metrics>,
) {
    let mut current = started.clone();
    while reload.changed().await.is_ok() {
        let config = reload.borrow_and_update().clone();
        match prepare(config, &started.daemon).await {
            Ok((next, stage)) => {
                warn_exposed(&next.daemon, next.key.as_ref());
                let takeover = Takeover {
                    stage,
                    failure_log_interval: Duration::from_millis(next.daemon.reject_log_interval_ms),
                };
                if stages.send(takeover).is_err() {
                    break;
                }
                let next = Arc::new(next);
                metrics.set_device(&next.device);
                metrics.set_calibration(next.calibration());
                metrics.set_in_force(next.describe());
                metrics.set_last_reload(None);
                metrics.reloads.fetch_add(1, Relaxed);
                tracing::info!(
                    stage = next.stage,
                    device = %next.device,
                    authenticated = next.key.is_some(),
                    queue_capacity = next.daemon.queue_capacity,
                    "configuration reloaded; the stage takes over at the next frame"
                );
                current = next.clone();
                if applied.send(next).is_err() {
                    break;
                }
            }
            Err(e) => {
                metrics.reload_refused(&Chain(&e).to_string());
                tracing::error!(
                    error = %Chain(&e),
                    stage = current.stage,
                    authenticated = current.key.is_some(),
                    "configuration reload refused: the previous configuration stays in force, all of it"
                );
            }
        }
    }
}

/// Logs one kind of event at most once per interval, saying how many were left out since:
/// an unauthenticated flood of connections or announcements must not flood the log too.
struct Throttle {
    interval: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl Throttle {
    fn new(interval: Duration) -> Self {
        Throttle {
            interval,
            last: None,
            suppressed: 0,
        }
    }

    /// Logs at most once per `interval` from now on (a reload's), keeping the count of
    /// what was left out.
    fn set_interval(&mut self, interval: Duration) {
        self.interval = interval;
    }

    /// Some(events left out since the last line) when a line is due at `now`; None when
    /// this one is left out (and counted).
    fn due(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(at) if now.duration_since(at) < self.interval => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

/// What the ingest task logs at most once per `reject_log_interval_ms` each.
struct IngestLogs {
    scans: Throttle,
    peers: Throttle,
    refused: Throttle,
}

impl IngestLogs {
    fn new(interval: Duration) -> Self {
        IngestLogs {
            scans: Throttle::new(interval),
            peers: Throttle::new(interval),
            refused: Throttle::new(interval),
        }
    }
}

struct IngestTask {
    record: Option<RecordSink>,
    logs: IngestLogs,
    sub: SubSocket,
    events: SocketEvents,
    mode: IngestMode,
    endpoint: String,
    validator: Validator,
    log: RejectLog,
    queue: Arc<LatestQueue<AcceptedFrame>>,
    metrics: Arc<Metrics>,
    stop: watch::Receiver<bool>,
    applied: watch::Receiver<Arc<InForce>>,
}

async fn ingest_task(mut t: IngestTask) {
    if t.mode == IngestMode::Connect {
        tracing::info!(endpoint = %t.endpoint, "connecting to the scanner");
        tokio::select! {
            r = t.sub.connect(&t.endpoint) => {
                if let Err(e) = r {
                    tracing::error!(endpoint = %t.endpoint, error = %e, "cannot connect the ingest socket");
                    return;
                }
                tracing::info!(endpoint = %t.endpoint, "connected to the scanner");
            }
            _ = t.stop.wait_for(|s| *s) => return,
        }
    }
    enum Event {
        Stop,
        Applied(Result<(), watch::error::RecvError>),
        Socket(Option<zeromq::SocketEvent>),
        Message(zeromq::ZmqResult<ZmqMessage>),
    }
    let mut applied_open = true;
    let mut events_open = true;
    loop {
        let event = tokio::select! {
            biased;
            _ = t.stop.wait_for(|s| *s) => Event::Stop,
            changed = t.applied.changed(), if applied_open => Event::Applied(changed),
            ev = futures::StreamExt::next(&mut t.events), if events_open => Event::Socket(ev),
            msg = t.sub.recv() => Event::Message(msg),
        };
        match event {
            Event::Stop => break,
            Event::Applied(Ok(())) => {
                let next = t.applied.borrow_and_update().clone();
                t.apply(&next);
            }
            Event::Applied(Err(_)) => applied_open = false,
            Event::Socket(Some(ev)) => t.socket_event(ev),
            Event::Socket(None) => events_open = false,
            Event::Message(Ok(msg)) => t.handle(msg),
            Event::Message(Err(e)) => {
                // A peer went away mid-message or the connection broke; the socket
                // reconnects (connect mode) or accepts new peers (bind mode).
                t.metrics.ingest_errors.fetch_add(1, Relaxed);
                tracing::debug!(error = %e, "ingest receive error");
            }
        }
    }
    tracing::info!("ingest stopped");
}

impl IngestTask {
    fn handle(&mut self, msg: ZmqMessage) {
        let parts: Vec<Bytes> = msg.into_vec();
        self.metrics.messages_received.fetch_add(1, Relaxed);
        let bytes: usize = parts.iter().map(|p| p.len()).sum();
        self.metrics.bytes_received.fetch_add(bytes as u64, Relaxed);
        match self.validator.check(&parts) {
            Err(reject) => {
                self.metrics.reject(reject.reason());
                self.log.note(&reject, Instant::now());
            }
            Ok(Accepted::Scan {
                stream_id,
                scan_id,
                scan,
                changed,
            }) => {
                self.metrics.scans_accepted.fetch_add(1, Relaxed);
                if changed {
                    if let Some(left_out) = self.logs.scans.due(Instant::now()) {
                        tracing::info!(
                            stream_id,
                            scan_id,
                            n_tx = scan.n_tx(),
                            n_ax = scan.n_ax,
                            n_el = scan.n_el(),
                            n_ch = scan.n_ch,
                            left_out,
                            "scan parameters received ({left_out} more new scans since the last report)"
                        );
                    }
                }
            }
            Ok(Accepted::Frame(frame)) => {
                self.metrics.frames_accepted.fetch_add(1, Relaxed);
                if let Some(record) = &self.record {
                    record.offer(&frame);
                }
                let dropped = self.queue.push(frame);
                self.metrics
                    .frames_dropped
                    .fetch_add(dropped.len() as u64, Relaxed);
                self.metrics
                    .queue_depth
                    .store(self.queue.len() as u64, Relaxed);
            }
        }
        self.count_state();
    }

    /// Publishes the validator's table sizes and evictions.
    fn count_state(&mut self) {
        let (streams, scans) = self.validator.sizes();
        self.metrics
            .set_entries(StateTable::Streams, streams as u64);
        self.metrics.set_entries(StateTable::Scans, scans as u64);
        let e = self.validator.evictions();
        for (table, total) in [
            (StateTable::Streams, e.streams),
            (StateTable::Scans, e.scans),
        ] {
            let new = total.saturating_sub(self.metrics.evictions(table));
            if new > 0 {
                self.metrics.evicted(table, new);
            }
        }
    }

    /// Connections that come and go, and handshakes that fail (a PUSH or DEALER peer, a
    /// peer silent past `handshake_timeout_ms`).
    fn socket_event(&mut self, ev: zeromq::SocketEvent) {
        use zeromq::SocketEvent as E;
        let now = Instant::now();
        match ev {
            E::Accepted(endpoint, peer) => {
                if let Some(left_out) = self.logs.peers.due(now) {
                    tracing::info!(%endpoint, ?peer, left_out, "ingest: a peer connected");
                }
            }
            E::Disconnected(peer) => {
                if let Some(left_out) = self.logs.peers.due(now) {
                    tracing::info!(?peer, left_out, "ingest: a peer disconnected");
                }
            }
            E::AcceptFailed(error) => {
                self.metrics.ingest_errors.fetch_add(1, Relaxed);
                if let Some(left_out) = self.logs.refused.due(now) {
                    let what = match error {
                        zeromq::ZmqError::PeerLimit(_) => "was refused",
                        _ => "failed its handshake and was closed",
                    };
                    tracing::warn!(
                        %error,
                        left_out,
                        "ingest: a connection {what} ({left_out} more refused or failed since the last report)"
                    );
                }
            }
            other => tracing::debug!(event = ?other, "ingest socket event"),
        }
    }

    fn apply(&mut self, next: &InForce) {
        let new = &next.daemon;
        self.validator.set_key(next.key.clone());
        self.validator.set_bounds(Bounds::from_config(new));
        self.validator.set_check(next.check.clone());
        self.count_state();
        self.log
            .set_interval(Duration::from_millis(new.reject_log_interval_ms));
        self.logs = IngestLogs::new(Duration::from_millis(new.reject_log_interval_ms));
        let dropped = self.queue.set_capacity(new.queue_capacity);
        self.metrics
            .frames_dropped
            .fetch_add(dropped.len() as u64, Relaxed);
        self.metrics
            .queue_capacity
            .store(new.queue_capacity as u64, Relaxed);
        self.metrics
            .memory_budget
            .store(memory_budget(new), Relaxed);
    }
}

/// Logs consumers of the publish socket that come and go (one that asks for more than
/// 1024 subscriptions is disconnected by the socket), and counts the connections it
/// refuses (`max_connections`, a failed or slow handshake) in
/// `pleura_consumer_errors_total`.
async fn watch_consumers(
    mut events: SocketEvents,
    metrics: Arc<Metrics>,
    mut refused: Throttle,
    mut applied: watch::Receiver<Arc<InForce>>,
) {
    use zeromq::SocketEvent as E;
    while let Some(ev) = futures::StreamExt::next(&mut events).await {
        if applied.has_changed().unwrap_or(false) {
            let ms = applied.borrow_and_update().daemon.reject_log_interval_ms;
            refused.set_interval(Duration::from_millis(ms));
        }
        match ev {
            E::Accepted(endpoint, peer) => {
                tracing::debug!(%endpoint, ?peer, "publish: a consumer connected")
            }
            E::Disconnected(peer) => tracing::debug!(?peer, "publish: a consumer disconnected"),
            E::AcceptFailed(error) => {
                metrics.consumer_errors.fetch_add(1, Relaxed);
                if let Some(left_out) = refused.due(Instant::now()) {
                    tracing::warn!(
                        %error,
                        left_out,
                        "publish: a consumer's connection was refused or failed its handshake"
                    );
                }
            }
            other => tracing::debug!(event = ?other, "publish socket event"),
        }
    }
}

fn worker_loop(
    mut stage: Box<dyn pipeline::Stage>,
    stages: std::sync::mpsc::Receiver<Takeover>,
    queue: &LatestQueue<AcceptedFrame>,
    metrics: &Metrics,
    mut failures: Throttle,
    results: mpsc::Sender<ResultMessage>,
) {
    // Operator evictions of the stage in use already counted.
    let mut counted = 0;
    while let Some(frame) = queue.pop() {
        metrics.queue_depth.store(queue.len() as u64, Relaxed);
        // A reloaded stage takes over between frames; the newest one wins.
        while let Ok(next) = stages.try_recv() {
            stage = next.stage;
            failures.set_interval(next.failure_log_interval);
            counted = 0;
            metrics.set_device(&stage.device());
            metrics.set_calibration(stage.calibration().map(|(_, c)| c));
        }
        let started = Instant::now();
        let outcome = wire::payload_to_array(&frame.payload, frame.dtype, frame.shape)
            .map_err(|e| PipelineError::Frame {
                sequence: frame.sequence,
                stage: stage.name(),
                source: e.into(),
            })
            .and_then(|data| {
                stage.process(&FrameInput {
                    scan_id: frame.scan_id,
                    scan: &frame.scan,
                    sequence: frame.sequence,
                    timestamp_ns: frame.timestamp_ns,
                    data: &data,
                })
            });
        metrics.processing.observe(started.elapsed());
        let cache = stage.operator_cache();
        metrics.set_entries(StateTable::Operators, cache.len as u64);
        metrics.evicted(StateTable::Operators, cache.evictions - counted);
        counted = cache.evictions;
        // A failed frame is published too, with its reason (docs/protocol.md).
        let (fields, failure) = match outcome {
            Ok(output) => {
                if let Some(e) = output.estimate() {
                    metrics.fit(e.misfit, e.poor_fit);
                }
                (
                    wire::result_fields(&output),
                    output.failure().map(str::to_string),
                )
            }
            Err(e) => {
                let reason = Chain(&e).to_string();
                (wire::failure_fields(&reason), Some(reason))
            }
        };
        match failure {
            Some(reason) => {
                metrics.frames_failed.fetch_add(1, Relaxed);
                // Every failure is published and counted; the log keeps one line per
                // interval, so that a stream of bad frames does not flood it.
                if let Some(left_out) = failures.due(Instant::now()) {
                    tracing::warn!(
                        sequence = frame.sequence,
                        %reason,
                        left_out,
                        "frame failed ({left_out} more failed since the last report)"
                    );
                }
            }
            None => {
                metrics.frames_processed.fetch_add(1, Relaxed);
            }
        }
        let result = ResultMessage {
            stream_id: frame.stream_id,
            scan_id: frame.scan_id,
            sequence: frame.sequence,
            timestamp_ns: frame.timestamp_ns,
            published_ns: 0,
            latency_ns: 0,
            fields,
        };
        if results.blocking_send(result).is_err() {
            break;
        }
    }
}

async fn publish(publisher: &mut PubSocket, parts: Vec<Vec<u8>>) {
    let parts: Vec<Bytes> = parts.into_iter().map(Bytes::from).collect();
    match ZmqMessage::try_from(parts) {
        Ok(msg) => {
            if let Err(e) = publisher.send(msg).await {
                tracing::warn!(error = %e, "publish failed");
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot build an outgoing message"),
    }
}

async fn sink_task(
    mut publisher: PubSocket,
    mut results: mpsc::Receiver<ResultMessage>,
    metrics: Arc<Metrics>,
    live: Arc<LiveView>,
    mut applied: watch::Receiver<Arc<InForce>>,
) {
    let interval = |f: &InForce| Duration::from_millis(f.daemon.status_interval_ms);
    let mut key = applied.borrow().key.clone();
    let mut applied_open = true;
    let mut ticker = tokio::time::interval(interval(&applied.borrow()));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            r = results.recv() => match r {
                Some(mut result) => {
                    let now = now_ns();
                    result.published_ns = now;
                    result.latency_ns = now.saturating_sub(result.timestamp_ns);
                    metrics.latency.observe(Duration::from_nanos(result.latency_ns));
                    publish(&mut publisher, protocol::encode_result(&result, key.as_ref())).await;
                    metrics.results_published.fetch_add(1, Relaxed);
                    live.result(Arc::new(result));
                }
                None => break,
            },
            _ = ticker.tick() => {
                let json = metrics.status_json("running").to_string();
                let status = StatusMessage { published_ns: now_ns(), json };
                publish(&mut publisher, protocol::encode_status(&status, key.as_ref())).await;
            }
            changed = applied.changed(), if applied_open => match changed {
                Ok(()) => {
                    let next = applied.borrow_and_update().clone();
                    key = next.key.clone();
                    live.set_max_streams(next.daemon.max_streams);
                    ticker = tokio::time::interval(interval(&next));
                    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                }
                Err(_) => applied_open = false,
            },
        }
    }
    let status = StatusMessage {
        published_ns: now_ns(),
        json: metrics.status_json("stopped").to_string(),
    };
    publish(
        &mut publisher,
        protocol::encode_status(&status, key.as_ref()),
    )
    .await;
    tokio::time::sleep(FINAL_LINGER).await;
}

/// Reads a configuration file for a reload; the caller keeps the old one on error.
pub fn reload_config(path: &std::path::Path) -> Result<Config, crate::config::ConfigError> {
    Config::load(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The budget adds each bound's worst case, computed here term by term.
    #[test]
    fn memory_budget_adds_every_bound() {
        let c = DaemonConfig {
            ingest_mode: IngestMode::Connect,
            queue_capacity: 2,
            max_message_bytes: 1 << 20,
            max_connections: 4,
            publish_queue: 8,
            max_streams: 3,
            max_scans_per_stream: 2,
            max_scan_bytes: 1000,
            max_grid_pixels: 10_000,
            max_das_taps: 50_000,
            max_operators: 2,
            max_operator_bytes: 7_000,
            record: None,
            ..DaemonConfig::default()
        };
        let mib = 1u64 << 20;
        let frames = (2 + 1) * mib + 7 * mib;
        let consumers = 4 * 1025 * (4096 + 24);
        let read_buffers = (1 + 4) * 128 * 1024;
        let results = (64 + 8 * 4) * 10_000 * 12;
        let scans = (3 * 2 + 1) * 1000 * 2;
        let das = 50_000 * 8 + 10_000 * 32;
        let operators = 2 * 7_000;
        // The live view: per stream a result, 600 trend points, the largest panel
        // (1496 x 566) and trend (980 x 440) PNGs and 4 KiB; and a panel in flight.
        let png = |w: u64, h: u64| (3 * w + 1) * h + (3 * w + 1) * h / 1000 + 4096;
        let panel = png(1496, 566);
        let point = std::mem::size_of::<crate::render::TrendPoint>() as u64;
        let per_stream = 10_000 * 12 + 600 * point + panel + png(980, 440) + 4096;
        let live = 3 * per_stream + 2 * panel;
        assert_eq!(live_view_budget(&c), live);
        assert_eq!(
            memory_budget(&c),
            frames + consumers + read_buffers + results + scans + das + operators + live
        );
        // Recording adds its queue of frames; binding the ingest, a message per connection.
        let recording = DaemonConfig {
            record: Some("x.h5".into()),
            record_queue: 5,
            ..c.clone()
        };
        assert_eq!(memory_budget(&recording), memory_budget(&c) + 5 * mib);
        let bound = DaemonConfig {
            ingest_mode: IngestMode::Bind,
            ..c.clone()
        };
        assert_eq!(
            memory_budget(&bound),
            memory_budget(&c) + 3 * mib + 3 * 128 * 1024
        );
        // Bounds too large to add up give the largest budget, not an overflow.
        let huge = DaemonConfig {
            max_das_taps: u64::MAX / 2,
            max_operator_bytes: u64::MAX / 2,
            max_operators: 4,
            ..c.clone()
        };
        assert_eq!(memory_budget(&huge), u64::MAX);
    }

    /// One line per interval, with the count of those left out in between.
    #[test]
    fn throttle_reports_what_it_left_out() {
        let mut t = Throttle::new(Duration::from_secs(1));
        let t0 = Instant::now();
        assert_eq!(t.due(t0), Some(0));
        assert_eq!(t.due(t0 + Duration::from_millis(10)), None);
        assert_eq!(t.due(t0 + Duration::from_millis(999)), None);
        assert_eq!(t.due(t0 + Duration::from_millis(1000)), Some(2));
        assert_eq!(t.due(t0 + Duration::from_millis(1500)), None);
        let mut every = Throttle::new(Duration::ZERO);
        assert_eq!((every.due(t0), every.due(t0)), (Some(0), Some(0)));
    }

    /// Which endpoints the start-up warning treats as reachable from other machines.
    #[test]
    fn only_loopback_and_ipc_count_as_local() {
        for local in [
            "tcp://127.0.0.1:5555",
            "tcp://127.0.0.9:0",
            "tcp://localhost:5555",
            "tcp://[::1]:5555",
            "127.0.0.1:9464",
            "ipc:///tmp/pleura.sock",
        ] {
            assert!(is_local(local), "{local}");
        }
        for exposed in [
            "tcp://0.0.0.0:5555",
            "tcp://*:5555",
            "tcp://[::]:5555",
            "0.0.0.0:9464",
            "tcp://192.168.1.20:5555",
            "tcp://scanner.example:5555",
        ] {
            assert!(!is_local(exposed), "{exposed}");
        }
    }
    use crate::config::StageKind;
    use crate::testing::tiny_scan;
    use pleura_bridge::publisher::{Mode, Publisher};

    /// The server runs in-process; the shutdown future ends it and the summary counts what
    /// a publisher thread sent.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn in_process_server_with_shutdown_future() {
        let cfg = Config {
            daemon: DaemonConfig {
                ingest: "tcp://127.0.0.1:0".into(),
                ingest_mode: IngestMode::Bind,
                publish: "tcp://127.0.0.1:0".into(),
                admin: "127.0.0.1:0".into(),
                stage: StageKind::None,
                queue_capacity: 16,
                ..DaemonConfig::default()
            },
            ..Config::default()
        };
        let daemon = Daemon::start(cfg.clone()).await.unwrap();
        let ingest = daemon.endpoints().ingest.clone();
        assert!(
            ingest.starts_with("tcp://127.0.0.1:") && !ingest.ends_with(":0"),
            "{ingest}"
        );
        let metrics = daemon.metrics();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (_reload_tx, reload_rx) = watch::channel(cfg);
        let server = tokio::spawn(daemon.run(
            async move {
                let _ = stop_rx.await;
            },
            reload_rx,
        ));
        let publisher = std::thread::spawn(move || {
            let mut p =
                Publisher::open(&ingest, Mode::Connect, None, Duration::from_secs(10)).unwrap();
            assert!(p.wait_for_subscriber(Duration::from_secs(10)));
            let scan = tiny_scan();
            p.publish_scan(4, wire::scan_to_fields(&scan)).unwrap();
            let shape = wire::frame_shape(&scan).map(|d| d as u32);
            let payload = vec![0u8; shape.iter().product::<u32>() as usize * 2];
            for seq in 0..5 {
                p.publish_frame(4, seq, now_ns(), protocol::Dtype::I16, shape, &payload)
                    .unwrap();
            }
            assert_eq!(p.flush(Duration::from_secs(5)), 0);
        });
        tokio::task::spawn_blocking(move || publisher.join().unwrap())
            .await
            .unwrap();
        let t0 = Instant::now();
        while metrics.frames_accepted.load(Relaxed) < 5 && t0.elapsed() < Duration::from_secs(10) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        stop_tx.send(()).unwrap();
        let summary = server.await.unwrap().unwrap();
        assert_eq!(summary.frames_accepted, 5);
        assert_eq!(summary.frames_processed + summary.frames_dropped, 5);
        assert_eq!(summary.messages_rejected, 0);
        assert!(!metrics.healthy.load(Relaxed));
    }
}
