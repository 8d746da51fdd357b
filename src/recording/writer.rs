//! Writing recordings incrementally, crash-safe: a process killed at any moment leaves a
//! file that holds every frame flushed before the kill.
//!
//! How: the file uses the HDF5 1.10 format (`libver` latest) and, once every dataset and
//! attribute exists, switches to SWMR-write mode. From then on the library orders its
//! metadata writes so that the file on disk is consistent at every instant (what SWMR
//! readers rely on); the recorder only extends datasets and writes into them, and calls
//! H5Fflush on the configured period. A file whose writer died keeps its SWMR-write mark;
//! [`Recording::open`](super::Recording::open) and h5py (`swmr=True`) read it as it is,
//! and `h5clear -s` removes the mark for other readers.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hdf5::{Dataset, Extent, File, Group, SimpleExtents};
use ndarray::{s, Array1, Array2, Array4, ArrayView2, ArrayView4};

use super::error::RecordingError;
use super::h5;
use super::reader::{Frame, SampleType};
use super::scan::Scan;
use super::zea::{self, Layout};

/// Frames per chunk of the small per-frame datasets (sequence numbers, timestamps,
/// time_to_next_transmit).
const SMALL_CHUNK_FRAMES: usize = 256;

/// The pixel grid of ground-truth aeration maps recorded with the frames.
#[derive(Clone, Debug, PartialEq)]
pub struct GroundTruthGrid {
    /// Lateral pixel positions, m, increasing (nx).
    pub grid_x: Vec<f64>,
    /// Depth pixel positions, m, increasing (nz).
    pub grid_z: Vec<f64>,
}

/// How the frame chunks of a recording are compressed. Every choice is lossless; zea reads
/// all of them (Blosc and LZF through HDF5 filter plugins, which zea loads with
/// `hdf5plugin`; deflate is built into every HDF5 library).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    /// Stored as they are.
    None,
    /// Byte shuffle and deflate (gzip) at level 1-9: readable by any HDF5 reader.
    Deflate(u8),
    /// LZF (HDF5 filter 32000), fast and light.
    Lzf,
    /// Blosc with zstd and bit shuffle at level 1-9 (HDF5 filter 32001): zea's own
    /// default (`hdf5plugin.Blosc(cname="zstd", clevel=7, shuffle=BITSHUFFLE)`).
    BloscZstd(u8),
}

impl Compression {
    fn check(self) -> Result<(), RecordingError> {
        match self {
            Compression::Deflate(l) | Compression::BloscZstd(l) if !(1..=9).contains(&l) => {
                Err(RecordingError::value(
                    "compression",
                    format!("{self:?}"),
                    "the level must be 1 to 9",
                ))
            }
            _ => Ok(()),
        }
    }
}

/// How a [`Recorder`] writes.
#[derive(Clone, Debug)]
pub struct RecorderOptions {
    /// Storage type of `raw_data`.
    pub sample_type: SampleType,
    /// Period of the flushes to disk: frames appended since the last flush are lost if the
    /// process dies. `Duration::ZERO` flushes after every frame.
    pub flush_every: Duration,
    /// Compression of the frame chunks (and of the ground-truth maps).
    pub compression: Compression,
    /// The zea layout written: 0.1.x (`tracks/track_0/`) or legacy (< 0.1.0).
    pub layout: Layout,
    /// The probe's name (`probe/name`; the root attribute `probe_name` in the legacy layout).
    pub probe_name: String,
    /// Root attribute `us_machine`.
    pub us_machine: String,
    /// Root attribute `description`.
    pub description: String,
    /// Grid of the ground-truth aeration maps, when each frame comes with one
    /// (use [`Recorder::append_with_ground_truth`] then).
    pub ground_truth_grid: Option<GroundTruthGrid>,
}

impl Default for RecorderOptions {
    fn default() -> Self {
        Self {
            sample_type: SampleType::Int16,
            flush_every: Duration::from_secs(1),
            compression: Compression::Deflate(4),
            layout: Layout::Zea,
            probe_name: String::new(),
            us_machine: String::new(),
            description: String::new(),
            ground_truth_grid: None,
        }
    }
}

/// One frame's samples in the recording's type, checked against the scan's shape.
enum Samples<'a> {
    Int16(ArrayView4<'a, i16>),
    Float32(ArrayView4<'a, f32>),
}

struct GroundTruthSink {
    aeration: Dataset,
    nz: usize,
    nx: usize,
}

/// Writes a recording frame by frame.
pub struct Recorder {
    path: PathBuf,
    file: File,
    raw: Dataset,
    n_frames_ds: Dataset,
    sequence_number: Dataset,
    timestamp_ns: Dataset,
    time_to_next_transmit: Option<(Dataset, Array2<f64>)>,
    ground_truth: Option<GroundTruthSink>,
    frame_shape: [usize; 4],
    sample_type: SampleType,
    /// Paths of `raw_data`, `time_to_next_transmit` and the frame count in this layout.
    raw_field: String,
    t2nt_field: String,
    n_frames_field: &'static str,
    n_frames: usize,
    flushed_frames: usize,
    flush_every: Duration,
    last_flush: Instant,
}

fn growable(
    group: &Group,
    name: &str,
    field: &str,
    dtype: &hdf5::Datatype,
    tail: &[usize],
    chunk_frames: usize,
    compression: Compression,
) -> Result<Dataset, RecordingError> {
    let mut extents = vec![Extent::from(0..)];
    extents.extend(tail.iter().map(|&d| Extent::from(d)));
    let mut chunk = vec![chunk_frames];
    chunk.extend_from_slice(tail);
    let mut b = group
        .new_dataset_builder()
        .empty_as(dtype)
        .shape(SimpleExtents::from_vec(extents))
        .chunk(chunk);
    b = match compression {
        Compression::None => b,
        Compression::Deflate(level) => b.shuffle().deflate(level),
        Compression::Lzf => b.lzf(),
        Compression::BloscZstd(level) => b.blosc_zstd(level, hdf5::filters::BloscShuffle::Bit),
    };
    b.create(name)
        .map_err(|e| RecordingError::hdf5(field, "create dataset", e))
}

fn dtype<T: hdf5::H5Type>(field: &str) -> Result<hdf5::Datatype, RecordingError> {
    hdf5::Datatype::from_type::<T>().map_err(|e| RecordingError::hdf5(field, "make datatype", e))
}

impl Recorder {
    /// Creates `path` (replacing any file there) for a recording of `scan`, writes the scan
    /// and the root attributes, and makes it ready for frames.
    pub fn create(
        path: impl AsRef<Path>,
        scan: &Scan,
        options: RecorderOptions,
    ) -> Result<Self, RecordingError> {
        scan.validate()?;
        options.compression.check()?;
        let path = path.as_ref();
        let file = File::with_options()
            .with_fapl(|p| p.libver_latest())
            .create(path)
            .and_then(super::close_on_exec)
            .map_err(|source| RecordingError::Open {
                path: path.to_path_buf(),
                source,
            })?;
        let legacy = options.layout == Layout::Legacy;
        // Where the scan and the channel data go: the root (legacy) or track 0 (zea 0.1.x).
        let (scan_group, scan_path, data_path) = if legacy {
            h5::write_string_attr(&file, "probe_name", &options.probe_name, "@probe_name")?;
            let g = file
                .create_group("scan")
                .map_err(|e| RecordingError::hdf5("scan", "create group", e))?;
            scan.write_fixed(&g)?;
            (g, "scan", "data")
        } else {
            // zea reads `zea_version` as a variable-length string (a fixed-length one
            // makes it fail), which is how `write_string_attr` writes.
            h5::write_string_attr(&file, "zea_version", zea::ZEA_VERSION, "@zea_version")?;
            zea::write_probe(&file, scan, &options.probe_name)?;
            let g = file
                .create_group("tracks/track_0/scan")
                .map_err(|e| RecordingError::hdf5("tracks/track_0/scan", "create group", e))?;
            scan.write_transmits(&g, "tracks/track_0/scan")?;
            (g, "tracks/track_0/scan", "tracks/track_0/data")
        };
        h5::write_string_attr(&file, "us_machine", &options.us_machine, "@us_machine")?;
        h5::write_string_attr(&file, "description", &options.description, "@description")?;
        let t2nt_field = format!("{scan_path}/time_to_next_transmit");
        let time_to_next_transmit = match &scan.time_to_next_transmit {
            None => None,
            Some(rows) => Some((
                growable(
                    &scan_group,
                    "time_to_next_transmit",
                    &t2nt_field,
                    &dtype::<f64>(&t2nt_field)?,
                    &[scan.n_tx()],
                    SMALL_CHUNK_FRAMES,
                    Compression::None,
                )?,
                rows.clone(),
            )),
        };

        let data = file
            .create_group(data_path)
            .map_err(|e| RecordingError::hdf5(data_path, "create group", e))?;
        let raw_field = format!("{data_path}/raw_data");
        let frame_shape = [scan.n_tx(), scan.n_ax, scan.n_el(), scan.n_ch];
        let raw_dtype = match options.sample_type {
            SampleType::Int16 => dtype::<i16>(&raw_field)?,
            SampleType::Float32 => dtype::<f32>(&raw_field)?,
        };
        let raw = growable(
            &data,
            "raw_data",
            &raw_field,
            &raw_dtype,
            &frame_shape,
            1,
            options.compression,
        )?;

        let pleura = file
            .create_group("pleura")
            .map_err(|e| RecordingError::hdf5("pleura", "create group", e))?;
        // The frame count a reader trusts: `scan/n_frames` in the legacy layout; zea 0.1.x
        // has no such field (it takes the count from the shape), so pleura keeps its own.
        let n_frames_field = if legacy {
            "scan/n_frames"
        } else {
            "pleura/n_frames"
        };
        let count_group = if legacy { &scan_group } else { &pleura };
        let n_frames_ds = count_group
            .new_dataset::<i64>()
            .create("n_frames")
            .map_err(|e| RecordingError::hdf5(n_frames_field, "create dataset", e))?;
        n_frames_ds
            .write_scalar(&0_i64)
            .map_err(|e| RecordingError::hdf5(n_frames_field, "write", e))?;
        let u64_type = dtype::<u64>("pleura")?;
        let sequence_number = growable(
            &pleura,
            "sequence_number",
            "pleura/sequence_number",
            &u64_type,
            &[],
            SMALL_CHUNK_FRAMES,
            Compression::None,
        )?;
        let timestamp_ns = growable(
            &pleura,
            "timestamp_ns",
            "pleura/timestamp_ns",
            &u64_type,
            &[],
            SMALL_CHUNK_FRAMES,
            Compression::None,
        )?;
        let ground_truth = match &options.ground_truth_grid {
            None => None,
            Some(grid) => Some(Self::create_ground_truth(
                &pleura,
                grid,
                options.compression,
            )?),
        };

        file.flush()
            .map_err(|e| RecordingError::hdf5("/", "flush", e))?;
        file.start_swmr()
            .map_err(|e| RecordingError::hdf5("/", "start SWMR write", e))?;
        Ok(Recorder {
            path: path.to_path_buf(),
            file,
            raw,
            n_frames_ds,
            sequence_number,
            timestamp_ns,
            time_to_next_transmit,
            ground_truth,
            frame_shape,
            sample_type: options.sample_type,
            raw_field,
            t2nt_field,
            n_frames_field,
            n_frames: 0,
            flushed_frames: 0,
            flush_every: options.flush_every,
            last_flush: Instant::now(),
        })
    }

    fn create_ground_truth(
        pleura: &Group,
        grid: &GroundTruthGrid,
        compression: Compression,
    ) -> Result<GroundTruthSink, RecordingError> {
        for (field, g) in [
            ("pleura/grid_x", &grid.grid_x),
            ("pleura/grid_z", &grid.grid_z),
        ] {
            if g.is_empty() {
                return Err(RecordingError::shape(
                    field,
                    vec![0],
                    "at least one position",
                ));
            }
            if let Some((i, v)) = g.iter().enumerate().find(|(_, v)| !v.is_finite()) {
                return Err(RecordingError::value(
                    format!("{field}[{i}]"),
                    v,
                    "must be finite",
                ));
            }
            if let Some(i) = (1..g.len()).find(|&i| g[i] <= g[i - 1]) {
                return Err(RecordingError::value(
                    format!("{field}[{i}]"),
                    g[i],
                    format!("must be greater than the previous position {}", g[i - 1]),
                ));
            }
            let name = &field["pleura/".len()..];
            pleura
                .new_dataset_builder()
                .with_data(&g[..])
                .create(name)
                .map_err(|e| RecordingError::hdf5(field, "write", e))?;
        }
        let (nz, nx) = (grid.grid_z.len(), grid.grid_x.len());
        let aeration = growable(
            pleura,
            "aeration",
            "pleura/aeration",
            &dtype::<f32>("pleura/aeration")?,
            &[nz, nx],
            1,
            compression,
        )?;
        Ok(GroundTruthSink { aeration, nz, nx })
    }

    /// The file being written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Frames appended so far.
    pub fn n_frames(&self) -> usize {
        self.n_frames
    }

    /// Frames on disk as of the last flush: what survives if the process dies now.
    pub fn flushed_frames(&self) -> usize {
        self.flushed_frames
    }

    /// Appends one frame (flushing when the flush period has passed). Errors when the
    /// recorder was created with a ground-truth grid: use
    /// [`append_with_ground_truth`](Self::append_with_ground_truth) then.
    pub fn append(&mut self, frame: &Frame) -> Result<(), RecordingError> {
        self.without_ground_truth()?;
        self.append_frame(frame, None)
    }

    /// Appends one frame as a scanner sent it (flushing when the flush period has passed):
    /// `samples` holds the little-endian `sample_type` values in C order over (n_tx, n_ax,
    /// n_el, n_ch), and `sample_type` must be the recording's. The samples go into
    /// `raw_data` as they are, without conversion: int16 ones stay int16, float32 ones
    /// float32, bit for bit; float32 ones must be finite, as [`append`](Self::append)
    /// requires. Errors like `append` when the recorder has a ground-truth grid.
    pub fn append_raw(
        &mut self,
        sample_type: SampleType,
        samples: &[u8],
        sequence_number: u64,
        timestamp_ns: u64,
    ) -> Result<(), RecordingError> {
        self.without_ground_truth()?;
        let field = || format!("{}[{}]", self.raw_field, self.n_frames);
        if sample_type != self.sample_type {
            return Err(RecordingError::SampleType {
                field: field(),
                found: sample_type.name(),
                expected: self.sample_type.name(),
            });
        }
        let size = match sample_type {
            SampleType::Int16 => 2,
            SampleType::Float32 => 4,
        };
        let expected = self
            .frame_shape
            .iter()
            .fold(size, |n: usize, &d| n.saturating_mul(d));
        let bad_length = || RecordingError::FrameBytes {
            field: field(),
            found: samples.len(),
            expected,
            sample_type: sample_type.name(),
            shape: self.frame_shape,
        };
        if samples.len() != expected {
            return Err(bad_length());
        }
        match sample_type {
            SampleType::Int16 => {
                let values: Vec<i16> = samples
                    .chunks_exact(2)
                    .map(|b| i16::from_le_bytes([b[0], b[1]]))
                    .collect();
                let data =
                    Array4::from_shape_vec(self.frame_shape, values).map_err(|_| bad_length())?;
                self.append_inner(
                    Samples::Int16(data.view()),
                    sequence_number,
                    timestamp_ns,
                    None,
                )
            }
            SampleType::Float32 => {
                let values: Vec<f32> = samples
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect();
                self.check_finite(values.iter().copied())?;
                let data =
                    Array4::from_shape_vec(self.frame_shape, values).map_err(|_| bad_length())?;
                self.append_inner(
                    Samples::Float32(data.view()),
                    sequence_number,
                    timestamp_ns,
                    None,
                )
            }
        }
    }

    fn without_ground_truth(&self) -> Result<(), RecordingError> {
        match self.ground_truth {
            None => Ok(()),
            Some(_) => Err(RecordingError::GroundTruth(
                "this recording has a ground-truth grid: every frame needs its aeration map".into(),
            )),
        }
    }

    /// Appends one frame with its ground-truth aeration map, shape (nz, nx), values in [0, 1].
    pub fn append_with_ground_truth(
        &mut self,
        frame: &Frame,
        aeration: ArrayView2<f32>,
    ) -> Result<(), RecordingError> {
        let Some(gt) = &self.ground_truth else {
            return Err(RecordingError::GroundTruth(
                "this recording was created without a ground-truth grid".into(),
            ));
        };
        if aeration.dim() != (gt.nz, gt.nx) {
            return Err(RecordingError::shape(
                "pleura/aeration",
                aeration.shape().to_vec(),
                format!("[nz = {}, nx = {}]", gt.nz, gt.nx),
            ));
        }
        if let Some(((z, x), v)) = aeration
            .indexed_iter()
            .find(|(_, v)| !(0.0..=1.0).contains(*v))
        {
            return Err(RecordingError::value(
                format!("pleura/aeration[{}, {z}, {x}]", self.n_frames),
                v,
                "aeration must lie in [0, 1]",
            ));
        }
        self.append_frame(frame, Some(aeration))
    }

    fn check_shape(&self, frame: &Frame) -> Result<(), RecordingError> {
        if frame.data.shape() == self.frame_shape {
            Ok(())
        } else {
            Err(RecordingError::FrameShape {
                found: frame.data.shape().to_vec(),
                expected: self.frame_shape,
            })
        }
    }

    /// The (tx, ax, el, ch) index of the `k`-th sample in logical order.
    fn unravel(&self, k: usize) -> [usize; 4] {
        let [_, n_ax, n_el, n_ch] = self.frame_shape;
        [
            k / (n_ax * n_el * n_ch),
            k / (n_el * n_ch) % n_ax,
            k / n_ch % n_el,
            k % n_ch,
        ]
    }

    /// The frame as int16, exactly: every sample must be a whole number in range.
    fn to_int16(&self, frame: &Frame) -> Result<Array4<i16>, RecordingError> {
        let mut out = Vec::with_capacity(frame.data.len());
        for (k, &v) in frame.data.iter().enumerate() {
            // `as` saturates (NaN gives 0); the round trip tells whether v was exact.
            let q = v as i16;
            if f32::from(q) != v {
                return Err(RecordingError::NotInt16 {
                    value: v,
                    index: self.unravel(k),
                });
            }
            out.push(q);
        }
        let [t, a, e, c] = self.frame_shape;
        Array4::from_shape_vec((t, a, e, c), out).map_err(|_| RecordingError::FrameShape {
            found: frame.data.shape().to_vec(),
            expected: self.frame_shape,
        })
    }

    /// Checks that every sample, in logical order, is finite.
    fn check_finite(&self, samples: impl IntoIterator<Item = f32>) -> Result<(), RecordingError> {
        match samples
            .into_iter()
            .enumerate()
            .find(|(_, v)| !v.is_finite())
        {
            None => Ok(()),
            Some((k, v)) => {
                let [t, a, e, c] = self.unravel(k);
                Err(RecordingError::value(
                    format!("{}[{}, {t}, {a}, {e}, {c}]", self.raw_field, self.n_frames),
                    v,
                    "sample must be finite",
                ))
            }
        }
    }

    /// Appends a frame of float32 samples, as int16 in an int16 recording (each must be
    /// a whole number in range).
    fn append_frame(
        &mut self,
        frame: &Frame,
        aeration: Option<ArrayView2<f32>>,
    ) -> Result<(), RecordingError> {
        self.check_shape(frame)?;
        let (seq, ts) = (frame.sequence_number, frame.timestamp_ns);
        match self.sample_type {
            SampleType::Int16 => {
                let q = self.to_int16(frame)?;
                self.append_inner(Samples::Int16(q.view()), seq, ts, aeration)
            }
            SampleType::Float32 => {
                self.check_finite(frame.data.iter().copied())?;
                self.append_inner(Samples::Float32(frame.data.view()), seq, ts, aeration)
            }
        }
    }

    /// Writes one checked frame and its per-frame values.
    fn append_inner(
        &mut self,
        samples: Samples<'_>,
        sequence_number: u64,
        timestamp_ns: u64,
        aeration: Option<ArrayView2<f32>>,
    ) -> Result<(), RecordingError> {
        let i = self.n_frames;
        let n = i + 1;
        let field = |name: &str| format!("{name}[{i}]");
        let mut raw_shape = vec![n];
        raw_shape.extend_from_slice(&self.frame_shape);
        self.raw
            .resize(raw_shape)
            .map_err(|e| RecordingError::hdf5(&self.raw_field, "resize", e))?;
        let sel = s![i, .., .., .., ..];
        match samples {
            Samples::Int16(q) => self.raw.write_slice(q, sel),
            Samples::Float32(f) => self.raw.write_slice(f, sel),
        }
        .map_err(|e| RecordingError::hdf5(field(&self.raw_field), "write", e))?;
        for (ds, name, value) in [
            (
                &self.sequence_number,
                "pleura/sequence_number",
                sequence_number,
            ),
            (&self.timestamp_ns, "pleura/timestamp_ns", timestamp_ns),
        ] {
            ds.resize(n)
                .map_err(|e| RecordingError::hdf5(name, "resize", e))?;
            ds.write_slice(&Array1::from_elem(1, value), s![i..n])
                .map_err(|e| RecordingError::hdf5(field(name), "write", e))?;
        }
        if let Some((ds, rows)) = &self.time_to_next_transmit {
            let row = rows.row(i.min(rows.nrows() - 1));
            ds.resize((n, row.len()))
                .map_err(|e| RecordingError::hdf5(&self.t2nt_field, "resize", e))?;
            ds.write_slice(&row.insert_axis(ndarray::Axis(0)), s![i..n, ..])
                .map_err(|e| RecordingError::hdf5(field(&self.t2nt_field), "write", e))?;
        }
        if let (Some(gt), Some(a)) = (&self.ground_truth, aeration) {
            gt.aeration
                .resize((n, gt.nz, gt.nx))
                .map_err(|e| RecordingError::hdf5("pleura/aeration", "resize", e))?;
            gt.aeration
                .write_slice(&a, s![i, .., ..])
                .map_err(|e| RecordingError::hdf5(field("pleura/aeration"), "write", e))?;
        }
        self.n_frames = n;
        if self.last_flush.elapsed() >= self.flush_every {
            self.flush()?;
        }
        Ok(())
    }

    /// Writes everything appended so far to disk. Two H5Fflush calls: the first puts the
    /// frames and the grown dataset shapes on disk, then the frame count (`pleura/n_frames`,
    /// legacy: `scan/n_frames`) is set and flushed,
    /// so that on disk the count never includes a frame that is not there in full.
    pub fn flush(&mut self) -> Result<(), RecordingError> {
        self.file
            .flush()
            .map_err(|e| RecordingError::hdf5("/", "flush", e))?;
        self.n_frames_ds
            .write_scalar(&(self.n_frames as i64))
            .map_err(|e| RecordingError::hdf5(self.n_frames_field, "write", e))?;
        self.file
            .flush()
            .map_err(|e| RecordingError::hdf5("/", "flush", e))?;
        self.flushed_frames = self.n_frames;
        self.last_flush = Instant::now();
        Ok(())
    }

    /// Flushes and closes the file; returns the number of frames written. (Dropping the
    /// recorder also flushes and closes, but can only log a failure.)
    pub fn finish(mut self) -> Result<usize, RecordingError> {
        self.flush()?;
        Ok(self.n_frames)
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        if self.flushed_frames != self.n_frames {
            if let Err(e) = self.flush() {
                tracing::error!(
                    path = %self.path.display(),
                    error = %e,
                    cause = ?std::error::Error::source(&e),
                    "flushing the recording on drop failed"
                );
            }
        }
    }
}
