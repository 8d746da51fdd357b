//! The live view's store: per stream, the latest result (or failure) and a bounded trend
//! of the published aeration, for the admin server's page (`/`, [`crate::metrics::http`]).
//!
//! The frame path only records: the sink hands over each published result (moved, not
//! copied) and the worker each failure, under a lock held for a map update. Figures are
//! rendered lazily, when the page asks for them, off the frame path (a blocking task, one
//! render at a time) and cached per result, so a stream's panel is rendered at most once
//! per result however many pages poll. Streams are bounded by `[daemon] max_streams`,
//! least recently updated evicted first (`pleura_state_entries{table="live_streams"}`),
//! and each keeps at most [`TREND_POINTS`] trend points.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use ndarray::ArrayView2;

use crate::aeration;
use crate::metrics::{Metrics, StateTable};
use crate::protocol::{FieldData, ResultMessage};
use crate::render::{self, Estimate, FrameLabel, PanelInput, PoorFit, Reconstruction, RenderError};
use crate::render::{TrendPoint, TrendValue};

/// Trend points kept per stream (the most recent).
pub const TREND_POINTS: usize = 600;

/// What a stream last produced.
#[derive(Clone, Debug)]
enum Latest {
    Result(Arc<ResultMessage>),
    Failed {
        sequence: u64,
        timestamp_ns: u64,
        reason: String,
    },
}

impl Latest {
    fn sequence(&self) -> u64 {
        match self {
            Latest::Result(r) => r.sequence,
            Latest::Failed { sequence, .. } => *sequence,
        }
    }

    fn timestamp_ns(&self) -> u64 {
        match self {
            Latest::Result(r) => r.timestamp_ns,
            Latest::Failed { timestamp_ns, .. } => *timestamp_ns,
        }
    }
}

/// A figure rendered for one version of a stream.
type Cached = Option<(u64, Arc<Vec<u8>>)>;

struct StreamView {
    /// When it was last updated (the store's clock), for eviction.
    touched: u64,
    /// Results and failures recorded; the version figures are cached for.
    version: u64,
    failed: u64,
    first_timestamp_ns: u64,
    latest: Latest,
    /// The latest result published (the latest when that is not a failure): a failed
    /// frame's panel is drawn on its grid.
    last_result: Option<Arc<ResultMessage>>,
    trend: VecDeque<TrendPoint>,
    panel: Cached,
    trend_png: Cached,
}

struct Streams {
    max: usize,
    clock: u64,
    map: HashMap<u64, StreamView>,
}

/// Which figure of a stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Figure {
    Panel,
    Trend,
}

/// The live view's store, shared by the worker, the sink and the admin server.
pub struct LiveView {
    streams: Mutex<Streams>,
    /// One render at a time, whatever the number of pages.
    render: tokio::sync::Semaphore,
    metrics: Arc<Metrics>,
}

/// A scalar f64 field of a result.
fn scalar(r: &ResultMessage, name: &str) -> Option<f64> {
    r.fields
        .iter()
        .find(|f| f.name == name)
        .and_then(|f| match &f.data {
            FieldData::F64(v) => v.first().copied(),
            FieldData::U8(v) => v.first().map(|&b| f64::from(b)),
            _ => None,
        })
}

fn f64s<'a>(r: &'a ResultMessage, name: &str) -> Option<&'a [f64]> {
    r.fields
        .iter()
        .find(|f| f.name == name)
        .and_then(|f| match &f.data {
            FieldData::F64(v) => Some(&v[..]),
            _ => None,
        })
}

/// A float32 (nz, nx) image field.
fn image<'a>(
    r: &'a ResultMessage,
    name: &str,
    nz: usize,
    nx: usize,
) -> Option<ArrayView2<'a, f32>> {
    r.fields
        .iter()
        .find(|f| f.name == name && f.shape == [nz as u32, nx as u32])
        .and_then(|f| match &f.data {
            FieldData::F32(v) => ArrayView2::from_shape((nz, nx), v).ok(),
            _ => None,
        })
}

/// A result's grid (`grid_x`, `grid_z`); a one-pixel one for a result without (the
/// `none` stage) or no result: the panel then has no image, only its caption.
fn grid_of(r: Option<&ResultMessage>) -> (&[f64], &[f64]) {
    match r.map(|r| (f64s(r, "grid_x"), f64s(r, "grid_z"))) {
        Some((Some(x), Some(z))) if !x.is_empty() && !z.is_empty() => (x, z),
        _ => (&[0.0], &[0.0]),
    }
}

/// The aeration a result published with its interval, when it has them.
/// The result's poor fit, as its `poor_fit`, `misfit` and `data_term` fields say
/// (docs/protocol.md).
fn poor_fit(r: &ResultMessage) -> Option<PoorFit> {
    (scalar(r, "poor_fit") == Some(1.0)).then(|| PoorFit {
        misfit: scalar(r, "misfit").unwrap_or(f64::NAN),
        echo: scalar(r, "data_term") == Some(1.0),
    })
}

/// Characters of a failure reason the store keeps per stream (the page shows one line of
/// it, the panel two): what `max_streams` streams hold stays bounded whatever a reason says.
const MAX_REASON_CHARS: usize = 512;

/// `reason`, cut to [`MAX_REASON_CHARS`] with an ellipsis.
fn bounded_reason(reason: String) -> String {
    match reason.char_indices().nth(MAX_REASON_CHARS) {
        None => reason,
        Some((cut, _)) => format!("{}...", &reason[..cut]),
    }
}

fn published(r: &ResultMessage) -> Option<(f64, [f64; 2])> {
    let a = scalar(r, "aeration")?;
    match f64s(r, "aeration_ci")? {
        [lo, hi] => Some((a, [*lo, *hi])),
        _ => None,
    }
}

impl LiveView {
    /// An empty store of at most `max_streams` streams.
    pub fn new(max_streams: usize, metrics: Arc<Metrics>) -> Self {
        LiveView {
            streams: Mutex::new(Streams {
                max: max_streams.max(1),
                clock: 0,
                map: HashMap::new(),
            }),
            render: tokio::sync::Semaphore::new(1),
            metrics,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Streams> {
        self.streams.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Changes the bound (a reload), evicting the least recently updated streams over it.
    pub fn set_max_streams(&self, max: usize) {
        let mut s = self.lock();
        s.max = max.max(1);
        self.evict(&mut s);
    }

    fn evict(&self, s: &mut Streams) {
        let mut evicted = 0;
        while s.map.len() > s.max {
            let Some(oldest) = s.map.iter().min_by_key(|(_, v)| v.touched).map(|(k, _)| *k) else {
                break;
            };
            s.map.remove(&oldest);
            evicted += 1;
        }
        if evicted > 0 {
            self.metrics.evicted(StateTable::LiveStreams, evicted);
        }
        self.metrics
            .set_entries(StateTable::LiveStreams, s.map.len() as u64);
    }

    fn record(&self, stream_id: u64, latest: Latest, value: Option<TrendValue>) {
        let point = value.map(|value| TrendPoint {
            frame: latest.sequence(),
            timestamp_ns: latest.timestamp_ns(),
            value,
            truth: None,
        });
        let mut s = self.lock();
        s.clock += 1;
        let now = s.clock;
        let failed = u64::from(matches!(latest, Latest::Failed { .. }));
        let view = s.map.entry(stream_id).or_insert_with(|| StreamView {
            touched: now,
            version: 0,
            failed: 0,
            first_timestamp_ns: latest.timestamp_ns(),
            latest: latest.clone(),
            last_result: None,
            trend: VecDeque::new(),
            panel: None,
            trend_png: None,
        });
        view.touched = now;
        view.version += 1;
        view.failed += failed;
        if let Latest::Result(r) = &latest {
            view.last_result = Some(r.clone());
        }
        view.latest = latest;
        if let Some(p) = point {
            if view.trend.len() == TREND_POINTS {
                view.trend.pop_front();
            }
            view.trend.push_back(p);
        }
        self.evict(&mut s);
    }

    /// Records a published result (the sink, after publishing it): an estimate, or a
    /// frame the stage failed on with its reason.
    pub fn result(&self, result: Arc<ResultMessage>) {
        if let Some(reason) = crate::wire::result_failure(&result.fields) {
            let latest = Latest::Failed {
                sequence: result.sequence,
                timestamp_ns: result.timestamp_ns,
                reason: bounded_reason(reason),
            };
            self.record(result.stream_id, latest, Some(TrendValue::Failed));
            return;
        }
        let value = published(&result).map(|(aeration, ci)| TrendValue::Estimate { aeration, ci });
        self.record(result.stream_id, Latest::Result(result), value);
    }

    /// The streams as `/live/state` lists them, most recently updated first.
    pub fn state_json(&self) -> serde_json::Value {
        let s = self.lock();
        let mut views: Vec<(&u64, &StreamView)> = s.map.iter().collect();
        views.sort_by_key(|(_, v)| std::cmp::Reverse(v.touched));
        let streams: Vec<serde_json::Value> = views
            .into_iter()
            .map(|(id, v)| {
                // Stream ids are u64: as strings, which JavaScript keeps exact.
                let mut j = serde_json::json!({
                    "stream_id": id.to_string(),
                    "version": v.version,
                    "frames": v.version,
                    "failed": v.failed,
                    "sequence": v.latest.sequence(),
                    "time_s": v.latest.timestamp_ns().saturating_sub(v.first_timestamp_ns) as f64 * 1e-9,
                });
                match &v.latest {
                    Latest::Result(r) => {
                        if let Some((a, ci)) = published(r) {
                            j["aeration"] = a.into();
                            j["aeration_ci"] = serde_json::json!(ci);
                        }
                        if let Some(c) = scalar(r, "category") {
                            j["category"] = aeration::category_label(c as u8).into();
                        }
                        if let Some(p) = poor_fit(r) {
                            j["poor_fit"] = p.note().into();
                        }
                        j["latency_ms"] = (r.latency_ns as f64 * 1e-6).into();
                    }
                    Latest::Failed { reason, .. } => j["failed_reason"] = reason.as_str().into(),
                }
                j
            })
            .collect();
        serde_json::Value::Array(streams)
    }

    /// A stream's figure as PNG bytes: the cached one of its latest result, or rendered
    /// now on a blocking task; None for a stream not in the store.
    pub async fn figure(
        &self,
        stream_id: u64,
        figure: Figure,
    ) -> Option<Result<Arc<Vec<u8>>, RenderError>> {
        let cached = |v: &StreamView| match figure {
            Figure::Panel => v.panel.clone(),
            Figure::Trend => v.trend_png.clone(),
        };
        let job = {
            let s = self.lock();
            let v = s.map.get(&stream_id)?;
            if let Some((version, png)) = cached(v) {
                if version == v.version {
                    return Some(Ok(png));
                }
            }
            RenderJob {
                stream_id,
                version: v.version,
                first_timestamp_ns: v.first_timestamp_ns,
                latest: v.latest.clone(),
                last_result: v.last_result.clone(),
                trend: match figure {
                    Figure::Panel => Vec::new(),
                    Figure::Trend => v.trend.iter().copied().collect(),
                },
            }
        };
        let Ok(_permit) = self.render.acquire().await else {
            return Some(Err(RenderError::Draw("the renderer is closed".into())));
        };
        // Another request may have rendered it while this one waited.
        {
            let s = self.lock();
            if let Some((version, png)) = s.map.get(&stream_id).and_then(cached) {
                if version == job.version {
                    return Some(Ok(png));
                }
            }
        }
        let version = job.version;
        let rendered = tokio::task::spawn_blocking(move || job.render(figure))
            .await
            .unwrap_or_else(|_| Err(RenderError::Draw("the render task panicked".into())));
        let png = match rendered {
            Ok(png) => Arc::new(png),
            Err(e) => return Some(Err(e)),
        };
        let mut s = self.lock();
        if let Some(v) = s.map.get_mut(&stream_id) {
            let slot = match figure {
                Figure::Panel => &mut v.panel,
                Figure::Trend => &mut v.trend_png,
            };
            if slot.as_ref().is_none_or(|(have, _)| *have < version) {
                *slot = Some((version, png.clone()));
            }
        }
        Some(Ok(png))
    }
}

/// What a render needs, taken out of the store so the lock is not held while drawing.
struct RenderJob {
    stream_id: u64,
    version: u64,
    first_timestamp_ns: u64,
    latest: Latest,
    last_result: Option<Arc<ResultMessage>>,
    trend: Vec<TrendPoint>,
}

impl RenderJob {
    fn render(&self, figure: Figure) -> Result<Vec<u8>, RenderError> {
        match figure {
            Figure::Trend => render::trend_png(
                &self.trend,
                &format!("Lung aeration, stream {}", self.stream_id),
            ),
            Figure::Panel => self.panel(),
        }
    }

    fn panel(&self) -> Result<Vec<u8>, RenderError> {
        let label = FrameLabel {
            stream: Some(self.stream_id),
            frame: self.latest.sequence(),
            time_s: self
                .latest
                .timestamp_ns()
                .saturating_sub(self.first_timestamp_ns) as f64
                * 1e-9,
        };
        let r = match &self.latest {
            Latest::Failed { reason, .. } => {
                // Nothing was published: the reason, on the grid of the last result.
                let (gx, gz) = grid_of(self.last_result.as_deref());
                return render::panel_png(&PanelInput {
                    grid_x: gx,
                    grid_z: gz,
                    envelope: None,
                    reconstruction: Reconstruction::Failed(reason),
                    truth: None,
                    label,
                });
            }
            Latest::Result(r) => r,
        };
        let (gx, gz) = grid_of(Some(r));
        let (nz, nx) = (gz.len(), gx.len());
        // The posterior stage's `das` (envelope over its maximum), or the DAS stage's
        // `envelope`.
        let envelope = image(r, "das", nz, nx).or_else(|| image(r, "envelope", nz, nx));
        let reconstruction = match (
            image(r, "mean", nz, nx),
            image(r, "std", nz, nx),
            published(r),
        ) {
            (Some(mean), Some(std), Some((aeration, ci))) => Reconstruction::Estimate(Estimate {
                mean,
                std,
                aeration,
                ci,
                category: scalar(r, "category").map_or(u8::MAX, |c| c as u8),
                poor_fit: poor_fit(r),
            }),
            _ => Reconstruction::None,
        };
        render::panel_png(&PanelInput {
            grid_x: gx,
            grid_z: gz,
            envelope,
            reconstruction,
            truth: None,
            label,
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::protocol::Field;

    /// A posterior result of a 4 x 4 grid: uniform `aeration`, std 0.01, interval +- 0.01.
    pub(crate) fn result(stream_id: u64, sequence: u64, aeration: f64) -> Arc<ResultMessage> {
        let n = 4u32;
        let img = |name: &str, v: f32| Field {
            name: name.into(),
            shape: vec![n, n],
            data: FieldData::F32(vec![v; 16]),
        };
        let axis =
            |name: &str| Field::f64(name, vec![n], (0..4).map(|i| i as f64 * 1e-3).collect());
        Arc::new(ResultMessage {
            stream_id,
            scan_id: 0,
            sequence,
            timestamp_ns: 1_000_000_000 + sequence * 100_000_000,
            published_ns: 0,
            latency_ns: 2_000_000,
            fields: vec![
                img("mean", aeration as f32),
                img("std", 0.01),
                img("das", 1.0),
                Field::scalar("aeration", aeration),
                Field::f64(
                    "aeration_ci",
                    vec![2],
                    vec![aeration - 0.01, aeration + 0.01],
                ),
                Field {
                    name: "category".into(),
                    shape: Vec::new(),
                    data: FieldData::U8(vec![1]),
                },
                axis("grid_x"),
                axis("grid_z"),
            ],
        })
    }

    /// The result published for a frame the stage failed on, with `reason`.
    fn failed(stream_id: u64, sequence: u64, reason: &str) -> Arc<ResultMessage> {
        Arc::new(ResultMessage {
            fields: crate::wire::failure_fields(reason),
            ..(*result(stream_id, sequence, 0.0)).clone()
        })
    }

    /// Streams are bounded, least recently updated evicted first and counted; each
    /// stream's trend is bounded; a failure is the stream's latest with its reason.
    #[test]
    fn bounded_streams_and_trend() {
        let metrics = Arc::new(Metrics::new());
        let live = LiveView::new(2, metrics.clone());
        live.result(result(1, 0, 0.7));
        live.result(result(2, 0, 0.7));
        live.result(result(1, 1, 0.72));
        live.result(result(3, 0, 0.7));
        let state = live.state_json();
        let ids: Vec<u64> = state
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["stream_id"].as_str().unwrap().parse().unwrap())
            .collect();
        assert_eq!(ids, vec![3, 1], "stream 2 was the least recently updated");
        assert_eq!(metrics.entries(StateTable::LiveStreams), 2);
        assert_eq!(metrics.evictions(StateTable::LiveStreams), 1);
        let one = &state[1];
        assert_eq!(one["sequence"], 1);
        assert_eq!(one["frames"], 2);
        assert_eq!(one["aeration"], 0.72);
        assert_eq!(one["category"], "normal (60-85 %)");
        assert!((one["time_s"].as_f64().unwrap() - 0.1).abs() < 1e-9);

        live.result(failed(3, 1, "non-finite samples"));
        let three = &live.state_json()[0];
        assert_eq!(three["failed"], 1);

        assert_eq!(three["failed_reason"], "non-finite samples");
        assert!(three.get("aeration").is_none());

        for k in 0..TREND_POINTS as u64 + 5 {
            live.result(result(1, 2 + k, 0.7));
        }
        let s = live.lock();
        let trend = &s.map[&1].trend;
        assert_eq!(trend.len(), TREND_POINTS);
        assert_eq!(trend.back().map(|p| p.frame), Some(TREND_POINTS as u64 + 6));
        drop(s);
        live.set_max_streams(1);
        assert_eq!(metrics.entries(StateTable::LiveStreams), 1);
        assert_eq!(metrics.evictions(StateTable::LiveStreams), 2);
    }

    /// A failure reason of any length is kept to MAX_REASON_CHARS characters.
    #[test]
    fn failure_reasons_are_bounded() {
        let live = LiveView::new(4, Arc::new(Metrics::new()));
        let long = "é".repeat(10 * MAX_REASON_CHARS);
        live.result(failed(4, 0, &long));
        let kept = live.state_json()[0]["failed_reason"]
            .as_str()
            .unwrap()
            .to_string();
        assert_eq!(kept.chars().count(), MAX_REASON_CHARS + 3);
        assert!(kept.starts_with("éé") && kept.ends_with("é..."));
        let short = "a".repeat(MAX_REASON_CHARS);
        live.result(failed(4, 1, &short));
        assert_eq!(live.state_json()[0]["failed_reason"], short.as_str());
    }

    /// A result published as a poor fit is marked in the stream's state with what its
    /// fields say (misfit, data term); a good fit is not.
    #[test]
    fn poor_fits_are_marked() {
        let live = LiveView::new(4, Arc::new(Metrics::new()));
        let with = |poor_fit: u8, data_term: u8| {
            let mut r = (*result(5, 0, 0.6)).clone();
            let u8_field = |name: &str, v: u8| Field {
                name: name.into(),
                shape: Vec::new(),
                data: FieldData::U8(vec![v]),
            };
            r.fields.extend([
                Field::scalar("misfit", 9.84),
                u8_field("poor_fit", poor_fit),
                u8_field("data_term", data_term),
            ]);
            live.result(Arc::new(r));
            live.state_json()[0].get("poor_fit").cloned()
        };
        assert_eq!(with(0, 0), None);
        assert_eq!(
            with(1, 0).unwrap(),
            "POOR FIT of the RF (misfit 9.8): interval widened by the model error"
        );
        assert_eq!(
            with(1, 1).unwrap(),
            "POOR FIT of the RF (misfit 9.8): estimate from the calibrated echo power"
        );
    }

    /// Figures are rendered once per result and re-rendered when a new one arrives;
    /// a failed frame's panel renders without images.
    #[tokio::test]
    async fn figures_are_cached_per_result() {
        let live = LiveView::new(4, Arc::new(Metrics::new()));
        assert!(live.figure(9, Figure::Panel).await.is_none());
        live.result(result(9, 0, 0.7));
        let a = live.figure(9, Figure::Panel).await.unwrap().unwrap();
        let b = live.figure(9, Figure::Panel).await.unwrap().unwrap();
        assert!(
            Arc::ptr_eq(&a, &b),
            "the second request is served from the cache"
        );
        assert_eq!(&a[1..4], b"PNG");
        let t = live.figure(9, Figure::Trend).await.unwrap().unwrap();
        assert_eq!(&t[1..4], b"PNG");
        live.result(result(9, 1, 0.75));
        let c = live.figure(9, Figure::Panel).await.unwrap().unwrap();
        assert!(!Arc::ptr_eq(&a, &c) && a != c, "a new result, a new panel");
        live.result(failed(9, 2, "diverged"));
        let f = live.figure(9, Figure::Panel).await.unwrap().unwrap();
        assert_eq!(&f[1..4], b"PNG");
        assert_ne!(f, c);
    }
}
