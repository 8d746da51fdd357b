//! The two zea layouts and where a recording's fields live in each (docs/recording.md):
//!
//! - **zea 0.1.x** (what `zea.File.create` writes): root attribute `zea_version`; one group
//!   per acquisition track, `tracks/track_N/{data, scan, label}`; the probe in `probe/`
//!   (`name`, `probe_geometry`, `element_width`, `probe_bandwidth_percent`); dimensions
//!   taken from the shape of `raw_data`; several tracks interleaved by the root dataset
//!   `track_schedule`. zea also accepts `data/` and `scan/` at the root with these fields.
//! - **legacy** (zea < 0.1.0): root attributes `probe_name` and `us_machine`, `data/` and
//!   `scan/` at the root, the dimensions `scan/n_*` and the probe fields inside `scan/`.
//!
//! Layout, field names, units and value rules follow zea 0.1.8's `zea/data/spec.py`
//! (`ScanSpec`, `ProbeSpec`, `FileSpec`); the tests check files that zea itself writes.

use hdf5::Group;
use ndarray::Array2;

use super::error::RecordingError;
use super::h5;
use super::scan::Scan;

/// The zea layout version pleura writes (the `zea_version` root attribute): files in the
/// 0.1.x layout that zea 0.1.8 reads without its legacy warning.
pub const ZEA_VERSION: &str = "0.1.8";

/// Speed of sound assumed when a zea 0.1.x file leaves `sound_speed` out (optional there),
/// m/s: zea's own default (`zea.Parameters`), the soft-tissue average.
pub const DEFAULT_SOUND_SPEED: f64 = 1540.0;

/// Which zea layout a file is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    /// zea 0.1.x: `tracks/track_N/`, `probe/`, `zea_version`.
    #[default]
    Zea,
    /// zea before 0.1.0: `data/` and `scan/` at the root, `probe_name` attribute.
    Legacy,
}

impl Layout {
    /// The name used in configuration files and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Layout::Zea => "zea",
            Layout::Legacy => "legacy",
        }
    }
}

impl std::str::FromStr for Layout {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "zea" => Ok(Layout::Zea),
            "legacy" => Ok(Layout::Legacy),
            other => Err(format!(
                "unknown layout {other:?}: expected \"zea\" (0.1.x) or \"legacy\" (< 0.1.0)"
            )),
        }
    }
}

/// One acquisition track of a file (a legacy file has exactly one).
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct TrackInfo {
    /// Position in acquisition order: the `N` of `tracks/track_N`.
    pub index: usize,
    /// The track's `label` (zea requires one when a file has several tracks).
    pub label: Option<String>,
    /// Shape of the track's `raw_data` (n_frames, n_tx, n_ax, n_el, n_ch), when it has one.
    pub raw_shape: Option<Vec<usize>>,
}

/// Which track of a multi-track file to read: its index or its label.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TrackChoice {
    Index(usize),
    Label(String),
}

impl std::str::FromStr for TrackChoice {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s.parse::<usize>() {
            Ok(i) => TrackChoice::Index(i),
            Err(_) => TrackChoice::Label(s.to_string()),
        })
    }
}

impl std::fmt::Display for TrackChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TrackChoice::Index(i) => write!(f, "{i}"),
            TrackChoice::Label(l) => write!(f, "{l:?}"),
        }
    }
}

/// Where the fields of the track being read are.
pub(crate) struct Located {
    pub layout: Layout,
    /// The data group and its path (`tracks/track_N/data` or `data`).
    pub data: Group,
    pub data_path: String,
    /// The scan group and its path.
    pub scan: Group,
    pub scan_path: String,
    pub tracks: Vec<TrackInfo>,
    /// Index into `tracks` of the track read.
    pub track: usize,
}

fn raw_shape(data: &Group, field: &str) -> Result<Option<Vec<usize>>, RecordingError> {
    Ok(h5::dataset_opt(data, "raw_data", field)?.map(|d| d.shape()))
}

/// Finds the layout and the track to read. Without a choice, the first track that holds
/// `raw_data`.
pub(crate) fn locate(
    root: &Group,
    choice: Option<&TrackChoice>,
) -> Result<Located, RecordingError> {
    if !root.link_exists("tracks") {
        let data = h5::group(root, "data", "data")?;
        let scan = h5::group(root, "scan", "scan")?;
        // zea 0.1.x also accepts its fields at the root; the legacy layout has `scan/n_ax`.
        let layout = if scan.link_exists("n_ax") {
            Layout::Legacy
        } else {
            Layout::Zea
        };
        let track = TrackInfo {
            index: 0,
            label: None,
            raw_shape: raw_shape(&data, "data/raw_data")?,
        };
        if let Some(c) = choice {
            if *c != TrackChoice::Index(0) {
                return Err(RecordingError::value(
                    "track",
                    c,
                    "this file has a single track (index 0, no label)",
                ));
            }
        }
        return Ok(Located {
            layout,
            data,
            data_path: "data".into(),
            scan,
            scan_path: "scan".into(),
            tracks: vec![track],
            track: 0,
        });
    }
    let tracks_group = h5::group(root, "tracks", "tracks")?;
    let mut tracks = Vec::new();
    // zea numbers tracks contiguously from 0 and reads them until one is missing.
    while tracks_group.link_exists(&format!("track_{}", tracks.len())) {
        let i = tracks.len();
        let path = format!("tracks/track_{i}");
        let g = h5::group(&tracks_group, &format!("track_{i}"), &path)?;
        let label = h5::string_dataset(&g, "label", &format!("{path}/label"))?;
        let raw = if g.link_exists("data") {
            let data = h5::group(&g, "data", &format!("{path}/data"))?;
            raw_shape(&data, &format!("{path}/data/raw_data"))?
        } else {
            None
        };
        tracks.push(TrackInfo {
            index: i,
            label,
            raw_shape: raw,
        });
    }
    if tracks.is_empty() {
        return Err(RecordingError::Missing {
            field: "tracks/track_0".into(),
        });
    }
    let track = match choice {
        None => tracks
            .iter()
            .position(|t| t.raw_shape.is_some())
            .ok_or_else(|| RecordingError::Missing {
                field: format!(
                    "tracks/track_N/data/raw_data (none of the {} tracks holds channel data)",
                    tracks.len()
                ),
            })?,
        Some(TrackChoice::Index(i)) if *i < tracks.len() => *i,
        Some(c) => {
            let by_label = match c {
                TrackChoice::Label(l) => tracks.iter().position(|t| t.label.as_ref() == Some(l)),
                TrackChoice::Index(_) => None,
            };
            match by_label {
                Some(i) => i,
                None => {
                    let known: Vec<String> = tracks
                        .iter()
                        .map(|t| match &t.label {
                            Some(l) => format!("{} ({l:?})", t.index),
                            None => t.index.to_string(),
                        })
                        .collect();
                    return Err(RecordingError::value(
                        "track",
                        c,
                        format!("no such track; the file has {}", known.join(", ")),
                    ));
                }
            }
        }
    };
    let path = format!("tracks/track_{track}");
    let g = h5::group(&tracks_group, &format!("track_{track}"), &path)?;
    Ok(Located {
        layout: Layout::Zea,
        data: h5::group(&g, "data", &format!("{path}/data"))?,
        data_path: format!("{path}/data"),
        scan: h5::group(&g, "scan", &format!("{path}/scan"))?,
        scan_path: format!("{path}/scan"),
        tracks,
        track,
    })
}

/// A frequency zea stores as a scalar or per transmit (`center_frequency`,
/// `demodulation_frequency`); pleura needs one value for the whole scan.
fn frequency(scan: &Group, name: &str, path: &str, n_tx: usize) -> Result<f64, RecordingError> {
    let field = format!("{path}/{name}");
    let (v, shape) = h5::read_f64(&h5::dataset(scan, name, &field)?, &field)?;
    let first = match v.first() {
        Some(&f) if v.len() == 1 || shape == [n_tx] => f,
        _ => {
            return Err(RecordingError::shape(
                field,
                shape,
                format!("a scalar or [n_tx = {n_tx}]"),
            ))
        }
    };
    if let Some((i, f)) = v
        .iter()
        .enumerate()
        .find(|(_, f)| (**f - first).abs() > 1e-9 * first.abs())
    {
        return Err(RecordingError::value(
            format!("{field}[{i}]"),
            f,
            format!("differs from transmit 0's {first}: pleura needs one frequency per scan"),
        ));
    }
    Ok(first)
}

/// `time_to_next_transmit` as zea stores it: (n_frames, n_tx), or flat with the last
/// transmit's interval left out (n_frames * n_tx - 1), which zea pads with 0.
fn time_to_next_transmit(
    scan: &Group,
    path: &str,
    n_frames: usize,
    n_tx: usize,
) -> Result<Option<Array2<f64>>, RecordingError> {
    let field = format!("{path}/time_to_next_transmit");
    let Some(ds) = h5::dataset_opt(scan, "time_to_next_transmit", &field)? else {
        return Ok(None);
    };
    let (mut v, shape) = h5::read_f64(&ds, &field)?;
    let total = n_frames * n_tx;
    let fits = match shape[..] {
        [rows, cols] => cols == n_tx && rows >= n_frames,
        [len] => len == total || len + 1 == total,
        _ => false,
    };
    if !fits {
        return Err(RecordingError::shape(
            field,
            shape,
            format!(
                "[n_frames = {n_frames}, n_tx = {n_tx}] or [n_frames * n_tx - 1 = {}]",
                total.saturating_sub(1)
            ),
        ));
    }
    v.resize(v.len().max(total), 0.0);
    v.truncate(total);
    Array2::from_shape_vec((n_frames, n_tx), v)
        .map(Some)
        .map_err(|e| RecordingError::value(field, e, "inconsistent size"))
}

/// Reads a zea 0.1.x scan: the scan group at `path`, the probe group, and the dimensions
/// from the shape of `raw_data` (n_frames, n_tx, n_ax, n_el, n_ch).
pub(crate) fn read_scan(
    scan: &Group,
    path: &str,
    probe: Option<&Group>,
    raw_shape: &[usize],
) -> Result<Scan, RecordingError> {
    let &[n_frames, n_tx, n_ax, n_el, n_ch] = raw_shape else {
        return Err(RecordingError::shape(
            "raw_data",
            raw_shape.to_vec(),
            "[n_frames, n_tx, n_ax, n_el, n_ch]",
        ));
    };
    let f = |name: &str| format!("{path}/{name}");
    let probe = probe.ok_or_else(|| RecordingError::Missing {
        field: "probe (with probe/probe_geometry)".into(),
    })?;
    let probe_geometry = h5::read_array2(
        &h5::dataset(probe, "probe_geometry", "probe/probe_geometry")?,
        "probe/probe_geometry",
        None,
        3,
        "[n_el, 3]",
    )?;
    if probe_geometry.nrows() != n_el {
        return Err(RecordingError::shape(
            "probe/probe_geometry",
            probe_geometry.shape().to_vec(),
            format!(
                "[n_el = {n_el} (the channels of raw_data), 3]: receive sub-apertures \
                 (rx_aperture_indices) are not supported"
            ),
        ));
    }
    let per_tx_el = format!("[n_tx = {n_tx}, n_el = {n_el}]");
    let optional_scalar =
        |g: &Group, name: &str, field: &str| -> Result<Option<f64>, RecordingError> {
            h5::dataset_opt(g, name, field)?
                .map(|ds| h5::read_scalar_f64(&ds, field))
                .transpose()
        };
    let sound_speed = match optional_scalar(scan, "sound_speed", &f("sound_speed"))? {
        Some(c) => c,
        None => {
            tracing::warn!(
                field = %f("sound_speed"),
                assumed = DEFAULT_SOUND_SPEED,
                "the file gives no speed of sound; assuming zea's default"
            );
            DEFAULT_SOUND_SPEED
        }
    };
    let azimuth_angles = match h5::dataset_opt(scan, "azimuth_angles", &f("azimuth_angles"))? {
        Some(_) => h5::vec_f64(scan, "azimuth_angles", &f("azimuth_angles"), n_tx)?,
        None => vec![0.0; n_tx],
    };
    let s = Scan {
        probe_geometry,
        sampling_frequency: h5::scalar_f64(scan, "sampling_frequency", &f("sampling_frequency"))?,
        center_frequency: frequency(scan, "center_frequency", path, n_tx)?,
        demodulation_frequency: frequency(scan, "demodulation_frequency", path, n_tx)?,
        sound_speed,
        n_ax,
        n_ch,
        initial_times: h5::vec_f64(scan, "initial_times", &f("initial_times"), n_tx)?,
        t0_delays: h5::array2(scan, "t0_delays", &f("t0_delays"), n_tx, n_el, &per_tx_el)?,
        tx_apodizations: h5::array2(
            scan,
            "tx_apodizations",
            &f("tx_apodizations"),
            n_tx,
            n_el,
            &per_tx_el,
        )?,
        polar_angles: h5::vec_f64(scan, "polar_angles", &f("polar_angles"), n_tx)?,
        azimuth_angles,
        focus_distances: h5::vec_f64(scan, "focus_distances", &f("focus_distances"), n_tx)?,
        transmit_origins: h5::array2(
            scan,
            "transmit_origins",
            &f("transmit_origins"),
            n_tx,
            3,
            &format!("[n_tx = {n_tx}, 3]"),
        )?,
        element_width: optional_scalar(probe, "element_width", "probe/element_width")?,
        time_to_next_transmit: time_to_next_transmit(scan, path, n_frames, n_tx)?,
        fractional_bandwidth: optional_scalar(
            probe,
            "probe_bandwidth_percent",
            "probe/probe_bandwidth_percent",
        )?
        .map(|p| p / 100.0),
        tgc_gain_curve: super::scan::tgc_gain_curve(scan, path, n_ax)?,
    };
    s.validate().map_err(|e| e.in_zea_layout(path))?;
    Ok(s)
}

/// Frame start times of track `track` from the file's `track_schedule` (the track index
/// of every transmit, in acquisition order) and every track's `time_to_next_transmit`,
/// ns; `None` when the file has no schedule. The same walk as zea's
/// `_compute_all_track_timestamps`: each transmit starts when the one before it in the
/// schedule started plus that one's `time_to_next_transmit`.
pub(crate) fn schedule_timestamps(
    root: &Group,
    tracks: &[(usize, Array2<f64>)],
    track: usize,
) -> Result<Option<Vec<u64>>, RecordingError> {
    let Some(ds) = h5::dataset_opt(root, "track_schedule", "track_schedule")? else {
        return Ok(None);
    };
    let (schedule, shape) = h5::read_f64(&ds, "track_schedule")?;
    let expected: usize = tracks.iter().map(|(_, t)| t.len()).sum();
    if shape != [expected] {
        return Err(RecordingError::shape(
            "track_schedule",
            shape,
            format!("[sum of n_frames * n_tx over the tracks = {expected}]"),
        ));
    }
    let mut next = vec![0usize; tracks.len()];
    let mut elapsed = 0.0;
    let mut starts = Vec::new();
    for (k, &t) in schedule.iter().enumerate() {
        let slot = tracks
            .iter()
            .position(|(index, _)| t == *index as f64)
            .ok_or_else(|| {
                RecordingError::value(
                    format!("track_schedule[{k}]"),
                    t,
                    format!("must be a track index below {}", tracks.len()),
                )
            })?;
        let t2nt = &tracks[slot].1;
        let n_tx = t2nt.ncols();
        let event = next[slot];
        if event >= t2nt.len() {
            return Err(RecordingError::value(
                format!("track_schedule[{k}]"),
                t,
                format!("track {t} has only {} transmits", t2nt.len()),
            ));
        }
        if tracks[slot].0 == track && event % n_tx == 0 {
            starts.push((elapsed * 1e9_f64).round() as u64);
        }
        elapsed += t2nt[[event / n_tx, event % n_tx]];
        next[slot] += 1;
    }
    Ok(Some(starts))
}

/// Writes the `probe/` group of a zea 0.1.x file.
pub(crate) fn write_probe(root: &Group, scan: &Scan, name: &str) -> Result<(), RecordingError> {
    let probe = root
        .create_group("probe")
        .map_err(|e| RecordingError::hdf5("probe", "create group", e))?;
    h5::write_string_dataset(&probe, "name", name, "probe/name")?;
    h5::write_array(
        &probe,
        "probe_geometry",
        "probe/probe_geometry",
        &scan.probe_geometry,
    )?;
    if let Some(w) = scan.element_width {
        h5::write_f64(&probe, "element_width", "probe/element_width", w)?;
    }
    if let Some(b) = scan.fractional_bandwidth {
        h5::write_f64(
            &probe,
            "probe_bandwidth_percent",
            "probe/probe_bandwidth_percent",
            b * 100.0,
        )?;
    }
    Ok(())
}
