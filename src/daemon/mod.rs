//! The live daemon (`pleura serve`): ZeroMQ in, per-frame pipeline, ZeroMQ out.
//!
//! Tokio tasks form a source -> transform -> sink pipeline:
//!
//! - **ingest** (task): a SUB socket (connect or bind per `[daemon] ingest_mode`) that
//!   always drains the socket: it validates every message ([`validate`]), counts every
//!   rejection by reason and pushes accepted frames onto a bounded latest-frame queue
//!   ([`queue`]) that drops its oldest frame when full. It never waits on the worker.
//! - **worker** (dedicated thread): pops frames and runs the configured
//!   [`crate::pipeline::Stage`] on them, one at a time.
//! - **sink** (task): a PUB socket publishing each frame's result (sequence number,
//!   timestamps, latency acquisition -> publish, the stage's fields) and a periodic
//!   status message.
//! - **admin** (task): HTTP `/metrics` and `/healthz` ([`crate::metrics::http`]).
//!
//! [`Daemon::start`] binds everything and reports the resolved endpoints (port 0 picks a
//! free port); [`Daemon::run`] runs until the `shutdown` future completes, then stops
//! ingest, lets the worker finish the frame in flight, publishes a final status and
//! returns, all within `shutdown_deadline_ms`. Configuration reloads arrive on a watch
//! channel: each one rebuilds the stage from the new configuration (reloading the model
//! from disk) off the worker thread and swaps it in between two frames, without touching
//! the sockets; a stage that fails to build leaves the running one in place. The CLI
//! (`src/cli/serve.rs`) wires signals to both.

pub mod queue;
pub mod record;
pub mod validate;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use tokio::sync::{mpsc, watch};
use zeromq::{PubSocket, Socket, SocketRecv, SocketSend, SubSocket, ZmqMessage};

use crate::config::{Config, DaemonConfig, IngestMode};
use crate::metrics::{http, Metrics};
use crate::pipeline::{self, FrameInput};
use crate::protocol::{self, Field, Key, ResultMessage, StatusMessage};
use crate::wire;
use queue::LatestQueue;
use record::RecordSink;
use validate::{Accepted, AcceptedFrame, RejectLog, Validator};

/// Pause after the final status so the PUB socket's writer can flush it to subscribers.
const FINAL_LINGER: Duration = Duration::from_millis(100);
/// Results waiting between the worker and the sink.
const RESULT_QUEUE: usize = 64;

/// Errors starting or running the daemon.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
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
        let key = load_key(&config)?;
        let stage = {
            let full = full.clone();
            tokio::task::spawn_blocking(move || pipeline::build(&full))
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
        let mut publisher = PubSocket::new();
        let publish = publisher
            .bind(&config.publish)
            .await
            .map_err(|source| DaemonError::Zmq {
                action: "bind the publish socket to",
                endpoint: config.publish.clone(),
                source,
            })?
            .to_string();
        let mut sub = SubSocket::new();
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
            .store(config.queue_capacity.max(1) as u64, Relaxed);
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
    /// New configurations sent on `reload` are applied without dropping connections
    /// (key, queue capacity, status interval, log interval, tracked streams, and the
    /// stage with its model and sampler settings; endpoint and recording changes need a
    /// restart and are reported as such).
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
        } = self;
        let config = full.daemon.clone();
        let device = stage.device();
        tracing::info!(
            ingest = %endpoints.ingest,
            publish = %endpoints.publish,
            admin = %endpoints.admin,
            stage = stage.name(),
            %device,
            authenticated = key.is_some(),
            "daemon running"
        );
        metrics.set_device(&device);
        let admin_task = tokio::spawn(http::serve(admin, metrics.clone()));
        let queue = Arc::new(LatestQueue::<AcceptedFrame>::new(config.queue_capacity));
        let (stop_tx, stop_rx) = watch::channel(false);
        let (result_tx, result_rx) = mpsc::channel::<ResultMessage>(RESULT_QUEUE);

        let (stage_tx, stage_rx) = std::sync::mpsc::channel::<Box<dyn pipeline::Stage>>();
        let worker = {
            let queue = queue.clone();
            let metrics = metrics.clone();
            std::thread::Builder::new()
                .name("pleura-worker".into())
                .spawn(move || worker_loop(stage, stage_rx, &queue, &metrics, result_tx))
                .map_err(DaemonError::Thread)?
        };
        let stage_reload = tokio::spawn(stage_reload_task(reload.clone(), stage_tx));
        let sink = tokio::spawn(sink_task(
            publisher,
            result_rx,
            metrics.clone(),
            key.clone(),
            Duration::from_millis(config.status_interval_ms.max(1)),
            reload.clone(),
        ));
        let (record, recorder) = match &config.record {
            Some(path) => {
                let (sink, handle) =
                    RecordSink::start(path.clone(), config.record_queue, metrics.clone())
                        .map_err(DaemonError::Thread)?;
                (Some(sink), Some(handle))
            }
            None => (None, None),
        };
        let mut ingest = tokio::spawn(ingest_task(IngestTask {
            record,
            sub,
            mode: config.ingest_mode,
            endpoint: endpoints.ingest.clone(),
            validator: Validator::new(key, config.max_streams),
            log: RejectLog::new(Duration::from_millis(config.reject_log_interval_ms)),
            queue: queue.clone(),
            metrics: metrics.clone(),
            stop: stop_rx,
            reload,
            config: config.clone(),
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
        stage_reload.abort();
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

struct IngestTask {
    record: Option<RecordSink>,
    sub: SubSocket,
    mode: IngestMode,
    endpoint: String,
    validator: Validator,
    log: RejectLog,
    queue: Arc<LatestQueue<AcceptedFrame>>,
    metrics: Arc<Metrics>,
    stop: watch::Receiver<bool>,
    reload: watch::Receiver<Config>,
    config: DaemonConfig,
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
        Reload(Result<(), watch::error::RecvError>),
        Message(zeromq::ZmqResult<ZmqMessage>),
    }
    let mut reload_open = true;
    loop {
        let event = tokio::select! {
            biased;
            _ = t.stop.wait_for(|s| *s) => Event::Stop,
            changed = t.reload.changed(), if reload_open => Event::Reload(changed),
            msg = t.sub.recv() => Event::Message(msg),
        };
        match event {
            Event::Stop => break,
            Event::Reload(Ok(())) => {
                let new = t.reload.borrow_and_update().daemon.clone();
                t.apply(new);
            }
            Event::Reload(Err(_)) => reload_open = false,
            Event::Message(Ok(msg)) => t.handle(msg),
            Event::Message(Err(e)) => {
                // A peer went away mid-message or the connection broke; the socket
                // reconnects (connect mode) or accepts new peers (bind mode).
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
                scan_id,
                scan,
                changed,
            }) => {
                self.metrics.scans_accepted.fetch_add(1, Relaxed);
                if changed {
                    tracing::info!(
                        scan_id,
                        n_tx = scan.n_tx(),
                        n_ax = scan.n_ax,
                        n_el = scan.n_el(),
                        n_ch = scan.n_ch,
                        "scan parameters received"
                    );
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
    }

    fn apply(&mut self, new: DaemonConfig) {
        match load_key(&new) {
            Ok(key) => self.validator.set_key(key),
            Err(e) => {
                tracing::error!(error = %e, "configuration reload: keeping the previous key");
            }
        }
        self.validator.set_max_streams(new.max_streams);
        self.log
            .set_interval(Duration::from_millis(new.reject_log_interval_ms));
        let dropped = self.queue.set_capacity(new.queue_capacity);
        self.metrics
            .frames_dropped
            .fetch_add(dropped.len() as u64, Relaxed);
        self.metrics
            .queue_capacity
            .store(new.queue_capacity.max(1) as u64, Relaxed);
        let needs_restart = new.ingest != self.config.ingest
            || new.ingest_mode != self.config.ingest_mode
            || new.publish != self.config.publish
            || new.admin != self.config.admin
            || new.record != self.config.record;
        if needs_restart {
            tracing::warn!(
                "configuration reload: endpoint and recording changes take effect at the next start"
            );
        }
        self.metrics.reloads.fetch_add(1, Relaxed);
        tracing::info!(
            queue_capacity = new.queue_capacity,
            authenticated = new.key_file.is_some(),
            "configuration reloaded"
        );
        self.config = new;
    }
}

/// Rebuilds the stage on every configuration reload, off the worker thread (loading a
/// model takes a while), and hands it to the worker.
async fn stage_reload_task(
    mut reload: watch::Receiver<Config>,
    stages: std::sync::mpsc::Sender<Box<dyn pipeline::Stage>>,
) {
    while reload.changed().await.is_ok() {
        let config = reload.borrow_and_update().clone();
        match tokio::task::spawn_blocking(move || pipeline::build(&config)).await {
            Ok(Ok(stage)) => {
                tracing::info!(stage = stage.name(), device = %stage.device(), "stage rebuilt; it takes over at the next frame");
                if stages.send(stage).is_err() {
                    break;
                }
            }
            Ok(Err(e)) => {
                tracing::error!(error = %e, "configuration reload: keeping the running stage");
            }
            Err(_) => tracing::error!(
                "configuration reload: the stage build panicked; keeping the running stage"
            ),
        }
    }
}

fn worker_loop(
    mut stage: Box<dyn pipeline::Stage>,
    stages: std::sync::mpsc::Receiver<Box<dyn pipeline::Stage>>,
    queue: &LatestQueue<AcceptedFrame>,
    metrics: &Metrics,
    results: mpsc::Sender<ResultMessage>,
) {
    while let Some(frame) = queue.pop() {
        metrics.queue_depth.store(queue.len() as u64, Relaxed);
        // A reloaded stage takes over between frames; the newest one wins.
        while let Ok(next) = stages.try_recv() {
            stage = next;
            metrics.set_device(&stage.device());
        }
        let started = Instant::now();
        let outcome = wire::payload_to_array(&frame.payload, frame.dtype, frame.shape)
            .map_err(|e| e.to_string())
            .and_then(|data| {
                stage
                    .process(&FrameInput {
                        scan_id: frame.scan_id,
                        scan: &frame.scan,
                        sequence: frame.sequence,
                        timestamp_ns: frame.timestamp_ns,
                        data: &data,
                    })
                    .map_err(|e| e.to_string())
            });
        metrics.processing.observe(started.elapsed());
        let fields: Vec<Field> = match outcome {
            Ok(fields) => fields,
            Err(e) => {
                metrics.frames_failed.fetch_add(1, Relaxed);
                tracing::warn!(sequence = frame.sequence, error = %e, "frame not processed");
                continue;
            }
        };
        metrics.frames_processed.fetch_add(1, Relaxed);
        let result = ResultMessage {
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

fn status_json(metrics: &Metrics, state: &str) -> String {
    let rejected: serde_json::Map<String, serde_json::Value> = crate::metrics::RejectReason::ALL
        .iter()
        .map(|r| (r.label().to_string(), metrics.rejected(*r).into()))
        .collect();
    serde_json::json!({
        "state": state,
        "messages_received": metrics.messages_received.load(Relaxed),
        "scans_accepted": metrics.scans_accepted.load(Relaxed),
        "frames_accepted": metrics.frames_accepted.load(Relaxed),
        "frames_dropped": metrics.frames_dropped.load(Relaxed),
        "frames_processed": metrics.frames_processed.load(Relaxed),
        "frames_failed": metrics.frames_failed.load(Relaxed),
        "results_published": metrics.results_published.load(Relaxed),
        "queue_depth": metrics.queue_depth.load(Relaxed),
        "rejected": rejected,
    })
    .to_string()
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
    key: Option<Key>,
    status_interval: Duration,
    mut reload: watch::Receiver<Config>,
) {
    let mut key = key;
    let mut reload_open = true;
    let mut ticker = tokio::time::interval(status_interval);
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
                }
                None => break,
            },
            _ = ticker.tick() => {
                let status = StatusMessage { published_ns: now_ns(), json: status_json(&metrics, "running") };
                publish(&mut publisher, protocol::encode_status(&status, key.as_ref())).await;
            }
            changed = reload.changed(), if reload_open => match changed {
                Ok(()) => {
                    let new = reload.borrow_and_update().daemon.clone();
                    if let Ok(k) = load_key(&new) {
                        key = k;
                    }
                    ticker = tokio::time::interval(Duration::from_millis(new.status_interval_ms.max(1)));
                    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                }
                Err(_) => reload_open = false,
            },
        }
    }
    let status = StatusMessage {
        published_ns: now_ns(),
        json: status_json(&metrics, "stopped"),
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
    use crate::config::StageKind;
    use crate::wire::tests::tiny_scan;
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
