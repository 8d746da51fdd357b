//! Errors of reading and writing recordings. Every variant names the field (HDF5 path inside
//! the file) it is about and, where there is one, the offending value.

use std::path::PathBuf;

/// An error reading, validating or writing a recording.
#[derive(Debug, thiserror::Error)]
pub enum RecordingError {
    /// The file could not be opened or created as HDF5.
    #[error("cannot open {path} as HDF5")]
    Open {
        path: PathBuf,
        #[source]
        source: hdf5::Error,
    },
    /// An HDF5 operation on a field failed.
    #[error("{field}: {op} failed")]
    Hdf5 {
        field: String,
        op: &'static str,
        #[source]
        source: hdf5::Error,
    },
    /// A required dataset, group or attribute is absent.
    #[error("missing required field `{field}`")]
    Missing { field: String },
    /// A field has a datatype pleura does not accept there.
    #[error("`{field}` has datatype {found}, expected {expected}")]
    DataType {
        field: String,
        found: String,
        expected: &'static str,
    },
    /// A field has a shape that disagrees with the recording's dimensions.
    #[error("`{field}` has shape {found:?}, expected {expected}")]
    Shape {
        field: String,
        found: Vec<usize>,
        expected: String,
    },
    /// A field holds a value outside what it may hold.
    #[error("`{field}` = {value}: {reason}")]
    Value {
        field: String,
        value: String,
        reason: String,
    },
    /// The recording holds no frames.
    #[error("the recording has no frames (`scan/n_frames` = {n_frames}, `data/raw_data` has shape {shape:?})")]
    Empty { n_frames: usize, shape: Vec<usize> },
    /// A frame index past the end.
    #[error("frame {index} requested, the recording has {n_frames} frames")]
    FrameIndex { index: usize, n_frames: usize },
    /// A frame handed to the recorder does not match the scan.
    #[error(
        "frame data has shape {found:?}, the scan needs (n_tx, n_ax, n_el, n_ch) = {expected:?}"
    )]
    FrameShape {
        found: Vec<usize>,
        expected: [usize; 4],
    },
    /// A sample handed to an int16 recorder cannot be stored as int16 exactly.
    #[error("sample {value} at (tx, ax, el, ch) = {index:?} is not an int16 value")]
    NotInt16 { value: f32, index: [usize; 4] },
    /// Received samples handed to the recorder are of another type than the recording's.
    #[error("`{field}`: the frame has {found} samples, the recording holds {expected}")]
    SampleType {
        field: String,
        found: &'static str,
        expected: &'static str,
    },
    /// Received samples handed to the recorder do not make one frame of the scan.
    #[error(
        "`{field}`: the frame has {found} bytes of {sample_type} samples, the scan's frame \
         (n_tx, n_ax, n_el, n_ch) = {shape:?} needs {expected}"
    )]
    FrameBytes {
        field: String,
        found: usize,
        expected: usize,
        sample_type: &'static str,
        shape: [usize; 4],
    },
    /// Ground truth given to a recorder without a ground-truth grid, or missing for one with.
    #[error("ground truth: {0}")]
    GroundTruth(String),
}

impl RecordingError {
    pub(crate) fn hdf5(field: impl Into<String>, op: &'static str, source: hdf5::Error) -> Self {
        Self::Hdf5 {
            field: field.into(),
            op,
            source,
        }
    }

    pub(crate) fn value(
        field: impl Into<String>,
        value: impl std::fmt::Display,
        reason: impl Into<String>,
    ) -> Self {
        Self::Value {
            field: field.into(),
            value: value.to_string(),
            reason: reason.into(),
        }
    }

    pub(crate) fn shape(
        field: impl Into<String>,
        found: Vec<usize>,
        expected: impl Into<String>,
    ) -> Self {
        Self::Shape {
            field: field.into(),
            found,
            expected: expected.into(),
        }
    }
}

impl RecordingError {
    /// The same error with its field named as in a zea 0.1.x file: [`Scan::validate`]
    /// names the legacy paths (`scan/...`), which there live in the track's scan group at
    /// `scan_path` or in `probe/`.
    ///
    /// [`Scan::validate`]: super::Scan::validate
    pub(crate) fn in_zea_layout(self, scan_path: &str) -> Self {
        let rename = |field: String| -> String {
            let Some(name) = field.strip_prefix("scan/") else {
                return field;
            };
            let (base, rest) = name
                .find(['[', ' '])
                .map_or((name, ""), |i| name.split_at(i));
            match base {
                "probe_geometry" | "element_width" => format!("probe/{base}{rest}"),
                "fractional_bandwidth_percent" => format!("probe/probe_bandwidth_percent{rest}"),
                "n_ax" | "n_el" | "n_tx" | "n_ch" => format!("{base} (from the shape of raw_data)"),
                _ => format!("{scan_path}/{name}"),
            }
        };
        match self {
            Self::Value {
                field,
                value,
                reason,
            } => Self::Value {
                field: rename(field),
                value,
                reason,
            },
            Self::Shape {
                field,
                found,
                expected,
            } => Self::Shape {
                field: rename(field),
                found,
                expected,
            },
            other => other,
        }
    }
}

/// Formats a value for a message: as the float32 it was stored as when it is one (so a
/// float32 0.005 reads "0.005", not "0.004999999888241291"), else in full.
pub(crate) fn num(v: f64) -> String {
    let single = v as f32;
    if f64::from(single) == v {
        single.to_string()
    } else {
        v.to_string()
    }
}
