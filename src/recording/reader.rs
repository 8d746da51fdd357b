//! Reading recordings: validated up front, frames read lazily one at a time.

use std::path::{Path, PathBuf};

use hdf5::types::{IntSize, TypeDescriptor};
use hdf5::{Dataset, File, OpenMode};
use ndarray::{s, Array2, Array3, Array4, Ix2, Ix4};

use super::error::RecordingError;
use super::h5;
use super::scan::Scan;
use super::zea::{self, Layout, TrackChoice, TrackInfo};

/// How samples are stored in `data/raw_data`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SampleType {
    Int16,
    Float32,
}

impl SampleType {
    /// The numpy/HDF5 name of the type.
    pub fn name(self) -> &'static str {
        match self {
            SampleType::Int16 => "int16",
            SampleType::Float32 => "float32",
        }
    }
}

/// One frame of channel data with its acquisition stamp.
#[derive(Clone, Debug, PartialEq)]
pub struct Frame {
    /// Samples, shape (n_tx, n_ax, n_el, n_ch).
    pub data: Array4<f32>,
    /// Sequence number given by the scanner (the frame index when the file has none).
    pub sequence_number: u64,
    /// Acquisition time, ns (from `time_to_next_transmit` when the file has none).
    pub timestamp_ns: u64,
}

/// Ground-truth aeration maps of a (simulated) recording.
#[derive(Clone, Debug, PartialEq)]
pub struct GroundTruth {
    /// Aeration in [0, 1], shape (n_frames, nz, nx).
    pub aeration: Array3<f32>,
    /// Lateral pixel positions, m (nx).
    pub grid_x: Vec<f64>,
    /// Depth pixel positions, m (nz).
    pub grid_z: Vec<f64>,
}

struct GroundTruthLayout {
    aeration: Dataset,
    grid_x: Vec<f64>,
    grid_z: Vec<f64>,
}

/// An open, validated recording.
pub struct Recording {
    path: PathBuf,
    // Keeps the file open for the datasets below.
    _file: File,
    raw: Dataset,
    scan: Scan,
    n_frames: usize,
    sample_type: SampleType,
    sequence_numbers: Vec<u64>,
    timestamps_ns: Vec<u64>,
    probe_name: String,
    us_machine: String,
    description: String,
    ground_truth: Option<GroundTruthLayout>,
    writer_closed: bool,
    layout: Layout,
    tracks: Vec<TrackInfo>,
    track: usize,
    /// Path of `raw_data` in the file, for messages.
    raw_field: String,
}

impl std::fmt::Debug for Recording {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recording")
            .field("path", &self.path)
            .field("n_frames", &self.n_frames)
            .field("sample_type", &self.sample_type)
            .finish_non_exhaustive()
    }
}

/// Opens a file for reading. A recording whose writer was killed keeps its SWMR-write
/// marks (see `docs/recording.md`); such a file opens in SWMR-read mode.
fn open_file(path: &Path) -> Result<(File, bool), RecordingError> {
    match File::open(path).and_then(h5::close_on_exec) {
        Ok(f) => Ok((f, true)),
        Err(first) => match File::open_as(path, OpenMode::ReadSWMR).and_then(h5::close_on_exec) {
            Ok(f) => Ok((f, false)),
            Err(_) => Err(RecordingError::Open {
                path: path.to_path_buf(),
                source: first,
            }),
        },
    }
}

/// The number of frames of a recording (`scan/n_frames`) and how the per-frame datasets
/// must agree with it: exactly in a closed file; in a file whose writer died, they may hold
/// more frames than the last completed flush counted (see `Recorder::flush`).
#[derive(Clone, Copy)]
struct FrameCount {
    n: usize,
    exact: bool,
}

impl FrameCount {
    fn fits(self, len: usize) -> bool {
        if self.exact {
            len == self.n
        } else {
            len >= self.n
        }
    }

    fn text(self) -> String {
        if self.exact {
            format!("n_frames = {}", self.n)
        } else {
            format!("n_frames >= {}", self.n)
        }
    }
}

fn read_u64s(ds: &Dataset, field: &str, frames: FrameCount) -> Result<Vec<u64>, RecordingError> {
    let shape = ds.shape();
    if shape.len() != 1 || !frames.fits(shape[0]) {
        return Err(RecordingError::shape(
            field,
            shape,
            format!("[{}]", frames.text()),
        ));
    }
    let n = frames.n;
    let values = match h5::descriptor(ds, field)? {
        TypeDescriptor::Unsigned(_) => ds
            .read_raw::<u64>()
            .map_err(|e| RecordingError::hdf5(field, "read", e)),
        TypeDescriptor::Integer(_) => {
            let v = ds
                .read_raw::<i64>()
                .map_err(|e| RecordingError::hdf5(field, "read", e))?;
            v.iter()
                .enumerate()
                .take(n)
                .map(|(i, &x)| {
                    u64::try_from(x).map_err(|_| {
                        RecordingError::value(format!("{field}[{i}]"), x, "must not be negative")
                    })
                })
                .collect()
        }
        other => Err(RecordingError::DataType {
            field: field.to_string(),
            found: other.to_string(),
            expected: "an integer",
        }),
    }?;
    Ok(values.into_iter().take(n).collect())
}

fn check_grid(field: &str, v: &[f64]) -> Result<(), RecordingError> {
    if let Some((i, x)) = v.iter().enumerate().find(|(_, x)| !x.is_finite()) {
        return Err(RecordingError::value(
            format!("{field}[{i}]"),
            x,
            "must be finite",
        ));
    }
    if let Some(i) = (1..v.len()).find(|&i| v[i] <= v[i - 1]) {
        return Err(RecordingError::value(
            format!("{field}[{i}]"),
            v[i],
            format!("must be greater than the previous position {}", v[i - 1]),
        ));
    }
    Ok(())
}

fn check_aeration(field: &str, a: &Array2<f32>) -> Result<(), RecordingError> {
    match a.indexed_iter().find(|(_, v)| !(0.0..=1.0).contains(*v)) {
        None => Ok(()),
        Some(((z, x), v)) => Err(RecordingError::value(
            format!("{field}[.., {z}, {x}]"),
            v,
            "aeration must lie in [0, 1]",
        )),
    }
}

impl Recording {
    /// Opens a recording and validates all of its parameters (see [`Scan::validate`]) and the
    /// shapes of every dataset against them. Frames are read later, one at a time. In a
    /// multi-track zea file, reads the first track that holds channel data.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, RecordingError> {
        Self::open_track(path, None)
    }

    /// Opens the track `choice` of a recording (by index or label; `None`: the first track
    /// with channel data), in either zea layout (`docs/recording.md`).
    pub fn open_track(
        path: impl AsRef<Path>,
        choice: Option<&TrackChoice>,
    ) -> Result<Self, RecordingError> {
        let path = path.as_ref();
        let (file, writer_closed) = open_file(path)?;
        let located = zea::locate(&file, choice)?;
        let legacy = located.layout == Layout::Legacy;
        let raw_field = format!("{}/raw_data", located.data_path);
        let raw = h5::dataset(&located.data, "raw_data", &raw_field)?;
        let shape = raw.shape();
        let pleura = if file.link_exists("pleura") {
            Some(h5::group(&file, "pleura", "pleura")?)
        } else {
            None
        };
        // pleura's additions describe the track pleura writes, track 0.
        let pleura = pleura.filter(|_| located.track == 0);
        let root_string = |name: &str| h5::string_attr(&file, name, &format!("@{name}"));
        let (probe_name, us_machine, n_frames, mut scan) = if legacy {
            let probe_name = root_string("probe_name")?.ok_or_else(|| RecordingError::Missing {
                field: "@probe_name".into(),
            })?;
            let us_machine = root_string("us_machine")?.ok_or_else(|| RecordingError::Missing {
                field: "@us_machine".into(),
            })?;
            let n_frames = h5::scalar_count(&located.scan, "n_frames", "scan/n_frames")?;
            if n_frames == 0 || shape.first() == Some(&0) {
                return Err(RecordingError::Empty { n_frames, shape });
            }
            (probe_name, us_machine, n_frames, Scan::read(&file)?)
        } else {
            if shape.len() != 5 {
                return Err(RecordingError::shape(
                    raw_field,
                    shape,
                    "[n_frames, n_tx, n_ax, n_el, n_ch]",
                ));
            }
            let probe = if file.link_exists("probe") {
                Some(h5::group(&file, "probe", "probe")?)
            } else {
                None
            };
            // zea's order: the root attribute, then `probe/name`, then the attribute `probe`.
            let probe_name = match root_string("probe_name")? {
                Some(n) => Some(n),
                None => match &probe {
                    Some(p) => h5::string_dataset(p, "name", "probe/name")?,
                    None => None,
                },
            };
            let probe_name = match probe_name {
                Some(n) => n,
                None => root_string("probe")?.unwrap_or_default(),
            };
            // A recording pleura wrote counts its flushed frames (see `Recorder::flush`).
            let flushed = match &pleura {
                Some(g) if g.link_exists("n_frames") => {
                    Some(h5::scalar_count(g, "n_frames", "pleura/n_frames")?)
                }
                _ => None,
            };
            let n_frames = flushed.unwrap_or(shape[0]);
            if n_frames == 0 || shape[0] == 0 {
                return Err(RecordingError::Empty { n_frames, shape });
            }
            let mut dims = shape.clone();
            dims[0] = n_frames;
            let scan = zea::read_scan(&located.scan, &located.scan_path, probe.as_ref(), &dims)?;
            (
                probe_name,
                root_string("us_machine")?.unwrap_or_default(),
                n_frames,
                scan,
            )
        };
        let frames = FrameCount {
            n: n_frames,
            exact: writer_closed,
        };
        let description = root_string("description")?.unwrap_or_default();
        let expected = [scan.n_tx(), scan.n_ax, scan.n_el(), scan.n_ch];
        let expected_text = format!(
            "[{}, n_tx = {}, n_ax = {}, n_el = {}, n_ch = {}]",
            frames.text(),
            expected[0],
            expected[1],
            expected[2],
            expected[3]
        );
        if shape.len() != 5 {
            return Err(RecordingError::shape(raw_field, shape, expected_text));
        }
        let sample_type = match h5::descriptor(&raw, &raw_field)? {
            TypeDescriptor::Integer(IntSize::U2) => SampleType::Int16,
            TypeDescriptor::Float(hdf5::types::FloatSize::U4) => SampleType::Float32,
            other => {
                return Err(RecordingError::DataType {
                    field: raw_field,
                    found: other.to_string(),
                    expected: "int16 or float32",
                })
            }
        };
        if !frames.fits(shape[0]) || shape[1..] != expected[..] {
            return Err(RecordingError::shape(raw_field, shape, expected_text));
        }
        if let Some(t) = &mut scan.time_to_next_transmit {
            if !frames.fits(t.nrows()) {
                return Err(RecordingError::shape(
                    format!("{}/time_to_next_transmit", located.scan_path),
                    t.shape().to_vec(),
                    format!("[{}, n_tx = {}]", frames.text(), scan.n_tx()),
                ));
            }
            *t = t.slice(s![..n_frames, ..]).to_owned();
        }

        let pleura_u64s = |name: &str| -> Result<Option<Vec<u64>>, RecordingError> {
            let field = format!("pleura/{name}");
            match &pleura {
                None => Ok(None),
                Some(g) => h5::dataset_opt(g, name, &field)?
                    .map(|ds| read_u64s(&ds, &field, frames))
                    .transpose(),
            }
        };
        let sequence_numbers =
            pleura_u64s("sequence_number")?.unwrap_or_else(|| (0..n_frames as u64).collect());
        let timestamps_ns = match pleura_u64s("timestamp_ns")? {
            Some(t) => t,
            None => match Self::schedule_timestamps(&file, &located, &scan)? {
                Some(t) => t,
                None => Self::timestamps_from_scan(&scan, n_frames),
            },
        };
        let ground_truth = match &pleura {
            Some(g) if g.link_exists("aeration") => Some(Self::open_ground_truth(g, frames)?),
            _ => None,
        };
        Ok(Recording {
            path: path.to_path_buf(),
            _file: file,
            raw,
            scan,
            n_frames,
            sample_type,
            sequence_numbers,
            timestamps_ns,
            probe_name,
            us_machine,
            description,
            ground_truth,
            writer_closed,
            layout: located.layout,
            tracks: located.tracks,
            track: located.track,
            raw_field: format!("{}/raw_data", located.data_path),
        })
    }

    /// Frame start times from the file's `track_schedule`, when it has one and every
    /// track with channel data gives its `time_to_next_transmit`.
    fn schedule_timestamps(
        file: &File,
        located: &zea::Located,
        scan: &Scan,
    ) -> Result<Option<Vec<u64>>, RecordingError> {
        if located.layout == Layout::Legacy || !file.link_exists("track_schedule") {
            return Ok(None);
        }
        let mut per_track = Vec::new();
        for t in &located.tracks {
            let t2nt = if t.index == located.tracks[located.track].index {
                scan.time_to_next_transmit.clone()
            } else {
                let Some(shape) = &t.raw_shape else {
                    return Ok(None);
                };
                let path = format!("tracks/track_{}/scan", t.index);
                let g = h5::group(file, &path, &path)?;
                let probe = h5::group(file, "probe", "probe")?;
                zea::read_scan(&g, &path, Some(&probe), shape)?.time_to_next_transmit
            };
            match t2nt {
                Some(t2nt) => per_track.push((t.index, t2nt)),
                None => return Ok(None),
            }
        }
        let n_frames = scan.time_to_next_transmit.as_ref().map_or(0, |t| t.nrows());
        match zea::schedule_timestamps(file, &per_track, located.track)? {
            Some(starts) if starts.len() < n_frames => Err(RecordingError::value(
                "track_schedule",
                format!("{} frames of track {}", starts.len(), located.track),
                format!("must schedule all {n_frames} frames of the track"),
            )),
            other => Ok(other.map(|s| s[..n_frames].to_vec())),
        }
    }

    /// Frame start times from the cumulated `time_to_next_transmit`, ns; zeros without it.
    fn timestamps_from_scan(scan: &Scan, n_frames: usize) -> Vec<u64> {
        match &scan.time_to_next_transmit {
            None => vec![0; n_frames],
            Some(t) => {
                let mut elapsed = 0.0;
                t.rows()
                    .into_iter()
                    .map(|row| {
                        let start = (elapsed * 1e9_f64).round() as u64;
                        elapsed += row.sum();
                        start
                    })
                    .collect()
            }
        }
    }

    fn open_ground_truth(
        g: &hdf5::Group,
        frames: FrameCount,
    ) -> Result<GroundTruthLayout, RecordingError> {
        let (grid_x, gx_shape) =
            h5::read_f64(&h5::dataset(g, "grid_x", "pleura/grid_x")?, "pleura/grid_x")?;
        let (grid_z, gz_shape) =
            h5::read_f64(&h5::dataset(g, "grid_z", "pleura/grid_z")?, "pleura/grid_z")?;
        if gx_shape.len() != 1 || grid_x.is_empty() {
            return Err(RecordingError::shape("pleura/grid_x", gx_shape, "[nx > 0]"));
        }
        if gz_shape.len() != 1 || grid_z.is_empty() {
            return Err(RecordingError::shape("pleura/grid_z", gz_shape, "[nz > 0]"));
        }
        check_grid("pleura/grid_x", &grid_x)?;
        check_grid("pleura/grid_z", &grid_z)?;
        let aeration = h5::dataset(g, "aeration", "pleura/aeration")?;
        let d = h5::descriptor(&aeration, "pleura/aeration")?;
        if !matches!(d, TypeDescriptor::Float(_)) {
            return Err(RecordingError::DataType {
                field: "pleura/aeration".into(),
                found: d.to_string(),
                expected: "float32 or float64",
            });
        }
        let shape = aeration.shape();
        if shape.len() != 3 || !frames.fits(shape[0]) || shape[1..] != [grid_z.len(), grid_x.len()]
        {
            return Err(RecordingError::shape(
                "pleura/aeration",
                shape,
                format!(
                    "[{}, nz = {}, nx = {}]",
                    frames.text(),
                    grid_z.len(),
                    grid_x.len()
                ),
            ));
        }
        Ok(GroundTruthLayout {
            aeration,
            grid_x,
            grid_z,
        })
    }

    /// The file this recording was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The zea layout the file is in.
    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// Every acquisition track of the file (one for a legacy file).
    pub fn tracks(&self) -> &[TrackInfo] {
        &self.tracks
    }

    /// The track read (an element of [`tracks`](Self::tracks)).
    pub fn track(&self) -> &TrackInfo {
        &self.tracks[self.track]
    }

    /// The scan parameters.
    pub fn scan(&self) -> &Scan {
        &self.scan
    }

    /// Number of frames.
    pub fn n_frames(&self) -> usize {
        self.n_frames
    }

    /// How the samples are stored.
    pub fn sample_type(&self) -> SampleType {
        self.sample_type
    }

    /// Root attribute `probe_name`.
    pub fn probe_name(&self) -> &str {
        &self.probe_name
    }

    /// Root attribute `us_machine`.
    pub fn us_machine(&self) -> &str {
        &self.us_machine
    }

    /// Root attribute `description` (empty when absent).
    pub fn description(&self) -> &str {
        &self.description
    }

    /// False when the writer never closed the file (killed mid-recording): the file was
    /// then opened in SWMR-read mode and holds the frames flushed before the kill.
    pub fn writer_closed(&self) -> bool {
        self.writer_closed
    }

    /// Sequence numbers of all frames.
    pub fn sequence_numbers(&self) -> &[u64] {
        &self.sequence_numbers
    }

    /// Acquisition timestamps of all frames, ns.
    pub fn timestamps_ns(&self) -> &[u64] {
        &self.timestamps_ns
    }

    /// Duration of the recording, s: the sum of `time_to_next_transmit` when present, else
    /// the span of the frame timestamps extended by one mean frame interval.
    pub fn duration_s(&self) -> f64 {
        match &self.scan.time_to_next_transmit {
            Some(t) => t.sum(),
            None => {
                let n = self.timestamps_ns.len();
                let first = self.timestamps_ns[0] as f64;
                let last = self.timestamps_ns[n - 1] as f64;
                if n < 2 {
                    0.0
                } else {
                    (last - first) * 1e-9 * n as f64 / (n - 1) as f64
                }
            }
        }
    }

    /// Whether the recording carries ground-truth aeration maps.
    pub fn has_ground_truth(&self) -> bool {
        self.ground_truth.is_some()
    }

    /// Ground-truth pixel grid (grid_x, grid_z), m, when present.
    pub fn ground_truth_grid(&self) -> Option<(&[f64], &[f64])> {
        self.ground_truth
            .as_ref()
            .map(|g| (&g.grid_x[..], &g.grid_z[..]))
    }

    fn check_index(&self, index: usize) -> Result<(), RecordingError> {
        if index < self.n_frames {
            Ok(())
        } else {
            Err(RecordingError::FrameIndex {
                index,
                n_frames: self.n_frames,
            })
        }
    }

    /// Reads frame `index` from disk (only that frame's chunk is read).
    pub fn read_frame(&self, index: usize) -> Result<Frame, RecordingError> {
        self.check_index(index)?;
        let sel = s![index, .., .., .., ..];
        let data = match self.sample_type {
            SampleType::Int16 => self
                .raw
                .read_slice::<i16, _, Ix4>(sel)
                .map(|a| a.mapv(f32::from)),
            SampleType::Float32 => self.raw.read_slice::<f32, _, Ix4>(sel),
        }
        .map_err(|e| RecordingError::hdf5(format!("{}[{index}]", self.raw_field), "read", e))?;
        Ok(Frame {
            data,
            sequence_number: self.sequence_numbers[index],
            timestamp_ns: self.timestamps_ns[index],
        })
    }

    /// Iterates over all frames in order, reading each when it is reached.
    pub fn frames(&self) -> impl Iterator<Item = Result<Frame, RecordingError>> + '_ {
        (0..self.n_frames).map(move |i| self.read_frame(i))
    }

    /// Reads the ground-truth aeration of frame `index`, shape (nz, nx), when present.
    pub fn read_ground_truth_frame(
        &self,
        index: usize,
    ) -> Result<Option<Array2<f32>>, RecordingError> {
        self.check_index(index)?;
        let Some(g) = &self.ground_truth else {
            return Ok(None);
        };
        let field = format!("pleura/aeration[{index}]");
        let a = g
            .aeration
            .read_slice::<f32, _, Ix2>(s![index, .., ..])
            .map_err(|e| RecordingError::hdf5(field.clone(), "read", e))?;
        check_aeration(&field, &a)?;
        Ok(Some(a))
    }

    /// Reads all ground-truth aeration maps, when present.
    pub fn ground_truth(&self) -> Result<Option<GroundTruth>, RecordingError> {
        let Some(g) = &self.ground_truth else {
            return Ok(None);
        };
        let aeration = g
            .aeration
            .read_slice::<f32, _, ndarray::Ix3>(s![..self.n_frames, .., ..])
            .map_err(|e| RecordingError::hdf5("pleura/aeration", "read", e))?;
        for (i, frame) in aeration.outer_iter().enumerate() {
            check_aeration(&format!("pleura/aeration[{i}]"), &frame.to_owned())?;
        }
        Ok(Some(GroundTruth {
            aeration,
            grid_x: g.grid_x.clone(),
            grid_z: g.grid_z.clone(),
        }))
    }
}
